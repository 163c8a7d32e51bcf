"""Domain errors: what went wrong (an `ErrorCode`), why (a machine-readable reason) and a message.

The service raises `ServiceError`; it never sees a transport. The API layer maps it, in one place
(frameseek/api/status.py), onto a gRPC status with a google.rpc.ErrorInfo detail (reason, domain
and metadata). `ErrorCode` uses the numbers of google.rpc.Code, so a code stored with a failed job
means the same thing in every front end.
"""

from __future__ import annotations

import dataclasses
import enum
import errno

DOMAIN = "frameseek.dev"
#: Longest piece of a caller's input that an error message quotes (a name of 8 KB must not come
#: back in a status message or overflow the metadata limit).
MAX_QUOTED = 80


class ErrorCode(enum.IntEnum):
    """Canonical error codes (google.rpc.Code numbers)."""

    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def of(cls, number: int) -> ErrorCode:
        """The code of a stored number (an unknown one reads as INTERNAL)."""
        try:
            return cls(number)
        except ValueError:
            return cls.INTERNAL


@dataclasses.dataclass(frozen=True)
class VideoRef:
    """A video named in an error's metadata; the API layer writes it as its resource name."""

    collection: str
    video_id: int


@dataclasses.dataclass(frozen=True)
class JobRef:
    """An ingest job named in an error's metadata (written as its resource name)."""

    job_id: str


class ServiceError(Exception):
    """Raised by the service layer; the API layer turns it into its protocol's error."""

    def __init__(self, code: ErrorCode, reason: str, message: str, **metadata: object):
        super().__init__(message)
        self.code, self.reason, self.message = ErrorCode(code), reason, message
        #: str values, or VideoRef / JobRef that the API layer writes as resource names
        self.metadata = {k: v if isinstance(v, (VideoRef, JobRef)) else str(v) for k, v in metadata.items()}

    def __str__(self) -> str:
        return f"{self.code.name} [{self.reason}] {self.message}"


def quoted(value: object) -> str:
    """repr() of a caller's input for an error message, cut to MAX_QUOTED characters."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 5] + "...'" + f" ({len(str(value))} chars)"


def invalid(message: str, reason: str = "INVALID_ARGUMENT", **md) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_ARGUMENT, reason, message, **md)


def not_found(message: str, reason: str, **md) -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, reason, message, **md)


def exhausted(message: str, reason: str = "TOO_MANY_REQUESTS", **md) -> ServiceError:
    return ServiceError(ErrorCode.RESOURCE_EXHAUSTED, reason, message, **md)


def unavailable(message: str, reason: str = "NOT_READY", **md) -> ServiceError:
    return ServiceError(ErrorCode.UNAVAILABLE, reason, message, **md)


def failed_precondition(message: str, reason: str, **md) -> ServiceError:
    return ServiceError(ErrorCode.FAILED_PRECONDITION, reason, message, **md)


def permission_denied(message: str, reason: str, **md) -> ServiceError:
    return ServiceError(ErrorCode.PERMISSION_DENIED, reason, message, **md)


# OSError errnos that mean "the disk is full" (also used by storage, which maps SQLite's SQLITE_FULL too)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> ServiceError | None:
    """RESOURCE_EXHAUSTED (reason DISK_FULL) for an OSError of a full disk, else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return exhausted("the server's disk is full; nothing was stored, retry when space is freed", "DISK_FULL")
    return None


# MediaError.reason (frameseek.media) -> code; every other reason is the input's fault
MEDIA_CODES = {
    "DECODE_TIMEOUT": ErrorCode.RESOURCE_EXHAUSTED,
    "DURATION_TOO_LONG": ErrorCode.RESOURCE_EXHAUSTED,
    "RESOLUTION_TOO_LARGE": ErrorCode.INVALID_ARGUMENT,
    "CANCELLED": ErrorCode.CANCELLED,
    "NOT_FOUND": ErrorCode.NOT_FOUND,
}


def from_media_error(exc: Exception, path: str | None = None, shown_as: str = "the upload") -> ServiceError:
    """A MediaError as a ServiceError. Media messages name their input: a server-side `path` is
    replaced by `shown_as`, so that no error reveals where the server keeps files."""
    reason = getattr(exc, "reason", "CORRUPT_MEDIA")
    msg = getattr(exc, "message", None) or str(exc)
    if path:
        msg = msg.replace(path, shown_as)
    return ServiceError(MEDIA_CODES.get(reason, ErrorCode.INVALID_ARGUMENT), reason, msg)
