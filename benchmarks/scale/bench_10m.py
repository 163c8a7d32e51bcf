"""10M x 512-d on one machine (issue 22, must-have 4): frameseek's HnswIndex against faiss-cpu
(IndexHNSWSQ 8-bit; IndexHNSWFlat) and hnswlib, same data, same M / ef_construction, same run.

    nice .venv/bin/python -m benchmarks.scale.bench_10m --skip-baselines     # 10M, frameseek: 40 min - 2 h
    nice .venv/bin/python -m benchmarks.scale.bench_10m                      # then HNSWSQ8: 1 - 3.5 h
    nice .venv/bin/python -m benchmarks.scale.bench_10m --n 200000           # the small-scale check
(benchmarks/scale/README.md: the estimate, disk and memory it needs, the 200k/500k results.)

Data: `benchmarks.datasets.VideoLikeStream` (video_like's clustered, video-ordered model) drawn
chunk by chunk from the seed, never held whole (10M x 512 float32 = 19 GiB). Queries: --nq frames
held out of the index (random rows, each a frame of a known source video) plus noise; exact
top-10 by streaming the chunks through numpy (BLAS). Every library adds video by video (one add
per video, the order ingest produces) with --threads build threads, in its own child process (so
RSS is its own); then recall@10 against the exact top-10, the share of queries whose first result
is a frame of the source video, and QPS (wall, best of --repeats, --nq queries per call) on 1 and
--threads search threads over an ef sweep that stops at the first ef reaching 0.99. "QPS at
recall r" is the best QPS among efs reaching r, with the ef and the recall it reached.

frameseek: HnswIndex with its C++ default M / ef_construction (32 / 300; a new collection's are
IndexConfig's 16 / 200, which lose recall with n on this data: pass --M 16 --ef-construction 200),
its float32 originals in the file-backed store (store_vectors_in), snapshot saved, then restarted
in a fresh child process: load(snapshot, vectors_dir) to the first answered search (wall, CPU),
the first queries' latency, and the sweep on the restarted index. Baselines are built only where
their estimated memory fits in MemAvailable less --headroom-gib; otherwise the table says so.

Resumable: each finished stage is recorded in benchmarks/results/bench_10m_<n>_M<M>_efc<efc>.json and its big
outputs (ground truth, snapshot) kept in --data-dir; a re-run skips what is done (--fresh: start
over). Free disk and memory are checked before each stage, with a clear refusal when short.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

from benchmarks.datasets import VideoLikeStream
from benchmarks.native.bench_hnsw import EFS, NARROW_EFS, RESULTS, TARGETS, best_time, recall
from benchmarks.native.bench_hnsw_compact import by_video, status_kb

K = 10
GiB = 2**30  # GiB: memory and disk sizes below are in GiB
CHUNK_VIDEOS = 100  # 30,000 rows (61 MB) per chunk
SWEEP_EFS = EFS + [768, 1024, 1536, 2048, 3072, 4096]  # up to MAX_EF: recall falls with n
SLOW_PASS_S = 5.0
FIRST_QUERIES = 10
STAGES = ["truth", "frameseek build", "frameseek restart", "faiss HNSWSQ8", "hnswlib", "faiss HNSWFlat"]
BASELINES = STAGES[3:]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_time() -> float:
    return time.process_time()  # every thread of this process


def meminfo_gib(key: str) -> float:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / GiB
    raise KeyError(key)


def frameseek_layer0_slots(M: int, M0: int = 0) -> int:
    """Layer-0 link slots of a frameseek graph at M (--M0, or the native default,
    hnsw_default_layer0_links; the libraries give 2 * M)."""
    from frameseek import _native

    return _native.HnswIndex(1, M=M, M0=M0).M0


def estimated_bytes_per_vector(stage: str, dim: int, M: int, M0: int = 0) -> int:
    """Resident bytes per vector of each library's index: codes, layer-0 links (2M x 4 B; frameseek's
    own count), and the rest (upper layers, per-element locks/levels/offsets, hnswlib's label map)
    fitted to RSS measured at 200k (M 16: frameseek 806, HNSWSQ8 762, hnswlib 2,321, HNSWFlat 2,299 B).
    Checked against MemAvailable before building."""
    links = M * 2 * 4 + 4
    return {
        # int8 code + scale/norm (the originals are file-backed)
        "frameseek build": dim + 8 + frameseek_layer0_slots(M, M0) * 4 + 4 + 160,
        "faiss HNSWSQ8": dim + links + 120,
        "hnswlib": dim * 4 + links + 140,
        "faiss HNSWFlat": dim * 4 + links + 120,
    }[stage]


def snapshot_bytes_estimate(n: int, dim: int, M: int, M0: int = 0) -> int:
    # originals + graph (codes, links) + ids
    return n * (dim * 4 + dim + 8 + frameseek_layer0_slots(M, M0) * 4 + 4 + 16)


# --------------------------------------------------------------------------------------------
# data: chunks without the held-out query rows
# --------------------------------------------------------------------------------------------


class Data:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.stream = VideoLikeStream(cfg["n"], cfg["dim"], frames_per_video=cfg["frames_per_video"], seed=cfg["seed"])
        rng = np.random.default_rng((cfg["seed"], 1))
        self.held = np.sort(rng.choice(cfg["n"], cfg["nq"], replace=False)).astype(np.uint64)
        self.generate_s = 0.0  # wall time spent drawing vectors (not counted as build or search)

    def queries(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out frames plus noise (norm 0.05, as video_like_queries), and their videos."""
        fpv, rng = self.cfg["frames_per_video"], np.random.default_rng((self.cfg["seed"], 2))
        videos = self.held // fpv
        frames = {v: self.stream.video(int(v)) for v in np.unique(videos)}
        q = np.stack([frames[v][r - v * fpv] for r, v in zip(self.held, videos)])
        q += rng.standard_normal(q.shape, dtype=np.float32) * np.float32(0.05 / np.sqrt(q.shape[1]))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        return np.ascontiguousarray(q), videos

    def indexed_ids(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.cfg["n"], dtype=np.uint64), self.held)

    def chunks(self, workers: int = 1, limit_rows: int | None = None):
        """(ids, vectors, groups) of each chunk, held-out rows removed."""
        t, rows = time.perf_counter(), 0
        for first, x, groups in self.stream.chunks(CHUNK_VIDEOS, workers=workers):
            ids = np.arange(first, first + len(x), dtype=np.uint64)
            keep = ~np.isin(ids, self.held)
            self.generate_s += time.perf_counter() - t
            yield ids[keep], x[keep], groups[keep]
            rows += len(x)
            if limit_rows and rows >= limit_rows:
                return
            t = time.perf_counter()


class Progress:
    def __init__(self, what: str, total: int):
        self.what, self.total, self.done, self.t0, self.next = what, total, 0, time.perf_counter(), 0.05

    def add(self, rows: int) -> None:
        self.done += rows
        if self.done >= self.next * self.total or self.done == self.total:
            el = time.perf_counter() - self.t0
            eta = el * (self.total - self.done) / max(self.done, 1)
            log(f"{self.what}: {self.done:,}/{self.total:,} ({self.done / el:,.0f} rows/s, ETA {eta / 60:.0f} min)")
            self.next += 0.05


# --------------------------------------------------------------------------------------------
# stages (each but "truth" runs in its own child process)
# --------------------------------------------------------------------------------------------


def stage_truth(cfg: dict, data_dir: pathlib.Path) -> dict:
    data = Data(cfg)
    t0, c0 = time.perf_counter(), cpu_time()
    q, source = data.queries()
    best_s = np.full((len(q), K), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), K), dtype=np.uint64)
    scan_s, prog = 0.0, Progress("exact top-10", cfg["n"])
    for ids, x, _ in data.chunks(workers=cfg["threads"]):
        if not len(ids):
            continue  # every row of the chunk is a held-out query
        t = time.perf_counter()
        s = q @ x.T
        k = min(K, len(ids))
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]  # the chunk's top-10, then merged with the best so far
        s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        i = np.concatenate([best_i, ids[top]], axis=1)
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        scan_s += time.perf_counter() - t
        prog.add(len(ids))
    order = np.argsort(-best_s, axis=1, kind="stable")
    truth, scores = np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)
    np.savez(data_dir / "truth.tmp.npz", queries=q, source=source, truth=truth, scores=scores)
    os.replace(data_dir / "truth.tmp.npz", data_dir / "truth.npz")
    top1_video = float(np.mean(truth[:, 0] // cfg["frames_per_video"] == source))
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": cpu_time() - c0,
        "generate_wall_s": data.generate_s,
        "scan_wall_s": scan_s,
        "exact_top1_is_source_video": top1_video,
    }


def load_truth(data_dir: pathlib.Path):
    z = np.load(data_dir / "truth.npz")
    return z["queries"], z["source"], z["truth"]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sweep(cfg: dict, search, q, source, truth, efs: list[int]) -> list[dict]:
    """recall@10 / source video first / QPS at 1 and cfg threads, per ef, until recall 0.99."""
    rows, fpv = [], cfg["frames_per_video"]
    for ef in efs:
        t = time.perf_counter()
        found = search(q, ef, 1)
        once = time.perf_counter() - t > SLOW_PASS_S  # a slow pass: time one run, no warm-up or repeats
        row = {
            "ef": ef,
            "recall": recall(found, truth),
            "source_video_first": float(np.mean(found[:, 0] // fpv == source)),
        }
        for th in sorted({1, cfg["threads"]}):
            fn = lambda ef=ef, th=th: search(q, ef, th)  # noqa: E731
            row[f"qps_{th}t"] = len(q) / (best_time(fn, cfg["repeats"]) if not once else timed(fn))
        rows.append(row)
        log(
            f"  ef {ef:5d}: recall {row['recall']:.4f}, video first {row['source_video_first']:.3f}, "
            + ", ".join(f"{k} {v:,.0f}" for k, v in row.items() if k.startswith("qps"))
        )
        if row["recall"] >= max(TARGETS):
            break
    return rows


def build_rows(cfg: dict, data: Data, add, what: str) -> dict:
    """Add every chunk video by video through add(ids, x, groups); times only the adds."""
    wall = cpu = 0.0
    prog = Progress(what, cfg["n"] - cfg["nq"])
    for ids, x, groups in data.chunks():
        for s, e in by_video(groups):
            t, c = time.perf_counter(), cpu_time()
            add(ids[s:e], x[s:e], groups[s:e])
            wall, cpu = wall + time.perf_counter() - t, cpu + cpu_time() - c
        prog.add(len(ids))
    n = cfg["n"] - cfg["nq"]
    return {"build_wall_s": wall, "build_cpu_s": cpu, "vectors_per_s": n / wall, "generate_wall_s": data.generate_s}


def rss_now() -> dict:
    """RssAnon / RssFile once the allocator has returned the benchmark's freed chunks to the
    kernel (glibc keeps freed heap memory, which would count here as the index's)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return status_kb()


def rss_per_vector(base: dict, now: dict, n: int) -> dict:
    return {
        "rss_anon_bytes_per_vector": (now["RssAnon"] - base["RssAnon"]) * 1024 / n,
        "rss_file_bytes_per_vector": (now["RssFile"] - base["RssFile"]) * 1024 / n,
        "rss_anon_gib": now["RssAnon"] * 1024 / GiB,
        "rss_file_gib": now["RssFile"] * 1024 / GiB,
    }


def child_frameseek_build(cfg: dict, data_dir: pathlib.Path) -> dict:
    from frameseek import _native

    data, base = Data(cfg), rss_now()
    idx = _native.HnswIndex(
        cfg["dim"], "ip", max_elements=cfg["n"], M=cfg["M"], ef_construction=cfg["ef_construction"], M0=cfg.get("M0", 0)
    )
    idx.store_vectors_in(str(data_dir))  # as a collection does (CollectionIndex._configure)
    out = build_rows(cfg, data, lambda i, x, g: idx.add(i, x, groups=g, threads=cfg["threads"]), "frameseek build")
    out["M0"] = idx.M0  # layer-0 link slots
    out.update(rss_per_vector(base, rss_now(), cfg["n"] - cfg["nq"]))
    tmp, snap = data_dir / "frameseek.snapshot.tmp", data_dir / "frameseek.snapshot"
    t, c = time.perf_counter(), cpu_time()
    idx.save(str(tmp))
    os.sync()
    out.update(save_wall_s=time.perf_counter() - t, save_cpu_s=cpu_time() - c, snapshot_bytes=tmp.stat().st_size)
    os.replace(tmp, snap)
    return out


def child_frameseek_restart(cfg: dict, data_dir: pathlib.Path, spawned: float) -> dict:
    pre_load = time.time()
    from frameseek import _native
    from frameseek.config import IndexConfig

    q, source, truth = load_truth(data_dir)
    base = rss_now()
    t, c = time.perf_counter(), cpu_time()
    idx = _native.HnswIndex.load(str(data_dir / "frameseek.snapshot"), str(data_dir))
    load_wall, load_cpu = time.perf_counter() - t, cpu_time() - c
    ef0, first_ms = IndexConfig().ef_search, []
    for i in range(FIRST_QUERIES):
        s = time.perf_counter()
        idx.search(q[i : i + 1], K, ef=ef0, threads=1)
        first_ms.append((time.perf_counter() - s) * 1e3)
        if i == 0:
            to_first = {"restart_wall_s": time.perf_counter() - t, "restart_cpu_s": cpu_time() - c}
    out = {
        "process_start_to_imports_s": pre_load - spawned,
        "load_wall_s": load_wall,
        "load_cpu_s": load_cpu,
        **to_first,
        "first_queries_ms": first_ms,
        "first_queries_ef": ef0,
        "after_load": rss_per_vector(base, rss_now(), len(idx)),
    }
    log(f"frameseek restart: load {load_wall:.2f} s, first answer after {to_first['restart_wall_s']:.2f} s")
    out["sweep"] = sweep(
        cfg, lambda q, ef, th: idx.search(q, K, ef=ef, threads=th)[0], q, source, truth, NARROW_EFS + SWEEP_EFS
    )
    out["after_sweep"] = rss_per_vector(base, rss_now(), len(idx))
    return out


def child_baseline(cfg: dict, data_dir: pathlib.Path, stage: str) -> dict:
    import faiss
    import hnswlib

    data, (q, source, truth) = Data(cfg), load_truth(data_dir)
    d, M, efc, n = cfg["dim"], cfg["M"], cfg["ef_construction"], cfg["n"] - cfg["nq"]
    base, out = rss_now(), {}  # before hnswlib's init_index (its per-element locks and label map)
    if stage == "hnswlib":
        index = hnswlib.Index("ip", d)
        index.init_index(n, M=M, ef_construction=efc, random_seed=100)
        add = lambda i, x, g: index.add_items(x, i, num_threads=cfg["threads"])  # noqa: E731

        def search(q, ef, th):
            index.set_ef(max(ef, K))
            return index.knn_query(q, K, num_threads=th)[0].astype(np.uint64)
    else:
        if stage == "faiss HNSWSQ8":
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
            sample = np.concatenate([x for _, x, _ in data.chunks(limit_rows=cfg["train_rows"])])[: cfg["train_rows"]]
            t, c = time.perf_counter(), cpu_time()
            index.train(sample)  # per-dimension ranges (not counted as insertion)
            out.update(train_rows=len(sample), train_wall_s=time.perf_counter() - t, train_cpu_s=cpu_time() - c)
            del sample
            data = Data(cfg)
        else:
            index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = efc
        faiss.omp_set_num_threads(cfg["threads"])
        labels = data.indexed_ids()  # faiss numbers vectors in insertion order
        base = rss_now()  # after the training sample is freed and this (benchmark's own) table made
        add = lambda i, x, g: index.add(x)  # noqa: E731

        def search(q, ef, th):
            faiss.omp_set_num_threads(th)
            index.hnsw.efSearch = max(ef, K)
            found = index.search(q, K)[1]
            return np.where(found >= 0, labels[found], np.uint64(2**64 - 1))  # -1: fewer than K found

    out.update(build_rows(cfg, data, add, stage))
    out.update(rss_per_vector(base, rss_now(), n))
    out["sweep"] = sweep(cfg, search, q, source, truth, SWEEP_EFS)
    return out


# --------------------------------------------------------------------------------------------
# driver: checkpoints, fit and disk checks, the table
# --------------------------------------------------------------------------------------------


def checkpoint(path: pathlib.Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def die_with_parent() -> None:
    """In the child: SIGKILL when the driver dies (a cut-off session leaves no index building)."""
    ctypes.CDLL("libc.so.6").prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def run_child(stage: str, cfg: dict, data_dir: pathlib.Path) -> dict:
    part = data_dir / "stage.json"
    part.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.scale.bench_10m", "--child", stage, "--config", json.dumps(cfg)]
    cmd += ["--data-dir", str(data_dir), "--spawned", repr(time.time())]
    rc = subprocess.run(cmd, preexec_fn=die_with_parent).returncode
    if rc != 0:
        why = "killed by the kernel (out of memory?)" if rc == -9 else f"exit status {rc}"
        return {"error": f"child process failed: {why}"}
    return json.loads(part.read_text())


def refuse_if_short_of_disk(cfg: dict, state: dict, data_dir: pathlib.Path) -> None:
    """The frameseek stages write the snapshot and, while building and again when loading, the
    float32 store file (n x dim x 4 B, unlinked scratch) next to it."""
    n, dim = cfg["n"], cfg["dim"]
    store = n * dim * 4
    need = 0
    if "frameseek build" not in state["stages"]:
        need = store + snapshot_bytes_estimate(n, dim, cfg["M"], cfg.get("M0", 0))
    elif "frameseek restart" not in state["stages"]:
        need = store
    free = shutil.disk_usage(next(p for p in [data_dir, *data_dir.parents] if p.exists())).free
    if need * 1.05 > free:
        sys.exit(
            f"refusing to start: the frameseek stages need ~{need * 1.05 / GiB:.1f} GiB free in {data_dir} "
            f"(float32 store file {store / GiB:.1f} GiB + snapshot ~{(need - store) / GiB:.1f} GiB, 5% margin), "
            f"{free / GiB:.1f} GiB free. Free space or pass --data-dir on a larger disk."
        )


def fits(cfg: dict, stage: str) -> dict | None:
    """None when the stage's estimated memory fits; otherwise the table's 'does not fit' record."""
    need = estimated_bytes_per_vector(stage, cfg["dim"], cfg["M"], cfg.get("M0", 0)) * cfg["n"] / GiB + 0.5
    avail = cfg["memory_gib"] if cfg["memory_gib"] else meminfo_gib("MemAvailable")
    if need + cfg["headroom_gib"] <= avail:
        return None
    total = meminfo_gib("MemTotal")
    return {
        "does_not_fit": f"does not fit: needs ~{need:.1f} GiB of {total:.0f} "
        f"({avail:.1f} GiB available, {cfg['headroom_gib']:.0f} GiB headroom kept)",
        "needs_gib": need,
    }


def qps_cell(sweep_rows: list[dict], target: float, key: str) -> str:
    ok = [r for r in sweep_rows if r["recall"] >= target]
    if not ok:
        top = max(sweep_rows, key=lambda r: r["recall"])
        return f"never reaches (max {top['recall']:.3f} at ef {top['ef']})"
    r = max(ok, key=lambda r: r[key])
    return f"{r[key]:,.0f} (ef {r['ef']}, {r['recall']:.3f}, video {r['source_video_first']:.2f})"


def print_table(state: dict) -> str:
    cfg, st = state["config"], state["stages"]
    n = cfg["n"] - cfg["nq"]
    lines = [
        f"{n:,} x {cfg['dim']}-d indexed, {cfg['nq']} held-out queries, M {cfg['M']} / efC {cfg['ef_construction']}, "
        f"{cfg['threads']} build threads; load average (1 min) at the end of each stage: "
        + ", ".join(f"{k} {v['load_average'][0]:.1f}" for k, v in st.items() if "load_average" in v),
        "",
        "| library | build wall s | build CPU s | vectors/s | RSS anon B/vec | RSS file B/vec | snapshot GiB / save s "
        "| restart s (to 1st answer) | first queries ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = ["frameseek"] + BASELINES
    for name in names:
        b = st.get("frameseek build" if name == "frameseek" else name)
        if b is None:
            lines.append(f"| {name} | not run |" + " |" * 7)
            continue
        if "does_not_fit" in b or "error" in b:
            lines.append(f"| {name} | {b.get('does_not_fit') or b['error']} |" + " |" * 7)
            continue
        r = st.get("frameseek restart", {}) if name == "frameseek" else {}
        snap = f"{b['snapshot_bytes'] / GiB:.2f} / {b['save_wall_s']:.1f}" if "snapshot_bytes" in b else "-"
        rest = f"{r['restart_wall_s']:.2f} (CPU {r['restart_cpu_s']:.2f})" if "restart_wall_s" in r else "-"
        first = ", ".join(f"{x:.1f}" for x in r["first_queries_ms"][:5]) if r.get("first_queries_ms") else "-"
        lines.append(
            f"| {name} | {b['build_wall_s']:,.0f} | {b['build_cpu_s']:,.0f} | {b['vectors_per_s']:,.0f} | "
            f"{b['rss_anon_bytes_per_vector']:,.0f} | {b['rss_file_bytes_per_vector']:,.0f} | {snap} | {rest} | "
            f"{first} |"
        )
    r = st.get("frameseek restart", {})
    if "after_load" in r:
        a, b = r["after_load"], r["after_sweep"]
        lines += [
            "",
            f"frameseek restarted (load {r['load_wall_s']:.2f} s wall, {r['load_cpu_s']:.2f} s CPU; "
            f"first queries at ef {r['first_queries_ef']}): RSS anon / file-backed "
            f"{a['rss_anon_bytes_per_vector']:,.0f} / {a['rss_file_bytes_per_vector']:,.0f} B per vector after load, "
            f"{b['rss_anon_bytes_per_vector']:,.0f} / {b['rss_file_bytes_per_vector']:,.0f} after the sweep "
            f"({b['rss_anon_gib']:.2f} / {b['rss_file_gib']:.2f} GiB)",
        ]
    lines += [
        "",
        "QPS at recall@10 (ef used, recall reached, share of queries whose first result is the source video)",
        "",
    ]
    lines += [
        "| library | threads | " + " | ".join(f"recall {t:.2f}" for t in TARGETS) + " |",
        "|---|---:|---|---|---|",
    ]
    for name in names:
        s = st.get("frameseek restart" if name == "frameseek" else name, {})
        for th in sorted({1, cfg["threads"]}):
            if "sweep" in s:
                lines.append(
                    f"| {name} | {th} | " + " | ".join(qps_cell(s["sweep"], t, f"qps_{th}t") for t in TARGETS) + " |"
                )
    return "\n".join(lines)


def main() -> None:
    from frameseek import _native

    native_default = _native.HnswIndex(1)  # M / ef_construction: the C++ defaults, as pybind exports them
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000, help="library rows (nq of them are held out as queries)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--M", type=int, default=native_default.M)
    ap.add_argument("--ef-construction", type=int, default=native_default.ef_construction)
    ap.add_argument(
        "--M0",
        type=int,
        default=0,
        help="frameseek's layer-0 link slots (0: the native default, hnsw_default_layer0_links)",
    )
    ap.add_argument("--threads", type=int, default=2, help="build threads, and the second search-thread count")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-rows", type=int, default=100_000, help="faiss SQ8 training sample")
    ap.add_argument("--headroom-gib", type=float, default=2.0, help="memory left free when deciding what fits")
    ap.add_argument("--memory-gib", type=float, default=0.0, help="memory to fit in (0: MemAvailable at each stage)")
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="forget finished stages and their files")
    ap.add_argument(
        "--data-dir", help="ground truth, snapshot, store file (default benchmarks/results/bench-10m-N_M.._efc..)"
    )
    ap.add_argument("--child", choices=STAGES[1:], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    run_name = f"{args.n}_M{args.M}" + (f"_L0{args.M0}" if args.M0 else "") + f"_efc{args.ef_construction}"
    data_dir = pathlib.Path(args.data_dir or RESULTS / f"bench-10m-{run_name}")

    if args.child:
        cfg = json.loads(args.config)
        if args.child == "frameseek build":
            out = child_frameseek_build(cfg, data_dir)
        elif args.child == "frameseek restart":
            out = child_frameseek_restart(cfg, data_dir, args.spawned)
        else:
            out = child_baseline(cfg, data_dir, args.child)
        (data_dir / "stage.json").write_text(json.dumps(out))
        return

    cfg = {
        k: getattr(args, k)
        for k in ("n", "dim", "nq", "M", "ef_construction", "threads", "repeats", "seed", "train_rows")
    }
    cfg["frames_per_video"] = 300
    if args.M0:
        cfg["M0"] = args.M0
    path = RESULTS / f"bench_10m_{run_name}.json"
    if args.fresh:
        path.unlink(missing_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    state = json.loads(path.read_text()) if path.exists() else {"config": cfg, "stages": {}}
    if state["config"] != cfg:
        sys.exit(f"{path} holds a run with other settings ({state['config']}); pass --fresh to start over")
    if not (data_dir / "frameseek.snapshot").exists() and "frameseek restart" not in state["stages"]:
        state["stages"].pop("frameseek build", None)  # the restart still needs it; once done, the row stands alone
    if not (data_dir / "truth.npz").exists():
        state["stages"].pop("truth", None)  # deterministic: the stages measured against it stay valid
    refuse_if_short_of_disk(cfg, state, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    state["machine"] = {"cpus": os.cpu_count(), "simd": _native.simd_level(), "mem_total_gib": meminfo_gib("MemTotal")}
    stages = STAGES[:3] if args.skip_baselines else STAGES
    for stage in stages:
        if stage in state["stages"] and not {"error", "does_not_fit"} & set(state["stages"][stage]):
            log(f"{stage}: done in an earlier run, skipped")
            continue
        if stage == "frameseek restart" and "frameseek build" not in state["stages"]:
            continue  # no snapshot to restart from (the build failed: see its row)
        full = dict(cfg, headroom_gib=args.headroom_gib, memory_gib=args.memory_gib)
        if stage in BASELINES or stage == "frameseek build":
            no_room = fits(full, stage)
            if no_room:
                log(f"{stage}: {no_room['does_not_fit']}")
                state["stages"][stage] = no_room
                checkpoint(path, state)
                continue
        log(f"{stage}: start (load average {os.getloadavg()[0]:.1f})")
        out = stage_truth(cfg, data_dir) if stage == "truth" else run_child(stage, cfg, data_dir)
        out["load_average"] = os.getloadavg()
        state["stages"][stage] = out
        checkpoint(path, state)
        log(f"{stage}: {'FAILED: ' + out['error'] if 'error' in out else 'done'} (checkpoint {path})")
    table = print_table(state)
    state["table"] = table
    checkpoint(path, state)
    print(table)


if __name__ == "__main__":
    main()
