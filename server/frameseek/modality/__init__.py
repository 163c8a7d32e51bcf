"""Modalities: the seam where a kind of evidence plugs into ingest and search.

A modality answers four questions, and nothing else in the service needs to know its kind:

1. **What it extracts from media** and under which transforms -- `views(purpose)`: the frame
   modality takes every sampled frame (whole, mirrored, coarse ...; `frameseek.pipeline.views`);
   a face modality would take detected face boxes on those frames, an audio one audio windows.
2. **How it embeds** -- `embed(source, embedder, sampling, **kw)` -> `EmbeddedMedia`: timestamps
   and one named vector set per view (`frameseek.pipeline.embed_media` for frames; keyword
   arguments such as `progress`, `cancel`, `limits` or a per-sample callback pass through).
3. **How it is indexed** -- `index_vectors(media)` -> (vectors, twins): the vector sets that go
   into the collection's index beside each other (`frameseek.ids`: vector n + i is the twin of
   sample i), and `collection_flag`: the collection-level setting that turns it on (None: always
   on; faces and audio will be `faces` / `audio`, off by default).
4. **How its matches aggregate over time** -- `match(times, views, index, references, settings,
   **kw)` -> `list[matching.Match]`: per-sample kNN, mapping of hits to (video, time), temporal
   alignment and scoring. For frames this is `frames.copy_search`, the one copy search that the
   server (SearchByVideo, duplicate-on-ingest) and benchmarks/copydetect both run.

`FRAMES` (frames.FrameModality) is the first implementation: the behaviour frameseek has always had.
Layering: a modality composes the pipeline (extraction, embedding) and the matcher (aggregation),
so it sits between the service and those two (pyproject's import-linter contract).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..config import ViewsConfig
    from ..matching import Match, MatchSettings, SearchableIndex
    from ..pipeline import EmbeddedMedia, SamplingSettings, View


class Purpose(enum.Enum):
    """Why media is embedded: each purpose asks only for the views it uses."""

    INDEX = "index"  # IngestVideo / IngestImage: what the collection's index holds
    IMAGE_QUERY = "image_query"  # SearchByImage: one vector per image
    CLIP_QUERY = "clip_query"  # SearchByVideo: every view that helps find a copy


class ReferenceStore(Protocol):
    """The indexed videos as a modality's matcher reads them (the server's storage, or the
    harness's dicts). Both lookups return None for a video that is gone (deleted meanwhile)."""

    def video(self, video: int) -> tuple[np.ndarray, float] | None:
        """(sample times in seconds float64[n], duration in seconds)."""
        ...

    def dense(self, video: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(the samples' stored vectors [n, dim], their twins [n, dim] or None)."""
        ...


class Modality(Protocol):
    name: str
    collection_flag: str | None

    def views(self, purpose: Purpose, cfg: ViewsConfig | None = None) -> tuple[View, ...]: ...

    def embed(self, source: Any, embedder: Any, sampling: SamplingSettings, **kw: Any) -> EmbeddedMedia: ...

    def index_vectors(self, media: EmbeddedMedia) -> tuple[np.ndarray, np.ndarray | None]: ...

    def match(
        self,
        times: np.ndarray,
        views: Sequence[np.ndarray],
        index: SearchableIndex,
        references: ReferenceStore,
        settings: MatchSettings,
        **kw: Any,
    ) -> list[Match]: ...


__all__ = ["Modality", "Purpose", "ReferenceStore"]
