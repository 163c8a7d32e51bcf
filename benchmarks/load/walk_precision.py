"""What the HNSW walk reads (HnswIndex.walk_precision), A/B on the load benchmark's index.

    nice .venv/bin/python -m benchmarks.load.walk_precision [--data-dir DIR] [--queries 500]

In-process, one query per call on one thread (what the native front end does per RPC), on the
same graph: the kNN of 40 frames that SearchByVector runs, at each ef, for each walk precision
(float32 / float16 / int8, interleaved over --rounds so drift hits all alike). Reports the CPU
time per query and the recall against exact search (float32 brute force over every stored
vector, numpy/BLAS): recall@10, recall@40 and top-1 (the exact nearest frame comes back first).
Writes benchmarks/results/walk_precision.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from benchmarks.load.bench_search import COLLECTION, RESULTS, sample_queries
from benchmarks.native.bench_hnsw import recall
from frameseek.ids import sample_ids
from frameseek.storage import EmbeddedStorage


def exact_topk(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """ids of the k largest inner products per query (the collection's metric is ip)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for lo in range(0, len(vectors), chunk):
        s = queries @ vectors[lo : lo + chunk].T
        both_s = np.concatenate([best_s, s], axis=1)
        both_i = np.concatenate([best_i, np.arange(lo, lo + s.shape[1])[None].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-both_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(both_s, top, 1)
        best_i = np.take_along_axis(both_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return ids[np.take_along_axis(best_i, order, 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=pathlib.Path, default=RESULTS / "load-data-1000000-ingest" / "data")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--efs", default="64,128,256")
    ap.add_argument("--precisions", default="float32,float16,int8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="walk_precision.json")
    ns = ap.parse_args(argv)

    st = EmbeddedStorage(str(ns.data_dir))
    st.open()
    cid = st.get_collection(COLLECTION).id
    index = st.native_index(cid)
    entries = st.video_entries()
    ids = np.concatenate([sample_ids(v.id, len(ts)) for v, ts in entries])
    print(f"index: {len(index)} vectors, dim {index.dim}, M {index.M}, ef_construction {index.ef_construction}")
    t0 = time.perf_counter()
    vectors = index.get_vectors(ids)
    queries = sample_queries(ns.queries, len(entries), len(ids), index.dim)
    truth = exact_topk(vectors, ids, queries, 40)
    del vectors
    print(f"exact top-40 of {len(queries)} queries: {time.perf_counter() - t0:.1f} s")

    efs = [int(e) for e in ns.efs.split(",")]
    precisions = ns.precisions.split(",")
    cells: dict[tuple[str, int], list[float]] = {}
    found: dict[tuple[str, int], np.ndarray] = {}
    for _ in range(ns.rounds):
        for prec in precisions:
            index.walk_precision = prec
            for ef in efs:
                index.search(queries[:20], 40, ef=ef, threads=1)  # warm the copy's pages
                out = np.empty((len(queries), 40), np.uint64)
                c0 = time.process_time()
                for j, q in enumerate(queries):
                    out[j] = index.search(q[None], 40, ef=ef, threads=1)[0][0]
                cells.setdefault((prec, ef), []).append((time.process_time() - c0) / len(queries) * 1e6)
                found[(prec, ef)] = out
    index.walk_precision = "int8"
    st.close(snapshot=False)

    rows = []
    print("\n| walk | ef | CPU us/query (kNN 40, 1 thread) | recall@10 | recall@40 | top-1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for ef in efs:
        for prec in precisions:
            f = found[(prec, ef)]
            row = {
                "walk": prec,
                "ef": ef,
                "cpu_us": round(min(cells[(prec, ef)]), 1),
                "cpu_us_rounds": [round(c, 1) for c in cells[(prec, ef)]],
                "recall_at_10": round(recall(f[:, :10], truth[:, :10]), 4),
                "recall_at_40": round(recall(f, truth), 4),
                "top1": round(float(np.mean(f[:, 0] == truth[:, 0])), 4),
            }
            rows.append(row)
            print(
                f"| {prec} | {ef} | {row['cpu_us']:.0f} | {row['recall_at_10']:.3f} | {row['recall_at_40']:.3f} "
                f"| {row['top1']:.3f} |"
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ns.out).write_text(json.dumps({"n": len(ids), "queries": len(queries), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
