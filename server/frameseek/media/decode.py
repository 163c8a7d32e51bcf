"""Decoders behind one interface.

`open_decoder()` (media/select.py, which chooses among these and NVDEC) turns a path / bytes /
stream into a `Decoder`:
  * still images (JPEG, PNG, WebP, BMP) -> `ImageDecoder`, one frame at t=0;
  * video on a machine with an NVIDIA driver and PyNvVideoCodec -> `NvdecDecoder` (see nvdec.py);
  * otherwise -> `PyAVDecoder` (FFmpeg, frame-threaded decoding).

A decoder yields only the frames its `TimeGridSampler` keeps; conversion to RGB (the expensive part
after decoding itself) happens for those frames only. Every error becomes a `MediaError`.

Size hint: the caller (the pipeline) may pass `size_hint(height, width) -> (out_h, out_w)`, the
model's input size for a frame of that size. The PyAV decoder then lets swscale convert to RGB and
downscale in one pass (antialiased bilinear, like the PIL resize it replaces) instead of
converting at full resolution and resizing afterwards: ~1 ms instead of ~5 ms per 720p frame on
this CPU. It is a hint: decoders may ignore it (stills, NVDEC frames that stay on the GPU), never
upscale with it, and the embedder still resizes whatever does not arrive at its input size.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import MediaCancelled, MediaError, MediaErrorReason
from .sampling import TimeGridSampler
from .source import MediaLimits, OpenedSource

log = logging.getLogger(__name__)

Backend = Literal["auto", "cpu", "nvdec"]
#: (source height, source width) -> (height, width) the consumer wants the frame at.
SizeHint = Callable[[int, int], tuple[int, int]]


@dataclass
class VideoInfo:
    """What the container header says (before decoding)."""

    width: int
    height: int
    duration: float | None  # seconds; None when the container does not say
    fps: float | None  # average frame rate, None when unknown
    codec: str  # the FFmpeg decoder's name (libdav1d for AV1)
    container: str
    is_image: bool = False
    frame_count: int | None = None
    codec_family: str | None = None  # the codec's canonical name (av1, h264, hevc), whichever decoder
    pix_fmt: str | None = None  # the stream's pixel format (yuv420p, yuv422p10le, ...), when known


@dataclass
class Frame:
    """One sampled frame. `image` is RGB uint8 HxWx3: a numpy array, or a CUDA tensor when
    `on_gpu` (NVDEC output that stays on the device)."""

    t: float  # presentation time, seconds from the stream start
    image: Any
    key: bool = False
    on_gpu: bool = False
    source_hw: tuple[int, int] | None = None  # decoded (height, width) when `image` was downscaled

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def to_numpy(self) -> np.ndarray:
        if self.on_gpu:
            return self.image.cpu().numpy() if hasattr(self.image, "cpu") else self.image.get()
        return self.image


@dataclass
class DecodeStats:
    decoded_frames: int = 0  # frames that came out of the codec
    sampled_frames: int = 0  # frames handed to the caller
    decode_errors: int = 0  # packets that failed to decode (skipped)
    truncated: bool = False  # the demuxer hit a broken / missing tail
    last_t: float | None = None  # presentation time of the last decoded frame
    frame_period: float | None = None  # typical spacing of the last frames (to close the duration)
    extra: dict = field(default_factory=dict)


class Decoder(Protocol):
    name: str
    info: VideoInfo
    stats: DecodeStats

    def frames(
        self,
        sampler: TimeGridSampler,
        keyframes_only: bool = False,
        abort: threading.Event | None = None,
        size_hint: SizeHint | None = None,
    ) -> Iterator[Frame]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------
# Still images


class ImageDecoder:
    """A still image as a one-frame item at t=0 (EXIF orientation applied)."""

    name = "pil"

    def __init__(self, src: OpenedSource, limits: MediaLimits) -> None:
        self.stats = DecodeStats()
        try:
            img = Image.open(src.target)
        except UnidentifiedImageError:
            raise MediaError(MediaErrorReason.CORRUPT_MEDIA, f"{src.name}: unreadable {src.fmt} image") from None
        except Image.DecompressionBombError as exc:
            raise MediaError(MediaErrorReason.RESOLUTION_TOO_LARGE, f"{src.name}: {exc}") from None
        with img:  # closes the file PIL opened, whatever happens below
            limits.check_resolution(img.width, img.height, src.name)
            try:
                img.load()
                self._rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
            except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
                raise MediaError(
                    MediaErrorReason.CORRUPT_MEDIA, f"{src.name}: corrupt {src.fmt} image ({exc})"
                ) from None
        h, w = self._rgb.shape[:2]
        self.info = VideoInfo(w, h, 0.0, None, src.fmt, src.fmt, is_image=True, frame_count=1)

    def frames(
        self, sampler: TimeGridSampler, keyframes_only: bool = False, abort=None, size_hint: SizeHint | None = None
    ) -> Iterator[Frame]:
        # size_hint is ignored: a still is decoded once, and the embedder's own (PIL) resize is
        # the reference the video path approximates.
        self.stats.decoded_frames = self.stats.sampled_frames = 1
        self.stats.last_t = 0.0
        yield Frame(0.0, self._rgb, key=True)

    def close(self) -> None:
        self._rgb = None


# ----------------------------------------------------------------------------------------------
# FFmpeg through PyAV


# swscale flags for the one-pass RGB conversion + downscale. SWS_BILINEAR widens its triangle
# filter by the downscale factor (antialiased, like PIL's BILINEAR: on RGB input the two differ by
# ~0.2 levels on average, tests/media/test_embed.py); AREA / FAST_BILINEAR are cheaper but alias
# or blur more. Chroma is scaled from its own (subsampled) plane rather than upsampled first, so
# on YUV input the result differs from "full-size RGB, then PIL" by about a level on average.
SWS_DOWNSCALE = "BILINEAR"


def downscale_target(hint: SizeHint | None, height: int, width: int) -> tuple[int, int] | None:
    """The size to let swscale produce, or None to convert at full size (no hint, same size, or
    an upscale in either direction: upscaling is left to the embedder's reference resize)."""
    if hint is None:
        return None
    oh, ow = hint(height, width)
    if (oh, ow) == (height, width) or oh > height or ow > width or oh < 1 or ow < 1:
        return None
    return int(oh), int(ow)


def frame_to_rgb(
    frame: av.VideoFrame, target: tuple[int, int] | None = None, reformatter: VideoReformatter | None = None
) -> np.ndarray:
    """RGB uint8 HxWx3 of a decoded frame: at its own size, or converted and downscaled to
    `target` (height, width) in one swscale pass. A shared `reformatter` keeps one swscale
    context for a whole stream (`frame.reformat` would set one up per frame)."""
    if target is None:
        return frame.to_ndarray(format="rgb24")
    r = reformatter if reformatter is not None else VideoReformatter()
    small = r.reformat(frame, width=target[1], height=target[0], format="rgb24", interpolation=SWS_DOWNSCALE)
    return small.to_ndarray()


# Skip non-reference frames only when at least this many frames fall on one sampling tick (the
# delay it adds to a sample is then small against the sampling period).
NONREF_MIN_FRAMES_PER_SAMPLE = 4


def _open_container(src: OpenedSource) -> av.container.InputContainer:
    try:
        return av.open(src.target, mode="r", metadata_errors="ignore")
    except av.error.FileNotFoundError:
        raise MediaError(MediaErrorReason.NOT_FOUND, f"{src.name}: no such file") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if src.kind == "unknown":
            raise MediaError(
                MediaErrorReason.NOT_MEDIA, f"{src.name}: not a recognised video or image format ({exc})"
            ) from None
        raise MediaError(
            MediaErrorReason.CORRUPT_MEDIA, f"{src.name}: {src.fmt} container cannot be opened ({exc})"
        ) from None


def probe_video(container: av.container.InputContainer, src: OpenedSource, limits: MediaLimits):
    """Pick the video stream and validate the header; returns (stream, VideoInfo)."""
    videos = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not videos:
        others = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        if src.kind == "unknown" and not container.streams:
            raise MediaError(MediaErrorReason.NOT_MEDIA, f"{src.name}: not a recognised video or image format")
        raise MediaError(MediaErrorReason.NO_VIDEO_STREAM, f"{src.name}: no video stream ({others})")
    stream = videos[0]
    ctx = stream.codec_context
    codec_name = getattr(getattr(ctx, "codec", None), "name", None) if ctx is not None else None
    if ctx is None or codec_name is None:
        raise MediaError(
            MediaErrorReason.UNSUPPORTED_CODEC,
            f"{src.name}: video codec {stream.codec_context and stream.codec_context.name or 'unknown'!s} "
            "has no decoder in this FFmpeg build",
        )
    limits.check_resolution(ctx.width or 1, ctx.height or 1, src.name)
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if duration is not None and (duration < 0 or duration != duration):
        duration = None
    if duration is not None:
        limits.check_duration(duration, src.name)
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    info = VideoInfo(
        width=ctx.width,
        height=ctx.height,
        duration=duration,
        fps=fps,
        codec=codec_name,
        container=container.format.name,
        frame_count=stream.frames or None,
        codec_family=ctx.codec.canonical_name,
        pix_fmt=ctx.format.name if ctx.format is not None else None,
    )
    return stream, info


class BestEffortTimestamp:
    """FFmpeg's `best_effort_timestamp` (libavcodec guess_correct_pts), which PyAV does not expose.

    Some muxers write presentation timestamps that go backwards in output order (box.mp4 in
    opencv-doc: B-frame pts copied from the wrong frames). Count how often pts and dts each fail to
    increase, and trust whichever has failed less: pts normally, dts once pts are known bad.
    """

    def __init__(self) -> None:
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            if self.last_dts is not None and dts <= self.last_dts:
                self.faulty_dts += 1
            self.last_dts = dts
        if pts is not None:
            if self.last_pts is not None and pts <= self.last_pts:
                self.faulty_pts += 1
            self.last_pts = pts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


class PyAVDecoder:
    """CPU decoding with FFmpeg (through PyAV), frame/slice threaded."""

    name = "pyav"

    def __init__(self, src: OpenedSource, limits: MediaLimits, threads: int = 0) -> None:
        self.src = src
        self.limits = limits
        self.stats = DecodeStats()
        self._container = _open_container(src)
        try:
            self._stream, self.info = probe_video(self._container, src, limits)
        except BaseException:
            self._container.close()
            raise
        # Frame threading decodes several frames in parallel (FFmpeg picks slice threading where
        # the codec cannot do frames); thread_count 0 = one per core.
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads

    def frames(
        self,
        sampler: TimeGridSampler,
        keyframes_only: bool = False,
        abort: threading.Event | None = None,
        size_hint: SizeHint | None = None,
    ) -> Iterator[Frame]:
        stream = self._stream
        if keyframes_only:
            # The codec drops non-key frames before decoding them: the fast path for long files.
            stream.codec_context.skip_frame = "NONKEY"
        elif sampler.fps and self.info.fps and self.info.fps >= NONREF_MIN_FRAMES_PER_SAMPLE * sampler.fps:
            # Sparse sampling: frames that no other frame references (most B-frames of H.264/HEVC)
            # are never needed to decode a kept one, so the codec may skip them. Measured on a
            # 720p H.264 clip with B-frames: 0.64 s -> 0.44 s of decode; a sample then lands on the
            # next decoded frame, at most a couple of frame periods after its tick.
            stream.codec_context.skip_frame = "NONREF"
        tb = stream.time_base
        origin = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else None
        period_guess = 1.0 / self.info.fps if self.info.fps else 1.0 / 25
        st = self.stats
        consecutive = 0
        prev_t: float | None = None
        best_effort = BestEffortTimestamp()
        targets: dict[tuple[int, int], tuple[int, int] | None] = {}  # per source size (it may change)
        reformatter = VideoReformatter()
        demux = self._container.demux(stream)
        while True:
            if abort is not None and abort.is_set():
                raise MediaCancelled()
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                # A broken tail (truncated download): keep what decoded so far.
                st.truncated = True
                log.info("demuxing %s stopped early: %s", self.src.name, exc)
                if st.decoded_frames == 0:
                    raise MediaError(MediaErrorReason.CORRUPT_MEDIA, f"{self.src.name}: {exc}") from None
                break
            try:
                decoded = packet.decode()
                consecutive = 0
            except av.error.FFmpegError as exc:
                st.decode_errors += 1
                consecutive += 1
                if consecutive > self.limits.max_consecutive_decode_errors:
                    raise MediaError(
                        MediaErrorReason.CORRUPT_MEDIA,
                        f"{self.src.name}: {consecutive} packets in a row failed to decode ({exc})",
                    ) from None
                continue
            for frame in decoded:
                st.decoded_frames += 1
                ts = best_effort(frame.pts, frame.dts)
                if ts is not None and tb is not None:
                    t = float(ts * tb)
                    if origin is None:
                        origin = t
                    t -= origin
                else:
                    t = (prev_t + period_guess) if prev_t is not None else 0.0
                t = max(t, 0.0)
                if prev_t is not None and t > prev_t:
                    st.frame_period = t - prev_t
                prev_t = t if prev_t is None else max(prev_t, t)
                st.last_t = prev_t
                # the header's duration may be missing or lie (MKV written to a pipe): the frames tell
                self.limits.check_duration(t, self.src.name)
                if not sampler.accept(t):
                    continue
                self.limits.check_resolution(frame.width, frame.height, self.src.name)
                st.sampled_frames += 1
                hw = (frame.height, frame.width)
                if hw not in targets:
                    targets[hw] = downscale_target(size_hint, *hw)
                target = targets[hw]
                image = frame_to_rgb(frame, target, reformatter)
                yield Frame(t, image, key=bool(frame.key_frame), source_hw=None if target is None else hw)
        if st.decoded_frames == 0:
            if st.decode_errors:
                raise MediaError(
                    MediaErrorReason.CORRUPT_MEDIA,
                    f"{self.src.name}: no frame could be decoded ({st.decode_errors} broken packets)",
                )
            raise MediaError(MediaErrorReason.ZERO_DURATION, f"{self.src.name}: the video stream has no frames")

    def close(self) -> None:
        self._container.close()
