import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_CORRUPT_MEDIA: _ClassVar[ErrorReason]
    ERROR_REASON_UNSUPPORTED_CODEC: _ClassVar[ErrorReason]
    ERROR_REASON_NO_VIDEO_STREAM: _ClassVar[ErrorReason]
    ERROR_REASON_EMPTY_MEDIA: _ClassVar[ErrorReason]
    ERROR_REASON_RESOLUTION_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_MEDIA_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_MISSING_METADATA: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_ARGUMENT: _ClassVar[ErrorReason]
    ERROR_REASON_DIMENSION_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_NON_FINITE_VECTOR: _ClassVar[ErrorReason]
    ERROR_REASON_COLLECTION_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_VIDEO_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_COLLECTION_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_DUPLICATE_CONTENT: _ClassVar[ErrorReason]
    ERROR_REASON_TOO_MANY_REQUESTS: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_READY: _ClassVar[ErrorReason]
    ERROR_REASON_PATH_NOT_ALLOWED: _ClassVar[ErrorReason]
    ERROR_REASON_COLLECTION_NOT_EMPTY: _ClassVar[ErrorReason]
    ERROR_REASON_DEFAULT_COLLECTION: _ClassVar[ErrorReason]
    ERROR_REASON_CHUNK_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_DECODE_TIMEOUT: _ClassVar[ErrorReason]
    ERROR_REASON_ZERO_DURATION: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_MEDIA: _ClassVar[ErrorReason]
    ERROR_REASON_DURATION_TOO_LONG: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_INTERRUPTED: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_DISK_FULL: _ClassVar[ErrorReason]
    ERROR_REASON_UPLOAD_IDLE: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_INGEST_LEASE_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_NO_FACE: _ClassVar[ErrorReason]
    ERROR_REASON_PERSON_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_MODALITY_NOT_ENABLED: _ClassVar[ErrorReason]
    ERROR_REASON_NO_AUDIO_STREAM: _ClassVar[ErrorReason]
    ERROR_REASON_AUDIO_TOO_SHORT: _ClassVar[ErrorReason]
    ERROR_REASON_NO_MODEL: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_OWN_VECTORS: _ClassVar[ErrorReason]

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]
    METRIC_L2: _ClassVar[Metric]

class MediaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEDIA_KIND_UNSPECIFIED: _ClassVar[MediaKind]
    MEDIA_KIND_VIDEO: _ClassVar[MediaKind]
    MEDIA_KIND_IMAGE: _ClassVar[MediaKind]
    MEDIA_KIND_ITEM: _ClassVar[MediaKind]

class VideoState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIDEO_STATE_UNSPECIFIED: _ClassVar[VideoState]
    VIDEO_STATE_ACTIVE: _ClassVar[VideoState]
    VIDEO_STATE_DAMAGED: _ClassVar[VideoState]

class DuplicatePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DUPLICATE_POLICY_UNSPECIFIED: _ClassVar[DuplicatePolicy]
    DUPLICATE_POLICY_ALLOW: _ClassVar[DuplicatePolicy]
    DUPLICATE_POLICY_REPORT: _ClassVar[DuplicatePolicy]
    DUPLICATE_POLICY_REJECT: _ClassVar[DuplicatePolicy]

class IngestJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_JOB_STATE_UNSPECIFIED: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_QUEUED: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_RUNNING: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_SUCCEEDED: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_FAILED: _ClassVar[IngestJobState]

class RegionSearch(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGION_SEARCH_UNSPECIFIED: _ClassVar[RegionSearch]
    REGION_SEARCH_OFF: _ClassVar[RegionSearch]
    REGION_SEARCH_AUTO: _ClassVar[RegionSearch]
    REGION_SEARCH_ON: _ClassVar[RegionSearch]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_CORRUPT_MEDIA: ErrorReason
ERROR_REASON_UNSUPPORTED_CODEC: ErrorReason
ERROR_REASON_NO_VIDEO_STREAM: ErrorReason
ERROR_REASON_EMPTY_MEDIA: ErrorReason
ERROR_REASON_RESOLUTION_TOO_LARGE: ErrorReason
ERROR_REASON_MEDIA_TOO_LARGE: ErrorReason
ERROR_REASON_MISSING_METADATA: ErrorReason
ERROR_REASON_INVALID_ARGUMENT: ErrorReason
ERROR_REASON_DIMENSION_MISMATCH: ErrorReason
ERROR_REASON_NON_FINITE_VECTOR: ErrorReason
ERROR_REASON_COLLECTION_NOT_FOUND: ErrorReason
ERROR_REASON_VIDEO_NOT_FOUND: ErrorReason
ERROR_REASON_JOB_NOT_FOUND: ErrorReason
ERROR_REASON_COLLECTION_EXISTS: ErrorReason
ERROR_REASON_DUPLICATE_CONTENT: ErrorReason
ERROR_REASON_TOO_MANY_REQUESTS: ErrorReason
ERROR_REASON_NOT_READY: ErrorReason
ERROR_REASON_PATH_NOT_ALLOWED: ErrorReason
ERROR_REASON_COLLECTION_NOT_EMPTY: ErrorReason
ERROR_REASON_DEFAULT_COLLECTION: ErrorReason
ERROR_REASON_CHUNK_TOO_LARGE: ErrorReason
ERROR_REASON_DECODE_TIMEOUT: ErrorReason
ERROR_REASON_ZERO_DURATION: ErrorReason
ERROR_REASON_NOT_MEDIA: ErrorReason
ERROR_REASON_DURATION_TOO_LONG: ErrorReason
ERROR_REASON_MODEL_UNAVAILABLE: ErrorReason
ERROR_REASON_INTERRUPTED: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_PERMISSION_DENIED: ErrorReason
ERROR_REASON_DISK_FULL: ErrorReason
ERROR_REASON_UPLOAD_IDLE: ErrorReason
ERROR_REASON_BACKEND_UNAVAILABLE: ErrorReason
ERROR_REASON_INGEST_LEASE_EXPIRED: ErrorReason
ERROR_REASON_NO_FACE: ErrorReason
ERROR_REASON_PERSON_NOT_FOUND: ErrorReason
ERROR_REASON_MODALITY_NOT_ENABLED: ErrorReason
ERROR_REASON_NO_AUDIO_STREAM: ErrorReason
ERROR_REASON_AUDIO_TOO_SHORT: ErrorReason
ERROR_REASON_NO_MODEL: ErrorReason
ERROR_REASON_NOT_OWN_VECTORS: ErrorReason
METRIC_UNSPECIFIED: Metric
METRIC_COSINE: Metric
METRIC_L2: Metric
MEDIA_KIND_UNSPECIFIED: MediaKind
MEDIA_KIND_VIDEO: MediaKind
MEDIA_KIND_IMAGE: MediaKind
MEDIA_KIND_ITEM: MediaKind
VIDEO_STATE_UNSPECIFIED: VideoState
VIDEO_STATE_ACTIVE: VideoState
VIDEO_STATE_DAMAGED: VideoState
DUPLICATE_POLICY_UNSPECIFIED: DuplicatePolicy
DUPLICATE_POLICY_ALLOW: DuplicatePolicy
DUPLICATE_POLICY_REPORT: DuplicatePolicy
DUPLICATE_POLICY_REJECT: DuplicatePolicy
INGEST_JOB_STATE_UNSPECIFIED: IngestJobState
INGEST_JOB_STATE_QUEUED: IngestJobState
INGEST_JOB_STATE_RUNNING: IngestJobState
INGEST_JOB_STATE_SUCCEEDED: IngestJobState
INGEST_JOB_STATE_FAILED: IngestJobState
REGION_SEARCH_UNSPECIFIED: RegionSearch
REGION_SEARCH_OFF: RegionSearch
REGION_SEARCH_AUTO: RegionSearch
REGION_SEARCH_ON: RegionSearch

class SamplingSettings(_message.Message):
    __slots__ = ("fps", "keep_blank_frames", "dedup_threshold", "keyframes_only")
    FPS_FIELD_NUMBER: _ClassVar[int]
    KEEP_BLANK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    DEDUP_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    KEYFRAMES_ONLY_FIELD_NUMBER: _ClassVar[int]
    fps: float
    keep_blank_frames: bool
    dedup_threshold: float
    keyframes_only: bool
    def __init__(self, fps: _Optional[float] = ..., keep_blank_frames: _Optional[bool] = ..., dedup_threshold: _Optional[float] = ..., keyframes_only: _Optional[bool] = ...) -> None: ...

class IndexSettings(_message.Message):
    __slots__ = ("m", "ef_construction", "ef_search", "target_recall", "layer0_links")
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    TARGET_RECALL_FIELD_NUMBER: _ClassVar[int]
    LAYER0_LINKS_FIELD_NUMBER: _ClassVar[int]
    m: int
    ef_construction: int
    ef_search: int
    target_recall: float
    layer0_links: int
    def __init__(self, m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef_search: _Optional[int] = ..., target_recall: _Optional[float] = ..., layer0_links: _Optional[int] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "description", "model", "dimension", "metric", "sampling", "index", "video_count", "sample_count", "create_time", "is_default", "faces", "audio", "own_vectors", "vector_dimension")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VIDEO_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    OWN_VECTORS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    model: str
    dimension: int
    metric: Metric
    sampling: SamplingSettings
    index: IndexSettings
    video_count: int
    sample_count: int
    create_time: _timestamp_pb2.Timestamp
    is_default: bool
    faces: bool
    audio: bool
    own_vectors: bool
    vector_dimension: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., model: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., sampling: _Optional[_Union[SamplingSettings, _Mapping]] = ..., index: _Optional[_Union[IndexSettings, _Mapping]] = ..., video_count: _Optional[int] = ..., sample_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., is_default: _Optional[bool] = ..., faces: _Optional[bool] = ..., audio: _Optional[bool] = ..., own_vectors: _Optional[bool] = ..., vector_dimension: _Optional[int] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("collection_id", "collection")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection_id: str
    collection: Collection
    def __init__(self, collection_id: _Optional[str] = ..., collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class Video(_message.Message):
    __slots__ = ("name", "external_key", "labels", "kind", "duration_seconds", "width", "height", "sample_count", "size_bytes", "content_sha256", "filename", "create_time", "model", "ingest_realtime_factor", "state", "audio_seconds")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INGEST_REALTIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    external_key: str
    labels: _containers.ScalarMap[str, str]
    kind: MediaKind
    duration_seconds: float
    width: int
    height: int
    sample_count: int
    size_bytes: int
    content_sha256: str
    filename: str
    create_time: _timestamp_pb2.Timestamp
    model: str
    ingest_realtime_factor: float
    state: VideoState
    audio_seconds: float
    def __init__(self, name: _Optional[str] = ..., external_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., kind: _Optional[_Union[MediaKind, str]] = ..., duration_seconds: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., sample_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., content_sha256: _Optional[str] = ..., filename: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[str] = ..., ingest_realtime_factor: _Optional[float] = ..., state: _Optional[_Union[VideoState, str]] = ..., audio_seconds: _Optional[float] = ...) -> None: ...

class IngestMetadata(_message.Message):
    __slots__ = ("parent", "external_key", "labels", "request_id", "filename", "server_path", "size_bytes", "duplicate_policy", "duplicate_threshold", "return_job")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARENT_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_POLICY_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RETURN_JOB_FIELD_NUMBER: _ClassVar[int]
    parent: str
    external_key: str
    labels: _containers.ScalarMap[str, str]
    request_id: str
    filename: str
    server_path: str
    size_bytes: int
    duplicate_policy: DuplicatePolicy
    duplicate_threshold: float
    return_job: bool
    def __init__(self, parent: _Optional[str] = ..., external_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., filename: _Optional[str] = ..., server_path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., duplicate_policy: _Optional[_Union[DuplicatePolicy, str]] = ..., duplicate_threshold: _Optional[float] = ..., return_job: _Optional[bool] = ...) -> None: ...

class IngestVideoRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: IngestMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[IngestMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class IngestImageRequest(_message.Message):
    __slots__ = ("metadata", "image")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    metadata: IngestMetadata
    image: bytes
    def __init__(self, metadata: _Optional[_Union[IngestMetadata, _Mapping]] = ..., image: _Optional[bytes] = ...) -> None: ...

class IngestVideoResponse(_message.Message):
    __slots__ = ("video", "job", "already_exists", "copies")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    ALREADY_EXISTS_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    video: Video
    job: IngestJob
    already_exists: bool
    copies: _containers.RepeatedCompositeFieldContainer[VideoCopyMatch]
    def __init__(self, video: _Optional[_Union[Video, _Mapping]] = ..., job: _Optional[_Union[IngestJob, _Mapping]] = ..., already_exists: _Optional[bool] = ..., copies: _Optional[_Iterable[_Union[VideoCopyMatch, _Mapping]]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class IngestJob(_message.Message):
    __slots__ = ("name", "state", "collection", "samples_done", "samples_total", "progress", "estimated_seconds_remaining", "video", "error", "create_time", "update_time", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_DONE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SECONDS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: IngestJobState
    collection: str
    samples_done: int
    samples_total: int
    progress: float
    estimated_seconds_remaining: float
    video: str
    error: JobError
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[IngestJobState, str]] = ..., collection: _Optional[str] = ..., samples_done: _Optional[int] = ..., samples_total: _Optional[int] = ..., progress: _Optional[float] = ..., estimated_seconds_remaining: _Optional[float] = ..., video: _Optional[str] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetIngestJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchIngestJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SearchFilter(_message.Message):
    __slots__ = ("labels", "videos", "exclude_videos")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_VIDEOS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    videos: _containers.RepeatedScalarFieldContainer[str]
    exclude_videos: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., videos: _Optional[_Iterable[str]] = ..., exclude_videos: _Optional[_Iterable[str]] = ...) -> None: ...

class FrameMatch(_message.Message):
    __slots__ = ("timestamp_seconds", "score")
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    timestamp_seconds: float
    score: float
    def __init__(self, timestamp_seconds: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class VideoHit(_message.Message):
    __slots__ = ("video", "score", "matches")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    video: Video
    score: float
    matches: _containers.RepeatedCompositeFieldContainer[FrameMatch]
    def __init__(self, video: _Optional[_Union[Video, _Mapping]] = ..., score: _Optional[float] = ..., matches: _Optional[_Iterable[_Union[FrameMatch, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "model")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[VideoHit]
    model: str
    def __init__(self, hits: _Optional[_Iterable[_Union[VideoHit, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class SearchOptions(_message.Message):
    __slots__ = ("k", "min_score", "max_matches_per_video", "ef", "filter")
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_MATCHES_PER_VIDEO_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    k: int
    min_score: float
    max_matches_per_video: int
    ef: int
    filter: SearchFilter
    def __init__(self, k: _Optional[int] = ..., min_score: _Optional[float] = ..., max_matches_per_video: _Optional[int] = ..., ef: _Optional[int] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ...) -> None: ...

class SearchByImageRequest(_message.Message):
    __slots__ = ("parent", "image", "options")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    image: bytes
    options: SearchOptions
    def __init__(self, parent: _Optional[str] = ..., image: _Optional[bytes] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class SearchByVectorRequest(_message.Message):
    __slots__ = ("parent", "vector", "options")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    options: SearchOptions
    def __init__(self, parent: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class VideoQuery(_message.Message):
    __slots__ = ("parent", "k", "min_score", "frame_k", "filter", "server_path", "fps", "region_search")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    FRAME_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    REGION_SEARCH_FIELD_NUMBER: _ClassVar[int]
    parent: str
    k: int
    min_score: float
    frame_k: int
    filter: SearchFilter
    server_path: str
    fps: float
    region_search: RegionSearch
    def __init__(self, parent: _Optional[str] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., frame_k: _Optional[int] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., server_path: _Optional[str] = ..., fps: _Optional[float] = ..., region_search: _Optional[_Union[RegionSearch, str]] = ...) -> None: ...

class SearchByVideoRequest(_message.Message):
    __slots__ = ("query", "chunk")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    query: VideoQuery
    chunk: bytes
    def __init__(self, query: _Optional[_Union[VideoQuery, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class AlignedSegment(_message.Message):
    __slots__ = ("query_start_seconds", "query_end_seconds", "reference_start_seconds", "reference_end_seconds", "score")
    QUERY_START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    query_start_seconds: float
    query_end_seconds: float
    reference_start_seconds: float
    reference_end_seconds: float
    score: float
    def __init__(self, query_start_seconds: _Optional[float] = ..., query_end_seconds: _Optional[float] = ..., reference_start_seconds: _Optional[float] = ..., reference_end_seconds: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class VideoCopyMatch(_message.Message):
    __slots__ = ("video", "score", "query_coverage", "reference_coverage", "offset_seconds", "speed", "segments", "frame_score", "audio_score", "audio_segments")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    QUERY_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    FRAME_SCORE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SCORE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    video: Video
    score: float
    query_coverage: float
    reference_coverage: float
    offset_seconds: float
    speed: float
    segments: _containers.RepeatedCompositeFieldContainer[AlignedSegment]
    frame_score: float
    audio_score: float
    audio_segments: _containers.RepeatedCompositeFieldContainer[AlignedSegment]
    def __init__(self, video: _Optional[_Union[Video, _Mapping]] = ..., score: _Optional[float] = ..., query_coverage: _Optional[float] = ..., reference_coverage: _Optional[float] = ..., offset_seconds: _Optional[float] = ..., speed: _Optional[float] = ..., segments: _Optional[_Iterable[_Union[AlignedSegment, _Mapping]]] = ..., frame_score: _Optional[float] = ..., audio_score: _Optional[float] = ..., audio_segments: _Optional[_Iterable[_Union[AlignedSegment, _Mapping]]] = ...) -> None: ...

class SearchByVideoResponse(_message.Message):
    __slots__ = ("matches", "query_duration_seconds", "query_samples", "model")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    QUERY_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[VideoCopyMatch]
    query_duration_seconds: float
    query_samples: int
    model: str
    def __init__(self, matches: _Optional[_Iterable[_Union[VideoCopyMatch, _Mapping]]] = ..., query_duration_seconds: _Optional[float] = ..., query_samples: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class AudioQuery(_message.Message):
    __slots__ = ("parent", "k", "min_score", "filter", "server_path")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    parent: str
    k: int
    min_score: float
    filter: SearchFilter
    server_path: str
    def __init__(self, parent: _Optional[str] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., server_path: _Optional[str] = ...) -> None: ...

class SearchByAudioRequest(_message.Message):
    __slots__ = ("query", "chunk")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    query: AudioQuery
    chunk: bytes
    def __init__(self, query: _Optional[_Union[AudioQuery, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class AudioMatch(_message.Message):
    __slots__ = ("video", "score", "query_start_seconds", "reference_start_seconds", "duration_seconds", "offset_seconds", "bit_error_rate")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    QUERY_START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BIT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    video: Video
    score: float
    query_start_seconds: float
    reference_start_seconds: float
    duration_seconds: float
    offset_seconds: float
    bit_error_rate: float
    def __init__(self, video: _Optional[_Union[Video, _Mapping]] = ..., score: _Optional[float] = ..., query_start_seconds: _Optional[float] = ..., reference_start_seconds: _Optional[float] = ..., duration_seconds: _Optional[float] = ..., offset_seconds: _Optional[float] = ..., bit_error_rate: _Optional[float] = ...) -> None: ...

class SearchByAudioResponse(_message.Message):
    __slots__ = ("matches", "query_duration_seconds", "query_fingerprints")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    QUERY_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[AudioMatch]
    query_duration_seconds: float
    query_fingerprints: int
    def __init__(self, matches: _Optional[_Iterable[_Union[AudioMatch, _Mapping]]] = ..., query_duration_seconds: _Optional[float] = ..., query_fingerprints: _Optional[int] = ...) -> None: ...

class ItemVector(_message.Message):
    __slots__ = ("values", "timestamp_seconds")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamp_seconds: float
    def __init__(self, values: _Optional[_Iterable[float]] = ..., timestamp_seconds: _Optional[float] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("name", "external_key", "vectors", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_KEY_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    external_key: str
    vectors: _containers.RepeatedCompositeFieldContainer[ItemVector]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., external_key: _Optional[str] = ..., vectors: _Optional[_Iterable[_Union[ItemVector, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertItemsHeader(_message.Message):
    __slots__ = ("parent", "return_names")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    RETURN_NAMES_FIELD_NUMBER: _ClassVar[int]
    parent: str
    return_names: bool
    def __init__(self, parent: _Optional[str] = ..., return_names: _Optional[bool] = ...) -> None: ...

class ItemBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("header", "batch")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    header: UpsertItemsHeader
    batch: ItemBatch
    def __init__(self, header: _Optional[_Union[UpsertItemsHeader, _Mapping]] = ..., batch: _Optional[_Union[ItemBatch, _Mapping]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("item_count", "vector_count", "replaced_count", "names")
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLACED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    item_count: int
    vector_count: int
    replaced_count: int
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_count: _Optional[int] = ..., vector_count: _Optional[int] = ..., replaced_count: _Optional[int] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("parent", "names", "external_keys")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_KEYS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    names: _containers.RepeatedScalarFieldContainer[str]
    external_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, parent: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., external_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted_count", "not_found_count")
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    not_found_count: int
    def __init__(self, deleted_count: _Optional[int] = ..., not_found_count: _Optional[int] = ...) -> None: ...

class GetVideoRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListVideosRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "labels", "content_sha256", "external_key")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_KEY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    labels: _containers.ScalarMap[str, str]
    content_sha256: str
    external_key: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., content_sha256: _Optional[str] = ..., external_key: _Optional[str] = ...) -> None: ...

class ListVideosResponse(_message.Message):
    __slots__ = ("videos", "next_page_token", "total_size")
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    videos: _containers.RepeatedCompositeFieldContainer[Video]
    next_page_token: str
    total_size: int
    def __init__(self, videos: _Optional[_Iterable[_Union[Video, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class DeleteVideoRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectionStats(_message.Message):
    __slots__ = ("collection", "video_count", "sample_count", "total_duration_seconds", "index_vectors", "measured_recall", "measured_recall_lower", "recall_samples", "search_ef", "unlinked_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VIDEO_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MEASURED_RECALL_FIELD_NUMBER: _ClassVar[int]
    MEASURED_RECALL_LOWER_FIELD_NUMBER: _ClassVar[int]
    RECALL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEARCH_EF_FIELD_NUMBER: _ClassVar[int]
    UNLINKED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    video_count: int
    sample_count: int
    total_duration_seconds: float
    index_vectors: int
    measured_recall: float
    measured_recall_lower: float
    recall_samples: int
    search_ef: int
    unlinked_vectors: int
    def __init__(self, collection: _Optional[str] = ..., video_count: _Optional[int] = ..., sample_count: _Optional[int] = ..., total_duration_seconds: _Optional[float] = ..., index_vectors: _Optional[int] = ..., measured_recall: _Optional[float] = ..., measured_recall_lower: _Optional[float] = ..., recall_samples: _Optional[int] = ..., search_ef: _Optional[int] = ..., unlinked_vectors: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("version", "uptime_seconds", "collections", "video_count", "sample_count", "storage_bytes", "active_ingests", "copy_threshold", "simd_level", "insecure", "recovery_problems", "audio_threshold", "audio_fingerprints")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_INGESTS_FIELD_NUMBER: _ClassVar[int]
    COPY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SIMD_LEVEL_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_seconds: float
    collections: _containers.RepeatedCompositeFieldContainer[CollectionStats]
    video_count: int
    sample_count: int
    storage_bytes: int
    active_ingests: int
    copy_threshold: float
    simd_level: str
    insecure: bool
    recovery_problems: _containers.RepeatedScalarFieldContainer[str]
    audio_threshold: float
    audio_fingerprints: int
    def __init__(self, version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., collections: _Optional[_Iterable[_Union[CollectionStats, _Mapping]]] = ..., video_count: _Optional[int] = ..., sample_count: _Optional[int] = ..., storage_bytes: _Optional[int] = ..., active_ingests: _Optional[int] = ..., copy_threshold: _Optional[float] = ..., simd_level: _Optional[str] = ..., insecure: _Optional[bool] = ..., recovery_problems: _Optional[_Iterable[str]] = ..., audio_threshold: _Optional[float] = ..., audio_fingerprints: _Optional[int] = ...) -> None: ...

class FaceBox(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class SearchByFaceRequest(_message.Message):
    __slots__ = ("parent", "image", "face", "options")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    image: bytes
    face: FaceBox
    options: SearchOptions
    def __init__(self, parent: _Optional[str] = ..., image: _Optional[bytes] = ..., face: _Optional[_Union[FaceBox, _Mapping]] = ..., options: _Optional[_Union[SearchOptions, _Mapping]] = ...) -> None: ...

class FaceAppearance(_message.Message):
    __slots__ = ("start_seconds", "end_seconds", "timestamp_seconds", "box", "score", "person", "person_display_name")
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    PERSON_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    start_seconds: float
    end_seconds: float
    timestamp_seconds: float
    box: FaceBox
    score: float
    person: str
    person_display_name: str
    def __init__(self, start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., timestamp_seconds: _Optional[float] = ..., box: _Optional[_Union[FaceBox, _Mapping]] = ..., score: _Optional[float] = ..., person: _Optional[str] = ..., person_display_name: _Optional[str] = ...) -> None: ...

class FaceVideoHit(_message.Message):
    __slots__ = ("video", "score", "timestamp_seconds", "box", "appearances", "person", "person_display_name")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    APPEARANCES_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    PERSON_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    video: Video
    score: float
    timestamp_seconds: float
    box: FaceBox
    appearances: _containers.RepeatedCompositeFieldContainer[FaceAppearance]
    person: str
    person_display_name: str
    def __init__(self, video: _Optional[_Union[Video, _Mapping]] = ..., score: _Optional[float] = ..., timestamp_seconds: _Optional[float] = ..., box: _Optional[_Union[FaceBox, _Mapping]] = ..., appearances: _Optional[_Iterable[_Union[FaceAppearance, _Mapping]]] = ..., person: _Optional[str] = ..., person_display_name: _Optional[str] = ...) -> None: ...

class FaceSearchResult(_message.Message):
    __slots__ = ("query_face", "hits")
    QUERY_FACE_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    query_face: FaceBox
    hits: _containers.RepeatedCompositeFieldContainer[FaceVideoHit]
    def __init__(self, query_face: _Optional[_Union[FaceBox, _Mapping]] = ..., hits: _Optional[_Iterable[_Union[FaceVideoHit, _Mapping]]] = ...) -> None: ...

class SearchByFaceResponse(_message.Message):
    __slots__ = ("results", "face_model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FACE_MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FaceSearchResult]
    face_model: str
    def __init__(self, results: _Optional[_Iterable[_Union[FaceSearchResult, _Mapping]]] = ..., face_model: _Optional[str] = ...) -> None: ...

class FaceSighting(_message.Message):
    __slots__ = ("video", "timestamp_seconds", "box")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    video: str
    timestamp_seconds: float
    box: FaceBox
    def __init__(self, video: _Optional[str] = ..., timestamp_seconds: _Optional[float] = ..., box: _Optional[_Union[FaceBox, _Mapping]] = ...) -> None: ...

class PersonAppearance(_message.Message):
    __slots__ = ("video", "start_seconds", "end_seconds")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    video: str
    start_seconds: float
    end_seconds: float
    def __init__(self, video: _Optional[str] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("name", "display_name", "video_count", "appearances", "representative")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    VIDEO_COUNT_FIELD_NUMBER: _ClassVar[int]
    APPEARANCES_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    video_count: int
    appearances: _containers.RepeatedCompositeFieldContainer[PersonAppearance]
    representative: FaceSighting
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., video_count: _Optional[int] = ..., appearances: _Optional[_Iterable[_Union[PersonAppearance, _Mapping]]] = ..., representative: _Optional[_Union[FaceSighting, _Mapping]] = ...) -> None: ...

class ListPeopleRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPeopleResponse(_message.Message):
    __slots__ = ("people", "next_page_token")
    PEOPLE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    people: _containers.RepeatedCompositeFieldContainer[Person]
    next_page_token: str
    def __init__(self, people: _Optional[_Iterable[_Union[Person, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetVideoPeopleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetVideoPeopleResponse(_message.Message):
    __slots__ = ("people",)
    PEOPLE_FIELD_NUMBER: _ClassVar[int]
    people: _containers.RepeatedCompositeFieldContainer[Person]
    def __init__(self, people: _Optional[_Iterable[_Union[Person, _Mapping]]] = ...) -> None: ...

class UpdatePersonRequest(_message.Message):
    __slots__ = ("person",)
    PERSON_FIELD_NUMBER: _ClassVar[int]
    person: Person
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ...) -> None: ...
