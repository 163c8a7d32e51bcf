"""Media input: decoding (PyAV on the CPU, NVDEC on NVIDIA GPUs), sampling by presentation time,
and the blank-frame filter. Bad input always surfaces as a typed `MediaError`."""

from .blank import BlankFilterSettings, BlankVerdict, analyse, is_blank
from .decode import (
    Backend,
    Decoder,
    DecodeStats,
    Frame,
    ImageDecoder,
    PyAVDecoder,
    VideoInfo,
)
from .errors import MediaCancelled, MediaError, MediaErrorReason
from .sampling import TimeGridSampler, plan_indices
from .select import backend_for_consumer, open_decoder, select_backend
from .source import MediaLimits, MediaSource, open_source, sniff

__all__ = [
    "Backend",
    "BlankFilterSettings",
    "BlankVerdict",
    "DecodeStats",
    "Decoder",
    "Frame",
    "ImageDecoder",
    "MediaCancelled",
    "MediaError",
    "MediaErrorReason",
    "MediaLimits",
    "MediaSource",
    "PyAVDecoder",
    "TimeGridSampler",
    "VideoInfo",
    "analyse",
    "backend_for_consumer",
    "is_blank",
    "open_decoder",
    "open_source",
    "plan_indices",
    "select_backend",
    "sniff",
]
