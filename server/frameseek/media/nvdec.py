"""NVDEC decoding through PyNvVideoCodec 2.x (import guarded: the server runs without it).

Timestamps do not come from the GPU decoder: the container is demuxed once on the CPU with PyAV
(packets only, no decoding: a few ms per minute of video) to get every frame's presentation time
and key flag; the same time-grid sampler as the CPU path then picks frame indices, and
`SimpleDecoder.get_batch_frames_by_index` decodes those (in ascending order, batched, so a GOP is
decoded once). Frames come back as CUDA tensors (DLPack -> torch) in RGB and stay on the GPU for
the TensorRT embedder's GPU preprocessing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections.abc import Iterator

from .decode import DecodeStats, Frame, VideoInfo
from .errors import MediaCancelled, MediaError, MediaErrorReason
from .sampling import TimeGridSampler, plan_indices
from .source import MediaLimits, OpenedSource

log = logging.getLogger(__name__)

#: FFmpeg codec names that NVDEC decodes (Turing and later; AV1 from Ampere).
NVDEC_CODECS = frozenset({"h264", "hevc", "vp9", "av1", "vp8", "mpeg4", "mpeg2video", "mpeg1video", "vc1"})

#: Indices decoded per get_batch_frames_by_index call: enough to amortise the call, few enough that
#: 1080p RGB batches stay ~100 MB of device memory.
BATCH = 16


class BackendUnavailable(RuntimeError):
    """An explicitly requested accelerator backend cannot be used here."""


@functools.cache
def cuda_driver_device_count() -> tuple[int, str]:
    """(number of CUDA devices, reason) through the driver API; 0 when no driver is installed."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    if lib.cuInit(0) != 0:
        return 0, "the NVIDIA driver failed to initialise (cuInit)"
    n = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value == 0:
        return 0, "the NVIDIA driver reports no CUDA device"
    return n.value, f"{n.value} CUDA device(s)"


@functools.cache
def nvdec_available() -> tuple[bool, str]:
    """Whether NVDEC decoding can run here, and why (not)."""
    try:
        import PyNvVideoCodec  # noqa: F401
    except ImportError:
        return False, "PyNvVideoCodec is not installed (pip install 'frameseek[gpu]')"
    except Exception as exc:  # a broken CUDA install raises at import
        return False, f"PyNvVideoCodec failed to import: {exc}"
    n, why = cuda_driver_device_count()
    if n == 0:
        return False, why
    try:
        import torch
    except ImportError:
        return False, "torch is needed to hold NVDEC frames on the GPU (DLPack) and is not installed"
    if not torch.cuda.is_available():
        return False, "torch has no CUDA support"
    return True, f"NVDEC via PyNvVideoCodec on {why}"


def frame_table(src: OpenedSource) -> tuple[list[float], list[bool]]:
    """Presentation times (s from stream start, ascending) and key flags of every video frame,
    from the container packets alone."""
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
            rows.append((float(ts * tb), bool(packet.is_keyframe)))
    rows.sort()
    if not rows:
        return [], []
    origin = rows[0][0]
    return [t - origin for t, _ in rows], [k for _, k in rows]


class NvdecDecoder:
    """GPU decoding with NVDEC; frames are CUDA uint8 RGB tensors (HxWx3)."""

    name = "nvdec"

    def __init__(self, src: OpenedSource, limits: MediaLimits, info: VideoInfo, gpu_id: int = 0) -> None:
        import PyNvVideoCodec as nvc

        if src.path is None:
            raise BackendUnavailable("NVDEC decodes files only")
        self.src, self.limits, self.info, self.gpu_id = src, limits, info, gpu_id
        self.stats = DecodeStats()
        self._pts, self._key = frame_table(src)
        self._decoder = nvc.SimpleDecoder(
            src.path,
            gpu_id=gpu_id,
            use_device_memory=True,
            output_color_type=nvc.OutputColorType.RGB,  # interleaved HWC RGB
        )
        n = len(self._decoder)
        if n and n != len(self._pts):
            # Index-addressed decoding only lines up with packet timestamps when both count the
            # same frames; otherwise CPU decoding is the correct answer.
            raise BackendUnavailable(f"NVDEC counts {n} frames, the demuxer {len(self._pts)}")

    def frames(
        self,
        sampler: TimeGridSampler,
        keyframes_only: bool = False,
        abort: threading.Event | None = None,
        size_hint=None,
    ) -> Iterator[Frame]:
        # size_hint is ignored: frames stay on the GPU at full size and are resized there.
        import torch

        if not self._pts:
            raise MediaError(MediaErrorReason.ZERO_DURATION, f"{self.src.name}: the video stream has no frames")
        keys = self._key if keyframes_only else None
        indices = plan_indices(self._pts, sampler.fps, keys)
        self.limits.check_duration(self._pts[-1], self.src.name)  # the packets' times, not the header's
        st = self.stats
        st.last_t = self._pts[-1]
        if len(self._pts) > 1:
            st.frame_period = self._pts[-1] - self._pts[-2]
        for start in range(0, len(indices), BATCH):
            if abort is not None and abort.is_set():
                raise MediaCancelled()
            batch = indices[start : start + BATCH]
            try:
                decoded = self._decoder.get_batch_frames_by_index(batch)
            except Exception as exc:
                raise MediaError(MediaErrorReason.CORRUPT_MEDIA, f"{self.src.name}: NVDEC failed: {exc}") from None
            st.decoded_frames += len(decoded)
            for idx, f in zip(batch, decoded):
                # clone(): the decoder recycles its output surfaces on the next call.
                img = torch.from_dlpack(f).clone()
                self.limits.check_resolution(int(img.shape[1]), int(img.shape[0]), self.src.name)
                st.sampled_frames += 1
                yield Frame(self._pts[idx], img, key=self._key[idx], on_gpu=True)

    def close(self) -> None:
        self._decoder = None
