"""Typed surface of the compiled module frameseek._native (see native/bindings)."""

def simd_level() -> str: ...
def compiled_simd_levels() -> list[str]: ...
def supported_simd_levels() -> list[str]: ...

# --- frame-vote aggregation (aggregate work stream; native/bindings/bind_aggregate.cpp) ---------
from typing import TypedDict

import numpy as np
import numpy.typing as npt

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
