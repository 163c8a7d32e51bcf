"""Sample ids: the one Python definition of how an index vector's id names a video's sample.

A vector id is `video_id << SAMPLE_BITS | vector_index`. A video of n samples holds vectors
0..n-1 (one per sample, in time order) and, when it was indexed with coarse twins
(`Settings.views.index_coarse_scale`), vectors n..2n-1: vector i is then a *twin* of sample i mod n.
`NO_ID` pads search results that have fewer than k neighbours.

Everything in Python that builds or reads sample ids imports this module (storage, the service's
search paths, matching, benchmarks/copydetect). Both numbers are the C++ core's, read from it:
`kNoId` (native/include/frameseek/filter.hpp, `_native.NO_ID`) and `kSampleBits`
(native/include/frameseek/search_directory.hpp, `_native.SAMPLE_BITS`, which the one vector search
uses to map a hit to (video, timestamp)).
"""

from __future__ import annotations

import numpy as np

from frameseek import _native

#: The id of an empty result slot (the native indexes' kNoId, 2**64 - 1).
NO_ID = np.uint64(_native.NO_ID)
SAMPLE_BITS = int(_native.SAMPLE_BITS)
#: Vectors a video may hold in the index (its samples, plus their coarse twins if any).
MAX_SAMPLES_PER_VIDEO = 1 << SAMPLE_BITS
_INDEX_MASK = np.uint64(MAX_SAMPLES_PER_VIDEO - 1)
_BITS = np.uint64(SAMPLE_BITS)


def sample_ids(video_id: int, n: int, first: int = 0) -> np.ndarray:
    """The ids of a video's vectors first..first+n-1 (first = sample count: its coarse twins)."""
    return (np.uint64(video_id) << _BITS) + np.uint64(first) + np.arange(n, dtype=np.uint64)


def sample_id(video_id: int, index: int) -> int:
    """The id of one vector of a video (sample_ids for one, as a Python int)."""
    return (int(video_id) << SAMPLE_BITS) + int(index)


def batch_sample_ids(video_ids, counts) -> np.ndarray:
    """The sample_ids of several videos' vectors 0..count-1, concatenated in order (one array pass
    for a batch instead of one per video)."""
    counts = np.asarray(counts, dtype=np.int64)
    firsts = np.repeat((np.cumsum(counts) - counts).astype(np.uint64), counts)
    videos = np.repeat(np.asarray(video_ids, dtype=np.uint64) << _BITS, counts)
    return videos + (np.arange(int(counts.sum()), dtype=np.uint64) - firsts)


def split_sample_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(video ids uint64, vector indices int64) of sample ids (not NO_ID: mask those first)."""
    ids = np.asarray(ids, dtype=np.uint64)
    return ids >> _BITS, (ids & _INDEX_MASK).astype(np.int64)


def join_sample_ids(video_ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """split_sample_ids' inverse: uint64 ids of (video, vector index) pairs."""
    return (np.asarray(video_ids).astype(np.uint64) << _BITS) | np.asarray(indices).astype(np.uint64)


def sample_of(vector_index, sample_count: int):
    """The sample a vector stands for: itself, or for a coarse twin (index >= sample_count) its
    sample (index mod sample_count). Works on ints and integer arrays."""
    return vector_index % sample_count
