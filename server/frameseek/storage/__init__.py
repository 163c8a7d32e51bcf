"""Durable storage of collections, videos, samples and vectors (see base.Storage for the interface)."""

from .base import (
    ITEM_KIND,
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
from .collection_index import default_layer0_links
from .embedded import EmbeddedStorage

__all__ = [
    "ITEM_KIND",
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
    "default_layer0_links",
]
