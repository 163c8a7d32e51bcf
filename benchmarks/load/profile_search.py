"""Per-call CPU cost of one SearchByVector, layer by layer, in one process (no network).

    python -m benchmarks.load.profile_search                    # 20k-vector index in a temp dir
    python -m benchmarks.load.profile_search --data-dir DIR     # e.g. bench_search's 1M data dir

Measures CPU time of this process (all its threads, grpc's own included), not wall time, so that
the numbers hold on a machine shared with other work; over `--calls` calls each (median of
`--repeats` rounds, in CPU microseconds per call):
  - the gRPC layer's own work, measured as the gap between a bare Health.Check round trip and
    an empty in-process call (grpc.aio server + client, loopback),
  - request deserialisation (what gRPC does with the bytes before the handler),
  - the servicer handler (`FrameSeekServicer.SearchByVector`: translate + service + native search +
    response message), and inside it, separately: the native kNN alone,
  - response serialisation,
  - a full SearchByVector RPC through an in-process grpc.aio server on loopback (client included).
Also prints the top functions of a cProfile of the handler. Writes
benchmarks/results/profile_search.json. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pathlib
import pstats
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from benchmarks.load import bench_search as bs  # noqa: E402


def _per_call_us(fn, calls: int, repeats: int) -> float:
    rounds = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        rounds.append((time.process_time() - t0) / calls * 1e6)
    return statistics.median(rounds)


async def _per_call_us_async(fn, calls: int, repeats: int) -> float:
    rounds = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(calls):
            await fn()
        rounds.append((time.process_time() - t0) / calls * 1e6)
    return statistics.median(rounds)


async def profile(data_dir: pathlib.Path, payloads: list[bytes], calls: int, repeats: int, workers: int) -> dict:
    import grpc
    from grpc_health.v1 import health_pb2

    from frameseek.config import Settings
    from frameseek.server import FrameSeekServer
    from frameseek.v1 import frameseek_pb2 as pb

    # workers > 1 only changes the serving mode (inline search), not the process count here
    settings = Settings(
        address="127.0.0.1:0", data_dir=str(data_dir), metrics_address="", log_level="warning", workers=workers
    )
    srv = FrameSeekServer(settings)
    await srv.start()
    await srv.wait_ready()
    servicer = srv.servicer
    svc = srv.service
    reqs = [pb.SearchByVectorRequest.FromString(p) for p in payloads]
    cid = svc.storage.get_collection(bs.COLLECTION).id
    qs = [np.asarray(r.vector, np.float32).reshape(1, -1) for r in reqs]
    qs = [q / np.linalg.norm(q) for q in qs]
    out: dict[str, float] = {}
    i = 0

    def nxt(seq):
        nonlocal i
        i += 1
        return seq[i % len(seq)]

    out["deserialize request"] = _per_call_us(
        lambda: pb.SearchByVectorRequest.FromString(nxt(payloads)), calls, repeats
    )
    out["native kNN k=40 (inside the handler)"] = _per_call_us(
        lambda: svc.storage.search(cid, nxt(qs), 40), calls, repeats
    )
    out["native search_groups k=10 (fallback)"] = _per_call_us(
        lambda: svc.storage.search_groups(cid, nxt(qs), 10), calls, repeats
    )

    class Ctx:  # the handler touches the context only to abort
        async def abort(self, *a, **k):
            raise RuntimeError(a)

    ctx = Ctx()
    resp = await servicer.SearchByVector(reqs[0], ctx)
    if isinstance(resp, bytes):  # the handler serialises its response itself (servicer.PRESERIALISED)
        resp = pb.SearchResponse.FromString(resp)
    out["servicer handler (translate + service + search + response)"] = await _per_call_us_async(
        lambda: servicer.SearchByVector(nxt(reqs), ctx), calls, repeats
    )
    out["serialize response"] = _per_call_us(resp.SerializeToString, calls, repeats)

    # the handler's layers one by one (the same calls as the handler makes)
    from frameseek import metrics
    from frameseek.api import servicer as servicer_mod
    from frameseek.api.messages import search_options as opts_of
    from frameseek.api.names import parse_collection

    out["  layer: request options -> SearchOptions"] = _per_call_us(lambda: opts_of(nxt(reqs).options), calls, repeats)
    parent = reqs[0].parent
    out["  layer: resolve collection (+ replica freshness check)"] = await _per_call_us_async(
        lambda: svc.collections.get(parse_collection(parent)), calls, repeats
    )
    rec = await svc.collections.get(parse_collection(parent))
    out["  layer: validate options + vector (parse 512 floats, finite)"] = (
        _per_call_us(
            lambda: (
                svc.search.validate_options(opts_of(reqs[0].options)),
                svc.search.check_vector(rec, nxt(reqs).vector),
            ),
            calls,
            repeats,
        )
        - out["  layer: request options -> SearchOptions"]
    )
    qopts = opts_of(reqs[0].options)
    svc.search.validate_options(qopts)
    out["  layer: search incl. hit -> (video, timestamp) mapping"] = _per_call_us(
        lambda: svc.search.nearest_videos(rec, nxt(qs), qopts, None, set()), calls, repeats
    )
    out["  layer: hit -> (video, timestamp) mapping alone (search minus native kNN)"] = (
        out["  layer: search incl. hit -> (video, timestamp) mapping"] - out["native kNN k=40 (inside the handler)"]
    )
    hits = svc.search.nearest_videos(rec, qs[0], qopts, None, set())
    tr = servicer.tr
    build = lambda: tr.hits_bytes(hits, rec.model)  # noqa: E731
    out["  layer: response message + serialisation"] = _per_call_us(build, calls, repeats)
    lat = metrics.LATENCY.labels("SearchByVector")
    mfn = lambda: (servicer_mod._count("SearchByVector", "OK"), lat.observe(0.001))  # noqa: E731
    out["  layer: metrics (request counter + latency histogram)"] = _per_call_us(mfn, calls, repeats)

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        await servicer.SearchByVector(nxt(reqs), ctx)
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)

    address = f"127.0.0.1:{srv.port}"
    async with grpc.aio.insecure_channel(address) as ch:
        health = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None)
        search = ch.unary_unary(
            "/frameseek.v1.FrameSeek/SearchByVector", request_serializer=None, response_deserializer=None
        )
        hp = health_pb2.HealthCheckRequest(service="").SerializeToString()
        await health(hp)
        await search(payloads[0])
        out["RPC Health.Check round trip (client + server, loopback)"] = await _per_call_us_async(
            lambda: health(hp), calls, repeats
        )
        out["RPC SearchByVector round trip (client + server, loopback)"] = await _per_call_us_async(
            lambda: search(nxt(payloads)), calls, repeats
        )
    await srv.stop(0)
    return {"us_per_call": {k: round(v, 1) for k, v in out.items()}, "cprofile": s.getvalue(), "hits": len(resp.hits)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-dir",
        type=pathlib.Path,
        default=None,
        help="a bench_search data dir (default: a fresh 20k-vector one in a temp dir)",
    )
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="serving mode as with serve --workers N")
    ap.add_argument("--out", default="profile_search.json")
    ns = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = ns.data_dir or pathlib.Path(tmp) / "data"
        info = bs.fill(data_dir, ns.n, 512, 100, "ingest")
        queries = bs.sample_queries(256, info["videos"], info["vectors"])
        from frameseek.v1 import frameseek_pb2 as pb

        payloads = [
            pb.SearchByVectorRequest(
                parent=f"collections/{bs.COLLECTION}", vector=q.tolist(), options=pb.SearchOptions(k=10)
            ).SerializeToString()
            for q in queries
        ]
        res = asyncio.run(profile(data_dir, payloads, ns.calls, ns.repeats, ns.workers))
    res.update(vectors=info["vectors"], workers=ns.workers)
    print(
        f"index {info['vectors']} x 512, serving mode workers={ns.workers}; median of {ns.repeats} x {ns.calls} calls"
    )
    print(f"{'layer':64s} {'us/call':>9s}")
    for k, v in res["us_per_call"].items():
        print(f"{k:64s} {v:9.1f}")
    print()
    print(res["cprofile"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ns.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
