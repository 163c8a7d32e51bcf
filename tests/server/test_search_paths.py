"""SearchByVector with one timestamp per video runs a plain frame kNN grouped by video and falls
back to the native group-by search only when the kNN leaves fewer than k videos. Through a real
server process: the videos it returns must be those of the exact float64 reference (best frame per
video) and of the native `search_groups` wherever that one is exact, on data where the kNN alone suffices (videos whose
samples are spread out) and on data where it does not (videos of near-duplicate samples, so the
nearest 4k frames cover only a few videos)."""

from __future__ import annotations

import numpy as np
import pytest

from frameseek.ids import split_sample_ids
from frameseek.storage import EmbeddedStorage, VideoRecord

from .helpers import ServerProcess, needs_index

pytestmark = needs_index
DIM, SAMPLES, K = 32, 30, 10


def _fill(data, rng):
    st = EmbeddedStorage(str(data))
    st.open()
    c = st.create_collection(
        "paths",
        model="sscd_distilled",
        dimension=DIM,
        metric="ip",
        sampling={"fps": 1.0},
        index={"m": 16, "ef_construction": 400, "ef_search": 400},
    )
    vectors = {}
    for i in range(60):
        if i % 2:  # a "static shot": near-duplicate samples around one centre
            v = rng.standard_normal(DIM) + 0.02 * rng.standard_normal((SAMPLES, DIM))
        else:  # unrelated samples
            v = rng.standard_normal((SAMPLES, DIM))
        v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        rec = VideoRecord(
            id=0,
            collection_id=c.id,
            kind="video",
            duration=float(SAMPLES),
            width=64,
            height=48,
            sample_count=SAMPLES,
            size_bytes=1,
            content_sha256=f"{i:064x}",
            external_key=f"v{i}",
        )
        vectors[st.add_video(c.id, rec, np.arange(SAMPLES, dtype=np.float64), v).id] = v
    return st, c, vectors


def test_one_match_per_video_equals_group_search_and_exact(tmp_path):
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    st, c, vectors = _fill(data, rng)
    vids = list(vectors)
    qs = [vectors[vids[i]][5] + 0.1 * rng.standard_normal(DIM).astype(np.float32) for i in range(0, 60, 3)]
    qs += [rng.standard_normal(DIM).astype(np.float32) for _ in range(10)]
    qs = [(q / np.linalg.norm(q)).astype(np.float32) for q in qs]
    allv = np.stack([vectors[v] for v in vids]).astype(np.float64)  # [videos, samples, dim]
    expected, grouped = [], []
    for q in qs:
        best = (allv @ q.astype(np.float64)).max(axis=1)
        expected.append({vids[i]: best[i] for i in np.argsort(-best)[:K]})
        _, gids, gdist = st.search_groups(c.id, q.reshape(1, -1), K)
        grouped.append((split_sample_ids(gids[0])[0].tolist(), 1.0 - gdist[0]))
    st.close()
    srv = ServerProcess(data).start()
    try:
        agree = 0
        with srv.client() as fs:
            for q, exp, grp in zip(qs, expected, grouped):
                r = fs.search_by_vector(q, collection="paths", k=K)
                got = [int(h.video.name.rsplit("/", 1)[1]) for h in r.hits]
                got_scores = np.array([h.score for h in r.hits])
                for h, vid in zip(r.hits, got):  # a reported score is that video's exact best frame
                    assert float((vectors[vid].astype(np.float64) @ q).max()) == pytest.approx(h.score, abs=1e-5)
                # never worse than the native group-by search, place by place
                gvids, gscores = grp
                assert len(got) == len(gvids) == K
                assert (got_scores >= np.sort(gscores)[::-1] - 1e-5).all()
                # both are approximate (HNSW); where the group search finds the exact top k, so must
                # this path (compared by score: two videos may tie at the k-th place)
                if set(gvids) == set(exp):
                    agree += 1
                    np.testing.assert_allclose(got_scores, list(exp.values()), atol=1e-5)
                scores = [h.score for h in r.hits]
                assert scores == sorted(scores, reverse=True)
                for h, vid in zip(r.hits, got):  # the reported timestamp is that video's best frame
                    j = int(np.argmax(vectors[vid].astype(np.float64) @ q.astype(np.float64)))
                    assert h.matches[0].timestamp_seconds == pytest.approx(float(j))
            assert agree >= len(qs) // 2, agree
            # with min_score above every frame of the other videos only the near videos remain
            q = vectors[vids[1]][0]
            r = fs.search_by_vector(q, collection="paths", k=K, min_score=0.9)
            assert [int(h.video.name.rsplit("/", 1)[1]) for h in r.hits] == [vids[1]]
    finally:
        assert srv.stop() == 0, srv.log()
