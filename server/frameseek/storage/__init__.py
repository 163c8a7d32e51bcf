"""Durable storage of collections, videos, samples and vectors (see base.Storage for the interface)."""

from .base import (
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
    VideoQuery,
    VideoRecord,
)
from .embedded import EmbeddedStorage

__all__ = [
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
    "VideoQuery",
    "VideoRecord",
]
