"""Typed errors for everything that can go wrong between "bytes arrive" and "frames come out".

The server maps `MediaError.reason` onto a gRPC status detail (ErrorInfo.reason), so the reason strings
are part of the public API: add new ones, never rename.
"""

from __future__ import annotations

import enum


class MediaErrorReason(enum.StrEnum):
    """Machine-readable causes of a `MediaError`."""

    EMPTY_MEDIA = "EMPTY_MEDIA"  # zero bytes
    NOT_MEDIA = "NOT_MEDIA"  # bytes that no demuxer recognises (text, random data, ...)
    CORRUPT_MEDIA = "CORRUPT_MEDIA"  # recognised container, but broken / truncated beyond use
    UNSUPPORTED_CODEC = "UNSUPPORTED_CODEC"  # no decoder for the stream's codec
    NO_VIDEO_STREAM = "NO_VIDEO_STREAM"  # e.g. an audio-only file
    RESOLUTION_TOO_LARGE = "RESOLUTION_TOO_LARGE"  # above MediaLimits
    ZERO_DURATION = "ZERO_DURATION"  # a video stream that yields no decodable frame
    DURATION_TOO_LONG = "DURATION_TOO_LONG"  # above MediaLimits.max_duration_s
    DECODE_TIMEOUT = "DECODE_TIMEOUT"  # decoding exceeded MediaLimits.decode_timeout_s
    CANCELLED = "CANCELLED"  # the caller's cancel event was set
    NOT_FOUND = "NOT_FOUND"  # a path that does not exist / cannot be read


class MediaError(Exception):
    """A media input could not be turned into frames.

    `reason` is a `MediaErrorReason` value (a `str`), stable and machine-readable; the message is
    for humans and names the input and the underlying cause.
    """

    def __init__(self, reason: MediaErrorReason | str, message: str) -> None:
        super().__init__(message)
        self.reason: str = str(MediaErrorReason(reason))
        self.message = message

    def __str__(self) -> str:
        return f"[{self.reason}] {self.message}"

    def __reduce__(self):  # keep reason when pickled across processes
        return (type(self), (self.reason, self.message))


class MediaCancelled(MediaError):
    """Raised when the caller's `cancel` event is set; a `MediaError` with reason CANCELLED."""

    def __init__(self, message: str = "media processing was cancelled") -> None:
        super().__init__(MediaErrorReason.CANCELLED, message)

    def __reduce__(self):
        return (type(self), (self.message,))
