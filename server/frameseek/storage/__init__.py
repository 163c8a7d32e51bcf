"""Durable storage of collections, videos, samples and vectors (see base.Storage for the interface)."""
from .base import (MAX_SAMPLES_PER_VIDEO, SAMPLE_BITS, AlreadyExists, CollectionRecord, FailedPrecondition,
                   InvalidArgument, JobRecord, JobState, NotFound, ResourceExhausted, Storage, StorageError,
                   VideoQuery, VideoRecord, sample_ids, split_sample_ids)
from .embedded import EmbeddedStorage

__all__ = ["MAX_SAMPLES_PER_VIDEO", "SAMPLE_BITS", "AlreadyExists", "CollectionRecord", "EmbeddedStorage",
           "FailedPrecondition", "InvalidArgument", "JobRecord", "JobState", "NotFound", "ResourceExhausted", "Storage",
           "StorageError", "VideoQuery", "VideoRecord", "sample_ids", "split_sample_ids"]
