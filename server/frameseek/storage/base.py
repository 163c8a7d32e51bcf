"""The storage interface the service layer codes against, and its records.

`Storage` is deliberately narrow (collections, atomic video add/delete, vector search, jobs,
idempotency) so that the embedded engine (SQLite catalog + native HNSW index + vector log, see
embedded.py) can later be replaced by a distributed one without touching the service layer.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .people import PeopleTables

# Vectors are stored under sample ids (frameseek.ids: video << SAMPLE_BITS | index). The catalog
# keeps each video's sample timestamps, so a search hit maps to (video, timestamp) without a
# per-sample table lookup.


class StorageError(Exception):
    """Base of storage errors; `reason` is the API's ErrorInfo reason."""

    reason = "INTERNAL"


class NotFound(StorageError):
    def __init__(self, what: str, reason: str):
        super().__init__(what)
        self.reason = reason


class AlreadyExists(StorageError):
    def __init__(self, what: str, reason: str):
        super().__init__(what)
        self.reason = reason


class FailedPrecondition(StorageError):
    def __init__(self, what: str, reason: str):
        super().__init__(what)
        self.reason = reason


class InvalidArgument(StorageError):
    def __init__(self, what: str, reason: str = "INVALID_ARGUMENT"):
        super().__init__(what)
        self.reason = reason


class ResourceExhausted(StorageError):
    """The disk (or another resource storage needs) is full; nothing was written."""

    def __init__(self, what: str, reason: str = "DISK_FULL"):
        super().__init__(what)
        self.reason = reason


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or SQLite's "database or disk is full"."""
    import sqlite3

    from ..errors import DISK_FULL_ERRNOS

    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def checked_videos(
    rec: CollectionRecord, videos: Sequence[NewVideo]
) -> list[tuple[VideoRecord, np.ndarray, np.ndarray, dict[str, ModalityData]]]:
    """What every store checks before it commits a batch (Storage.add_videos): per video (record
    with its sample_count and collection_id as stored, timestamps float64 [n], vectors float32 [n or
    2n, dimension] with the coarse twins appended as vectors n..2n-1, checked extras). The shapes
    are checked per video, the finiteness of the batch's vectors in one array pass (a per-video
    pass cost a one-vector item more than its row); the record is copied only where it differs."""
    from ..ids import MAX_SAMPLES_PER_VIDEO

    dimension, out = rec.dimension, []
    for new in videos:
        vectors = np.ascontiguousarray(new.vectors, dtype=np.float32)
        timestamps = np.ascontiguousarray(new.timestamps, dtype=np.float64)
        n = vectors.shape[0]
        if vectors.ndim != 2 or vectors.shape[1] != dimension:
            raise InvalidArgument(f"vectors must be [n, {dimension}]", "DIMENSION_MISMATCH")
        if timestamps.shape != (n,):
            raise InvalidArgument("one timestamp per vector")
        if n == 0:
            raise InvalidArgument("no samples to index", "EMPTY_MEDIA")
        if new.twins is not None:
            twins = np.ascontiguousarray(new.twins, dtype=np.float32)
            if twins.shape != vectors.shape:
                raise InvalidArgument(f"twins must be [{n}, {dimension}] like vectors", "DIMENSION_MISMATCH")
            # stores hold the twins as the video's vectors n..2n-1 (frameseek.ids.split_sample_ids)
            vectors = np.concatenate([vectors, twins])
        if len(vectors) > MAX_SAMPLES_PER_VIDEO:
            raise InvalidArgument(f"at most {MAX_SAMPLES_PER_VIDEO} vectors per video", "MEDIA_TOO_LARGE")
        video = new.video
        if video.sample_count != n or video.collection_id != rec.id:
            video = dataclasses.replace(video, sample_count=n, collection_id=rec.id)
        out.append((video, timestamps, vectors, checked_extras(rec, new.extras) if new.extras else {}))
    if out and not np.isfinite(np.concatenate([vectors for _, _, vectors, _ in out])).all():
        raise InvalidArgument("non-finite values in vectors", "NON_FINITE_VECTOR")
    return out


def check_modalities(modalities: dict) -> None:
    """create_collection's `modalities`: an indexed one needs a positive dimension and a metric."""
    for modality, spec in modalities.items():
        if "dimension" in spec and (int(spec["dimension"]) <= 0 or spec.get("metric") not in ("ip", "l2")):
            raise InvalidArgument(f"modality {modality!r}: a positive dimension and metric 'ip' or 'l2'")


def checked_extras(rec: CollectionRecord, extras: Mapping[str, ModalityData]) -> dict[str, ModalityData]:
    """A video's data of other modalities (Storage.add_video's `extras`), validated against the
    collection's modalities: what every store checks before it commits them."""
    from ..ids import MAX_SAMPLES_PER_VIDEO

    out = {}
    for name, d in extras.items():
        if name not in rec.modalities:
            raise InvalidArgument(f"collection {rec.name!r} does not have the {name!r} modality")
        times = np.ascontiguousarray(d.times, dtype=np.float64)
        if times.ndim != 1 or not np.isfinite(times).all():
            raise InvalidArgument(f"{name}: times must be a finite float64[n]")
        dimension = rec.modalities[name].get("dimension")
        vectors = d.vectors
        if (vectors is None) != (dimension is None or len(times) == 0):
            raise InvalidArgument(
                f"{name}: " + ("vectors are required" if vectors is None else "this modality stores no vectors")
            )
        if vectors is not None:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            if vectors.shape != (len(times), int(dimension)):
                shape = f"[{len(times)}, {int(dimension)}]"
                raise InvalidArgument(f"{name}: vectors must be {shape}", "DIMENSION_MISMATCH")
            if not np.isfinite(vectors).all():
                raise InvalidArgument(f"{name}: non-finite values in vectors", "NON_FINITE_VECTOR")
        if len(times) > MAX_SAMPLES_PER_VIDEO:
            raise InvalidArgument(f"{name}: at most {MAX_SAMPLES_PER_VIDEO} items per video", "MEDIA_TOO_LARGE")
        out[name] = ModalityData(times=times, vectors=vectors, payload=bytes(d.payload))
    return out


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


#: CollectionRecord.index key of the search breadth the recall monitor tuned (service/recall.py):
#: {"ef": breadth, "floor": ef_search, "target": target recall} (the settings it was tuned under)
TUNED_EF = "tuned_ef"


@dataclasses.dataclass(frozen=True)
class CollectionRecord:
    id: int
    name: str  # the collection id, e.g. "default" (resource name = "collections/" + name)
    model: str
    dimension: int
    metric: str  # "ip" | "l2" (native metric names)
    sampling: dict
    # {"m", "ef_construction", "ef_search", "target_recall", "layer0_links"} as created (layer0_links
    # absent before that setting: their snapshots hold 2 * m, and a graph rebuilt from the vector
    # log takes today's default), and TUNED_EF once the recall monitor tuned the breadth
    # (Storage.save_tuned_ef)
    index: dict
    description: str = ""
    create_time: float = 0.0
    is_default: bool = False
    # modalities beyond frames that are on for this collection, each with its index spec:
    # {"faces": {"dimension": 128, "metric": "l2"}, "audio": {}}; one without a dimension stores
    # no vectors (only ModalityData times + payload). Set at creation, never changed.
    modalities: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class NewVideo:
    """One video of a Storage.add_videos batch (the arguments of add_video)."""

    video: VideoRecord
    timestamps: np.ndarray
    vectors: np.ndarray
    twins: np.ndarray | None = None
    extras: Mapping[str, ModalityData] | None = None


@dataclasses.dataclass(frozen=True)
class ModalityData:
    """What one more modality (faces, audio ...) stores for a video, committed atomically with its
    frame vectors and deleted with it. Items are addressed like samples (frameseek.ids: video <<
    SAMPLE_BITS | item), in the collection's own index for that modality."""

    times: np.ndarray  # float64[n]: the time (s) of each item (a face, a fingerprint frame)
    vectors: np.ndarray | None = None  # float32[n, dimension] when the modality has an index, else None
    payload: bytes = b""  # the modality's own columns, opaque to storage (boxes + tracks, fingerprints)

    def __len__(self) -> int:
        return int(self.times.shape[0])


#: VideoRecord.kind of an own-vector item (UpsertItems). Its content_sha256 names its vectors, not
#: uploaded bytes, so the lookups by content hash (ingest's duplicate check, ListVideos'
#: content_sha256) find media only, and the stores keep items out of their hash index: an item's
#: hash is a random key, and at a million items each commit rewrote index pages all over the file.
ITEM_KIND = "item"


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    id: int
    collection_id: int
    kind: str  # "video" | "image" | ITEM_KIND
    duration: float
    width: int
    height: int
    sample_count: int
    size_bytes: int
    content_sha256: str
    external_key: str = ""
    labels: dict = dataclasses.field(default_factory=dict)
    filename: str = ""
    model: str = ""
    realtime_factor: float = 0.0
    create_time: float = 0.0
    state: str = "active"  # "active" | "damaged" (see catalog.py); only active videos are searched

    @classmethod
    def from_values(cls, values: Sequence) -> VideoRecord:
        """A record from all of its fields' values in order, built ~3x faster than by __init__
        (which sets each field of a frozen dataclass through object.__setattr__): a one-vector item
        builds a record twice per commit, and catalog reads one per row. Still frozen."""
        record = _new_object(cls)
        record.__dict__.update(zip(_VIDEO_FIELDS, values, strict=True))
        return record


_new_object = object.__new__
_VIDEO_FIELDS = tuple(f.name for f in dataclasses.fields(VideoRecord))


@dataclasses.dataclass
class JobRecord:
    id: str
    collection_id: int
    state: JobState
    request_id: str = ""
    samples_done: int = 0
    samples_total: int = 0
    media_seconds_done: float = 0.0
    duration: float = 0.0
    video_id: int | None = None
    error_code: int = 0
    error_reason: str = ""
    error_message: str = ""
    create_time: float = 0.0
    update_time: float = 0.0
    already_exists: bool = False


@dataclasses.dataclass(frozen=True)
class VideoQuery:
    """Catalog query for ListVideos / search filters (all conditions ANDed)."""

    collection_id: int | None = None  # None = every collection
    labels: dict | None = None
    content_sha256: str = ""
    external_key: str = ""


class Storage(Protocol):
    """What the service layer needs from storage. All methods are thread-safe and blocking."""

    #: persons and their face tracks: the catalog's people tables (frameseek.storage.people.
    #: PeopleTables, one SQL on both catalogs, SQLite and PostgreSQL): assign_tracks,
    #: unassigned_videos, track_people, people, person, set_person_name, person_names
    people: PeopleTables

    # collections
    def create_collection(
        self,
        name: str,
        *,
        model: str,
        dimension: int,
        metric: str,
        sampling: dict,
        index: dict,
        description: str = "",
        is_default: bool = False,
        modalities: dict | None = None,
    ) -> CollectionRecord: ...
    def get_collection(self, name: str) -> CollectionRecord: ...
    def collection_by_id(self, collection_id: int) -> CollectionRecord: ...
    def list_collections(self, after: str, limit: int) -> list[CollectionRecord]: ...
    def delete_collection(self, name: str, force: bool) -> None: ...
    def collection_counts(self, collection_id: int) -> tuple[int, int, float]: ...  # videos, samples, seconds
    def default_layer0_links(self, m: int) -> int:
        """The graph's bottom-layer link slots a vector at `m` where a collection asks for none
        (index.layer0_links 0): what this backend builds."""
        ...

    def save_tuned_ef(self, collection_id: int, tuned: dict) -> None:
        """Store the recall monitor's tuned breadth as index[TUNED_EF], durably (a restart starts
        from it); NotFound when the collection is gone."""
        ...

    # videos
    def add_video(
        self,
        collection_id: int,
        video: VideoRecord,
        timestamps: np.ndarray,
        vectors: np.ndarray,
        twins: np.ndarray | None = None,
        *,
        extras: Mapping[str, ModalityData] | None = None,
    ) -> VideoRecord:
        """Atomically and durably index a video; returns it with its id. Visible when this returns.
        `twins` [n, dim]: a second vector of every sample (the coarse view, Settings.
        index_coarse_scale), indexed as vectors n..2n-1 of the video: a search hit on vector i
        means sample i % n. `extras`: the video's data of the collection's other modalities
        (CollectionRecord.modalities), in the same commit; a modality the collection does not
        have is InvalidArgument."""

    def add_videos(self, collection_id: int, videos: Sequence[NewVideo]) -> list[VideoRecord]:
        """Several videos committed together (one durable commit for the batch: all or none),
        each as add_video would; returns them in order with their ids."""
        ...

    def video_extra(self, video_id: int, modality: str) -> ModalityData | None:
        """An active video's data of one modality (with its vectors when the modality has an
        index), or None when the video has none; NotFound when the video is not active."""
        ...

    def find_video_by_hash(self, collection_id: int, sha256: str) -> VideoRecord | None: ...
    def get_video(self, video_id: int) -> VideoRecord: ...
    def video_timestamps(self, video_id: int) -> np.ndarray: ...
    def video_entry(self, video_id: int) -> tuple[VideoRecord, np.ndarray]:
        """get_video and video_timestamps in one call (the search path's hit -> video mapping)."""
        ...

    def video_records(self, limit: int) -> list[VideoRecord]: ...
    def list_videos(self, query: VideoQuery, before_id: int | None, limit: int) -> tuple[list[VideoRecord], int]: ...
    def video_ids(self, query: VideoQuery) -> np.ndarray: ...
    def video_ids_by_key(self, collection_id: int, keys: Sequence[str]) -> dict[str, list[int]]:
        """The active videos of a collection under each of `keys` (external keys; a key without
        any is absent): one lookup for a batch of keys (UpsertItems' replacements)."""
        ...

    def delete_video(self, video_id: int) -> None: ...

    # vectors
    def search(
        self,
        collection_id: int,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        groups: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def search_groups(
        self,
        collection_id: int,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        groups: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def search_extra(
        self,
        collection_id: int,
        modality: str,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        groups: np.ndarray | None = None,
        per_video: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """kNN in the collection's index of `modality`: (ids, distances) like `search`, or with
        per_video the best item of each of the k nearest videos, (videos, ids, distances) like
        `search_groups`; ids are item ids (frameseek.ids: video << SAMPLE_BITS | item)."""
        ...

    def vectors_of(self, collection_id: int) -> int: ...  # vectors in the live index
    def unlinked_vectors(self, collection_id: int) -> int:
        """Vectors acknowledged but not yet linked into the collection's HNSW graph (searchable
        meanwhile): the backlog of decoupled insertion; 0 where the backend has none."""
        ...

    def video_vectors(self, video_id: int) -> np.ndarray:
        """The indexed vectors of an active video, float32[samples, dim] in sample order (rows
        match `video_timestamps`); NotFound when it is not active. For the dense re-alignment of
        SearchByVideo (frameseek.matching.refine_alignment)."""
        ...

    def video_twins(self, video_id: int) -> np.ndarray | None:
        """The coarse twins of an active video's samples (`add_video(twins=...)`), float32[samples,
        dim] in sample order, or None when it was indexed without them; NotFound when it is not
        active."""
        ...

    # jobs + idempotency
    def create_job(self, job: JobRecord) -> JobRecord: ...
    def update_job(self, job: JobRecord) -> None: ...
    def get_job(self, job_id: str) -> JobRecord: ...
    def job_for_request(self, request_id: str) -> JobRecord | None: ...
    def unfinished_jobs(self) -> list[JobRecord]: ...

    # what searches can see, for mirrors of it (the native front end's directory)
    def add_observer(self, observer: StorageObserver) -> None:
        """`observer` is told of every commit, synchronously, before the call that committed returns."""

    def live_collections(self) -> list[tuple[CollectionRecord, object]]:
        """Every open collection's (record, live native index): an observer's starting point
        (add_observer first, then this, so that no commit is missed)."""
        ...

    def video_entries(self) -> list[tuple[VideoRecord, np.ndarray]]:
        """Every active video's (record, sample timestamps)."""
        ...

    # lifecycle
    def snapshot(self) -> None: ...
    def recovery_problems(self) -> list[str]:
        """What the last start found damaged or inconsistent in storage, one sentence each."""
        ...

    def storage_bytes(self) -> int: ...
    def close(self) -> None: ...


class StorageObserver(Protocol):
    """Told of each commit that changes what searches see (Storage.add_observer)."""

    def collection_added(self, rec: CollectionRecord, index: object) -> None: ...
    def collection_removed(self, collection_id: int) -> None: ...
    def video_added(self, rec: VideoRecord, timestamps: np.ndarray) -> None: ...
    def video_removed(self, video_id: int) -> None: ...


class Unavailable(StorageError):
    """An external storage backend (Milvus, PostgreSQL) cannot be reached: nothing was committed."""

    def __init__(self, what: str, reason: str = "BACKEND_UNAVAILABLE"):
        super().__init__(what)
        self.reason = reason


class Aborted(StorageError):
    """The write lost a race it cannot win (a swept pending ingest): nothing was committed."""

    def __init__(self, what: str, reason: str):
        super().__init__(what)
        self.reason = reason
