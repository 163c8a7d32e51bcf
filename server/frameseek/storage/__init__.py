"""Durable storage of collections, videos, samples and vectors (see base.Storage for the interface)."""

from .base import (
    TUNED_EF,
    Aborted,
    AlreadyExists,
    CollectionRecord,
    FailedPrecondition,
    InvalidArgument,
    JobRecord,
    JobState,
    ModalityData,
    NewVideo,
    NotFound,
    ResourceExhausted,
    Storage,
    StorageError,
    Unavailable,
    VideoQuery,
    VideoRecord,
)
from .embedded import EmbeddedStorage

__all__ = [
    "TUNED_EF",
    "Aborted",
    "AlreadyExists",
    "CollectionRecord",
    "EmbeddedStorage",
    "FailedPrecondition",
    "InvalidArgument",
    "JobRecord",
    "JobState",
    "ModalityData",
    "NewVideo",
    "NotFound",
    "ResourceExhausted",
    "Storage",
    "StorageError",
    "Unavailable",
    "VideoQuery",
    "VideoRecord",
]
