"""Decoder selection: `open_decoder()` picks the decoder for an input (stills -> ImageDecoder;
video -> NVDEC where available, else PyAV). It lives apart from both decoders so that decode.py
and nvdec.py do not import each other (nvdec builds on decode's frame types)."""

from __future__ import annotations

import logging

from . import nvdec
from .decode import Backend, Decoder, ImageDecoder, PyAVDecoder, VideoInfo
from .nvdec import NvdecDecoder
from .source import MediaLimits, MediaSource, OpenedSource, open_source

log = logging.getLogger(__name__)


def select_backend(src: OpenedSource, info: VideoInfo | None, backend: Backend = "auto") -> tuple[str, str]:
    """Decide between 'pyav' and 'nvdec'; returns (name, reason). Never raises for 'auto'."""
    if backend == "cpu":
        return "pyav", "CPU decoding requested"
    ok, why = nvdec.nvdec_available()
    if ok and src.path is None:
        ok, why = False, "NVDEC decodes files only; the input is bytes or a stream"
    if ok and info is not None and info.codec not in nvdec.NVDEC_CODECS:
        ok, why = False, f"codec {info.codec} is not decoded by NVDEC"
    if ok:
        return "nvdec", why
    if backend == "nvdec":
        raise nvdec.BackendUnavailable(f"NVDEC requested but unavailable: {why}")
    return "pyav", why


def open_decoder(source: MediaSource, limits: MediaLimits | None = None, backend: Backend = "auto") -> Decoder:
    """Open `source` with the best available decoder; raises `MediaError` for bad input."""
    limits = limits or MediaLimits()
    src = open_source(source)
    if src.kind == "image":
        return ImageDecoder(src, limits)
    dec = PyAVDecoder(src, limits)
    name, why = select_backend(src, dec.info, backend)
    if name == "nvdec":
        try:
            gpu = NvdecDecoder(src, limits, dec.info)
        except Exception as exc:  # driver / session limits: decoding still works on the CPU
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
