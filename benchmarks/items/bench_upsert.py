"""UpsertItems throughput over gRPC beside Milvus Lite (`python -m benchmarks.items.bench_upsert`).

frameseek: a real `frameseek serve` on loopback, an own-vector collection (cosine), N random
unit vectors streamed by the Python client in batches (one UpsertItems stream); the figure is
vectors acknowledged (durable and searchable) per second, for items of one vector and of
--multi vectors each. A commit puts the vectors into the collection's exact fresh segment and the
server's linker moves them into the HNSW graph in the background, so each run also reports the
backlog left when the stream ended (GetStats unlinked_vectors), the seconds until it was linked,
and recall@10 of --queries searches (stored vectors plus noise) against an exact numpy search,
right after the stream (while the vectors are mostly in the fresh segment) and once linked.
`--sustained N` adds a run of N vectors (--multi per item) that does not wait for the graph: its
rate, the backlog it leaves, recall@10 right after it ("searchable at once") and the server's
resident memory (run it under `nice`: the machine is shared).

Milvus Lite (pymilvus's embedded Milvus, when installed): the same vectors into a collection of
the same dimension and metric, inserted in the same batches, then flushed (its durability
point), in the same run.

Prints a table and writes benchmarks/results/upsert.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.load.bench_search import Server
from frameseek.client import Client

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "upsert.json"
K = 10


def _unlinked(fs: Client, name: str) -> int:
    return next(int(c.unlinked_vectors) for c in fs.stats().collections if c.collection == f"collections/{name}")


def _recall(fs: Client, name: str, vecs: np.ndarray, per_item: int, queries: np.ndarray) -> float:
    """Mean recall@K of SearchByVector against the exact top-K items (an item scores its best vector)."""
    exact = (queries @ vecs.T).reshape(len(queries), -1, per_item).max(axis=2)
    hits = 0
    for q, scores in zip(queries, exact):
        want = {f"k{i}" for i in np.argsort(-scores)[:K]}
        got = {h.video.external_key for h in fs.search_by_vector(q, collection=name, k=K).hits}
        hits += len(want & got)
    return hits / (K * len(queries))


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_memory(pid: int) -> dict:
    """The server's resident memory now and at its peak (GiB), from /proc (Linux)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except OSError:
        return {}
    return {k: int(fields[f].split()[0]) / 2**20 for k, f in (("rss_gib", "VmRSS"), ("peak_rss_gib", "VmHWM"))}


def frameseek_rate(
    vecs: np.ndarray,
    per_item: int,
    batch_items: int,
    name: str,
    fs: Client,
    queries: np.ndarray,
    *,
    wait_linked: bool = True,
    server_pid: int | None = None,
) -> dict:
    fs.create_collection(name, vector_dimension=vecs.shape[1], metric="cosine")
    n_items = len(vecs) // per_item
    vecs = vecs[: n_items * per_item]
    rows = ((f"k{i}", vecs[i * per_item : (i + 1) * per_item], None) for i in range(n_items))
    server_cpu, client_cpu = _cpu_seconds(server_pid) if server_pid else 0.0, time.process_time()
    t = time.perf_counter()
    r = fs.upsert_items(rows, collection=name, batch_size=batch_items, timeout=3600)
    secs = time.perf_counter() - t
    client_cpu = time.process_time() - client_cpu
    server_cpu = _cpu_seconds(server_pid) - server_cpu if server_pid else None
    backlog = _unlinked(fs, name)
    recall_at_once = _recall(fs, name, vecs, per_item, queries)
    out = {
        "items": int(r.item_count),
        "vectors": int(r.vector_count),
        "seconds": secs,
        "vectors_per_s": r.vector_count / secs,
        "items_per_s": r.item_count / secs,
        "unlinked_at_end": backlog,
        "recall_at_once": recall_at_once,
        # CPU while the stream ran: the client process (making and sending the items) and the whole
        # server (its commits, and the linker building the graph meanwhile at a lower priority)
        "client_cpu_s": client_cpu,
        "server_cpu_s": server_cpu,
        **(_server_memory(server_pid) if server_pid else {}),
    }
    if not wait_linked:  # a sustained run: its backlog takes the graph minutes to link
        return out
    while _unlinked(fs, name):
        time.sleep(0.2)
    out["linked_after_s"] = time.perf_counter() - t - secs
    out["recall_linked"] = _recall(fs, name, vecs, per_item, queries)
    return out


def milvus_rate(vecs: np.ndarray, batch: int, workdir: str) -> dict | None:
    try:
        from pymilvus import MilvusClient
    except ImportError:
        return None
    client = MilvusClient(os.path.join(workdir, "milvus.db"))
    client.create_collection("bench", dimension=vecs.shape[1], metric_type="COSINE", auto_id=False)
    # Milvus Lite runs in this process (its engine is a library): its CPU is this process's
    cpu = time.process_time()
    t = time.perf_counter()
    for s in range(0, len(vecs), batch):
        client.insert("bench", [{"id": s + i, "vector": v} for i, v in enumerate(vecs[s : s + batch].tolist())])
    client.flush("bench")
    secs = time.perf_counter() - t
    out = {
        "vectors": len(vecs),
        "seconds": secs,
        "vectors_per_s": len(vecs) / secs,
        "client_cpu_s": time.process_time() - cpu,  # client and engine together
        "server_cpu_s": None,
    }
    client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="vectors per run")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--multi", type=int, default=64, help="vectors per item in the multi-vector run")
    ap.add_argument("--batch", type=int, default=1000, help="vectors per streamed batch")
    ap.add_argument("--queries", type=int, default=50, help="searches for the recall columns")
    ap.add_argument(
        "--sustained",
        type=int,
        default=0,
        help="then stream this many vectors (--sustained-per-item per item) in one more run, without waiting "
        "for the backlog to be linked: the rate, the backlog, recall at once and the server's memory",
    )
    ap.add_argument("--sustained-per-item", type=int, default=0, help="vectors per item of that run (default --multi)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((a.n, a.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[rng.choice(a.n, a.queries, replace=False)] + 0.05 * rng.standard_normal((a.queries, a.dim))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    report: dict = {"config": vars(a), "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {**os.environ, "FRAMESEEK_METRICS_ADDRESS": "", "FRAMESEEK_LOG_LEVEL": "warning"}
        srv = Server(data, env)
        srv.start()
        try:
            with Client(srv.address) as fs:
                pid = srv.proc.pid
                report["frameseek_1_per_item"] = frameseek_rate(vecs, 1, a.batch, "one", fs, queries, server_pid=pid)
                report[f"frameseek_{a.multi}_per_item"] = frameseek_rate(
                    vecs, a.multi, max(1, a.batch // a.multi), "multi", fs, queries, server_pid=pid
                )
                if a.sustained:
                    big = rng.standard_normal((a.sustained, a.dim)).astype(np.float32)
                    big /= np.linalg.norm(big, axis=1, keepdims=True)
                    picks = big[rng.choice(len(big), a.queries, replace=False)]
                    near = picks + 0.05 * rng.standard_normal(picks.shape)
                    near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)
                    per = a.sustained_per_item or a.multi
                    report[f"frameseek_sustained_{per}_per_item"] = frameseek_rate(
                        big,
                        per,
                        max(1, a.batch // per),
                        "sustained",
                        fs,
                        near,
                        wait_linked=False,
                        server_pid=srv.proc.pid,
                    )
                    del big
        finally:
            srv.proc.terminate()
            srv.proc.wait()
        report["milvus_lite"] = milvus_rate(vecs, a.batch, tmp)
    print(
        f"{'system':<34}{'vectors':>9}{'seconds':>9}{'vectors/s':>11}{'client CPU s':>13}{'server CPU s':>13}"
        f"{'backlog':>9}{'linked s':>10}{'recall now':>12}{'linked':>8}"
    )
    for k, r in report.items():
        if not isinstance(r, dict) or "vectors_per_s" not in r:
            continue
        extra = ""
        if "unlinked_at_end" in r:
            linked = f"{r['linked_after_s']:>10.1f}" if "linked_after_s" in r else f"{'-':>10}"
            extra = f"{r['unlinked_at_end']:>9}{linked}{r['recall_at_once']:>12.3f}"
            extra += f"{r['recall_linked']:>8.3f}" if "recall_linked" in r else f"{'-':>8}"
            if "rss_gib" in r and "linked_after_s" not in r:
                extra += f"  server RSS {r['rss_gib']:.2f} GiB (peak {r['peak_rss_gib']:.2f})"
        cpu = "".join(
            f"{r[c]:>13.2f}" if r.get(c) is not None else f"{'-':>13}" for c in ("client_cpu_s", "server_cpu_s")
        )
        print(f"{k:<34}{r['vectors']:>9}{r['seconds']:>9.2f}{r['vectors_per_s']:>11.0f}{cpu}{extra}")
    if report["milvus_lite"] is None:
        print("milvus_lite: not installed (pip install pymilvus milvus-lite)")
    print(f"load average at start: {report['load_average'][0]:.1f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
