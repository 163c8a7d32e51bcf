"""The frame modality: every sampled frame, under declared views; matched as a video copy.

- extracts: the frames on the sampling grid (blank ones dropped), each under the views its
  purpose asks for (`frameseek.pipeline.views`: index = whole + coarse twin, image query = whole
  only, clip query = whole, mirrored, coarse, coarse mirrored, deblocked if set; region crops of
  a query clip come on top when `SamplingSettings.regions` finds an inset);
- embeds: `frameseek.pipeline.embed_media` (one model pass per frame and view);
- indexes: the whole-frame vectors, with the coarse twins beside them (ids n..2n-1);
  always on (no collection flag);
- aggregates: `copy_search` -- kNN of every query view -> twin mapping -> `matching.align`
  (frame votes, temporal alignment, calibrated score) -> `matching.refine_alignment`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import matching
from ..config import VIEWS, ViewsConfig
from ..ids import NO_ID, join_sample_ids, sample_of, split_sample_ids
from ..matching import Match, MatchSettings, SearchableIndex
from ..pipeline import COARSE, EmbeddedMedia, SamplingSettings, View, embed_media, image_query_views, index_views
from ..pipeline import query_views as clip_query_views
from . import Purpose, ReferenceStore

#: copy_search re-places (matching.refine_alignment: tens of ms for a minute-long query) at most
#: this many of the best candidates; a search with a very low threshold and many candidates gets
#: the aligner's placement for the rest instead of that many re-alignments.
MAX_REFINED_MATCHES = 20


def copy_search(
    times: np.ndarray,
    views: Sequence[np.ndarray | None],
    index: SearchableIndex,
    references: ReferenceStore,
    settings: MatchSettings,
    *,
    max_candidates: int,
    query_interval: float | None,
    ref_interval: float | None,
    refine_above: float | None,
    max_refined: int = MAX_REFINED_MATCHES,
    **search_kw: Any,
) -> list[Match]:
    """The videos a query clip copies, best first: the one copy search of the server and the harness.

    1. kNN (`matching.search_views`): `settings.frame_k` neighbours of every query frame in every
       view, in one index call (`search_kw` go to `index.search`), side by side [q, views * k];
       `views[0]` is the whole frame, the rest (mirrored, coarse, crops) are used when they have
       a row per query frame.
    2. Twin mapping: a hit on a coarse twin stands for its sample (`frameseek.ids.sample_of`), so a
       reference frame found through both of its vectors is one frame; hits on videos the
       `references` no longer hold are dropped.
    3. `matching.align`: vote weights, redundancy weights of the whole-frame views, native
       aggregation, calibrated scores; `max_candidates` videos at most.
    4. `matching.refine_alignment` of the candidates scoring at least `refine_above` (the first
       `max_refined`; None = no re-alignment) against the reference's stored vectors and twins:
       moves segments, never changes scores."""
    first = np.asarray(views[0], dtype=np.float32)
    views = [first, *(np.asarray(v, dtype=np.float32) for v in views[1:] if v is not None and len(v) == len(first))]
    ids, sims = matching.search_views(index, views, settings.frame_k, **search_kw)
    valid = ids != NO_ID
    vids, idx = split_sample_ids(np.where(valid, ids, 0))
    ntimes = np.zeros(ids.shape, dtype=np.float64)
    durations: dict[int, float] = {}
    for vid in np.unique(vids[valid]).tolist():
        ref = references.video(vid)
        if ref is None:  # deleted meanwhile
            valid &= vids != vid
            continue
        ts, durations[vid] = ref
        sel = valid & (vids == vid)
        idx[sel] = sample_of(idx[sel], len(ts))  # a coarse twin stands for its sample
        ntimes[sel] = ts[idx[sel]]
    # canonical sample ids: a reference frame found through both of its vectors counts once
    ids = np.ascontiguousarray(np.where(valid, join_sample_ids(vids, idx), NO_ID).astype(np.uint64))
    sims = np.ascontiguousarray(np.where(valid, sims, -1).astype(np.float32))
    groups = np.ascontiguousarray(np.where(valid, vids, NO_ID).astype(np.uint64))
    ms = matching.align(
        times,
        ids,
        groups,
        ntimes,
        sims,
        settings=settings,
        frame_weights=matching.redundancy_weights(first, settings.redundancy_threshold),
        ref_durations=durations,
        query_interval=query_interval,
        ref_interval=ref_interval,
        max_candidates=int(max_candidates),
    )
    if refine_above is None:
        return ms
    out = []
    for rank, m in enumerate(ms):  # best first by the calibrated score
        if m.score >= refine_above and m.segments and rank < max_refined:
            ref, dense = references.video(m.video), references.dense(m.video)
            if ref is not None and dense is not None:
                m = matching.refine_alignment(m, times, views, ref[0], dense[0], settings, ref_twins=dense[1])
        out.append(m)
    return out


class FrameModality:
    """Whole frames (module docstring); `FRAMES` is the instance the service uses."""

    name = "frames"
    collection_flag: str | None = None  # always on

    def views(self, purpose: Purpose, cfg: ViewsConfig | None = None) -> tuple[View, ...]:
        cfg = cfg or VIEWS
        if purpose is Purpose.INDEX:
            return index_views(cfg)
        if purpose is Purpose.IMAGE_QUERY:
            return image_query_views(cfg)
        return clip_query_views(cfg)

    def embed(self, source: Any, embedder: Any, sampling: SamplingSettings, **kw: Any) -> EmbeddedMedia:
        return embed_media(source, embedder, sampling, **kw)

    def index_vectors(self, media: EmbeddedMedia) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole-frame vectors and their coarse twins (None when indexed without them)."""
        return media.vectors, media.sets.get(COARSE)

    def match(
        self,
        times: np.ndarray,
        views: Sequence[np.ndarray],
        index: SearchableIndex,
        references: ReferenceStore,
        settings: MatchSettings,
        **kw: Any,
    ) -> list[Match]:
        return copy_search(times, views, index, references, settings, **kw)


FRAMES = FrameModality()

__all__ = ["FRAMES", "FrameModality", "MAX_REFINED_MATCHES", "copy_search"]
