"""Embedded store vs the scale-out store (Milvus Lite + PostgreSQL), same data, same run.

    python -m benchmarks.scale.bench_scale_out [--n 100000] [--dim 256] [--nq 500] [--k 10]
                                               [--frames-per-video 300] [--ef-construction 100]

Both stores get the same videos (`benchmarks.datasets.video_like`: clustered unit vectors, one
add_video per video, as ingest commits them) and answer the same queries through the server's
one vector search (the native SearchDirectory: frame kNN -> videos, the embedded live index or
Milvus as its KnnSource), one query at a time on one thread, as a SearchByVector call does.
Measured per store:
  ingest        vectors/s through Storage.add_video (commit protocol included: the embedded
                store's fsync'ed vector log; PostgreSQL pending row -> Milvus insert -> activate)
  search        SearchByVector's search: p50 / p99 latency and QPS (sequential), and the frame
                kNN's recall@k against exact search
  clip kNN      the kNN load of one SearchByVideo clip (24 frames x 4 views, frame_k 32 each)
  snapshot      after the ingest: the embedded index snapshot; Milvus: flush (seal the rows into
                indexed segments, what the store's periodic timer asks for)
  restart       close + open (the embedded store loads its snapshot; the scale-out store only
                checks the schema and sweeps: its state is in Milvus and PostgreSQL)
SearchByImage and SearchByVideo add the model's embedding time, identical for both stores, to
these numbers. PostgreSQL runs on a Unix socket and Milvus Lite on loopback, both on this
machine: a real deployment adds a network round trip per call (see README.md).
Prints a table and writes benchmarks/results/bench_scale_out.json. --n 1000000 is the 1M run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import tempfile
import time

import numpy as np

from benchmarks.datasets import video_like, video_like_queries
from benchmarks.scale.backends import MilvusLite, PostgresCluster
from frameseek import _native
from frameseek.storage import EmbeddedStorage, VideoRecord
from frameseek.storage.scaleout import ScaleOutStorage

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def _ingest(st, cid, vectors, groups) -> float:
    t = time.perf_counter()
    for v in np.unique(groups):
        rows = vectors[groups == v]
        rec = VideoRecord(0, cid, "video", len(rows) / 3, 640, 360, 0, 1, f"video-{int(v)}")
        st.add_video(cid, rec, np.arange(len(rows)) / 3.0, rows)
    return time.perf_counter() - t


class _Mirror:
    def __init__(self, d):
        self.d = d

    def collection_added(self, rec, index):
        self.d.put_collection(rec.name, rec.id, rec.model, rec.is_default, index)

    def collection_removed(self, cid):
        self.d.remove_collection(cid)

    def video_added(self, rec, ts):
        self.d.put_video(rec.id, rec.collection_id, ts)

    def video_removed(self, vid):
        self.d.remove_video(vid)


def _directory(st):
    """The server's search directory over a store (what frameseek.service.search builds)."""
    d = _native.SearchDirectory()
    st.add_observer(_Mirror(d))
    for rec, index in st.live_collections():
        d.put_collection(rec.name, rec.id, rec.model, rec.is_default, index)
    for rec, ts in st.video_entries():
        d.put_video(rec.id, rec.collection_id, ts)
    return d


def _measure(st, cid, queries, truth, k) -> dict:
    d = _directory(st)
    for q in queries[:1]:  # warm-up (the scale-out store also publishes the videos it meets)
        d.nearest_videos(cid, q, k)
    lat = []
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        d.nearest_videos(cid, q, k)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    ids, _ = st.search(cid, queries, k)
    recall = np.mean([len(set(ids[i].tolist()) & set(truth[i].tolist())) / k for i in range(len(queries))])
    clip = queries[: 24 * 4]
    t = time.perf_counter()
    st.search(cid, clip, 32)
    clip_s = time.perf_counter() - t
    return {
        "search_p50_ms": 1000 * float(np.percentile(lat, 50)),
        "search_p99_ms": 1000 * float(np.percentile(lat, 99)),
        "search_qps": len(queries) / wall,
        "recall_at_k": float(recall),
        "clip_knn_ms": 1000 * clip_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--nq", type=int, default=500, help="queries timed on the embedded store")
    ap.add_argument(
        "--nq-milvus", type=int, default=10, help="queries timed on Milvus Lite (a pure-Python engine: ~1 s each)"
    )
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--frames-per-video", type=int, default=300)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument(
        "--backend-timeout",
        type=float,
        default=10.0,
        help="seconds per Milvus/PostgreSQL call (the server's backend_timeout_s); Milvus Lite under load needs more",
    )
    args = ap.parse_args()
    vectors, groups = video_like(args.n, args.dim, args.frames_per_video)
    queries = video_like_queries(vectors, args.nq)
    sample_ids = (groups + 1) << np.uint64(20)  # video ids start at 1 in both catalogs
    sample_ids += np.concatenate([np.arange(c, dtype=np.uint64) for c in np.bincount(groups.astype(np.int64))])
    truth = sample_ids[np.argsort(-(queries @ vectors.T), axis=1)[:, : args.k]]
    index = {"m": 16, "ef_construction": args.ef_construction, "ef_search": 64}
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-scale-"))
    pg = PostgresCluster().start()
    milvus = MilvusLite(str(work / "milvus"), str(work / "milvus.log")).start()
    url = pg.database()
    stores = {
        "embedded": lambda: EmbeddedStorage(str(work / "embedded")),
        "milvus-lite+postgresql": lambda: ScaleOutStorage(
            url, milvus.uri, server_id="bench", timeout_s=args.backend_timeout
        ),
    }
    results = {}
    try:
        for name, make in stores.items():
            st = make()
            st.open()
            c = st.create_collection("bench", model="m", dimension=args.dim, metric="ip", sampling={}, index=index)
            ingest_s = _ingest(st, c.id, vectors, groups)
            r = {"ingest_vectors_per_s": args.n / ingest_s, "ingest_s": ingest_s}
            t = time.perf_counter()
            st.snapshot(force=True)  # embedded: index snapshot; Milvus: seal into indexed segments
            r["snapshot_s"] = time.perf_counter() - t
            nq = args.nq if name == "embedded" else args.nq_milvus
            r |= _measure(st, c.id, queries[:nq], truth[:nq], args.k) | {"queries": nq}
            t = time.perf_counter()
            st.close()
            st = make()
            st.open()
            r["restart_s"] = time.perf_counter() - t
            st.close()
            results[name] = r
            print(f"{name}: done", flush=True)
    finally:
        milvus.stop()
        pg.remove()
        shutil.rmtree(work, ignore_errors=True)
    cols = [
        ("ingest vec/s", "ingest_vectors_per_s", "{:,.0f}"),
        ("search p50 ms", "search_p50_ms", "{:.2f}"),
        ("p99 ms", "search_p99_ms", "{:.2f}"),
        ("QPS", "search_qps", "{:,.0f}"),
        (f"recall@{args.k}", "recall_at_k", "{:.3f}"),
        ("clip kNN ms", "clip_knn_ms", "{:.1f}"),
        ("restart s", "restart_s", "{:.2f}"),
        ("snapshot s", "snapshot_s", "{:.2f}"),
    ]
    print(f"\n{args.n:,} vectors x {args.dim}-d, one thread; queries: {args.nq} embedded, {args.nq_milvus} Milvus")
    print(f"{'store':<24}" + "".join(f"{h:>15}" for h, _, _ in cols))
    for name, r in results.items():
        print(f"{name:<24}" + "".join(f"{f.format(r[key]):>15}" for _, key, f in cols))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_scale_out.json"
    out.write_text(
        json.dumps(
            {"args": vars(args), "machine": platform.platform(), "results": results},
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
