"""Service errors: a gRPC status code + a machine-readable reason (google.rpc.ErrorInfo)."""
from __future__ import annotations

import errno

import grpc

DOMAIN = "frameseek.dev"


class ServiceError(Exception):
    """Raised by the service layer; the servicer turns it into google.rpc.Status + ErrorInfo."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, **metadata: object):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.metadata = {k: str(v) for k, v in metadata.items()}

    def __str__(self) -> str:
        return f"{self.code.name} [{self.reason}] {self.message}"


def invalid(message: str, reason: str = "INVALID_ARGUMENT", **md) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, **md)


def not_found(message: str, reason: str, **md) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, reason, message, **md)


def exhausted(message: str, reason: str = "TOO_MANY_REQUESTS", **md) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, reason, message, **md)


def unavailable(message: str, reason: str = "NOT_READY", **md) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, reason, message, **md)


# OSError errnos that mean "the disk is full" (also used by storage, which maps SQLite's SQLITE_FULL too)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> ServiceError | None:
    """RESOURCE_EXHAUSTED (reason DISK_FULL) for an OSError of a full disk, else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return exhausted("the server's disk is full; nothing was stored, retry when space is freed", "DISK_FULL")
    return None


# MediaError.reason (frameseek.media) -> status code
MEDIA_CODES = {
    "DECODE_TIMEOUT": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DURATION_TOO_LONG": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "RESOLUTION_TOO_LARGE": grpc.StatusCode.INVALID_ARGUMENT,
    "CANCELLED": grpc.StatusCode.CANCELLED,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
}


def from_media_error(exc: Exception) -> ServiceError:
    reason = getattr(exc, "reason", "CORRUPT_MEDIA")
    msg = getattr(exc, "message", None) or str(exc)
    return ServiceError(MEDIA_CODES.get(reason, grpc.StatusCode.INVALID_ARGUMENT), reason, msg)
