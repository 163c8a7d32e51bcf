"""What the service's verbs take and return (plain data, no protocol types)."""

from __future__ import annotations

import dataclasses
import math

from ..storage import JobRecord, VideoRecord


@dataclasses.dataclass
class Hit:
    video: VideoRecord
    score: float
    matches: list[tuple[float, float]]  # (timestamp s, score)


@dataclasses.dataclass
class Segment:
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float


@dataclasses.dataclass
class CopyMatch:
    video: VideoRecord
    score: float
    query_coverage: float
    reference_coverage: float
    offset: float
    speed: float
    segments: list[Segment]
    # SearchByVideo's fusion (service/audio.py): each modality's own score (None: that modality
    # found nothing) and the soundtrack's matched stretch; `score` is the fused one
    frame_score: float | None = None
    audio_score: float | None = None
    audio_segments: list[Segment] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class VideoSearchResult:
    matches: list[CopyMatch]
    query_duration: float
    query_samples: int
    model: str


@dataclasses.dataclass
class IngestResult:
    job: JobRecord
    video: VideoRecord | None
    already_exists: bool = False
    copies: list[CopyMatch] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class IngestRequest:
    """What an ingest carries besides the bytes (mirrors IngestMetadata; `collection` is an id)."""

    collection: str = ""  # '' = the default collection
    external_key: str = ""
    labels: dict = dataclasses.field(default_factory=dict)
    request_id: str = ""
    filename: str = ""
    server_path: str = ""
    size_bytes: int = 0
    duplicate_policy: str = "ALLOW"  # ALLOW | REPORT | REJECT
    duplicate_threshold: float = 0.0
    return_job: bool = False


@dataclasses.dataclass
class SearchOptions:
    k: int = 10
    min_score: float = -math.inf
    max_matches_per_video: int = 1
    ef: int = 0
    labels: dict = dataclasses.field(default_factory=dict)
    #: (collection id, video id) pairs: search only these videos / never return these
    videos: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    exclude_videos: list[tuple[str, int]] = dataclasses.field(default_factory=list)
