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
import contextlib
import io
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

from tests.server.helpers import ServerProcess

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
COLLECTION = "bench"


def topics_for(n: int) -> int:
    """'Kinds of scene' in a synthetic library of n vectors (see video_vectors): ~26 videos each."""
    return max(8, n // 500)


def video_vectors(
    vid_i: int, dim: int, profile: str, per_video: int, topics: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and unit vectors of synthetic video number `vid_i` (deterministic, so queries can
    be drawn from indexed videos without reading the index back).

    profile "ingest" (default) models what ingest stores: consecutive near-duplicate samples are
    dropped (`SamplingSettings.dedup_threshold`), so a static shot keeps about one vector and a
    video keeps one per distinct shot - a log-normal count around 19 (1..120). Each vector is
    topic + video + shot components (squared weights 0.25 / 0.05 / 0.70): two shots of one video
    have cosine ~0.3, samples of two videos of the same topic ~0.25, unrelated ones ~0. Consecutive
    kept samples are thus far below any dedup threshold, as after real dedup.
    profile "static" is the earlier benchmark's data: `per_video` samples per video, a random walk
    of near-duplicates around the video's centre, i.e. what ingest would store *without* dedup of
    long static shots (the 40 nearest frames of a query come from ~2 videos).
    """
    rng = np.random.default_rng([seed, vid_i])
    if profile == "static":
        m = per_video
        centre = rng.standard_normal(dim).astype(np.float32)
        v = centre + np.cumsum(rng.standard_normal((m, dim)).astype(np.float32) * 0.15, axis=0)
        ts = np.arange(m, dtype=np.float64)
    else:
        m = int(np.clip(round(rng.lognormal(np.log(15.0), 0.7)), 1, 120))
        topic = np.random.default_rng([seed, 1 << 40, vid_i % topics]).standard_normal(dim).astype(np.float32)
        own = rng.standard_normal(dim).astype(np.float32)
        shots = rng.standard_normal((m, dim)).astype(np.float32)
        v = 0.5 * topic + 0.224 * own + 0.837 * shots
        ts = np.cumsum(rng.exponential(4.0, m))  # one kept sample per shot, shots ~4 s long
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return ts, v


@contextlib.contextmanager
def _bulk_load(st):
    """Skip the per-video fsyncs while filling (a fill that dies is resumed or rebuilt, never
    recovered): the files written are exactly those of the normal commit path; one os.sync() at the
    end makes them durable."""
    from unittest import mock

    st.catalog._db.execute("PRAGMA synchronous=OFF")
    try:
        with mock.patch.object(os, "fsync", lambda fd: None):
            yield
    finally:
        os.sync()


def bench_collection(st, dim: int, index: dict):
    """Create the benchmarks' collection (COLLECTION: `dim`-d, inner product, 1 sample/s) in storage `st`."""
    return st.create_collection(
        COLLECTION, model="sscd_distilled", dimension=dim, metric="ip", sampling={"fps": 1.0}, index=index
    )


def synthetic_record(collection_id: int, vid_i: int, timestamps: np.ndarray, labels: dict | None = None):
    """The catalog record of synthetic video number `vid_i`, of samples at `timestamps`."""
    from frameseek.storage import VideoRecord

    name = f"synthetic-{vid_i}"
    return VideoRecord(
        id=0, collection_id=collection_id, kind="video", duration=float(timestamps[-1]) + 1.0, width=640, height=360,
        sample_count=len(timestamps), size_bytes=0, content_sha256=name, external_key=name, labels=labels or {},
    )  # fmt: skip


def index_settings(m: int = 0, ef_construction: int = 0, layer0_links: int = 0) -> dict:
    """The benchmark collection's index settings: the server's defaults for new collections
    (IndexConfig), with M / ef_construction / layer0_links overridden where given (non-zero)."""
    from frameseek.config import IndexConfig

    idx = IndexConfig().model_dump()
    return {
        **idx,
        "m": m or idx["m"],
        "ef_construction": ef_construction or idx["ef_construction"],
        "layer0_links": layer0_links or idx["layer0_links"],
    }


def default_data_dir(n: int, profile: str, index: dict) -> pathlib.Path:
    """Where a fill of these settings lives, named by M, the graph's layer-0 link slots (the
    collection's layer0_links, else the native default for that M, hnsw_default_layer0_links, 2 * M
    before 2026-12-07; fills made by fce92ec..c528bd0 hold 32 at M 32) and ef_construction, so
    that a fill with another graph layout is never reused by mistake."""
    from frameseek import _native

    m0 = _native.HnswIndex(1, M=index["m"], M0=index.get("layer0_links") or 0).M0
    return RESULTS / f"load-data-{n}-{profile}-M{index['m']}-L0{m0}-efc{index['ef_construction']}" / "data"


def fill(
    data_dir: pathlib.Path,
    n: int,
    dim: int,
    per_video: int = 100,
    profile: str = "ingest",
    seed: int = 0,
    twins: bool = False,
    index: dict | None = None,
    batch: int = 200,
) -> dict:
    """Fill through the storage layer (the same commit path as ingest: catalog rows, vector log
    records, the fresh segment, and the linker's batched graph inserts; per-commit fsyncs skipped,
    see _bulk_load), `batch` videos per commit until `n` samples; then every vector linked into the
    graph and one snapshot, so that a restart loads it with no log tail to replay. Reuses (and
    resumes) a filled dir; the collection is created with `index` (default: index_settings()), and
    the returned "index" is what the dir holds. `twins`: every sample also gets a coarse twin
    (Storage.add_video(twins=...), as ingest with Settings.views.index_coarse_scale): a vector near
    it (cosine ~0.9), so the index holds 2n vectors."""
    from frameseek.storage import EmbeddedStorage

    st = EmbeddedStorage(str(data_dir), snapshot_every=10**12)
    st.open()
    with _bulk_load(st):
        return _fill(st, n, dim, per_video, profile, seed, twins, index or index_settings(), batch)


def _fill(st, n: int, dim: int, per_video: int, profile: str, seed: int, twins: bool, index: dict, batch: int) -> dict:
    from frameseek.storage import NewVideo

    try:
        c = st.get_collection(COLLECTION)
        vid_i, have = st.collection_counts(c.id)[:2]  # videos and samples filled so far
    except Exception:
        c = bench_collection(st, dim, index)
        vid_i = have = 0
    held = {k: c.index[k] for k in ("m", "ef_construction", "ef_search", "layer0_links") if k in c.index}
    if have >= n:
        st.close(snapshot=False)
        return {
            "vectors": have * (2 if twins else 1), "samples": have, "videos": vid_i, "index": held,
            "fill_s": 0.0, "reused": True,
        }  # fmt: skip
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed + 7, vid_i])  # a resumed fill draws twins from where it resumed
    done = have  # samples so far (counted here: a catalog count per commit would slow the fill)
    while done < n:
        pending = []
        while done < n and len(pending) < batch:
            ts, v = video_vectors(vid_i, dim, profile, per_video, topics_for(n), seed)
            m = min(len(ts), n - done)
            tw = None
            if twins:
                tw = v[:m] + 0.48 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
                tw /= np.linalg.norm(tw, axis=1, keepdims=True)
            rec = synthetic_record(c.id, vid_i, ts[:m], labels={"shelf": str(vid_i % SHELVES)})
            pending.append(NewVideo(rec, ts[:m], v[:m], twins=tw))
            done, vid_i = done + m, vid_i + 1
        st.add_videos(c.id, pending)
        if vid_i % (10 * batch) < batch:
            print(f"  fill {done}/{n} ({(done - have) / (time.perf_counter() - t0):.0f} samples/s)", flush=True)
    st.link_all()  # the whole fill in the graph: a restart loads it, with no log tail to replay
    fill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    st.close(snapshot=True)
    return {
        "vectors": n * (2 if twins else 1),
        "samples": n,
        "videos": vid_i,
        "index": held,
        "fill_s": round(fill_s, 1),
        "snapshot_s": round(time.perf_counter() - t1, 1),
        "reused": False,
    }


#: every filled video carries the label shelf=<video % SHELVES>: a label-filtered search
#: ("lfilter") keeps one shelf, 1/SHELVES of the videos, chosen through the catalog.
SHELVES = 8


def filtered_payloads(queries: np.ndarray, sources: list[int], videos: int) -> dict[str, list[bytes]]:
    """SearchByVector with a filter, k=10: "vfilter" restricts to 200 named videos (the query's
    source and 199 others: SearchFilter.videos), "lfilter" to the label shelf=<source's shelf>
    (SearchFilter.labels, which needs the catalog). `sources`: the synthetic video numbers
    (catalog id = number + 1)."""
    from frameseek.v1 import frameseek_pb2 as pb

    rng = np.random.default_rng(5)
    vf, lf = [], []
    for q, src in zip(queries, sources):
        names = [f"collections/{COLLECTION}/videos/{v}" for v in {src + 1, *rng.integers(1, videos + 1, 199).tolist()}]
        shelf = {"shelf": str(src % SHELVES)}
        for out, f in ((vf, pb.SearchFilter(videos=names)), (lf, pb.SearchFilter(labels=shelf))):
            out.append(
                pb.SearchByVectorRequest(
                    parent=f"collections/{COLLECTION}", vector=q.tolist(), options=pb.SearchOptions(k=10, filter=f)
                ).SerializeToString()
            )
    return {"vfilter": vf, "lfilter": lf}


def sample_queries(
    count: int,
    videos: int,
    n: int,
    dim: int = 512,
    profile: str = "ingest",
    per_video: int = 100,
    seed: int = 1,
    sources: list | None = None,
) -> np.ndarray:
    """Query vectors as a client would send them: an indexed sample of a random video, perturbed
    (cosine ~0.85 to it, like a re-encoded or cropped copy of the frame). `sources`, when given,
    receives each query's source video number (its external key is f"synthetic-{number}")."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), np.float32)
    for j in range(count):
        vid_i = int(rng.integers(videos))
        _, v = video_vectors(vid_i, dim, profile, per_video, topics_for(n))
        q = v[int(rng.integers(len(v)))] + 0.62 * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        out[j] = q / np.linalg.norm(q)
        if sources is not None:
            sources.append(vid_i)
    return out


def source_recall(address: str, queries: np.ndarray, sources: list[int], ef: int, count: int = 300) -> float:
    """Share of queries whose source video is the first hit (SearchByVector k=10 at this ef; one
    call at a time, outside the timed cells): what the QPS rows buy. The synthetic vectors are
    mostly i.i.d. Gaussian components in 512-d (video_vectors), about the hardest data an HNSW
    graph can get, so this needs a larger ef than clustered real embeddings do."""
    import grpc

    from frameseek.v1 import frameseek_pb2 as pb
    from frameseek.v1 import frameseek_pb2_grpc as pb_grpc

    hits = 0
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.FrameSeekStub(ch)
        for q, src in zip(queries[:count], sources[:count]):
            r = stub.SearchByVector(
                pb.SearchByVectorRequest(
                    parent=f"collections/{COLLECTION}", vector=q.tolist(), options=pb.SearchOptions(k=10, ef=ef)
                ),
                timeout=30,
            )
            hits += bool(r.hits) and r.hits[0].video.external_key == f"synthetic-{src}"
    return hits / min(count, len(queries))


def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server(ServerProcess):
    """The load benchmarks' server (bench_restart, ghz, copydetect's and items' too): `workers`
    serving processes, the front end `front_end`; `python`: the interpreter whose frameseek serves
    (a baseline build's venv), this one's by default. start() waits for SERVING (`ready_s`)."""

    def __init__(
        self, data_dir: pathlib.Path, env: dict, workers: int = 1, front_end: str = "native", python: str = ""
    ):
        self.workers, self.front_end = workers, front_end
        serve_args = ("--workers", str(workers), "--front-end", front_end)
        super().__init__(data_dir, env, serve_args=serve_args, python=[python] if python else [])

    def start(self, wait: bool = True, timeout: float = 900.0) -> Server:
        return super().start(wait, timeout)

    def pids(self) -> list[int]:
        """The serving processes: the primary and (with --workers N) its replica children."""
        out = [self.proc.pid]
        try:
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the serving processes."""
        return sum(_proc_cpu_s(p) for p in self.pids())

    def stop(self, timeout: float = 300.0) -> int:
        return super().stop(timeout)


async def _drive(
    address: str,
    method: str,
    payloads: list[bytes],
    concurrency: int,
    duration: float,
    channels: int,
    offset: int = 0,
    start_at: float | None = None,
) -> tuple[list, float, dict, float]:
    """Closed-loop load: `concurrency` workers each send one request after the other until the
    deadline, spread over `channels` separate TCP connections (with `serve --workers N` the kernel
    spreads connections, not calls, over the processes). Requests are pre-serialised bytes (no
    client-side protobuf work)."""
    import grpc

    lat: list[float] = []
    errors: dict[str, int] = {}
    opts = [
        ("grpc.max_send_message_length", 32 << 20),
        ("grpc.max_receive_message_length", 32 << 20),
        ("grpc.use_local_subchannel_pool", 1),
    ]  # one connection per channel
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

        t_start, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu0
    finally:
        for ch in chans:
            await ch.close()
    return lat, wall, errors, cpu


def _drive_proc(args) -> tuple[list, float, dict, float]:
    return asyncio.run(_drive(*args))


async def drive(
    address: str, method: str, payloads: list[bytes], concurrency: int, duration: float, channels: int = 1
) -> dict:
    """Closed-loop load from this process (see _drive); returns the summary row."""
    return _summary(*await _drive(address, method, payloads, concurrency, duration, channels))


def measured(srv: Server, run) -> dict:
    """Run one load cell and add who used the CPU: the serving processes' CPU per call, and the
    server's and the driver's share of the machine's cores over the cell (both run on them)."""
    cpu0, t0 = srv.cpu_s(), time.perf_counter()
    r = run()
    wall, server_cpu = time.perf_counter() - t0, srv.cpu_s() - cpu0
    cores = os.cpu_count() or 1
    r["server_cpu_us_per_call"] = round(server_cpu / max(1, r["requests"]) * 1e6, 1)
    # over the load's own wall time: with several driver processes the cell also spans their
    # start-up, when the server idles
    r["server_cpu_share"] = round(server_cpu / (r.get("wall_s", wall) * cores), 3)
    if r.get("driver_cpu_s") is not None:
        r["driver_cpu_share"] = round(r["driver_cpu_s"] / (r["wall_s"] * cores), 3)
    return r


def _ghz():
    """benchmarks/load/ghz/run.py as a module (it is a script directory, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("frameseek_ghz_run", ROOT / "benchmarks" / "load" / "ghz" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_load(
    address: str,
    method: str,
    payloads: list[bytes],
    concurrency: int,
    duration: float,
    channels: int = 8,
    procs: int = 1,
) -> dict:
    """Run the load from `procs` client processes (a single Python client tops out near one core)."""
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        return asyncio.run(drive(address, method, payloads, concurrency, duration, channels))
    import concurrent.futures
    import multiprocessing

    start_at = time.time() + 5.0  # time for the spawned interpreters to import grpc and connect
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    args = [
        (address, method, payloads, per[i], duration, max(1, channels // procs), sum(per[:i]), start_at)
        for i in range(procs)
    ]
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as ex:
        results = list(ex.map(_drive_proc, args))
    lat = [x for r in results for x in r[0]]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r[2].items():
            errors[k] = errors.get(k, 0) + v
    return _summary(lat, max(r[1] for r in results), errors, sum(r[3] for r in results))


def _summary(lat: list[float], wall: float, errors: dict | None = None, driver_cpu_s: float | None = None) -> dict:
    a = np.asarray(lat) * 1000 if lat else np.asarray([np.nan])
    out = {
        "requests": len(lat),
        "qps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "errors": errors or {},
        "wall_s": round(wall, 3),
    }
    if driver_cpu_s is not None:
        out["driver_cpu_s"] = round(driver_cpu_s, 3)
    return out


def native_baseline(
    data_dir: pathlib.Path, queries: np.ndarray, duration: float, threads: int, kind: str = "groups"
) -> dict:
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
        out.append(
            pb.SearchByImageRequest(
                parent=f"collections/{COLLECTION}", image=buf.getvalue(), options=pb.SearchOptions(k=10)
            ).SerializeToString()
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument(
        "--profile",
        choices=("ingest", "static"),
        default="ingest",
        help="synthetic data: 'ingest' = what ingest stores after dropping near-duplicate samples "
        "(~19 distinct shots per video); 'static' = 100 near-duplicate samples per video",
    )
    ap.add_argument("--per-video", type=int, default=100, help="samples per video of --profile static")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement cell")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--rpcs", default="health,vector,native", help="of health,vector,vfilter,lfilter,image,native")
    ap.add_argument(
        "--drivers",
        default="python,ghz",
        help="load drivers, of python,ghz (ghz: make sdk-setup; it drives SearchByVector/SearchByImage only)",
    )
    ap.add_argument("--m", type=int, default=0, help="HNSW M of a new fill (0: the server's default)")
    ap.add_argument(
        "--ef-construction", type=int, default=0, help="HNSW ef_construction of a new fill (0: the server's default)"
    )
    ap.add_argument(
        "--layer0-links",
        type=int,
        default=0,
        help="layer-0 link slots of a new fill (0: the server's default, hnsw_default_layer0_links)",
    )
    ap.add_argument(
        "--data-dir",
        type=pathlib.Path,
        default=None,
        help="default: benchmarks/results/load-data-N-PROFILE-M..-L0..-efc.. (default_data_dir)",
    )
    ap.add_argument(
        "--servers",
        default="native:1,python:1,python:2",
        help="server set-ups to compare, FRONT_END:WORKERS (frameseek serve --front-end/--workers), "
        "one server "
        "after the other in this run",
    )
    ap.add_argument(
        "--efs",
        default="0,256",
        help="SearchOptions.ef values of SearchByVector (0 = the breadth the server tuned for the "
        "collection's target recall, from its ef_search up); each is also checked for recall",
    )
    # One channel per client process, as gRPC recommends (calls multiplex over it; more TCP
    # connections from one process only add per-call work on both ends), and two driver processes:
    # one Python process tops out near one core at concurrency 16, which would cap the load below
    # what the server answers. Before 2026-12-03 the defaults were 8 connections from 1 process.
    ap.add_argument(
        "--channels",
        type=int,
        default=2,
        help="client TCP connections in all (spread over driver processes and server workers)",
    )
    ap.add_argument("--client-procs", type=int, default=2, help="Python load-driver processes")
    ap.add_argument("--out", default="load_search.json", help="file name under benchmarks/results/")
    ns = ap.parse_args(argv)
    if ns.dim != 512:
        raise SystemExit("the server's model is 512-d; --dim is fixed at 512 for SearchByImage")
    RESULTS.mkdir(parents=True, exist_ok=True)
    index = index_settings(ns.m, ns.ef_construction, ns.layer0_links)
    data_dir = ns.data_dir or default_data_dir(ns.n, ns.profile, index)
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"filling {ns.n} x {ns.dim} vectors into {data_dir} ...", flush=True)
    fill_info = fill(data_dir, ns.n, ns.dim, ns.per_video, ns.profile, index=index)
    held = fill_info["index"]  # a reused dir keeps the settings it was filled with
    print(f"  {fill_info}")
    sources: list[int] = []
    queries = sample_queries(
        2000, fill_info["videos"], fill_info["vectors"], ns.dim, ns.profile, ns.per_video, sources=sources
    )
    efs = [int(e) for e in ns.efs.split(",")]
    conc = [int(c) for c in ns.concurrency.split(",")]
    rpcs = ns.rpcs.split(",")
    drivers = [d for d in ns.drivers.split(",") if d]
    rows: list[dict] = []
    restarts: dict[str, float] = {}
    recall: dict[str, float] = {}
    env = {**os.environ, "FRAMESEEK_METRICS_ADDRESS": "", "FRAMESEEK_LOG_LEVEL": "warning"}
    from grpc_health.v1 import health_pb2

    from frameseek.v1 import frameseek_pb2 as pb

    payloads = {
        **{
            f"vector@{ef}": [
                pb.SearchByVectorRequest(
                    parent=f"collections/{COLLECTION}", vector=q.tolist(), options=pb.SearchOptions(k=10, ef=ef)
                ).SerializeToString()
                for q in queries
            ]
            for ef in efs
        },
        "image": image_payloads(50) if "image" in rpcs else [],
        **(filtered_payloads(queries, sources, fill_info["videos"]) if {"vfilter", "lfilter"} & set(rpcs) else {}),
        "health": [health_pb2.HealthCheckRequest(service="").SerializeToString()],
    }
    methods = {
        "health": "/grpc.health.v1.Health/Check",
        "image": "/frameseek.v1.FrameSeek/SearchByImage",
        **{rpc: "/frameseek.v1.FrameSeek/SearchByVector" for rpc in ("vfilter", "lfilter")},
        **{f"vector@{ef}": "/frameseek.v1.FrameSeek/SearchByVector" for ef in efs},
    }
    tuned = f"tuned (from {held['ef_search']})"
    labels = {
        "health": "baseline: Health.Check (bare gRPC)",
        "image": "SearchByImage k=10",
        "vfilter": "SearchByVector k=10, filter: 200 videos",
        "lfilter": "SearchByVector k=10, filter: a label (1/8)",
        **{f"vector@{ef}": f"SearchByVector k=10 ef={ef or tuned}" for ef in efs},
    }
    ghz = tmp = protoset = None
    if "ghz" in drivers:
        import tempfile

        ghz = _ghz()
        if not ghz.GHZ.exists() or not ghz.BUF.exists():
            raise SystemExit("ghz/buf not found: run `make sdk-setup` (or pass --drivers python)")
        tmp = tempfile.TemporaryDirectory()
        protoset = ghz.build_protoset(pathlib.Path(tmp.name) / "frameseek.protoset")
        for rpc in [f"vector@{ef}" for ef in efs] + ["image"]:
            if payloads[rpc]:
                ghz.write_binary_file(payloads[rpc], pathlib.Path(tmp.name) / f"{rpc}.bin")

    def cell(srv: Server, driver: str, rpc: str, c: int) -> dict | None:
        if driver == "python":
            return measured(
                srv,
                lambda: run_load(
                    srv.address, methods[rpc], payloads[rpc], c, ns.duration, ns.channels, ns.client_procs
                ),
            )
        if rpc == "health":  # ghz gets the schema from a protoset of proto/, which has no health service
            return None
        import resource

        def run() -> dict:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = ghz.run_ghz(
                srv.address,
                methods[rpc][1:],
                protoset,
                pathlib.Path(tmp.name) / f"{rpc}.bin",
                c,
                ns.duration,
                connections=ns.channels,
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            r["driver_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            r["wall_s"] = ns.duration
            return r

        return measured(srv, run)

    try:
        for setup in ns.servers.split(","):
            front, _, workers = setup.partition(":")
            srv = Server(data_dir, env, int(workers or 1), front)
            w = f"{front} x{srv.workers}" if srv.workers > 1 else front
            restart_s = srv.start().ready_s
            restarts[w] = round(restart_s, 2)
            print(
                f"{w}: restart with {fill_info['vectors']} vectors {restart_s:.2f} s "
                f"(process start -> every process SERVING)",
                flush=True,
            )
            try:
                if "vector" in rpcs:
                    for ef in efs:
                        recall[f"{w} ef={ef}"] = rec = source_recall(srv.address, queries, sources, ef)
                        print(f"{w}: source video first at ef={ef}: {rec:.3f}", flush=True)
                for c in conc:
                    for rpc in ["health"] + [f"vector@{ef}" for ef in efs] + ["vfilter", "lfilter", "image"]:
                        if rpc.split("@")[0] not in rpcs:
                            continue
                        for driver in drivers:
                            r = cell(srv, driver, rpc, c)
                            if r is None:
                                continue
                            rows.append({"workers": w, "driver": driver, "rpc": labels[rpc], "concurrency": c, **r})
                            print(rows[-1], flush=True)
            finally:
                srv.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()
    if "native" in rpcs:
        for kind, label in (("groups", "native search_groups k=10"), ("knn", "native kNN k=40")):
            for threads in (1, 2):
                r = native_baseline(data_dir, queries, ns.duration, threads, kind)
                rows.append(
                    {
                        "workers": "-",
                        "driver": "in-process",
                        "rpc": f"baseline: {label}, {threads} thread(s)",
                        "concurrency": threads,
                        **r,
                    }
                )
                print(rows[-1], flush=True)
    print()
    print(
        f"index: {fill_info['vectors']} x {ns.dim} ({fill_info.get('videos')} videos, profile {ns.profile}; "
        f"HNSW M={held['m']} ef_c={held['ef_construction']} ef_search={held['ef_search']}), "
        f"restart s by server {restarts}, {os.cpu_count()} cores, channels={ns.channels}, "
        f"python client procs={ns.client_procs}"
    )
    print(f"source video first (recall@1 of the copied video, 300 queries): {recall}")
    print(table(rows))
    out = {
        "n": fill_info["vectors"],
        "dim": ns.dim,
        "profile": ns.profile,
        "fill": fill_info,
        "restart_s": restarts,
        "duration_s": ns.duration,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "channels": ns.channels,
        "client_procs": ns.client_procs,
        "source_recall_at_1": recall,
        "rows": rows,
    }
    (RESULTS / ns.out).write_text(json.dumps(out, indent=2))
    return 0


def table(rows: list[dict]) -> str:
    """Markdown table of the result rows (as pasted into benchmarks/load/README.md)."""
    out = [
        "| server | driver | rpc | conc | QPS | p50 ms | p95 ms | p99 ms | server CPU us/call | server CPU | "
        "driver CPU | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        pct = lambda k, r=r: f"{100 * r[k]:.0f}%" if k in r else "-"  # noqa: E731
        out.append(
            f"| {r['workers']} | {r['driver']} | {r['rpc']} | {r['concurrency']} | {r['qps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r.get('server_cpu_us_per_call', '-')} | {pct('server_cpu_share')} | {pct('driver_cpu_share')} | "
            f"{r['errors'] or ''} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
