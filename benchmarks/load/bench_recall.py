"""The recall monitor at work (issue 22, frameseek.service.recall): QPS and recall at the breadth
the server tunes, side by side with the collection's fixed ef_search, in one run.

    python -m benchmarks.load.bench_recall                   # ~2 min on a loaded 2-core machine
    python -m benchmarks.load.bench_recall --n 30000 --settle-s 30

1. Fills a temporary data dir through the storage's commit path with video_like vectors
   (benchmarks/datasets.py) in a sparse graph (M 4, ef_construction 16) whose ef_search floor
   gives poor recall: a scaled-down stand-in for the 1M load benchmark, where ef 64 finds the
   source video first for only 0.66 of queries (a 1M fill takes ~30 min).
2. Runs the service's search in process (`Search.nearest_videos`, the native SearchDirectory that
   SearchByVector runs) with the recall monitor's background thread on its real clocks
   (sample_every, cpu_share below), driving single-thread searches that set no ef until the
   breadth has settled (lower bound >= target on a full window) or --settle-s passes.
3. Times the same queries single-threaded at ef = the floor (a request's explicit ef) and at the
   tuned breadth (ef unset), alternating rounds, and scores both against exact search
   (`_native.FlatIndex.search_groups`): recall@k of videos, the monitor's definition.
4. Times one exact pass of a 32-query batch both ways the monitor could run it over the vectors read
   back with `HnswIndex.get_vectors`: a FlatIndex per chunk, one thread (what it does), or one BLAS
   matmul per chunk and a per-video max (process CPU time, as BLAS runs threads of its own).

Prints a table; writes benchmarks/results/recall_tuning.json.
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

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def fill(data_dir: pathlib.Path, vectors: np.ndarray, groups: np.ndarray, m: int, efc: int, floor: int):
    from frameseek.storage import EmbeddedStorage, VideoRecord

    st = EmbeddedStorage(str(data_dir), snapshot_every=10**12)
    st.open()
    c = st.create_collection(
        "bench",
        model="sscd_distilled",
        dimension=vectors.shape[1],
        metric="ip",
        sampling={"fps": 1.0},
        index={"m": m, "ef_construction": efc, "ef_search": floor},
    )
    video_ids = np.empty(len(vectors), dtype=np.uint64)
    bounds = np.flatnonzero(np.diff(groups)) + 1
    for rows in np.split(np.arange(len(vectors)), bounds):
        rec = VideoRecord(
            id=0,
            collection_id=c.id,
            kind="video",
            duration=float(len(rows)),
            width=64,
            height=64,
            sample_count=len(rows),
            size_bytes=0,
            content_sha256=f"v{rows[0]}",
            external_key=f"v{rows[0]}",
        )
        video_ids[rows] = st.add_video(c.id, rec, np.arange(len(rows), dtype=np.float64), vectors[rows]).id
    st.close(snapshot=True)
    return video_ids


def qps(search, queries: np.ndarray, ef: int, k: int) -> float:
    from frameseek.service.types import SearchOptions

    t0 = time.perf_counter()
    for q in queries:
        search(q, SearchOptions(k=k, ef=ef))
    return len(queries) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--per-video", type=int, default=60)
    ap.add_argument("--M", type=int, default=4)
    ap.add_argument("--ef-construction", type=int, default=16)
    ap.add_argument("--floor", type=int, default=16, help="the collection's ef_search (the fixed breadth)")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--sample-every", type=int, default=4)
    ap.add_argument("--cpu-share", type=float, default=0.25)
    ap.add_argument("--settle-s", type=float, default=60.0, help="longest time given to the tuner")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", default=str(RESULTS / "recall_tuning.json"))
    args = ap.parse_args()

    from frameseek import _native
    from frameseek.config import Settings
    from frameseek.ids import sample_ids
    from frameseek.service.collections import Collections, Videos
    from frameseek.service.core import Core
    from frameseek.service.recall import exact_top_videos
    from frameseek.service.search import Search
    from frameseek.service.types import SearchOptions
    from frameseek.storage import EmbeddedStorage

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_recall_"))
    try:
        t0 = time.perf_counter()
        vectors, groups = video_like(args.n, args.dim, frames_per_video=args.per_video, seed=3)
        video_ids = fill(tmp / "data", vectors, groups, args.M, args.ef_construction, args.floor)
        fill_s = time.perf_counter() - t0
        print(f"filled {args.n} x {args.dim} in {fill_s:.1f}s", flush=True)

        settings = Settings(
            data_dir=str(tmp / "data"),
            metrics_address="",
            index={"target_recall": args.target},
            recall={"sample_every": args.sample_every, "cpu_share": args.cpu_share},
        )
        core = Core(settings, EmbeddedStorage(settings.data_dir), embedder=None)
        collections = Collections(core)
        search = Search(core, collections, Videos(core, collections))
        core.storage.open()
        search.follow_storage()
        rec = core.storage.get_collection("bench")
        monitor = search.recall
        tuner = monitor._watched[rec.id].tuner

        def run(q, opts):
            return search.nearest_videos(rec, q[None, :], opts, None, set())

        # 2. real searches (ef unset) while the monitor's thread samples, measures and tunes
        drive = video_like_queries(vectors, 20_000, seed=22)
        monitor.start()
        t0, i, trace = time.perf_counter(), 0, []
        while time.perf_counter() - t0 < args.settle_s:
            for q in drive[(i * 200) % len(drive) :][:200]:
                run(q, SearchOptions(k=args.k))
            i += 1
            est = tuner.estimate()
            if not trace or trace[-1][1] != tuner.ef:
                trace.append((round(time.perf_counter() - t0, 1), tuner.ef))
            if est.samples >= settings.recall.window and est.lower >= args.target:
                break
        settle_s = time.perf_counter() - t0
        monitor.stop()
        est = tuner.estimate()
        tuned = tuner.ef
        print(f"tuned ef {args.floor} -> {tuned} in {settle_s:.1f}s (trace {trace})", flush=True)

        # 3. fixed floor vs tuned, same queries, alternating rounds
        queries = video_like_queries(vectors, args.queries, seed=23)
        flat = _native.FlatIndex(args.dim, "ip")
        flat.add(np.arange(len(vectors), dtype=np.uint64), vectors, groups=video_ids)
        truth, _, _ = flat.search_groups(queries, args.k)

        def recall(ef: int) -> float:
            got = [{h.video.id for h in run(q, SearchOptions(k=args.k, ef=ef))} for q in queries]
            return float(np.mean([len(g & {int(x) for x in t}) / args.k for g, t in zip(got, truth)]))

        rows = {"fixed ef_search": args.floor, "tuned (ef unset)": 0}
        rates: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(3):
            for name, ef in rows.items():
                rates[name].append(qps(run, queries, ef, args.k))
        results = []
        for name, ef in rows.items():
            results.append(
                {
                    "breadth": name,
                    "ef": ef or tuned,
                    "recall_at_k": round(recall(ef), 4),
                    "qps_single_thread": round(float(np.median(rates[name])), 1),
                }
            )

        # 4. one exact pass over a 32-query batch, both ways (process CPU time: BLAS has threads)
        w = monitor._watched[rec.id]
        videos = sorted(w.videos.items())
        batch = queries[:32]
        c0 = time.process_time()
        exact_top_videos(w.index, videos, batch, args.k + 8)
        flat_s = time.process_time() - c0
        c0 = time.process_time()
        for lo in range(0, len(videos), 256):
            part = videos[lo : lo + 256]
            x = w.index.get_vectors(np.concatenate([sample_ids(v, c) for v, c in part]))
            np.maximum.reduceat(batch @ x.T, np.cumsum([0] + [c for _, c in part[:-1]]), axis=1)
        blas_s = time.process_time() - c0

        report = {
            "benchmark": "recall_tuning",
            "machine": {"cpu": platform.processor() or platform.machine(), "simd": _native.simd_level()},
            "params": vars(args),
            "fill_s": round(fill_s, 1),
            "settle_s": round(settle_s, 1),
            "ef_trace": trace,
            "monitor": {
                "measured_recall": round(est.recall, 4),
                "interval": [round(est.lower, 4), round(est.upper, 4)],
                "samples": est.samples,
                "measured_searches": monitor.measured,
                "cpu_seconds": round(monitor.bucket.spent, 2),
                "cpu_share_used": round(monitor.bucket.spent / settle_s, 3),
            },
            "results": results,
            "exact_pass_cpu_s_per_32_queries": {
                "FlatIndex.search_groups per chunk (used)": round(flat_s, 3),
                "BLAS matmul + per-video max": round(blas_s, 3),
            },
        }
        print(f"\n{args.n} x {args.dim}-d video_like, M {args.M}, ef_construction {args.ef_construction}, k {args.k}")
        print(f"{'breadth':<18} {'ef':>5} {'recall@k (exact)':>17} {'QPS (1 thread)':>15}")
        for r in results:
            print(f"{r['breadth']:<18} {r['ef']:>5} {r['recall_at_k']:>17.3f} {r['qps_single_thread']:>15.0f}")
        m = report["monitor"]
        print(
            f"monitor: measured {m['measured_recall']:.3f} [{m['interval'][0]:.3f}, {m['interval'][1]:.3f}] "
            f"over {m['samples']} samples at ef {tuned}; {m['cpu_seconds']}s CPU in {settle_s:.0f}s "
            f"({m['cpu_share_used']:.0%} of one core, bound {args.cpu_share:.0%})"
        )
        print(f"exact pass of 32 queries, process CPU s: FlatIndex (used) {flat_s:.3f}, BLAS matmul {blas_s:.3f}")
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
        core.storage.close(snapshot=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
