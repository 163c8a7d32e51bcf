"""Decoder selection: `open_decoder()` picks the decoder for an input (stills -> ImageDecoder;
video -> NVDEC where available and worth it, else PyAV). It lives apart from both decoders so that
decode.py and nvdec.py do not import each other (nvdec builds on decode's frame types)."""

from __future__ import annotations

import logging

from . import nvdec
from .decode import Backend, Decoder, ImageDecoder, PyAVDecoder, VideoInfo
from .nvdec import NvdecDecoder
from .source import MediaLimits, MediaSource, OpenedSource, open_source

log = logging.getLogger(__name__)


def backend_for_consumer(backend: Backend, cuda_device: int | None) -> tuple[Backend, int]:
    """(decoder backend, GPU) for frames that go to a consumer on `cuda_device` (None: the CPU).

    NVDEC pays only when frames stay on the GPU: for a CPU consumer every full-size frame would be
    copied back to the host, so 'auto' means the CPU decoder then. An explicit choice stands."""
    if backend == "auto" and cuda_device is None:
        return "cpu", 0
    return backend, cuda_device or 0


def select_backend(
    src: OpenedSource, info: VideoInfo | None, backend: Backend = "auto", gpu_id: int = 0
) -> tuple[str, str]:
    """Decide between 'pyav' and 'nvdec'; returns (name, reason). Never raises for 'auto'."""
    if backend == "cpu":
        return "pyav", "CPU decoding requested"
    ok, why = nvdec.nvdec_available(gpu_id)
    if ok and src.path is None:
        ok, why = False, "NVDEC decodes files only; the input is bytes or a stream"
    if ok and info is not None:
        rejected = nvdec.nvdec_rejects(info.codec_family or info.codec, info.pix_fmt)
        if rejected is not None:
            ok, why = False, rejected
    if ok:
        return "nvdec", why
    if backend == "nvdec":
        raise nvdec.BackendUnavailable(f"NVDEC requested but unavailable: {why}")
    return "pyav", why


def open_decoder(
    source: MediaSource, limits: MediaLimits | None = None, backend: Backend = "auto", gpu_id: int = 0
) -> Decoder:
    """Open `source` with the best available decoder (NVDEC on device `gpu_id` when it can take
    the stream); raises `MediaError` for bad input."""
    limits = limits or MediaLimits()
    src = open_source(source)
    if src.kind == "image":
        return ImageDecoder(src, limits)
    dec = PyAVDecoder(src, limits)
    name, why = select_backend(src, dec.info, backend, gpu_id)
    if name == "nvdec":
        try:
            gpu = NvdecDecoder(src, limits, dec.info, gpu_id)
        except Exception as exc:  # driver / session limits / a profile this GPU lacks: the CPU decodes it
            if backend == "nvdec":
                dec.close()
                raise
            log.warning("NVDEC unavailable for %s, decoding on the CPU: %s", src.name, exc)
            return dec
        dec.close()
        return gpu
    if backend == "auto":
        log.debug("decoding %s on the CPU: %s", src.name, why)
    return dec
