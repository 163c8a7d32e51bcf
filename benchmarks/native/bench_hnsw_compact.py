"""Compact memory and graph build (issue 22): frameseek HnswIndex against hnswlib and faiss-cpu
(IndexHNSWFlat, IndexHNSWSQ 8-bit) at the same M / ef_construction, on the same data, same run.

    python -m benchmarks.native.bench_hnsw_compact build  [--n 10000] [--M 32] [--ef-construction 300]
    python -m benchmarks.native.bench_hnsw_compact memory [--n 200000] [--M 32] [--M0 0] [--ef-construction 40]

Data: `benchmarks.datasets.video_like` (512-d, L2-normalised, runs of near-identical frames),
inserted video by video (one add per video: a batch of 300 frames, the order ingest produces).

build: every library builds on ONE thread; throughput is vectors per CPU-second of the process
(the machine is shared: CPU time, not wall time). Then recall@10 against exact search (numpy) and
single-thread QPS (CPU time, best of --repeats) over an ef sweep; "QPS at recall r" is the best
QPS among efs whose recall >= r. frameseek is also built with all rows in ONE add() call (the
batched insertion a bulk load or the linker uses), to check that batching keeps recall on
video-ordered data.

memory: frameseek alone, in a child process per phase so that RSS is the index's: RssAnon and
RssFile (from /proc/self/status) per vector after the build, after store_vectors_in() (the float32
originals moved to a mapped file), after searches touched the file and after a save(); then, in a
second process, after loading that snapshot (a restart) and searching it. ef_construction only
changes build time, not the memory layout: the default 40 keeps a 200k build within minutes here.
Works with an older frameseek module too (no store_vectors_in: that phase is skipped), so the
same script measures before and after (run it with the other checkout's Python).

Prints a table and writes benchmarks/results/bench_hnsw_compact_<part>[_<label>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.datasets import video_like, video_like_queries

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
EFS = [10, 16, 24, 32, 48, 64, 96, 128]
TARGETS = [0.90, 0.95, 0.99]
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)) / truth.size


def cpu_best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return max(best, 1e-9)


def by_video(groups: np.ndarray):
    bounds = np.flatnonzero(np.diff(groups)) + 1
    return zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(groups)]]))


def libraries(args, x, groups, ids):
    """name -> (build(), search(q, ef) -> ids); build returns the index."""
    import faiss
    import hnswlib

    from frameseek import _native

    faiss.omp_set_num_threads(1)
    d, M, efc = args.dim, args.M, args.ef_construction

    def frameseek_by_video():
        idx = _native.HnswIndex(d, "ip", max_elements=len(x), M=M, ef_construction=efc)
        for s, e in by_video(groups):
            idx.add(ids[s:e], x[s:e], groups=groups[s:e], threads=1)
        return idx

    def frameseek_one_batch():
        idx = _native.HnswIndex(d, "ip", max_elements=len(x), M=M, ef_construction=efc)
        idx.add(ids, x, groups=groups, threads=1)
        return idx

    def ours_search(idx, q, ef):
        return idx.search(q, K, ef=ef, threads=1)[0]

    def hnswlib_build():
        h = hnswlib.Index("ip", d)
        h.init_index(len(x), M=M, ef_construction=efc, random_seed=100)
        for s, e in by_video(groups):
            h.add_items(x[s:e], ids[s:e], num_threads=1)
        return h

    def hnswlib_search(h, q, ef):
        h.set_ef(max(ef, K))
        return h.knn_query(q, K, num_threads=1)[0]

    def faiss_flat():
        f = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
        f.hnsw.efConstruction = efc
        for s, e in by_video(groups):
            f.add(x[s:e])
        return f

    def faiss_sq():
        f = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
        f.hnsw.efConstruction = efc
        f.train(x)  # per-dimension ranges (not counted as insertion)
        for s, e in by_video(groups):
            f.add(x[s:e])
        return f

    def faiss_search(f, q, ef):
        f.hnsw.efSearch = max(ef, K)
        return f.search(q, K)[1]

    out = {
        "frameseek (add per video)": (frameseek_by_video, ours_search),
        "frameseek (one add)": (frameseek_one_batch, ours_search),
        "hnswlib": (hnswlib_build, hnswlib_search),
        "faiss HNSWFlat": (faiss_flat, faiss_search),
        "faiss HNSWSQ8": (faiss_sq, faiss_search),
    }
    return {k: v for k, v in out.items() if not args.only or any(k.startswith(o) for o in args.only)}


def part_build(args) -> dict:
    from frameseek import _native

    x, groups = video_like(args.n, args.dim, seed=0)
    ids = np.arange(args.n, dtype=np.uint64)
    q = video_like_queries(x, args.nq, seed=1)
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :K].astype(np.uint64)
    print(
        f"data: video_like n={args.n} dim={args.dim} nq={args.nq} M={args.M} efc={args.ef_construction} "
        f"simd={_native.simd_level()} walk={getattr(_native.HnswIndex(4), 'walk_precision', '?')}",
        flush=True,
    )
    rows = {}

    def sweep(idx, search):
        out = []
        for ef in EFS:
            found = search(idx, q, ef)
            qcpu = cpu_best(lambda ef=ef: search(idx, q, ef), args.repeats)
            out.append({"ef": ef, "recall": recall(found, truth), "qps": args.nq / qcpu})
        return out

    for name, (build, search) in libraries(args, x, groups, ids).items():
        t = time.process_time()
        idx = build()
        cpu = time.process_time() - t
        rows[name] = {"build_cpu_s": cpu, "vectors_per_cpu_s": args.n / cpu, "sweep": sweep(idx, search)}
        print(
            f"{name:28s} build {cpu:7.1f} CPU-s = {args.n / cpu:7.0f} vectors/CPU-s; recall@10 by ef: "
            + " ".join(f"{r['ef']}:{r['recall']:.3f}" for r in rows[name]["sweep"]),
            flush=True,
        )
        if hasattr(idx, "store_vectors_in"):  # the same graph, its float32 originals in a mapped file
            with tempfile.TemporaryDirectory(dir=args.store_dir) as d:
                idx.store_vectors_in(d)
                rows[name + " [file]"] = {**rows[name], "sweep": sweep(idx, search)}
        del idx
    print(
        f"\n{'library':28s} {'vec/CPU-s':>9s} "
        + " ".join(f"{'QPS@' + str(r):>9s}" for r in TARGETS)
        + "  recall@ef16/32/64"
    )
    for name, r in rows.items():

        def qps_at(target, r=r):
            ok = [s["qps"] for s in r["sweep"] if s["recall"] >= target]
            return f"{max(ok):9.0f}" if ok else f"{'-':>9s}"

        rec = {s["ef"]: s["recall"] for s in r["sweep"]}
        print(
            f"{name:28s} {r['vectors_per_cpu_s']:9.0f} "
            + " ".join(qps_at(t) for t in TARGETS)
            + f"  {rec[16]:.3f}/{rec[32]:.3f}/{rec[64]:.3f}"
        )
    return rows


def status_kb() -> dict:
    out = {}
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem", "VmRSS"):
            out[key] = int(val.split()[0])
    return out


def memory_child(args) -> None:
    """One process: build, then report RSS after each phase as JSON on stdout."""
    from frameseek import _native

    x, groups = video_like(args.n, args.dim, seed=0)
    ids = np.arange(args.n, dtype=np.uint64)
    q = video_like_queries(x, args.nq, seed=1)
    base = status_kb()
    layout = {"M0": args.M0} if args.M0 else {}  # older modules have no M0
    idx = _native.HnswIndex(
        args.dim, "ip", max_elements=args.n, M=args.M, ef_construction=args.ef_construction, **layout
    )
    t = time.perf_counter()
    for s, e in by_video(groups):
        idx.add(ids[s:e], x[s:e], groups=groups[s:e])
    build_s = time.perf_counter() - t
    phases = {"built": status_kb()}
    with tempfile.TemporaryDirectory(dir=args.store_dir) as d:
        if hasattr(idx, "store_vectors_in"):
            idx.store_vectors_in(d)
            phases["vectors in file"] = status_kb()
            idx.search(q, K, ef=64, threads=1)
            phases[f"after {args.nq} searches"] = status_kb()
            if args.snapshot:
                idx.save(args.snapshot)
                phases["after save()"] = status_kb()
        print(json.dumps({"base": base, "phases": phases, "build_wall_s": build_s, "n": args.n}))


def memory_load_child(args) -> None:
    """One process: load the snapshot the build child saved (a restart), then search."""
    from frameseek import _native

    x, _ = video_like(args.n, args.dim, seed=0)
    q = video_like_queries(x, args.nq, seed=1)
    del x
    base = status_kb()
    with tempfile.TemporaryDirectory(dir=args.store_dir) as d:
        idx = _native.HnswIndex.load(args.snapshot, vectors_dir=d)
        phases = {"restarted (load)": status_kb()}
        idx.search(q, K, ef=64, threads=1)
        phases[f"restarted, after {args.nq} searches"] = status_kb()
        print(json.dumps({"base": base, "phases": phases}))


def part_memory(args) -> dict:
    def child(part: str, snapshot: str) -> dict:
        cmd = [sys.executable, "-m", "benchmarks.native.bench_hnsw_compact", part] + [
            f"--n={args.n}",
            f"--dim={args.dim}",
            f"--M={args.M}",
            f"--M0={args.M0}",
            f"--ef-construction={args.ef_construction}",
            f"--nq={args.nq}",
            f"--store-dir={args.store_dir}",
            f"--snapshot={snapshot}",
        ]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    with tempfile.TemporaryDirectory(dir=args.store_dir) as d:
        built = child("memory-child", f"{d}/index.fsnap")
        # a restart, where the module can write snapshots (older ones: the build phases alone)
        loaded = child("memory-load-child", f"{d}/index.fsnap") if "after save()" in built["phases"] else None
    layer0 = f" M0={args.M0}" if args.M0 else ""
    print(
        f"frameseek HnswIndex n={args.n} dim={args.dim} M={args.M}{layer0} (build {built['build_wall_s']:.0f} s wall)"
    )
    print(f"{'phase':34s} {'anon B/vec':>10s} {'file B/vec':>10s}")
    res = {}
    for out in filter(None, (built, loaded)):
        base = out["base"]
        for phase, kb in out["phases"].items():
            anon = (kb["RssAnon"] - base["RssAnon"]) * 1024 / args.n
            file_ = (kb["RssFile"] - base["RssFile"]) * 1024 / args.n
            res[phase] = {"anon_bytes_per_vector": anon, "file_bytes_per_vector": file_}
            print(f"{phase:34s} {anon:10.0f} {file_:10.0f}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["build", "memory", "memory-child", "memory-load-child"])
    ap.add_argument("--n", type=int)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--M", type=int, default=32)
    ap.add_argument(
        "--M0", type=int, default=0, help="memory: layer-0 link slots (0 = the default, hnsw_default_layer0_links)"
    )
    ap.add_argument("--snapshot", default="", help="memory children: where the build saves and the load reads")
    ap.add_argument("--ef-construction", type=int)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=[], help="name prefixes of the libraries to build")
    ap.add_argument("--store-dir", default=tempfile.gettempdir(), help="where the mapped vector file goes")
    ap.add_argument("--label", default="", help="suffix of the JSON file (e.g. before / after)")
    args = ap.parse_args()
    if args.part == "memory-child":
        return memory_child(args)
    if args.part == "memory-load-child":
        return memory_load_child(args)
    if args.n is None:
        args.n = 10_000 if args.part == "build" else 200_000
    if args.ef_construction is None:
        args.ef_construction = 300 if args.part == "build" else 40
    rows = part_build(args) if args.part == "build" else part_memory(args)
    RESULTS.mkdir(exist_ok=True)
    name = f"bench_hnsw_compact_{args.part}" + (f"_{args.label}" if args.label else "")
    meta = {"args": vars(args), "machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
