"""Typed surface of the compiled module frameseek._native (see native/bindings)."""

from collections.abc import Iterable
from typing import Protocol, TypedDict

import numpy as np
import numpy.typing as npt

# ---------------------------------------------------------------------------------------------
# kernels stream: SIMD dispatch, Filter, NO_ID, FlatIndex (native/bindings/bind_distance.cpp,
# bind_flat.cpp). Argument policy: vectors/queries must be numpy float32, C-contiguous, native
# byte order (TypeError for another type or dtype, ValueError for shape/layout/NaN/inf; no silent
# forcecast). ids/groups: any 1-D integer array or sequence, converted losslessly (negative or
# too large -> ValueError, floats/bools -> TypeError). A 1-D query is one query row.
# ---------------------------------------------------------------------------------------------

_IntArrayLike = npt.NDArray[np.integer] | Iterable[int]
_F32 = npt.NDArray[np.float32]
_U64 = npt.NDArray[np.uint64]

NO_ID: int
"""Id (and group) in result slots that have no vector: 2**64 - 1; their distance is +inf."""

def simd_level() -> str: ...
def kernel_simd_levels() -> dict[str, str]:
    """SIMD path per kernel use: 'pair' (HNSW), 'block' (batched flat search), 'scan_one'
    (single-query flat scan: under avx512, avx512 on Intel CPUs and avx2 on others),
    'scan_one_rule' (why scan_one is what it is), and 'int8_dot' (the instructions of the int8
    walk's distances: 'avx512 vnni' where the CPU has it)."""

def _scan_simd_level_for(selected: str, cpu_vendor: str) -> str:
    """Test hook: the scan_one rule alone."""

def compiled_simd_levels() -> list[str]: ...
def supported_simd_levels() -> list[str]: ...
def _distances_for_level(level: str, metric: str, queries: _F32, vectors: _F32, entry: str = "block") -> _F32:
    """Test hook: raw kernel output [nq, n] (squared L2 or plain dot) from one SIMD level.

    float16 ``vectors`` go through the fp16-storage entries."""

def _dot_i8_for_level(level: str, a: npt.NDArray[np.int8], b: npt.NDArray[np.int8]) -> npt.NDArray[np.int32]:
    """Test hook: int8 code inner products from one SIMD level's dot_i8."""

def _float16_roundtrip(x: _F32) -> _F32:
    """Test hook: float32 -> fp16 -> float32 with the conversion FlatIndex(storage='float16') uses."""

class Filter:
    """Keep vectors whose id and group are in the given sets (None = any; sets ANDed). An id set
    searched on an HnswIndex stays mapped onto that index's slots for the filter's next searches
    of it while the index's ids are unchanged: reuse one Filter across searches."""

    def __init__(self, ids: _IntArrayLike | None = None, groups: _IntArrayLike | None = None) -> None: ...
    def allows(self, id: int, group: int) -> bool: ...

class _IndexReads(Protocol):
    """What FlatIndex, HnswIndex and LiveIndex read alike (bind_common.hpp: contains_id, stored_vectors)."""

    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: object) -> bool: ...
    def get_vectors(self, ids: _IntArrayLike) -> _F32:
        """Stored vectors float32[n, dim] of these ids, in their order (as added; a float16
        FlatIndex's rounded to fp16); ValueError on an id that is not in the index."""

class FlatIndex(_IndexReads):
    """Exact index. metric 'ip': distance = 1 - dot; 'l2': squared Euclidean distance.

    storage 'float16' keeps vectors as IEEE fp16 (half the memory, ~2x faster memory-bound
    scans); queries and arithmetic stay float32, vectors must lie within +-65504.
    """

    def __init__(self, dim: int, metric: str = "ip", storage: str = "float32") -> None: ...
    @property
    def storage(self) -> str: ...
    def add(
        self,
        ids: _IntArrayLike,
        vectors: _F32,
        groups: _IntArrayLike | None = None,
    ) -> None:
        """groups default to the ids; duplicate/NO_ID ids or NaN -> ValueError, atomically."""
    def remove(self, ids: _IntArrayLike) -> int:
        """Number of ids that were present."""
    def search(self, queries: _F32, k: int, filter: Filter | None = None, threads: int = 0) -> tuple[_U64, _F32]:
        """(ids [q, k], distances [q, k]) ascending, ties by id; padding NO_ID / +inf."""
    def search_groups(
        self, queries: _F32, k: int, filter: Filter | None = None, threads: int = 0
    ) -> tuple[_U64, _U64, _F32]:
        """Top-k distinct groups: (groups [q, k], best id per group [q, k], distances [q, k])."""

# ---------------------------------------------------------------------------------------------
# hnsw stream: HnswIndex (native/bindings/bind_hnsw.cpp)
# ---------------------------------------------------------------------------------------------

class _GraphSearches(_IndexReads, Protocol):
    """search and search_groups of HnswIndex and LiveIndex (one binding: bind_common.hpp's
    def_graph_searches)."""

    def search(
        self, queries: _F32, k: int, ef: int | None = None, filter: Filter | None = None, threads: int = 0
    ) -> tuple[_U64, _F32]: ...
    def search_groups(
        self, queries: _F32, k: int, ef: int | None = None, filter: Filter | None = None, threads: int = 0
    ) -> tuple[_U64, _U64, _F32]:
        """(groups, best id per group, distance); ef counts distinct groups (None: 16)."""

class HnswIndex(_GraphSearches):
    """Approximate index (hnswlib 0.8 graph on frameseek's kernels); see the runtime docstring.

    Defaults M=32, ef_construction=300, ef=64 hold recall@10 >= 0.99 on video-like data inserted
    video by video (each add() also reinforces the new vectors' in-links).
    """

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        max_elements: int = 1024,
        M: int = 32,
        ef_construction: int = 300,
        seed: int = 100,
        M0: int = 0,
    ) -> None: ...
    @property
    def M(self) -> int: ...
    @property
    def M0(self) -> int:
        """Link slots per node on layer 0 (the M0 given, or hnsw_default_layer0_links(M) for 0)."""
    @property
    def ef_construction(self) -> int: ...
    ef: int  # default search breadth; setting it waits for running searches
    walk_precision: str  # what the graph holds, walks read: 'int8' (default), 'float16', 'float32'; re-ranked exactly
    def store_vectors_in(self, directory: str) -> None:
        """Keep the float32 originals in an unlinked memory-mapped file in `directory` (read on demand)."""
    @property
    def vectors_file_backed(self) -> bool: ...
    @property
    def capacity(self) -> int: ...
    @property
    def deleted_slots(self) -> int: ...
    def add(
        self,
        ids: _IntArrayLike,
        vectors: _F32,
        groups: _IntArrayLike | None = None,
        threads: int = 0,
    ) -> None: ...
    def remove(self, ids: _IntArrayLike) -> int: ...
    def resize(self, max_elements: int) -> None: ...
    def walk_distances(self, queries: _F32, k: int, ef: int | None = None, filter: Filter | None = None) -> _U64:
        """Distance evaluations of each query's layer-0 walk in search(queries, k, ef, filter)."""
    def save(self, path: str) -> None: ...
    def check_mapped_vectors(self) -> str:
        """Check the float32 vectors load mapped from the snapshot against their CRC; '' when intact."""
    @property
    def mapped_vector_bytes(self) -> int:
        """Bytes of the snapshot's float32 vectors mapped from its file (0: none)."""
    def collapse_huge_pages(self) -> int:
        """Move the walk's memory onto 2 MiB pages now (load reads into 4 KiB pages); bytes collapsed."""
    @staticmethod
    def load(path: str, vectors_dir: str | None = None) -> HnswIndex: ...

class LiveIndex(_GraphSearches):
    """A collection's searchable vectors: its HnswIndex (`graph`) and its fresh segment (a
    FlatIndex of the vectors acknowledged but not yet linked into the graph, or None). search,
    search_groups, get_vectors and `in` are HnswIndex's over both parts (merged, each id once)."""

    def __init__(self, graph: HnswIndex, fresh: FlatIndex | None = None) -> None: ...
    @property
    def fresh_size(self) -> int:
        """Vectors waiting in the fresh segment to be linked into the graph."""

# ---------------------------------------------------------------------------------------------
# aggregate stream: aggregate, neighbor_idf_weights, aggregate_speed_grid
# ---------------------------------------------------------------------------------------------
class AlignedSegment(TypedDict):
    query_start: float  # s, first matched query frame
    query_end: float  # s, last matched query frame
    ref_start: float  # s, fitted line at query_start
    ref_end: float  # s, fitted line at query_end
    offset: float  # s: t_ref = offset + speed * t_query
    speed: float  # reference seconds per query second (1.25: query plays 1.25x faster)
    score: float  # [0, 1] matched weight density inside the segment
    frames: int  # one-to-one matched (query frame, reference frame) pairs

class AggregateCandidate(TypedDict):
    video: int  # the neighbours' group
    score: float  # [0, 1]: sum(frame time * weight * similarity) over matched frames / query time
    votes: int  # matched pairs over all segments
    query_coverage: float  # fraction of query time inside segments
    ref_coverage: float | None  # fraction of the reference; None without ref_durations
    segments: list[AlignedSegment]  # disjoint in query time, by query_start

def aggregate(
    query_times: npt.NDArray[np.floating],
    neighbor_ids: npt.NDArray[np.uint64],
    neighbor_groups: npt.NDArray[np.uint64],
    neighbor_times: npt.NDArray[np.floating],
    neighbor_sims: npt.NDArray[np.floating],
    neighbor_weights: npt.NDArray[np.floating] | None = None,
    *,
    ref_durations: dict[int, float] | None = None,
    min_similarity: float = 0.5,
    speed_min: float = 0.5,
    speed_max: float = 2.0,
    speed_step: float = 0.03,
    offset_tolerance: float = 1.0,
    max_gap: float = 3.0,
    min_segment_frames: int = 3,
    min_segment_duration: float = 0.0,
    frame_interval: float | None = None,
    ref_frame_interval: float | None = None,
    max_segments: int = 4,
    max_candidates: int = 20,
    min_score: float = 0.0,
    refine_iterations: int = 10,
    threads: int = 1,
) -> list[AggregateCandidate]: ...
def neighbor_idf_weights(
    neighbor_ids: npt.NDArray[np.uint64],
    neighbor_groups: npt.NDArray[np.uint64],
    neighbor_sims: npt.NDArray[np.floating],
    *,
    min_similarity: float = 0.5,
    margin: float = 0.1,
    free_videos: float = 2.0,
    power: float = 1.0,
) -> npt.NDArray[np.float32]: ...
def aggregate_speed_grid(
    *, speed_min: float = 0.5, speed_max: float = 2.0, speed_step: float = 0.03
) -> list[float]: ...

# ---- the graph's defaults (native/include/frameseek/hnsw_index.hpp HnswParams): new collections' too ----
HNSW_DEFAULT_M: int
HNSW_DEFAULT_EF_CONSTRUCTION: int
HNSW_DEFAULT_EF: int
HNSW_MAX_LAYER0_LINKS: int

def hnsw_default_layer0_links(M: int) -> int:
    """Layer-0 link slots of a graph built with M0 = 0: 3/2 of M, at least 48 (hnswlib's 2 * M where that is fewer)."""

# ---- the vector search (native/include/frameseek/search_directory.hpp) ----
SAMPLE_BITS: int  # sample id = video << SAMPLE_BITS | vector index
MAX_K: int
DEFAULT_K: int
MAX_MATCHES_PER_VIDEO: int
MAX_EF: int
KNN_MISS_SKIP: float
KNN_PROBE_EVERY: int

class SearchDirectory:
    """The server's vector search: collections and videos (kept in step with the storage by
    frameseek.service.search) and nearest_videos(); the native front end answers from it too."""

    ready: bool
    @property
    def video_count(self) -> int: ...
    @property
    def collection_count(self) -> int: ...
    def __init__(self) -> None: ...
    def put_collection(
        self, name: str, id: int, model: str, is_default: bool, index: LiveIndex | HnswIndex | object
    ) -> None:
        """`index`: the collection's LiveIndex (or a bare HnswIndex), or an external engine's kNN (an
        object with `dim`, `metric`, search(query, k, ef, groups) -> (ids, dist) and
        search_groups(query, k, ef, groups) -> (groups, ids, dist), k-long arrays padded with
        2**64-1 / inf; nearest_videos calls it with the GIL taken and lets its exceptions through)."""
    def remove_collection(self, id: int) -> None: ...
    def put_video(self, video_id: int, collection_id: int, timestamps: npt.ArrayLike) -> None: ...
    def put_videos(
        self, video_ids: npt.ArrayLike, collection_ids: npt.ArrayLike, offsets: npt.ArrayLike, timestamps: npt.ArrayLike
    ) -> None:
        """put_video for many videos at once (GIL released): video i has timestamps[offsets[i]:offsets[i + 1]]."""
    def remove_video(self, video_id: int) -> None: ...
    def nearest_videos(
        self,
        collection_id: int,
        query: npt.ArrayLike,
        k: int = 0,
        matches: int = 0,
        min_score: float = 0.0,
        ef: int = 0,
        videos: npt.ArrayLike | None = None,
        exclude: npt.ArrayLike | None = None,
    ) -> list[tuple[int, float, list[tuple[float, float]]]]:
        """Best videos first: (video id, score, [(timestamp, score)] best first). GIL released.
        ValueError (OPTIONS_OUT_OF_RANGE, DIMENSION_MISMATCH, NON_FINITE_VECTOR, ZERO_VECTOR);
        KeyError for an unknown collection id."""
    # the recall monitor's hooks (frameseek.service.recall); KeyError for an unknown collection id
    def set_search_ef(self, collection_id: int, ef: int) -> None:
        """Breadth of the collection's searches that set no ef (0: the index's default)."""
    def search_ef(self, collection_id: int) -> int: ...
    def sample_searches(self, collection_id: int, every: int, capacity: int) -> None:
        """Keep every `every`-th unfiltered search (0 = none), at most `capacity` until taken."""
    def take_sampled_searches(
        self, collection_id: int
    ) -> tuple[list[tuple[npt.NDArray[np.float32], int, float, int, npt.NDArray[np.uint64]]], int]:
        """([(query as searched, k, min_score, ef used, video ids returned)], searches not kept)."""

# ---- native gRPC front end (native/src/front_end/) ----
HAVE_FRONT_END: bool  # built with gRPC C++ (libgrpc++-dev)

class VideoMessages:
    """The serialised frameseek.v1.Video of each active video (the native answers' hit bytes)."""

    ready: bool
    def __init__(self) -> None: ...
    def put(self, video_id: int, collection_id: int, message: bytes) -> None: ...
    def remove(self, video_id: int) -> None: ...
    def remove_collection(self, collection_id: int) -> None: ...
    def __len__(self) -> int: ...

def encode_search_response(hits: list[tuple[bytes, float, list[tuple[float, float]]]], model: str) -> bytes:
    """A serialised SearchResponse of (serialised Video, score, [(timestamp, score)]) hits,
    byte-identical to protobuf's (the search RPCs of both front ends use it)."""

def answer_search_by_vector(directory: SearchDirectory, messages: VideoMessages, request: bytes) -> bytes | None:
    """Serialised SearchByVectorRequest -> serialised SearchResponse; None = passed through
    (label filter, unknown collection, invalid input, not ready). GIL released."""

class FrontEnd:
    """C++ gRPC server: native SearchByVector and Health/Check, every other call passed through to
    the Python service at `backend`. Only when HAVE_FRONT_END."""

    def __init__(
        self,
        address: str,
        backend: str,
        channel_args: list[tuple[str, int]],
        directory: SearchDirectory,
        messages: VideoMessages,
        fast_method: str,
    ) -> None: ...
    def use_tls(self, cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes = b"") -> None:
        """TLS on the public port; a client CA requires and verifies client certificates. Before start()."""
    def set_auth(self, tokens: list[tuple[bytes, int]], method_ranks: dict[str, int]) -> None:
        """Token table: (SHA-256 digest, role rank) pairs and the least rank (0 = open) of each natively
        answered method; replaces the previous one. A call without enough rank is passed through."""
    def start(self) -> int: ...
    def shutdown(self, grace_s: float) -> None: ...
    def set_health(self, service: str, status: int) -> None: ...
    def stats(self) -> dict[str, int | float]: ...

# ---------------------------------------------------------------------------------------------
# audio fingerprints (native/bindings/bind_fingerprint.cpp, native/src/fingerprint/): Chromaprint
# raw sub-fingerprints (uint32) compared by bit error rate; popcount kernels dispatched at run time
# (AVX-512 VPOPCNTDQ / AVX2 / scalar, capped by FRAMESEEK_SIMD). Sub-fingerprints may be any 1-D
# integer array or sequence of values < 2**32 (converted losslessly, like ids).
# ---------------------------------------------------------------------------------------------

def popcount_simd_level() -> str: ...
def supported_popcount_levels() -> list[str]: ...
def _xor_popcount_for_level(level: str, a: _IntArrayLike, b: _IntArrayLike) -> npt.NDArray[np.uint32]:
    """Test hook: popcount(a[i] ^ b[i]) from one SIMD level's kernel."""

def _hamming_for_level(level: str, a: _IntArrayLike, b: _IntArrayLike) -> int:
    """Test hook: the summed popcount(a[i] ^ b[i]) from one SIMD level's kernel."""

def _hamming_rows_for_level(level: str, q: _IntArrayLike, rows: _IntArrayLike) -> npt.NDArray[np.uint32]:
    """Test hook: the Hamming distance of q to each row of the 2-d `rows`, from one SIMD level's
    hamming_blocks kernel (the rows laid out in its blocks of 16 first)."""

class FingerprintMatchParams:
    """How FingerprintIndex.search votes, verifies and places matches (defaults: the core's)."""

    max_results: int  # videos returned at most
    min_votes: int  # postings agreeing on an offset before it is verified
    max_candidates: int  # (video, offset) candidates verified at most
    max_offsets_per_video: int  # of which from one video at most
    window: int  # sub-fingerprints in the sliding bit-error window
    max_window_ber: float  # a window at most this bad belongs to a match
    min_length: int  # shortest match reported, sub-fingerprints
    max_postings: int  # band values more common than this are skipped
    def __init__(self) -> None: ...

class FingerprintMatch(TypedDict):
    video: int
    query_start: int  # sub-fingerprint index in the query
    ref_start: int  # sub-fingerprint index in the video's soundtrack
    length: int  # matched sub-fingerprints
    ber: float  # bit error rate over the matched stretch (0 identical, ~0.5 unrelated)
    votes: int

def verify_fingerprint_offset(
    query: _IntArrayLike, ref: _IntArrayLike, offset: int, params: FingerprintMatchParams = ...
) -> FingerprintMatch | None:
    """The query placed against one reference at `offset` (ref position = query position + offset):
    the longest run of windows with BER <= max_window_ber; None when there is none. `video` is 0."""

class FingerprintIndex:
    """Videos' sub-fingerprints with an inverted index over their two 16-bit bands; thread-safe
    (searches share a lock, add/remove take it alone; none holds the GIL)."""

    def __init__(self) -> None: ...
    def add(self, video: int, fingerprint: _IntArrayLike) -> None:
        """Adds or replaces one video's sub-fingerprints."""
    def remove(self, video: int) -> bool: ...
    def __contains__(self, video: object) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def items(self) -> int:
        """Sub-fingerprints over all videos."""
    def search(self, query: _IntArrayLike, params: FingerprintMatchParams = ...) -> list[FingerprintMatch]:
        """The videos containing the query, most agreeing bits (length x (1 - 2 BER)) first, one
        match per video: band votes -> candidate offsets -> BER verification."""
