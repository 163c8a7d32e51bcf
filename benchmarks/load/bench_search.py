"""Load test of the search RPCs through a real server on loopback.

    python -m benchmarks.load.bench_search                 # 1M x 512-d, 10 s per cell
    python -m benchmarks.load.bench_search --n 100000 --duration 5

1. Fills a data directory with N synthetic video-like 512-d vectors through the storage layer
   (cached under benchmarks/results/ and reused by later runs), taking a snapshot.
2. Starts `frameseek serve` on it and times the restart (process start -> health SERVING).
3. For each concurrency (1/16/64) drives, for a bounded time, with an async grpc.aio client that
   sends pre-serialised requests (so the client spends little CPU on protobuf):
     - baseline: grpc.health.v1 Check (the transport's ceiling on this machine),
     - baseline: the native index in-process (no RPC),
     - SearchByVector (k=10) and SearchByImage (k=10; includes decoding + embedding the image).
   Reports QPS and p50/p95/p99 latency; writes benchmarks/results/load_search.json.
Everything stays on 127.0.0.1 and every loop stops at its deadline.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
COLLECTION = "bench"


def fill(data_dir: pathlib.Path, n: int, dim: int, per_video: int, seed: int = 0) -> dict:
    """Synthetic fill through the storage layer (video-like: each video is a random walk around
    its own centre, so neighbouring samples are similar as in real footage)."""
    from frameseek.storage import EmbeddedStorage, VideoRecord

    st = EmbeddedStorage(str(data_dir), snapshot_every=10**12)
    st.open()
    try:
        c = st.get_collection(COLLECTION)
        have = st.vectors_of(c.id)
    except Exception:
        c = st.create_collection(COLLECTION, model="sscd_distilled", dimension=dim, metric="ip",
                                 sampling={"fps": 1.0}, index={"m": 16, "ef_construction": 100, "ef_search": 64})
        have = 0
    if have >= n:
        st.close(snapshot=False)
        return {"vectors": have, "fill_s": 0.0, "reused": True}
    rng = np.random.default_rng(seed + have)
    t0 = time.perf_counter()
    vid_i = have // per_video
    while st.vectors_of(c.id) < n:
        m = min(per_video, n - st.vectors_of(c.id))
        centre = rng.standard_normal(dim).astype(np.float32)
        walk = np.cumsum(rng.standard_normal((m, dim)).astype(np.float32) * 0.15, axis=0)
        v = centre + walk
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        rec = VideoRecord(id=0, collection_id=c.id, kind="video", duration=float(m), width=640, height=360,
                          sample_count=m, size_bytes=0, content_sha256=f"synthetic-{vid_i}",
                          external_key=f"synthetic-{vid_i}")
        st.add_video(c.id, rec, np.arange(m, dtype=np.float64), v)
        vid_i += 1
        if vid_i % 500 == 0:
            done = st.vectors_of(c.id)
            print(f"  fill {done}/{n} ({done / (time.perf_counter() - t0):.0f} vectors/s)", flush=True)
    fill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    st.close(snapshot=True)
    return {"vectors": n, "fill_s": round(fill_s, 1), "snapshot_s": round(time.perf_counter() - t1, 1),
            "reused": False}


def sample_queries(data_dir: pathlib.Path, count: int, seed: int = 1) -> np.ndarray:
    """Queries near indexed vectors (read back from the index snapshot through the storage)."""
    rng = np.random.default_rng(seed)
    dim = 512
    q = rng.standard_normal((count, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


class Server:
    def __init__(self, data_dir: pathlib.Path, env: dict, workers: int = 1):
        self.data_dir, self.env, self.workers = data_dir, env, workers
        self.port_file = data_dir.parent / "bench.port"

    def start(self) -> float:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if self.port_file.exists():
            self.port_file.unlink()
        t0 = time.perf_counter()
        self.log = open(self.data_dir.parent / "bench-server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "frameseek.cli", "serve", "--address", "127.0.0.1:0",
                                      "--data-dir", str(self.data_dir), "--port-file", str(self.port_file),
                                      "--workers", str(self.workers)],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise SystemExit("server failed to start; see benchmarks/results/bench-server.log")
            time.sleep(0.02)
        self.address = f"127.0.0.1:{int(self.port_file.read_text())}"
        with grpc.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(service="frameseek.v1.FrameSeek"),
                                  timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - t0
                except grpc.RpcError:
                    pass
                time.sleep(0.02)
        raise SystemExit("server did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def _drive(address: str, method: str, payloads: list[bytes], concurrency: int, duration: float,
                 channels: int, offset: int = 0, start_at: float | None = None) -> tuple[list, float, dict]:
    """Closed-loop load: `concurrency` workers each send one request after the other until the
    deadline, spread over `channels` separate TCP connections (with `serve --workers N` the kernel
    spreads connections, not calls, over the processes). Requests are pre-serialised bytes (no
    client-side protobuf work)."""
    import grpc

    lat: list[float] = []
    errors: dict[str, int] = {}
    opts = [("grpc.max_send_message_length", 32 << 20), ("grpc.max_receive_message_length", 32 << 20),
            ("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
    chans = [grpc.aio.insecure_channel(address, options=opts) for _ in range(max(1, min(channels, concurrency)))]
    try:
        calls = [ch.unary_unary(method, request_serializer=None, response_deserializer=None) for ch in chans]
        for call in calls:
            await call(payloads[0], timeout=60)  # warm the connections
        if start_at is not None:  # several driver processes start together
            await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.perf_counter() + duration

        async def worker(i: int) -> None:
            call = calls[i % len(calls)]
            j = offset + i
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    await call(payloads[j % len(payloads)], timeout=30)
                    lat.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] = errors.get(e.code().name, 0) + 1
                j += concurrency

        t_start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall = time.perf_counter() - t_start
    finally:
        for ch in chans:
            await ch.close()
    return lat, wall, errors


def _drive_proc(args) -> tuple[list, float, dict]:
    return asyncio.run(_drive(*args))


async def drive(address: str, method: str, payloads: list[bytes], concurrency: int, duration: float,
                channels: int = 1) -> dict:
    """Closed-loop load from this process (see _drive); returns the summary row."""
    return _summary(*await _drive(address, method, payloads, concurrency, duration, channels))


def run_load(address: str, method: str, payloads: list[bytes], concurrency: int, duration: float,
             channels: int = 8, procs: int = 1) -> dict:
    """Run the load from `procs` client processes (a single Python client tops out near one core)."""
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        return asyncio.run(drive(address, method, payloads, concurrency, duration, channels))
    import concurrent.futures
    import multiprocessing

    start_at = time.time() + 5.0  # time for the spawned interpreters to import grpc and connect
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    args = [(address, method, payloads, per[i], duration, max(1, channels // procs), sum(per[:i]), start_at)
            for i in range(procs)]
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as ex:
        results = list(ex.map(_drive_proc, args))
    lat = [x for r in results for x in r[0]]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r[2].items():
            errors[k] = errors.get(k, 0) + v
    return _summary(lat, max(r[1] for r in results), errors)


def _summary(lat: list[float], wall: float, errors: dict | None = None) -> dict:
    a = np.asarray(lat) * 1000 if lat else np.asarray([np.nan])
    return {"requests": len(lat), "qps": round(len(lat) / wall, 1), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p95_ms": round(float(np.percentile(a, 95)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "errors": errors or {}}


def native_baseline(data_dir: pathlib.Path, queries: np.ndarray, duration: float, threads: int,
                    kind: str = "groups") -> dict:
    """The same index searched in-process, one query per call from `threads` threads (no RPC):
    `groups` = native search_groups (k=10 videos), `knn` = plain kNN of 40 frames (what
    SearchByVector runs first)."""
    import threading

    from frameseek.storage import EmbeddedStorage

    st = EmbeddedStorage(str(data_dir))
    st.open()
    cid = st.get_collection(COLLECTION).id
    lat: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def run(i: int) -> None:
        mine = []
        j = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            if kind == "groups":
                st.search_groups(cid, queries[j % len(queries)][None], 10)
            else:
                st.search(cid, queries[j % len(queries)][None], 40)
            mine.append(time.perf_counter() - t0)
            j += threads
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    st.close(snapshot=False)
    return _summary(lat, wall)


def image_payloads(count: int) -> list[bytes]:
    from PIL import Image

    from frameseek.v1 import frameseek_pb2 as pb

    rng = np.random.default_rng(3)
    out = []
    for _ in range(count):
        img = np.kron(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(pb.SearchByImageRequest(parent=f"collections/{COLLECTION}", image=buf.getvalue(),
                                           options=pb.SearchOptions(k=10)).SerializeToString())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--per-video", type=int, default=100, help="samples per synthetic video")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement cell")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--rpcs", default="health,native,vector,image")
    ap.add_argument("--data-dir", type=pathlib.Path, default=None)
    ap.add_argument("--workers", type=int, default=1, help="frameseek serve --workers")
    ap.add_argument("--channels", type=int, default=8, help="client TCP connections (spread over workers)")
    ap.add_argument("--client-procs", type=int, default=1, help="load-driver processes")
    ap.add_argument("--out", default="load_search.json", help="file name under benchmarks/results/")
    ns = ap.parse_args(argv)
    if ns.dim != 512:
        raise SystemExit("the server's model is 512-d; --dim is fixed at 512 for SearchByImage")
    RESULTS.mkdir(parents=True, exist_ok=True)
    data_dir = ns.data_dir or RESULTS / f"load-data-{ns.n}" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"filling {ns.n} x {ns.dim} vectors into {data_dir} ...", flush=True)
    fill_info = fill(data_dir, ns.n, ns.dim, ns.per_video)
    print(f"  {fill_info}")
    queries = sample_queries(data_dir, 2000)
    conc = [int(c) for c in ns.concurrency.split(",")]
    rpcs = ns.rpcs.split(",")
    rows = []
    env = {**os.environ, "FRAMESEEK_METRICS_ADDRESS": "", "FRAMESEEK_LOG_LEVEL": "warning"}
    srv = Server(data_dir, env, ns.workers)
    restart_s = srv.start()
    print(f"restart with {fill_info['vectors']} vectors: {restart_s:.2f} s (process start -> SERVING)", flush=True)
    try:
        from grpc_health.v1 import health_pb2

        from frameseek.v1 import frameseek_pb2 as pb

        vec_payloads = [pb.SearchByVectorRequest(parent=f"collections/{COLLECTION}", vector=q.tolist(),
                                                 options=pb.SearchOptions(k=10)).SerializeToString()
                        for q in queries]
        health_payloads = [health_pb2.HealthCheckRequest(service="").SerializeToString()]
        for c in conc:
            if "health" in rpcs:
                r = (run_load(srv.address, "/grpc.health.v1.Health/Check", health_payloads, c, ns.duration,
                                      ns.channels, ns.client_procs))
                rows.append({"rpc": "baseline: Health.Check (bare gRPC)", "concurrency": c, **r})
                print(rows[-1], flush=True)
            if "vector" in rpcs:
                r = (run_load(srv.address, "/frameseek.v1.FrameSeek/SearchByVector", vec_payloads, c,
                                      ns.duration, ns.channels, ns.client_procs))
                rows.append({"rpc": "SearchByVector k=10", "concurrency": c, **r})
                print(rows[-1], flush=True)
            if "image" in rpcs:
                r = (run_load(srv.address, "/frameseek.v1.FrameSeek/SearchByImage", image_payloads(50), c,
                                      ns.duration, ns.channels, ns.client_procs))
                rows.append({"rpc": "SearchByImage k=10", "concurrency": c, **r})
                print(rows[-1], flush=True)
    finally:
        srv.stop()
    if "native" in rpcs:
        for kind, label in (("groups", "native search_groups k=10"), ("knn", "native kNN k=40")):
            for threads in (1, 2):
                r = native_baseline(data_dir, queries, ns.duration, threads, kind)
                rows.append({"rpc": f"baseline: {label} in-process, {threads} thread(s)",
                             "concurrency": threads, **r})
                print(rows[-1], flush=True)
    print()
    print(f"index: {fill_info['vectors']} x {ns.dim} (HNSW M=16 ef_c=100 ef=64), restart {restart_s:.2f} s, "
          f"{os.cpu_count()} cores, workers={ns.workers}, channels={ns.channels}, client procs={ns.client_procs}")
    print(f"{'rpc':58s} {'conc':>5s} {'QPS':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}  errors")
    for r in rows:
        print(f"{r['rpc']:58s} {r['concurrency']:5d} {r['qps']:9.1f} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} "
              f"{r['p99_ms']:8.2f}  {r['errors'] or ''}")
    out = {"n": fill_info["vectors"], "dim": ns.dim, "fill": fill_info, "restart_s": round(restart_s, 2),
           "duration_s": ns.duration, "cores": os.cpu_count(), "machine": platform.machine(),
           "workers": ns.workers, "channels": ns.channels, "client_procs": ns.client_procs, "rows": rows}
    (RESULTS / ns.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
