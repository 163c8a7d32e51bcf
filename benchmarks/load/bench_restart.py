"""Restart time of the embedded server: where `HnswIndex.load` and storage recovery spend it, and
process start -> SERVING, with what the first searches cost while the index is cold.

    python -m benchmarks.load.bench_restart                  # 200k x 512-d, M 16
    python -m benchmarks.load.bench_restart --n 300000 --repeat 3

1. Fills a data directory with N synthetic video-like 512-d vectors (bench_search's ingest profile)
   through the storage layer in batched commits (Storage.add_videos), one snapshot at the end.
   The graph is built with a small ef_construction (default 40) to keep the fill short: a restart
   reads the graph's bytes, whose size depends on M and N, not on ef_construction. Reused by later
   runs (benchmarks/results/restart-data-N).
2. In this process, with the snapshot in the page cache (a restarted process, not a rebooted
   machine): the pieces of a load - reading the file, its checksum, `HnswIndex.load` whole (format
   5 maps the float32 originals; the same file rewritten in format 4 reads them), the later check
   of the mapped originals, the walk copy's rebuild - and the storage's whole recovery
   (`EmbeddedStorage.open`).
3. `frameseek serve` on the data dir, `--repeat` times: process start -> health SERVING, then the
   latency of the first SearchByVector calls (k 10) against the same queries asked again (while
   the mapped originals fault in: the first re-ranks read them from the page cache or the disk);
   `--serve-format4` serves the same data with the snapshot in format 4 too (the same build).
Prints a table and writes benchmarks/results/restart.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import struct
import sys
import time
import zlib

import numpy as np

from .bench_search import (
    COLLECTION,
    RESULTS,
    Server,
    _proc_cpu_s,
    fill,
    index_settings,
    sample_queries,
)


def _best(fn, repeat: int) -> tuple[float, float]:
    """(wall s, CPU s of this process, all threads) of the fastest of `repeat` calls."""
    runs = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(runs)


def snapshot_format(path: str) -> int:
    with open(path, "rb") as f:
        return struct.unpack("<8sI", f.read(12))[1]


def as_format_4(path: str, out: str) -> None:
    """The same format 5 snapshot in format 4, as the previous build wrote it: the float32
    originals right after the walk section header (no padding, no trailer of their own), one CRC-32
    over everything after the magic (native/src/hnsw_snapshot.cpp); streamed."""
    head = 8 + 16 + 56
    size = os.path.getsize(path)
    with open(path, "rb") as f, open(out, "wb") as o:
        h = bytearray(f.read(head))
        n_live, graph_bytes = struct.unpack_from("<QQ", h, head - 16)
        struct.pack_into("<I", h, 8, 4)
        f.seek(size - 24)
        vectors_at, vector_bytes = struct.unpack("<QQ", f.read(16))
        o.write(h)
        crc = zlib.crc32(h[8:])
        for at, left in ((head, graph_bytes + 16 * n_live + 16), (vectors_at, vector_bytes)):
            f.seek(at)
            while left:
                chunk = f.read(min(left, 1 << 22))
                crc = zlib.crc32(chunk, crc)
                o.write(chunk)
                left -= len(chunk)
        o.write(struct.pack("<I", crc))


BASELINE_LOAD = """
import sys, time
from frameseek import _native
runs = []
for _ in range(int(sys.argv[2])):
    t0, c0 = time.perf_counter(), time.process_time()
    _native.HnswIndex.load(sys.argv[1])
    runs.append((time.perf_counter() - t0, time.process_time() - c0))
print(*min(runs))
"""


def _evict(path: str) -> None:
    """Drop the file's pages from the page cache (written back first), so the next reads go to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _largest_snapshot(data_dir: pathlib.Path) -> str:
    """The benchmark's collection's snapshot file (the server adds an empty "default" beside it)."""
    snapshots = []
    for d in (data_dir / "collections").iterdir():
        if (d / "snapshot.json").exists():
            index = d / json.loads((d / "snapshot.json").read_text())["index"]
            snapshots.append((os.path.getsize(index), str(index)))
    return max(snapshots)[1]


def in_process(data_dir: pathlib.Path, repeat: int, baseline_python: str) -> dict:
    """The pieces of a load, best of `repeat`, page cache warm."""
    from frameseek import _native
    from frameseek.storage import EmbeddedStorage

    path = _largest_snapshot(data_dir)
    if snapshot_format(path) < 5:  # filled by an earlier build: what its next snapshot writes
        _native.HnswIndex.load(path).save(path)
    v4 = str(data_dir.parent / "format4.hnsw")
    as_format_4(path, v4)
    scratch = str(data_dir.parent)  # recovery's vectors_dir: rows added later go to a file there
    size = os.path.getsize(path)

    def read_file():
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(size)
            f.readinto(buf)

    def crc_file():
        crc = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                crc = zlib.crc32(chunk, crc)

    read_file()  # into the page cache
    out: dict = {"index_file_mb": round(size / 2**20, 1), "format4_file_mb": round(os.path.getsize(v4) / 2**20, 1)}
    out["read_file"] = _best(read_file, repeat)
    out["zlib_crc32"] = _best(crc_file, repeat)
    out["load_format5"] = _best(lambda: _native.HnswIndex.load(path), repeat)
    out["load_format5_vectors_dir"] = _best(lambda: _native.HnswIndex.load(path, vectors_dir=scratch), repeat)
    out["load_format4_vectors_dir"] = _best(lambda: _native.HnswIndex.load(v4, vectors_dir=scratch), repeat)
    mapped = _native.HnswIndex.load(path)
    out["check_mapped_vectors"] = _best(mapped.check_mapped_vectors, repeat)
    mapped = None
    if baseline_python:
        import subprocess

        r = subprocess.run(
            [baseline_python, "-c", BASELINE_LOAD, v4, str(repeat)], capture_output=True, text=True, check=True
        )
        out["load_format4_baseline_build"] = tuple(float(x) for x in r.stdout.split())
    idx = _native.HnswIndex.load(path)
    out["vectors"] = len(idx)

    def rebuild_copy(idx=idx):
        idx.walk_precision = "float32"
        idx.walk_precision = "int8"

    out["walk_copy_rebuild"] = _best(rebuild_copy, repeat)
    idx = rebuild_copy = None  # free the index before the storage opens another
    os.remove(v4)

    def storage_open():  # as the server opens it: the row checksums are left to after SERVING
        st = EmbeddedStorage(str(data_dir), check_rows_at_open=False)
        st.open()
        st.close(snapshot=False)

    def check_rows():
        st = EmbeddedStorage(str(data_dir), check_rows_at_open=False)
        st.open()
        t0, c0 = time.perf_counter(), time.process_time()
        st.check_rows()
        took = (time.perf_counter() - t0, time.process_time() - c0)
        st.close(snapshot=False)
        return took

    out["storage_open"] = _best(storage_open, repeat)
    out["check_rows"] = min(check_rows() for _ in range(repeat))
    return {k: tuple(round(x, 3) for x in v) if isinstance(v, tuple) else v for k, v in out.items()}


def first_queries(address: str, queries: np.ndarray) -> dict:
    """Latency of each SearchByVector on a just-started server, then of the same queries again."""
    import grpc

    from frameseek.v1 import frameseek_pb2 as pb
    from frameseek.v1 import frameseek_pb2_grpc as pb_grpc

    reqs = [
        pb.SearchByVectorRequest(parent=f"collections/{COLLECTION}", vector=q.tolist(), options=pb.SearchOptions(k=10))
        for q in queries
    ]
    passes = []
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.FrameSeekStub(ch)
        for _ in range(2):
            lat = []
            for r in reqs:
                t0 = time.perf_counter()
                stub.SearchByVector(r, timeout=60)
                lat.append((time.perf_counter() - t0) * 1e3)
            passes.append(np.array(lat))
    cold, warm = passes
    return {
        "first_ms": round(float(cold[0]), 2),
        "first_10_mean_ms": round(float(cold[:10].mean()), 2),
        "first_100_mean_ms": round(float(cold[:100].mean()), 2),
        "cold_pass_mean_ms": round(float(cold.mean()), 2),
        "warm_pass_mean_ms": round(float(warm.mean()), 2),
        "cold_pass_p99_ms": round(float(np.percentile(cold, 99)), 2),
        "warm_pass_p99_ms": round(float(np.percentile(warm, 99)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument(
        "--m", type=int, default=16, help="HNSW M of a new fill (the restart runs' M 16; 0: the server's default)"
    )
    ap.add_argument(
        "--ef-construction", type=int, default=40, help="HNSW ef_construction of a new fill (0: the server's default)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--data-dir", default="")
    ap.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds after the first queries before the server's CPU is read again",
    )
    ap.add_argument(
        "--baseline-python",
        default="",
        help="a Python whose frameseek._native is the baseline build (its load timed too)",
    )
    ap.add_argument(
        "--baseline-serve-python",
        default="",
        help="a Python whose frameseek is the baseline build: `frameseek serve` on the same data dir with it too",
    )
    ap.add_argument(
        "--serve-format4",
        action="store_true",
        help="also serve the same data dir with its snapshot rewritten in format 4 (originals read at load)",
    )
    ap.add_argument(
        "--evict-snapshot",
        action="store_true",
        help="drop the snapshot file's pages from the page cache before each start (POSIX_FADV_DONTNEED: "
        "what a rebooted machine's first reads cost, for that file only)",
    )
    ap.add_argument("--out", default="restart.json", help="file name under benchmarks/results/")
    ns = ap.parse_args(argv)
    data_dir = pathlib.Path(ns.data_dir) if ns.data_dir else RESULTS / f"restart-data-{ns.n}" / "data"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    filled = fill(data_dir, ns.n, ns.dim, index=index_settings(ns.m, ns.ef_construction))
    print(f"fill: {filled}", flush=True)
    pieces = in_process(data_dir, ns.repeat, ns.baseline_python)
    print(f"in process: {pieces}", flush=True)

    env = {**os.environ, "FRAMESEEK_METRICS_ADDRESS": "", "FRAMESEEK_LOG_LEVEL": "warning"}
    queries = sample_queries(ns.queries, filled["videos"], ns.n, ns.dim)
    empty = data_dir.parent / "empty"  # the fixed cost: a server on a data dir without vectors
    serves, empty_serves, baseline_serves, format4_serves = [], [], [], []
    for _ in range(ns.repeat):
        srv = Server(empty, env)
        empty_serves.append((round(srv.start().ready_s, 3), round(_proc_cpu_s(srv.proc.pid), 3)))
        srv.stop()
        if ns.evict_snapshot:
            _evict(_largest_snapshot(data_dir))
        srv = Server(data_dir, env)
        restart_s = srv.start().ready_s
        cpu_s = _proc_cpu_s(srv.proc.pid)  # the server's CPU (all threads) from exec to SERVING
        try:
            run = {"restart_s": round(restart_s, 3), "restart_cpu_s": round(cpu_s, 3)}
            serves.append({**run, **first_queries(srv.address, queries)})
            time.sleep(ns.settle)  # the work left to after SERVING (row checks, messages) ends meanwhile
            serves[-1]["cpu_s_after_settle"] = round(_proc_cpu_s(srv.proc.pid), 3)
        finally:
            srv.stop()
        print(f"serve: {serves[-1]} (empty data dir: {empty_serves[-1]} s, CPU-s)", flush=True)
        if ns.serve_format4:  # the same build and data, the snapshot as the previous build wrote it
            snap = _largest_snapshot(data_dir)
            kept = str(data_dir.parent / "format5.hnsw")  # outside: recovery deletes unnamed snapshot-* files
            os.replace(snap, kept)
            as_format_4(kept, snap)
            if ns.evict_snapshot:
                _evict(snap)
            srv = Server(data_dir, env)
            try:
                restart_s = srv.start().ready_s
                run = {"restart_s": round(restart_s, 3), "restart_cpu_s": round(_proc_cpu_s(srv.proc.pid), 3)}
                format4_serves.append({**run, **first_queries(srv.address, queries)})
            finally:
                srv.stop()
                os.replace(kept, snap)
            print(f"format 4 serve: {format4_serves[-1]}", flush=True)
        if ns.baseline_serve_python:  # the same data dir served by the baseline's start path
            srv = Server(data_dir, env, python=ns.baseline_serve_python)
            restart_s = srv.start().ready_s
            cpu_s = _proc_cpu_s(srv.proc.pid)
            try:
                run = {"restart_s": round(restart_s, 3), "restart_cpu_s": round(cpu_s, 3)}
                baseline_serves.append({**run, **first_queries(srv.address, queries)})
            finally:
                srv.stop()
            print(f"baseline serve: {baseline_serves[-1]}", flush=True)

    per_1m = 1e6 / pieces["vectors"]
    labels = {
        "read_file": "read the file (page cache, Python)",
        "zlib_crc32": "zlib.crc32 of the file (Python, one core)",
        "load_format5": "HnswIndex.load, format 5 (originals mapped)",
        "load_format5_vectors_dir": "HnswIndex.load(vectors_dir), format 5, as recovery calls it",
        "load_format4_vectors_dir": "HnswIndex.load(vectors_dir), format 4 (originals read), as recovery calls it",
        "check_mapped_vectors": "check_mapped_vectors (after SERVING in the server)",
        "load_format4_baseline_build": "HnswIndex.load, format 4, baseline build",
        "walk_copy_rebuild": "int8 walk copy rebuilt alone",
        "storage_open": "EmbeddedStorage.open as the server's (quick_check + load + video map rows)",
        "check_rows": "catalog row checksums (after SERVING in the server)",
    }
    print(
        f"\n{pieces['vectors']} x {ns.dim}-d, M {ns.m}, format 5 file {pieces['index_file_mb']} MB "
        f"(format 4: {pieces['format4_file_mb']} MB), {os.cpu_count()} cores, best of {ns.repeat}, page cache warm; "
        "per 1M = linear extrapolation\n"
    )
    print("| step | wall s | CPU s | wall s per 1M | CPU s per 1M |\n|---|---:|---:|---:|---:|")
    for key, label in labels.items():
        if key in pieces:
            w, c = pieces[key]
            print(f"| {label} | {w:.3f} | {c:.3f} | {w * per_1m:.2f} | {c * per_1m:.2f} |")
    best = min(serves, key=lambda s: s["restart_s"])
    fixed, fixed_cpu = min(empty_serves)
    print(
        f"\nprocess start -> SERVING: {best['restart_s']:.3f} s ({best['restart_cpu_s']:.3f} CPU-s) with the index, "
        f"{fixed:.3f} s ({fixed_cpu:.3f} CPU-s) on an empty data dir (the difference, "
        f"{best['restart_s'] - fixed:.3f} s / {best['restart_cpu_s'] - fixed_cpu:.3f} CPU-s, is "
        f"{(best['restart_s'] - fixed) * per_1m:.2f} s / "
        f"{(best['restart_cpu_s'] - fixed_cpu) * per_1m:.2f} CPU-s per 1M)\n"
    )
    print("| first searches after SERVING | " + " | ".join(best) + " |")
    print("|---|" + "---:|" * len(best))
    for s in serves:
        print("| run | " + " | ".join(str(v) for v in s.values()) + " |")
    for s in format4_serves:
        print("| format 4 run | " + " | ".join(str(v) for v in s.values()) + " |")
    for s in baseline_serves:
        print("| baseline run | " + " | ".join(str(v) for v in s.values()) + " |")
    out = {
        "n": pieces["vectors"],
        "dim": ns.dim,
        "m": ns.m,
        "ef_construction": ns.ef_construction,
        "fill": filled,
        "in_process": pieces,
        "serve": serves,
        "serve_empty_data_dir_s_cpu_s": empty_serves,
        "serve_baseline": baseline_serves,
        "serve_format4": format4_serves,
        "cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ns.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
