"""UpsertItems throughput over gRPC beside Milvus Lite (`python -m benchmarks.items.bench_upsert`).

frameseek: a real `frameseek serve` on loopback, an own-vector collection (cosine), N random
unit vectors streamed by the Python client in batches (one UpsertItems stream); the figure is
vectors acknowledged (durable and searchable) per second, for items of one vector and of
--multi vectors each. A spot check searches a few of them back.

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


def frameseek_rate(vecs: np.ndarray, per_item: int, batch_items: int, name: str, fs: Client) -> dict:
    fs.create_collection(name, vector_dimension=vecs.shape[1], metric="cosine")
    n_items = len(vecs) // per_item
    rows = ((f"k{i}", vecs[i * per_item : (i + 1) * per_item], None) for i in range(n_items))
    t = time.perf_counter()
    r = fs.upsert_items(rows, collection=name, batch_size=batch_items, timeout=3600)
    secs = time.perf_counter() - t
    found = sum(
        fs.search_by_vector(vecs[i * per_item], collection=name, k=1).hits[0].video.external_key == f"k{i}"
        for i in range(0, n_items, max(1, n_items // 20))
    )
    return {
        "items": int(r.item_count),
        "vectors": int(r.vector_count),
        "seconds": secs,
        "vectors_per_s": r.vector_count / secs,
        "items_per_s": r.item_count / secs,
        "spot_check_found": found,
    }


def milvus_rate(vecs: np.ndarray, batch: int, workdir: str) -> dict | None:
    try:
        from pymilvus import MilvusClient
    except ImportError:
        return None
    client = MilvusClient(os.path.join(workdir, "milvus.db"))
    client.create_collection("bench", dimension=vecs.shape[1], metric_type="COSINE", auto_id=False)
    t = time.perf_counter()
    for s in range(0, len(vecs), batch):
        client.insert("bench", [{"id": s + i, "vector": v} for i, v in enumerate(vecs[s : s + batch].tolist())])
    client.flush("bench")
    secs = time.perf_counter() - t
    client.close()
    return {"vectors": len(vecs), "seconds": secs, "vectors_per_s": len(vecs) / secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--n", type=int, default=3_000, help="vectors per run (one-vector items commit one by one: keep it small)"
    )
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--multi", type=int, default=64, help="vectors per item in the multi-vector run")
    ap.add_argument("--batch", type=int, default=1000, help="vectors per streamed batch")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((a.n, a.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    report: dict = {"config": vars(a)}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {**os.environ, "FRAMESEEK_METRICS_ADDRESS": "", "FRAMESEEK_LOG_LEVEL": "warning"}
        srv = Server(data, env)
        srv.start()
        try:
            with Client(srv.address) as fs:
                report["frameseek_1_per_item"] = frameseek_rate(vecs, 1, a.batch, "one", fs)
                report[f"frameseek_{a.multi}_per_item"] = frameseek_rate(
                    vecs, a.multi, max(1, a.batch // a.multi), "multi", fs
                )
        finally:
            srv.proc.terminate()
            srv.proc.wait()
        report["milvus_lite"] = milvus_rate(vecs, a.batch, tmp)
    print(f"{'system':<28}{'vectors':>9}{'seconds':>9}{'vectors/s':>11}")
    for k, r in report.items():
        if k == "config" or r is None:
            continue
        print(f"{k:<28}{r['vectors']:>9}{r['seconds']:>9.2f}{r['vectors_per_s']:>11.0f}")
    if report["milvus_lite"] is None:
        print("milvus_lite: not installed (pip install pymilvus milvus-lite)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
