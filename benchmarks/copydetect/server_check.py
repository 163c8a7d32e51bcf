"""End-to-end check of copy detection through a real frameseek server (gRPC on loopback).

    python -m benchmarks.copydetect.server_check [--quick] [--per-transform 1]

Starts `frameseek serve` on 127.0.0.1 (a free port, a fresh data dir under build/copydetect/),
ingests the harness's references over gRPC, then for a subset of the harness queries
(`--per-transform` copies of each transform, plus unrelated and title-card queries) calls
SearchByVideo with the server's default threshold and checks: a copy's source is reported with
the right offset (±1 s at the middle of the copied interval), an unrelated query reports nothing.
Dedup-on-ingest: a copy uploaded with duplicate_policy=REPORT must list its source in `copies`,
an unrelated upload must list nothing. Prints a table and writes
benchmarks/results/copydetect_server.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.copydetect.run import CACHE, ROOT, build_media
from tests.server.helpers import ServerProcess

OUT = ROOT / "benchmarks" / "results" / "copydetect_server.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--per-transform", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    refs, queries = build_media(a.seed, 8 if a.quick else 24, 2 if a.quick else 6)
    from frameseek.client import FrameSeekError

    work = CACHE / "server-check"
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    srv = ServerProcess(work / "data", python=["nice", "-n", "5", sys.executable]).start(wait=False)
    address = srv.address
    rows, dedup = [], []
    try:
        srv.wait_ready()
        c = srv.client(timeout=600)
        t0 = time.perf_counter()
        for r in refs:
            c.ingest_video(r.path, external_key=r.name, filename=Path(r.path).name)
        ingest_s = time.perf_counter() - t0
        picked, seen = [], {}
        for q in queries:
            key = q.transform
            if seen.get(key, 0) < (a.per_transform if q.source else 4):
                seen[key] = seen.get(key, 0) + 1
                picked.append(q)
        t1 = time.perf_counter()
        for q in picked:
            resp = c.search_by_video(q.path, k=5)
            found = [(m.video.external_key, m.score, m.offset_seconds, m.speed) for m in resp.matches]
            if q.source:
                hit = [f for f in found if f[0] == q.source]
                tmid = 0.5 * (q.gt_q0 + q.gt_q1)
                err = abs(hit[0][2] + hit[0][3] * tmid - (q.gt_offset + q.gt_speed * tmid)) if hit else None
                ok = bool(hit) and err <= 1.0 and all(f[0] == q.source for f in found)
            else:
                err, ok = None, not found
            rows.append(
                {
                    "query": q.name,
                    "transform": q.transform,
                    "source": q.source,
                    "found": found,
                    "loc_err_s": err,
                    "ok": ok,
                }
            )
        search_s = time.perf_counter() - t1
        # dedup-on-ingest: one copy and one unrelated clip with duplicate_policy=REPORT
        for q in [x for x in picked if x.transform == "reencode"][:1] + [x for x in picked if not x.source][:1]:
            try:
                resp = c.ingest_video(q.path, external_key="dedup-" + q.name, duplicate_policy="report")
                copies = [m.video.external_key for m in resp.copies]
            except FrameSeekError as exc:
                copies = [f"error: {exc}"]
            ok = copies == [q.source] if q.source else not copies
            dedup.append({"query": q.name, "source": q.source, "reported": copies, "ok": ok})
    finally:
        srv.stop()
    n_ok = sum(r["ok"] for r in rows)
    print(
        f"\nSearchByVideo through the gRPC server ({address}): {n_ok}/{len(rows)} queries as expected "
        f"(ingest {ingest_s:.0f} s for {len(refs)} references, search {search_s:.0f} s for {len(rows)} queries)\n"
    )
    print("| query | transform | expected | reported (key, score, offset) | ok |\n|---|---|---|---|---|")
    for r in rows:
        rep = ", ".join(f"{k} {s:.2f} {o:+.1f}s" for k, s, o, _ in r["found"]) or "—"
        print(f"| {r['query']} | {r['transform']} | {r['source'] or '—'} | {rep} | {'yes' if r['ok'] else 'NO'} |")
    for d in dedup:
        print(
            f"dedup-on-ingest (REPORT) {d['query']}: reported {d['reported']} "
            f"(expected {[d['source']] if d['source'] else []}) -> {'ok' if d['ok'] else 'WRONG'}"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"queries": rows, "dedup": dedup, "ingest_s": ingest_s, "search_s": search_s}, indent=2, default=float
        )
    )
    print(f"wrote {OUT}")
    return 0 if n_ok == len(rows) and all(d["ok"] for d in dedup) else 1


if __name__ == "__main__":
    raise SystemExit(main())
