"""Soundtracks: an audio track decoded by PyAV and fingerprinted by Chromaprint in one pass.

Chromaprint (Debian `libchromaprint1`) is called through ctypes for its *raw* fingerprint: one
32-bit sub-fingerprint per `item_duration` seconds (about 0.124 s with the default algorithm),
each summarising the chroma of the audio around it in 16 two-bit classifier outputs. Matching
compares them by bit error rate (`frameseek._native.FingerprintIndex`). The compressed base64
form (AcoustID's) is never built: nothing here needs it.

Audio is resampled by FFmpeg (PyAV's `AudioResampler`) straight to what Chromaprint works in (mono,
signed 16-bit, 11025 Hz; Chromaprint's own resampler costs more) and fed to it in blocks as it
decodes (one ctypes call per ~6 s, not per frame; a long file is never held in memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import threading
from collections.abc import Iterator

import av
import numpy as np

from .decode import _open_container
from .errors import MediaCancelled, MediaError, MediaErrorReason
from .source import MediaLimits, MediaSource, open_source

#: Chromaprint's internal sample rate (algorithm TEST2, its default): item durations count its samples.
CHROMAPRINT_RATE = 11025
#: PCM samples handed to Chromaprint per call (one ctypes call per block rather than per frame)
FEED_SAMPLES = 1 << 16
#: Chromaprint's default algorithm (CHROMAPRINT_ALGORITHM_TEST2), the one AcoustID uses.
CHROMAPRINT_ALGORITHM = 1


def _load_chromaprint() -> ctypes.CDLL:
    name = ctypes.util.find_library("chromaprint") or "libchromaprint.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:  # pragma: no cover - `make setup` installs libchromaprint1
        raise RuntimeError(f"Chromaprint is not installed ({exc}); install Debian's libchromaprint1") from None
    c = ctypes
    lib.chromaprint_new.argtypes, lib.chromaprint_new.restype = [c.c_int], c.c_void_p
    lib.chromaprint_free.argtypes, lib.chromaprint_free.restype = [c.c_void_p], None
    lib.chromaprint_start.argtypes, lib.chromaprint_start.restype = [c.c_void_p, c.c_int, c.c_int], c.c_int
    lib.chromaprint_feed.argtypes, lib.chromaprint_feed.restype = [c.c_void_p, c.c_void_p, c.c_int], c.c_int
    lib.chromaprint_finish.argtypes, lib.chromaprint_finish.restype = [c.c_void_p], c.c_int
    lib.chromaprint_get_raw_fingerprint.argtypes = [c.c_void_p, c.POINTER(c.POINTER(c.c_uint32)), c.POINTER(c.c_int)]
    lib.chromaprint_get_raw_fingerprint.restype = c.c_int
    lib.chromaprint_get_item_duration.argtypes, lib.chromaprint_get_item_duration.restype = [c.c_void_p], c.c_int
    lib.chromaprint_dealloc.argtypes, lib.chromaprint_dealloc.restype = [c.c_void_p], None
    lib.chromaprint_get_version.argtypes, lib.chromaprint_get_version.restype = [], c.c_char_p
    return lib


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def chromaprint() -> ctypes.CDLL:
    """The loaded library (loaded on first use, so importing frameseek never needs it)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _load_chromaprint()
        return _lib


def chromaprint_version() -> str:
    return chromaprint().chromaprint_get_version().decode()


@dataclasses.dataclass(frozen=True)
class Soundtrack:
    """The raw Chromaprint fingerprint of one audio track."""

    values: np.ndarray  # uint32[n]: sub-fingerprints, one per item_duration seconds
    item_duration: float  # seconds between sub-fingerprints
    duration: float  # seconds of audio decoded
    codec: str

    @property
    def times(self) -> np.ndarray:
        """float64[n]: the media time (seconds from the track's start) of each sub-fingerprint."""
        return np.arange(len(self.values), dtype=np.float64) * self.item_duration


class Fingerprinter:
    """One Chromaprint context fed mono s16 PCM at `rate` (usable from any thread, one
    fingerprint at a time)."""

    def __init__(self, rate: int = CHROMAPRINT_RATE) -> None:
        self._lib = chromaprint()
        self.rate = int(rate)
        self._ctx = self._lib.chromaprint_new(CHROMAPRINT_ALGORITHM)
        if not self._ctx:
            raise MemoryError("chromaprint_new failed")
        if not self._lib.chromaprint_start(self._ctx, self.rate, 1):
            self.close()
            raise RuntimeError("chromaprint_start failed")
        self.samples = 0

    def feed(self, pcm: np.ndarray) -> None:
        pcm = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
        if len(pcm) and not self._lib.chromaprint_feed(self._ctx, pcm.ctypes.data, len(pcm)):
            raise RuntimeError("chromaprint_feed failed")
        self.samples += len(pcm)

    def finish(self) -> tuple[np.ndarray, float]:
        """(sub-fingerprints uint32[n], item duration in seconds); closes the context."""
        lib, c = self._lib, ctypes
        try:
            if not lib.chromaprint_finish(self._ctx):
                raise RuntimeError("chromaprint_finish failed")
            # the hop in samples (the _ms variant is rounded to a whole millisecond)
            item = lib.chromaprint_get_item_duration(self._ctx) / CHROMAPRINT_RATE
            ptr, size = c.POINTER(c.c_uint32)(), c.c_int(0)
            if not lib.chromaprint_get_raw_fingerprint(self._ctx, c.byref(ptr), c.byref(size)) or not ptr:
                return np.zeros(0, dtype=np.uint32), item  # too little audio for one item: empty, not an error
            try:
                values = np.ctypeslib.as_array(ptr, shape=(size.value,)).astype(np.uint32) if size.value else None
            finally:
                lib.chromaprint_dealloc(ptr)
            return (values if values is not None else np.zeros(0, dtype=np.uint32)), item
        finally:
            self.close()

    def close(self) -> None:
        if self._ctx:
            self._lib.chromaprint_free(self._ctx)
            self._ctx = None


def fingerprint_pcm(pcm: np.ndarray, rate: int = CHROMAPRINT_RATE) -> np.ndarray:
    """The sub-fingerprints of mono int16 PCM at `rate` (tests, benchmarks)."""
    fp = Fingerprinter(rate)
    fp.feed(pcm)
    return fp.finish()[0]


def _decoded_pcm(container, stream, rate: int, src_name: str, limits: MediaLimits, cancel) -> Iterator[np.ndarray]:
    """Mono s16 PCM at `rate` in blocks of about FEED_SAMPLES."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    consecutive = 0
    decoded = 0
    block: list[np.ndarray] = []
    pending = 0
    for packet in container.demux(stream):
        if cancel is not None and cancel.is_set():
            raise MediaCancelled()
        try:
            frames = packet.decode()
            consecutive = 0
        except av.error.FFmpegError as exc:
            consecutive += 1
            if consecutive > limits.max_consecutive_decode_errors:
                raise MediaError(MediaErrorReason.CORRUPT_MEDIA, f"{src_name}: audio does not decode ({exc})") from None
            continue
        for frame in frames:
            for out in resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1)
                block.append(pcm)
                pending += len(pcm)
        if pending >= FEED_SAMPLES:
            decoded += pending
            limits.check_duration(decoded / rate, src_name)
            yield np.concatenate(block)
            block, pending = [], 0
    for out in resampler.resample(None):  # flush the resampler's delay line
        block.append(out.to_ndarray().reshape(-1))
    if block:
        limits.check_duration((decoded + sum(map(len, block))) / rate, src_name)
        yield np.concatenate(block)


def soundtrack(
    source: MediaSource, limits: MediaLimits | None = None, cancel: threading.Event | None = None
) -> Soundtrack | None:
    """The fingerprint of the first audio track of `source` (a video or an audio file), or None when
    it has no audio track. Bad input raises `MediaError` like the video decoder."""
    limits = limits or MediaLimits()
    src = open_source(source)
    container = _open_container(src)
    try:
        if not container.streams.audio:
            if src.kind == "unknown":  # FFmpeg opens text as a "tty" video: not media to us either
                raise MediaError(MediaErrorReason.NOT_MEDIA, f"{src.name}: not a recognised audio or video format")
            return None
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else "unknown"
        fp = Fingerprinter(CHROMAPRINT_RATE)
        try:
            for pcm in _decoded_pcm(container, stream, CHROMAPRINT_RATE, src.name, limits, cancel):
                fp.feed(pcm)
            samples = fp.samples
            values, item = fp.finish()
        finally:
            fp.close()
        return Soundtrack(values=values, item_duration=item, duration=samples / CHROMAPRINT_RATE, codec=codec)
    finally:
        container.close()


__all__ = [
    "CHROMAPRINT_RATE",
    "Fingerprinter",
    "Soundtrack",
    "chromaprint_version",
    "fingerprint_pcm",
    "soundtrack",
]
