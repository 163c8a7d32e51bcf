"""NVDEC decoding through PyNvVideoCodec 2.x (import guarded: the server runs without it).

Timestamps do not come from the GPU decoder: the container is demuxed once on the CPU with PyAV
(packets only, no decoding: a few ms per minute of video) to get every frame's presentation time
and key flag; the same time-grid sampler as the CPU path then picks frame indices, and
`SimpleDecoder.get_batch_frames_by_index` decodes those (in ascending order, batched, so a GOP is
decoded once). Frames come back as CUDA tensors (DLPack -> torch) in RGB and stay on the GPU for
the embedder's GPU preprocessing.

What is not taken on trust:
* the CUDA context: PyNvVideoCodec's DLPack export waits on a CUDA event without making a context
  current, and the pipeline decodes on a fresh thread per item. The device's primary context (the
  one torch uses) is made current on the calling thread before every decoder call.
* the stream: `select.py` sends only codec / chroma / bit-depth combinations NVDEC decodes
  (`nvdec_rejects`), and the decoder decodes frame 0 when it opens, so a stream the GPU rejects
  goes to the CPU decoder before anything is sampled.
* the frames: `get_batch_frames_by_index` skips indices (with a warning) and seeks approximately
  in some containers, so every batch must hold one frame per requested index, each with the
  demuxer's presentation timestamp for that index (`batch_mismatch`). When a batch does not, the
  rest of the stream is decoded on the CPU (PyAV), continuing the same sampling grid.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from .decode import DecodeStats, Frame, PyAVDecoder, SizeHint, VideoInfo
from .errors import MediaCancelled, MediaError, MediaErrorReason
from .sampling import TimeGridSampler, plan_indices
from .source import MediaLimits, OpenedSource

log = logging.getLogger(__name__)

#: What NVDEC decodes on every GPU since Turing, per canonical codec name: {chroma: bit depths}
#: (NVIDIA's Video Codec SDK support matrix). H.264 4:2:2 / 10-bit and HEVC 4:2:2 need Blackwell
#: and are left to the CPU; AV1 needs Ampere, which the open-time probe finds out.
NVDEC_SUPPORT: dict[str, dict[str, frozenset[int]]] = {
    "h264": {"420": frozenset({8})},
    "hevc": {"420": frozenset({8, 10, 12}), "444": frozenset({8, 10, 12})},
    "vp9": {"420": frozenset({8, 10, 12})},
    "av1": {"420": frozenset({8, 10})},
    "vp8": {"420": frozenset({8})},
    "mpeg4": {"420": frozenset({8})},
    "mpeg2video": {"420": frozenset({8})},
    "mpeg1video": {"420": frozenset({8})},
    "vc1": {"420": frozenset({8})},
}
NVDEC_CODECS = frozenset(NVDEC_SUPPORT)

#: Indices decoded per get_batch_frames_by_index call: enough to amortise the call, few enough that
#: 1080p RGB batches stay ~100 MB of device memory.
BATCH = 16


class BackendUnavailable(RuntimeError):
    """An explicitly requested accelerator backend cannot be used here."""


def chroma_and_depth(pix_fmt: str) -> tuple[str, int]:
    """('420' | '422' | '444' | '400', bits per luma sample) of an FFmpeg pixel format."""
    import av

    fmt = av.VideoFormat(pix_fmt, 16, 16)
    comps = fmt.components
    bits = int(comps[0].bits)
    if len(comps) < 3:
        return "400", bits
    sub = (16 // max(1, comps[1].width), 16 // max(1, comps[1].height))
    return {(2, 2): "420", (2, 1): "422", (1, 1): "444"}.get(sub, f"{sub[0]}x{sub[1]}"), bits


def nvdec_rejects(codec_family: str | None, pix_fmt: str | None) -> str | None:
    """Why NVDEC cannot decode this stream, or None when it can (as far as the header tells)."""
    if codec_family not in NVDEC_SUPPORT:
        return f"codec {codec_family} is not decoded by NVDEC"
    if pix_fmt is None:
        return None  # the open-time probe decides
    try:
        chroma, bits = chroma_and_depth(pix_fmt)
    except (ValueError, KeyError) as exc:
        return f"pixel format {pix_fmt} is unknown ({exc})"
    depths = NVDEC_SUPPORT[codec_family].get(chroma)
    if depths is None or bits not in depths:
        return f"NVDEC does not decode {codec_family} {chroma} {bits}-bit ({pix_fmt})"
    return None


@functools.cache
def _libcuda():
    return ctypes.CDLL("libcuda.so.1")


@functools.cache
def cuda_driver_device_count() -> tuple[int, str]:
    """(number of CUDA devices, reason) through the driver API; 0 when no driver is installed."""
    try:
        lib = _libcuda()
    except OSError:
        return 0, "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    if lib.cuInit(0) != 0:
        return 0, "the NVIDIA driver failed to initialise (cuInit)"
    n = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value == 0:
        return 0, "the NVIDIA driver reports no CUDA device"
    return n.value, f"{n.value} CUDA device(s)"


@functools.cache
def _primary_context(gpu_id: int) -> int:
    """The retained primary context of a device (torch's context; never released: it lives as
    long as the process)."""
    lib = _libcuda()
    if lib.cuInit(0) != 0:
        raise RuntimeError("cuInit failed")
    dev = ctypes.c_int()
    if (rc := lib.cuDeviceGet(ctypes.byref(dev), gpu_id)) != 0:
        raise RuntimeError(f"cuDeviceGet({gpu_id}) failed with CUDA error {rc}")
    ctx = ctypes.c_void_p()
    if (rc := lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)) != 0:
        raise RuntimeError(f"cuDevicePrimaryCtxRetain({gpu_id}) failed with CUDA error {rc}")
    return int(ctx.value or 0)


def bind_primary_context(gpu_id: int) -> int:
    """Make device `gpu_id`'s primary context current on the calling thread; returns its handle.
    Cheap (a driver call), so it is done before every decoder call rather than tracked per thread."""
    ctx = _primary_context(gpu_id)
    if (rc := _libcuda().cuCtxSetCurrent(ctypes.c_void_p(ctx))) != 0:
        raise RuntimeError(f"cuCtxSetCurrent failed with CUDA error {rc}")
    return ctx


@functools.cache
def nvdec_available(gpu_id: int = 0) -> tuple[bool, str]:
    """Whether NVDEC decoding can run here on device `gpu_id`, and why (not)."""
    try:
        import PyNvVideoCodec  # noqa: F401
    except ImportError:
        return False, "PyNvVideoCodec is not installed (pip install 'frameseek[gpu]')"
    except Exception as exc:  # a broken CUDA install raises at import
        return False, f"PyNvVideoCodec failed to import: {exc}"
    n, why = cuda_driver_device_count()
    if n <= gpu_id:
        return False, why if n == 0 else f"no CUDA device {gpu_id} ({why})"
    try:
        import torch
    except ImportError:
        return False, "torch is needed to hold NVDEC frames on the GPU (DLPack) and is not installed"
    if not torch.cuda.is_available():
        return False, "torch has no CUDA support"
    return True, f"NVDEC via PyNvVideoCodec on device {gpu_id} of {why}"


@dataclass(frozen=True)
class FrameTable:
    """Every video frame of a file in presentation order, from the container packets alone."""

    ticks: list[int]  # presentation timestamps in `time_base` units (what NVDEC reports back)
    times: list[float]  # seconds from the first frame
    keys: list[bool]
    time_base: Fraction


def frame_table(src: OpenedSource) -> FrameTable:
    """The presentation times and key flags of every video frame, from demuxed packets."""
    import av

    with av.open(src.path) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        rows = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                continue
            rows.append((int(ts), bool(packet.is_keyframe)))
    rows.sort()
    if not rows:
        return FrameTable([], [], [], Fraction(tb))
    origin = rows[0][0]
    return FrameTable(
        ticks=[t for t, _ in rows],
        times=[float((t - origin) * tb) for t, _ in rows],
        keys=[k for _, k in rows],
        time_base=Fraction(tb),
    )


#: Units NVDEC's frame timestamps may come in besides the stream's time base: milliseconds, the
#: Video Codec SDK demuxer's default time scale. Which one a file uses is found when it opens.
ALTERNATIVE_PTS_UNITS = (Fraction(1, 1000),)


def same_instant(got: int, unit: Fraction, want: int, time_base: Fraction) -> bool:
    """Whether `got` (in `unit`s) and the demuxer's `want` (in `time_base` units) are one
    timestamp: exactly equal in the same unit, within one unit when rescaled (truncation)."""
    if unit == time_base:
        return got == want
    return abs(got * unit - want * time_base) <= unit


def detect_pts_unit(indices: list[int], decoded_ticks: list[int | None], table: FrameTable) -> Fraction | None:
    """The unit of the decoder's timestamps for these probed frames: the stream's time base, or one
    of ALTERNATIVE_PTS_UNITS, whichever matches the demuxer for every frame (the time base first);
    None when none does. Frames without a timestamp match any unit."""
    for unit in (table.time_base, *ALTERNATIVE_PTS_UNITS):
        pairs = [(g, table.ticks[i]) for i, g in zip(indices, decoded_ticks) if g is not None]
        if all(same_instant(g, unit, w, table.time_base) for g, w in pairs):
            return unit
    return None


def batch_mismatch(
    requested: list[int], decoded_ticks: list[int | None], table: FrameTable, unit: Fraction | None = None
) -> str | None:
    """Why a decoded batch cannot be paired with the requested indices, or None when it can: one
    frame per index, in order, each with the demuxer's timestamp for that index (`unit`: that of
    the decoder's timestamps, default the stream's time base; None timestamps = the decoder did
    not say, which is accepted: the count still holds)."""
    unit = table.time_base if unit is None else unit
    if len(decoded_ticks) != len(requested):
        return f"{len(decoded_ticks)} frames came back for {len(requested)} requested indices"
    for index, got in zip(requested, decoded_ticks):
        want = table.ticks[index]
        if got is not None and not same_instant(got, unit, want, table.time_base):
            return (
                f"frame {index} came back with timestamp {float(got * unit):.6g} s, "
                f"not {float(want * table.time_base):.6g} s (an approximate seek)"
            )
    return None


def _frame_ticks(frame) -> int | None:
    get = getattr(frame, "getPTS", None)
    return int(get()) if get is not None else None


def cpu_continuation(
    src: OpenedSource,
    limits: MediaLimits,
    stats: DecodeStats,
    fps: float | None,
    keyframes_only: bool,
    abort: threading.Event | None,
    size_hint: SizeHint | None,
    after: float | None,
) -> Iterator[Frame]:
    """The samples after `after` seconds, decoded by PyAV on the same time grid: a fresh sampler
    that has already kept the frame at `after` continues where NVDEC stopped (None: from the
    start). Its counts are added to `stats`."""
    grid = TimeGridSampler(fps)
    if after is not None:
        grid.accept(after)
    cpu = PyAVDecoder(src, limits)
    try:
        for frame in cpu.frames(grid, keyframes_only, abort, size_hint):
            stats.sampled_frames += 1
            yield frame
    finally:
        stats.decoded_frames += cpu.stats.decoded_frames
        stats.decode_errors += cpu.stats.decode_errors
        stats.extra["cpu_decoded_frames"] = cpu.stats.decoded_frames
        cpu.close()


class NvdecDecoder:
    """GPU decoding with NVDEC; frames are CUDA uint8 RGB tensors (HxWx3). Batches NVDEC gets
    wrong, and everything after them, are decoded on the CPU instead (`stats.extra`)."""

    name = "nvdec"

    def __init__(self, src: OpenedSource, limits: MediaLimits, info: VideoInfo, gpu_id: int = 0) -> None:
        import PyNvVideoCodec as nvc

        if src.path is None:
            raise BackendUnavailable("NVDEC decodes files only")
        self.src, self.limits, self.info, self.gpu_id = src, limits, info, gpu_id
        self.stats = DecodeStats()
        self._table = frame_table(src)
        self._decoder = nvc.SimpleDecoder(
            src.path,
            gpu_id=gpu_id,
            cuda_context=bind_primary_context(gpu_id),  # the context torch's tensors live in
            use_device_memory=True,
            output_color_type=nvc.OutputColorType.RGB,  # interleaved HWC RGB
        )
        n = len(self._decoder)
        if n and n != len(self._table.ticks):
            # Index-addressed decoding only lines up with packet timestamps when both count the
            # same frames; otherwise CPU decoding is the correct answer.
            raise BackendUnavailable(f"NVDEC counts {n} frames, the demuxer {len(self._table.ticks)}")
        self._pts_unit = self._table.time_base
        if self._table.ticks:
            # Streams NVDEC cannot decode (a profile this GPU lacks) fail here, while the CPU
            # decoder can still take the whole file, rather than at the first sampled batch. Two
            # frames also tell the unit of NVDEC's timestamps.
            probe = [0, 1] if len(self._table.ticks) > 1 else [0]
            ticks, why = self._decode_ticks(probe)
            if why is None:
                unit = detect_pts_unit(probe, ticks, self._table)
                if unit is None:
                    want = [self._table.ticks[i] for i in probe]
                    why = f"its timestamps {ticks} match the demuxer's {want} in no known unit"
                else:
                    self._pts_unit = unit
            if why is not None:
                raise BackendUnavailable(f"NVDEC cannot decode {src.name}: {why}")

    def _decode_ticks(self, batch: list[int]) -> tuple[list[int | None], str | None]:
        """The timestamps NVDEC gives the frames at `batch` (the frames are dropped)."""
        try:
            with self._device():
                decoded = self._decoder.get_batch_frames_by_index(batch)
                if len(decoded) != len(batch):
                    return [], f"{len(decoded)} frames came back for {len(batch)} requested indices"
                return [_frame_ticks(f) for f in decoded], None
        except Exception as exc:
            return [], f"NVDEC failed: {type(exc).__name__}: {exc}"

    @contextlib.contextmanager
    def _device(self) -> Iterator[None]:
        """torch's current device is the decoder's, and its primary context is current on this
        thread (which may never have touched CUDA)."""
        import torch

        with torch.cuda.device(self.gpu_id):
            bind_primary_context(self.gpu_id)
            yield

    def _decode(self, batch: list[int]) -> tuple[list, str | None]:
        """(CUDA tensors, None) for the frames at `batch`, or ([], why) when NVDEC got them wrong."""
        import torch

        try:
            with self._device():
                # Skipped indices only warn (warnings are process-wide state, not caught here):
                # the count check below is what catches them.
                decoded = self._decoder.get_batch_frames_by_index(batch)
                why = batch_mismatch(batch, [_frame_ticks(f) for f in decoded], self._table, self._pts_unit)
                # clone(): the decoder recycles its output surfaces on the next call.
                images = [] if why else [torch.from_dlpack(f).clone() for f in decoded]
        except Exception as exc:  # CUDA / decoder errors: the CPU decoder takes over
            return [], f"NVDEC failed: {type(exc).__name__}: {exc}"
        return images, why

    def frames(
        self,
        sampler: TimeGridSampler,
        keyframes_only: bool = False,
        abort: threading.Event | None = None,
        size_hint: SizeHint | None = None,
    ) -> Iterator[Frame]:
        # size_hint only reaches the CPU fallback: NVDEC frames stay on the GPU at full size and
        # are resized there.
        table = self._table
        if not table.ticks:
            raise MediaError(MediaErrorReason.ZERO_DURATION, f"{self.src.name}: the video stream has no frames")
        indices = plan_indices(table.times, sampler.fps, table.keys if keyframes_only else None)
        self.limits.check_duration(table.times[-1], self.src.name)  # the packets' times, not the header's
        st = self.stats
        st.last_t = table.times[-1]
        if len(table.times) > 1:
            st.frame_period = table.times[-1] - table.times[-2]
        last_t: float | None = None
        for start in range(0, len(indices), BATCH):
            if abort is not None and abort.is_set():
                raise MediaCancelled()
            batch = indices[start : start + BATCH]
            images, why = self._decode(batch)
            if why is not None:
                log.warning("NVDEC on %s: %s; decoding the rest on the CPU", self.src.name, why)
                st.extra["nvdec_fallback"] = why
                yield from cpu_continuation(
                    self.src, self.limits, st, sampler.fps, keyframes_only, abort, size_hint, last_t
                )
                return
            st.decoded_frames += len(images)
            for idx, img in zip(batch, images):
                self.limits.check_resolution(int(img.shape[1]), int(img.shape[0]), self.src.name)
                st.sampled_frames += 1
                last_t = table.times[idx]
                yield Frame(last_t, img, key=table.keys[idx], on_gpu=True)

    def close(self) -> None:
        self._decoder = None
