"""ghz load scenario: SearchByVector and SearchByImage at rising concurrency on loopback, next to
the Python load driver (benchmarks/load/bench_search.py) for the same scenario in the same run.

    make ghz-bench                                              # defaults below
    .venv/bin/python benchmarks/load/ghz/run.py --n 100000 --duration 5 --concurrency 1,16,64

Scenario (shared with bench_search, whose helpers it reuses so the two drivers see the very same
server, index and requests):
  1. an index of --n synthetic video-like 512-d vectors, filled through the storage layer by
     bench_search.fill (cached under bench_search.default_data_dir and reused by both drivers);
  2. one `frameseek serve` on 127.0.0.1 (port 0 + port file) over that data directory;
  3. for each RPC and each concurrency, a closed loop bounded by --duration seconds:
       ghz   (Go, github.com/bojand/ghz; requests round-robin over the same pre-serialised
              messages, given as a count-delimited --binary-file), one HTTP/2 connection. ghz
              gets the schema as a protoset built by buf, not through reflection: it looks up
              methods as "Service.Method" symbols, which the Python reflection service (protobuf's
              upb descriptor pool) does not resolve;
       python (bench_search.drive: grpc.aio, same pre-serialised messages), one channel.
     The two alternate per cell so drift (thermal, other tenants) hits both alike.
Reports QPS and p50/p95/p99 latency per cell, prints a table and writes
benchmarks/results/ghz_load.json. ghz runs from build/tools/bin (make sdk-setup installs it).
Everything stays on 127.0.0.1, and every loop stops at its deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
GHZ = ROOT / "build" / "tools" / "bin" / "ghz"
BUF = ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "buf"
METHODS = {
    "vector": "frameseek.v1.FrameSeek/SearchByVector",
    "image": "frameseek.v1.FrameSeek/SearchByImage",
}

try:
    from benchmarks.load import bench_search as driver
except ImportError as exc:  # pragma: no cover - depends on the server stream's driver being merged
    raise SystemExit(f"benchmarks/load/bench_search.py (the Python load driver) is needed: {exc}") from None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_binary_file(payloads: list[bytes], path: pathlib.Path) -> None:
    """ghz's --binary-file format for several messages: each one prefixed by its varint length."""
    path.write_bytes(b"".join(_varint(len(p)) + p for p in payloads))


def vector_payloads(count: int, fill_info: dict, profile: str, per_video: int) -> list[bytes]:
    from frameseek.v1 import frameseek_pb2 as pb

    q = driver.sample_queries(count, fill_info["videos"], fill_info["vectors"], 512, profile, per_video)
    return [
        pb.SearchByVectorRequest(
            parent=f"collections/{driver.COLLECTION}", vector=v.tolist(), options=pb.SearchOptions(k=10)
        ).SerializeToString()
        for v in q
    ]


def build_protoset(out: pathlib.Path) -> pathlib.Path:
    """proto/ as a FileDescriptorSet (with the well-known imports) for ghz --protoset."""
    subprocess.run(
        [str(BUF), "build", str(ROOT / "proto"), "--as-file-descriptor-set", "-o", str(out)], check=True, cwd=ROOT
    )
    return out


def run_ghz(
    address: str,
    method: str,
    protoset: pathlib.Path,
    data_file: pathlib.Path,
    concurrency: int,
    duration: float,
    connections: int = 1,
) -> dict:
    """One ghz cell; its JSON report reduced to the driver's summary shape."""
    cmd = [
        str(GHZ),
        "--insecure",
        "--protoset",
        str(protoset),
        "--call",
        method,
        "--binary-file",
        str(data_file),
        "-c",
        str(concurrency),
        "--connections",
        str(max(1, min(connections, concurrency))),
        "-z",
        f"{duration}s",
        "--timeout",
        "30s",
        "--max-recv-message-size",
        "32MiB",
        "--max-send-message-size",
        "32MiB",
        "-O",
        "json",
        address,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(f"ghz failed ({proc.returncode}): {proc.stderr.strip()}")
    return summarize_report(json.loads(proc.stdout))


def summarize_report(rep: dict) -> dict:
    """ghz's JSON report as the driver's summary: OK count, QPS, percentiles, and the errors that
    are the server's, apart from the calls cut by ghz stopping at its deadline."""
    pct = {int(d["percentage"]): d["latency"] / 1e6 for d in rep.get("latencyDistribution") or []}
    codes = dict(rep.get("statusCodeDistribution") or {})
    ok = int(codes.pop("OK", 0))
    # At the deadline ghz closes its connection under the requests still in flight (one per
    # worker); they come back as UNAVAILABLE "use of closed network connection". They are the
    # driver stopping, not server errors, so they are counted apart.
    # Others come back as Canceled: "context canceled" (ghz cancels the context of the calls in
    # flight when -z ends) or grpc-go's "the client connection is closing" (a call that started
    # just as ghz closed its connection): the same thing. Both are made on the client; the
    # server's own errors carry other messages and stay in `errors`.
    errs = rep.get("errorDistribution") or {}
    cut = sum(
        n for msg, n in errs.items() if "use of closed network connection" in msg or "transport is closing" in msg
    )
    canceled = sum(
        n
        for msg, n in errs.items()
        if "code = Canceled" in msg and ("context canceled" in msg or "the client connection is closing" in msg)
    )
    if cut:
        codes["Unavailable"] = codes.get("Unavailable", 0) - cut
    if canceled:
        codes["Canceled"] = codes.get("Canceled", 0) - canceled
        cut += canceled
    errors = {k: v for k, v in codes.items() if v}
    stop_messages = (
        "use of closed network connection",
        "transport is closing",
        "context canceled",
        "the client connection is closing",
    )
    messages = {msg: n for msg, n in errs.items() if not any(m in msg for m in stop_messages)}
    total_s = rep["total"] / 1e9
    return {
        "requests": ok,
        "qps": round(ok / total_s, 1) if total_s else 0.0,
        "p50_ms": round(pct.get(50, float("nan")), 3),
        "p95_ms": round(pct.get(95, float("nan")), 3),
        "p99_ms": round(pct.get(99, float("nan")), 3),
        "errors": errors,
        "error_messages": messages,
        "cut_at_deadline": cut,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index (bench_search's default)")
    ap.add_argument("--profile", choices=("ingest", "static"), default="ingest", help="bench_search --profile")
    ap.add_argument("--per-video", type=int, default=100, help="samples per video of --profile static")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per cell and driver")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--rpcs", default="vector,image")
    ap.add_argument("--data-dir", type=pathlib.Path, default=None)
    ap.add_argument("--out", type=pathlib.Path, default=RESULTS / "ghz_load.json")
    ns = ap.parse_args(argv)
    for tool in (GHZ, BUF):
        if not tool.exists():
            raise SystemExit(f"{tool.name} not found at {tool}: run `make sdk-setup`")
    rpcs = [r for r in ns.rpcs.split(",") if r]
    for r in rpcs:
        if r not in METHODS:
            raise SystemExit(f"unknown rpc {r!r}; choose from {sorted(METHODS)}")
    conc = [int(c) for c in ns.concurrency.split(",")]

    RESULTS.mkdir(parents=True, exist_ok=True)
    data_dir = ns.data_dir or driver.default_data_dir(ns.n, ns.profile, driver.index_settings())
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"index: {ns.n} x 512 vectors in {data_dir} ...", flush=True)
    fill_info = driver.fill(data_dir, ns.n, 512, ns.per_video, ns.profile)
    print(f"  {fill_info}", flush=True)

    payloads = {"vector": vector_payloads(256, fill_info, ns.profile, ns.per_video), "image": driver.image_payloads(16)}
    env = {**os.environ, "FRAMESEEK_METRICS_ADDRESS": "", "FRAMESEEK_LOG_LEVEL": "warning"}
    server = driver.Server(data_dir, env)
    ready_s = server.start().ready_s
    print(f"server {server.address} ready in {ready_s:.1f} s", flush=True)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            protoset = build_protoset(pathlib.Path(tmp) / "frameseek.protoset")
            for rpc in rpcs:
                data_file = pathlib.Path(tmp) / f"{rpc}.bin"
                write_binary_file(payloads[rpc], data_file)
                method = METHODS[rpc]
                grpc_path = "/" + method
                for i, c in enumerate(conc):
                    cell = {"rpc": rpc, "concurrency": c}
                    order = ("ghz", "python") if i % 2 == 0 else ("python", "ghz")
                    for who in order:
                        if who == "ghz":
                            cell["ghz"] = run_ghz(server.address, method, protoset, data_file, c, ns.duration)
                        else:
                            cell["python"] = asyncio.run(
                                driver.drive(server.address, grpc_path, payloads[rpc], c, ns.duration)
                            )
                    rows.append(cell)
                    g, p = cell["ghz"], cell["python"]
                    print(
                        f"  {rpc:<6} c={c:<3} ghz {g['qps']:>8.1f} qps p99 {g['p99_ms']:>8.2f} ms | "
                        f"python {p['qps']:>8.1f} qps p99 {p['p99_ms']:>8.2f} ms",
                        flush=True,
                    )
    finally:
        server.stop()

    head = (
        f"{'rpc':<7}{'conc':>5} | {'ghz qps':>9}{'p50':>8}{'p95':>8}{'p99':>8} | "
        f"{'python qps':>10}{'p50':>8}{'p95':>8}{'p99':>8}   (latency ms)"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        g, p = r["ghz"], r["python"]
        both = {"ghz": g["errors"], "python": p["errors"]}
        err = "  errors: " + json.dumps(both) if g["errors"] or p["errors"] else ""
        print(
            f"{r['rpc']:<7}{r['concurrency']:>5} | {g['qps']:>9.1f}{g['p50_ms']:>8.2f}{g['p95_ms']:>8.2f}"
            f"{g['p99_ms']:>8.2f} | {p['qps']:>10.1f}{p['p50_ms']:>8.2f}{p['p95_ms']:>8.2f}{p['p99_ms']:>8.2f}{err}"
        )
    ghz_version = subprocess.run([str(GHZ), "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "benchmark": "ghz_load",
        "n_vectors": ns.n,
        "duration_s": ns.duration,
        "fill": fill_info,
        "server_ready_s": round(ready_s, 2),
        "ghz_version": ghz_version,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": rows,
    }
    ns.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
