"""A faces collection's index at scale: per-query latency (p50 / p99) and recall beside hnswlib,
and the index's real bytes per vector for 128-d face vectors against 512-d frame vectors.

    nice -n 10 python -m benchmarks.faces.bench_face_index [--n 1000000] [--nq 500]
        [--memory-n 200000] [--k 10 320] [--efs 16 32 64 128 320 512]

Data: no real 1M-face set exists here. The vectors are synthetic, shaped like face embeddings:
identities are clusters (a random unit centre, pulled towards a shared mean direction so that
different people are ~0.9 apart in L2, as dlib's descriptors of strangers are), each holding
several faces (centre + noise, ~0.4 apart within an identity, dlib's same-person range), unit
norm. Queries are new faces of identities in the index (held out). Ground truth: exact L2 search.

Both indexes are built with what a faces collection uses (settings `index`: M, ef_construction;
metric L2; frameseek's walks read the float32 vectors, `modality.faces.FACE_INDEX_WALK`) on all
cores, in identity order (a video's faces arrive together). Search: one query per call on one
thread (a SearchByFace asks with one face at a time), timed per query with perf_counter; each ef
is reported with its recall@k. k = 10 is the usual ANN figure; k = 320 is what SearchByFace asks
the index for with its default k (10 videos x 32 faces per video).

Memory: resident-set growth (VmRSS) while the frameseek index of --memory-n vectors is built, per
vector: a faces index at 128 dimensions (float32 walk) and a frame index at 512 (its default int8
walk copy), beside the exact arithmetic of what HnswIndex allocates per vector (float32 vector +
layer-0 links + label + the int8 walk copy where there is one; the rest -- upper layers, hash
maps, locks -- is the RSS difference).

Latency: wall-clock p50 / p99, and p99 of each query's own CPU time (time.thread_time), the figure
a shared machine's pre-emption leaves alone. Built indexes are saved under --cache and reused by
later runs with the same data and settings (the search rows can be re-measured on a quieter
machine without a rebuild). Prints a table and writes benchmarks/results/bench_face_index.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


def face_like(n: int, dim: int, per_identity: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors float32[n, dim] in identity order, identity uint64[n]); module docstring."""
    rng = np.random.default_rng(seed)
    n_ids = -(-n // per_identity)
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    x = np.empty((n, dim), np.float32)
    ident = np.repeat(np.arange(n_ids, dtype=np.uint64), per_identity)[:n]
    chunk = 50_000
    for lo in range(0, n_ids, chunk):
        hi = min(n_ids, lo + chunk)
        c = rng.standard_normal((hi - lo, dim)).astype(np.float32)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        c = 0.78 * c + 0.62 * mean  # strangers ~0.9 apart in L2
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        rows = np.repeat(c, per_identity, axis=0)
        noise = rng.standard_normal(rows.shape).astype(np.float32) * np.float32(0.28 / np.sqrt(dim))
        v = rows + noise  # same person ~0.4 apart
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        a, b = lo * per_identity, min(n, hi * per_identity)
        x[a:b] = v[: b - a]
    return x, ident


def exact_knn(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k nearest rows by L2 (unit vectors: the largest inner products)."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for lo in range(0, len(x), 200_000):
        s = q @ x[lo : lo + 200_000].T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        best_i = np.concatenate([best_i, top + lo], 1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)) / truth.size


def per_query(search, q: np.ndarray) -> tuple[np.ndarray, dict]:
    """(ids found, latency): one query per call on this thread. Wall-clock p50/p99, and p99 of the
    thread's own CPU time per query (time.thread_time: what the search costs without the
    pre-emption by other jobs that the wall clock of a shared machine adds to its tail)."""
    search(q[:20])  # warm
    found, wall, cpu = [], [], []
    for row in q:
        t, c = time.perf_counter(), time.thread_time()
        ids = search(row[None])
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        found.append(np.asarray(ids).reshape(-1))
    ms, cpu_ms = 1000 * np.asarray(wall), 1000 * np.asarray(cpu)
    return np.stack(found), {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "p99_cpu_ms": float(np.percentile(cpu_ms, 99)),
    }


def cached(path: pathlib.Path, build, save, load) -> tuple[object, float | None]:
    """The index saved at `path` by an earlier run (same data: the generator is seeded), else
    built and saved; returns (index, build seconds or None when loaded)."""
    if path.exists():
        return load(str(path)), None
    t = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    save(index, str(path))
    return index, seconds


def build_ours(nat, x, ident, M, efc, threads, per_identity, walk: str):
    idx = nat.HnswIndex(x.shape[1], "l2", max_elements=len(x), M=M, ef_construction=efc)
    idx.walk_precision = walk
    ids = np.arange(len(x), dtype=np.uint64)
    step = per_identity * 1000  # a batch of identities per add call
    for lo in range(0, len(x), step):
        idx.add(ids[lo : lo + step], x[lo : lo + step], groups=ident[lo : lo + step], threads=threads)
    return idx


def memory(n: int, dim: int, M: int, efc: int, threads: int, per_identity: int, walk: str) -> dict:
    """Run in a fresh process (`_memory_in_child`): the heap the data's temporaries freed is handed
    back to the system first (malloc_trim), so the index's allocations show as RSS growth."""
    import ctypes

    from frameseek import _native as nat

    x, ident = face_like(n, dim, per_identity, seed=3)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = rss_bytes()
    idx = build_ours(nat, x, ident, M, efc, threads, per_identity, walk)
    grown = rss_bytes() - before
    # hnswlib's layer 0 per element: links (the graph's M0 ids + a count) + the float32 vector + the
    # label; frameseek's int8 walk copy: codes + scale + squared norm, rounded up to whole 64-byte lines
    level0 = (idx.M0 + 1) * 4 + 4 * dim + 8
    copy = (dim + 8 + 63) // 64 * 64 if walk == "int8" else 0
    del idx
    return {
        "dim": dim,
        "walk": walk,
        "n": n,
        "rss_bytes_per_vector": grown / n,
        "float32_vector_bytes": 4 * dim,
        "layer0_bytes_per_vector": level0,
        "int8_copy_bytes_per_vector": copy,
        "arithmetic_bytes_per_vector": level0 + copy,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", type=int, default=500)
    ap.add_argument("--per-identity", type=int, default=8, help="faces per identity")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 320])
    ap.add_argument("--efs", type=int, nargs="+", default=[16, 32, 64, 128, 320, 512])
    ap.add_argument("--memory-n", type=int, default=200_000, help="vectors per dimension for the memory rows")
    ap.add_argument("--skip-hnswlib", action="store_true")
    ap.add_argument("--out", type=pathlib.Path, default=RESULTS / "bench_face_index.json")
    ap.add_argument(
        "--cache",
        type=pathlib.Path,
        default=RESULTS / "face-index-cache",
        help="built indexes are saved here and reused by later runs with the same data and settings",
    )
    a = ap.parse_args(argv)

    import hnswlib

    from frameseek import _native as nat
    from frameseek.config import load_settings

    cfg = load_settings().index
    M, efc = cfg.m, cfg.ef_construction
    threads = os.cpu_count() or 1
    import multiprocessing

    from frameseek.modality.faces import FACE_INDEX_WALK

    # a faces index (128-d, its walk) against a frame index (512-d, the native default walk)
    layouts = ((128, FACE_INDEX_WALK), (512, "int8"))
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        mem = [pool.apply(memory, (a.memory_n, d, M, efc, threads, a.per_identity, w)) for d, w in layouts]

    dim = 128
    x, ident = face_like(a.n + a.nq, dim, a.per_identity, seed=0)
    rng = np.random.default_rng(1)
    held = np.sort(rng.choice(len(x), a.nq, replace=False))  # new faces of indexed identities
    keep = np.setdiff1d(np.arange(len(x)), held)
    q, x, ident = x[held], x[keep], ident[keep]
    kmax = max(a.k)
    truth = exact_knn(x, q, kmax)
    print(
        f"data: {len(x):,} synthetic face-like 128-d unit vectors, {int(ident.max()) + 1:,} identities; "
        f"{a.nq} held-out queries; M={M} ef_construction={efc} build threads={threads}",
        flush=True,
    )

    builds, rows = {}, []
    tag = f"{len(x)}_{a.nq}_{a.per_identity}_M{M}_efc{efc}"

    def measure(library: str, index, set_ef, search) -> None:
        for k in a.k:
            for ef in a.efs:
                if ef < k and (k > 10 or library == "hnswlib"):
                    continue
                set_ef(index, ef)
                found, lat = per_query(lambda v, k=k: search(index, v, k), q)
                rows.append({"library": library, "k": k, "ef": ef, "recall": recall(found, truth[:, :k]), **lat})
                print(rows[-1], flush=True)

    def build_frameseek():
        return build_ours(nat, x, ident, M, efc, threads, a.per_identity, FACE_INDEX_WALK)

    ours, builds["frameseek"] = cached(
        a.cache / f"frameseek_{tag}_{FACE_INDEX_WALK}.fsh", build_frameseek, lambda i, f: i.save(f), nat.HnswIndex.load
    )
    print(f"frameseek index: built in {builds['frameseek'] or 0:.0f} s (0: loaded from {a.cache})", flush=True)
    measure("frameseek", ours, lambda i, ef: setattr(i, "ef", ef), lambda i, v, k: i.search(v, k, threads=1)[0])
    ours = None  # free it before hnswlib builds
    gc.collect()
    if not a.skip_hnswlib:

        def build_hnswlib():
            h = hnswlib.Index(space="l2", dim=dim)
            h.init_index(max_elements=len(x), M=M, ef_construction=efc)
            h.add_items(x, np.arange(len(x)), num_threads=threads)
            return h

        def load_hnswlib(f):
            h = hnswlib.Index(space="l2", dim=dim)
            h.load_index(f, max_elements=len(x))
            return h

        h, builds["hnswlib"] = cached(
            a.cache / f"hnswlib_{tag}.bin", build_hnswlib, lambda i, f: i.save_index(f), load_hnswlib
        )
        print(f"hnswlib index: built in {builds['hnswlib'] or 0:.0f} s (0: loaded from {a.cache})", flush=True)
        measure("hnswlib", h, lambda i, ef: i.set_ef(ef), lambda i, v, k: i.knn_query(v, k, num_threads=1)[0])

    print(f"\n1 query per call, 1 thread, {len(x):,} vectors (recall@k against exact L2 search)")
    print(f"{'library':<11}{'k':>5}{'ef':>6}{'recall':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 CPU ms':>12}")
    for r in rows:
        print(
            f"{r['library']:<11}{r['k']:>5}{r['ef']:>6}{r['recall']:>9.4f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
            f"{r['p99_cpu_ms']:>12.3f}"
        )
    print(f"\nbytes per vector, frameseek HnswIndex (M={M}), {a.memory_n:,} vectors each")
    print(f"{'dim':>5}{'walk':>8}{'RSS growth':>12}{'arithmetic':>12}  (float32 + layer-0 links/label + int8 copy)")
    for m in mem:
        print(
            f"{m['dim']:>5}{m['walk']:>8}{m['rss_bytes_per_vector']:>12,.0f}{m['arithmetic_bytes_per_vector']:>12,}  "
            f"({m['float32_vector_bytes']} + {m['layer0_bytes_per_vector'] - m['float32_vector_bytes']}"
            f" + {m['int8_copy_bytes_per_vector']})"
        )
    ratio_rss = mem[0]["rss_bytes_per_vector"] / mem[1]["rss_bytes_per_vector"]
    ratio_arith = mem[0]["arithmetic_bytes_per_vector"] / mem[1]["arithmetic_bytes_per_vector"]
    print(f"128-d / 512-d: {ratio_rss:.3f} (RSS), {ratio_arith:.3f} (arithmetic)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "config": vars(a)
                | {
                    "out": str(a.out),
                    "cache": str(a.cache),
                    "M": M,
                    "ef_construction": efc,
                    "threads": threads,
                    "data": "synthetic face-like (clustered unit vectors)",
                },
                "build_s": builds,
                "latency": rows,
                "memory": mem,
                "ratio_128_to_512": {"rss": ratio_rss, "arithmetic": ratio_arith},
            },
            indent=2,
        )
    )
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
