"""SearchByVideo end to end through a real server: a real 60 s query against 10,000 indexed videos.

    python -m benchmarks.copydetect.bench_scale_server [--videos 10000] [--frames 30] [--repeat 5]

bench_scale.py times the matching alone, in-process; this one times everything a client waits for.

Index (collection `bench`, 512-d, sampled at 1 fps):
- `--videos` synthetic videos of `--frames` samples each (300,000 samples by default), written
  through the storage layer by `benchmarks.load.bench_search.fill` (profile "static": a random
  walk of near-duplicates per video) and snapshotted; like ingest with the server's default
  `index_coarse_scale`, every sample also gets a coarse twin (a vector near it), so the index
  holds 600,000 vectors (`--index-coarse-scale 0`: 300,000, no twins); cached under
  build/copydetect/scale-data-<videos>-<frames>[-twins]/ and reused by later runs (the fill
  takes about two minutes of both cores with twins);
- one real reference, opencv-doc's vtest.avi (79.5 s, 768x576), ingested through the running
  server's IngestVideo (content-hash dedup: a rerun gets the same video back).

Query: a real copy, seconds 10-70 of vtest.avi re-encoded at half size (libx264, crf 28: the
harness's scale0.5 recipe, benchmarks/copydetect/media.py), cached under build/copydetect/. Truth:
t_ref = t_query + 10 s.

Timed, in one run, on one machine:
1. frameseek: `frameseek serve` (the default native front end, ONNX Runtime on the CPU by default,
   the server's default model and query settings: 1 fps within the `query_max_samples` bound (24
   frames spread over the 60 s), mirrored frames, the coarse view, region_search auto, frame_k 32,
   the calibrated threshold) on the data dir; `--repeat` SearchByVideo calls through
   `frameseek.client.Client.search_by_video` after one untimed warm-up call, interleaved with as
   many calls that set fps = 1 in the request (every second of the clip: 60 frames, no bound);
   wall time per call on the client: upload of the clip bytes, spooling, decode, sampling,
   embedding, kNN, alignment and re-alignment, response. Also the server processes' CPU seconds
   per call. Each answer is checked: the reference must be the top match, placed within 1 s of
   the truth at the middle of the query (the same check as server_check.py).
2. Where the time goes (the server exposes no per-stage timing): after the server has stopped,
   the same data dir is opened in-process by `frameseek.service.FrameSeekService` and its
   `search.by_video` is called the same way (no gRPC, no upload), with its stages timed by wrappers
   around the functions it calls: `core.embed` (`frameseek.pipeline.embed_media`: decode + sampling +
   embedding, and its own decode/preprocess/embed/regions split; those run in overlapping threads,
   so they add up to more than the wall time), `search.video_matches` (kNN = storage.search, native
   alignment = matching.align, dense re-alignment = matching.refine_alignment).
3. Baseline: vPDQ (the `vpdq` package, ThreatExchange) on the same job: hashing the 60 s query at
   1 hash per second (all cores), then a brute-force Hamming compare (distance <= 31, query hashes
   of quality >= 50, deduplicated) against one 256-bit hash per indexed sample: random hashes for
   the synthetic samples, vtest.avi's real vPDQ hashes for the reference (hashed once, untimed).
   The compare is bench_scale.py's vectorised numpy loop (generous to vPDQ: its reference code
   loops in Python). vPDQ reports which videos match, no alignment.

Prints markdown tables; writes benchmarks/results/copydetect_scale_server.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.copydetect import media as M
from benchmarks.copydetect.bench_scale import vpdq_compare
from benchmarks.copydetect.run import CACHE, ROOT, Embeddings
from benchmarks.copydetect.vpdq_baseline import vpdq_hash_file
from benchmarks.load import bench_search
from frameseek.pipeline import INDEX_COARSE_SCALE

DIM = 512
VTEST = M.DATA / "vtest.avi"
Q_START, Q_LEN = 10.0, 60.0  # the query is vtest.avi [10 s, 70 s): t_ref = t_query + Q_START
OUT = ROOT / "benchmarks" / "results" / "copydetect_scale_server.json"
LOC_TOLERANCE_S = 1.0
# SearchByVideo's VideoQuery.fps: 0 = the server's rate (1 fps) within its query_max_samples
# bound (24 frames spread over the clip by default); 1 = every second of the clip, unbounded
FPS_MODES = (0.0, 1.0)
VPDQ_DISTANCE, VPDQ_QUALITY, VPDQ_FOUND_PCT = 31, 50, 80.0  # ThreatExchange defaults; run.py's "found"


def make_query_clip() -> Path:
    """vtest.avi seconds 10-70 at half size, re-encoded (cached)."""
    out = CACHE / f"scale-query-vtest-{Q_START:g}-{Q_START + Q_LEN:g}-scale0.5.mp4"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.mp4")
        M._run(
            [
                "-ss",
                f"{Q_START:g}",
                "-t",
                f"{Q_LEN:g}",
                "-i",
                str(VTEST),
                "-vf",
                "scale=iw/2:ih/2",
                *M._enc(28),
                str(tmp),
            ]
        )
        os.replace(tmp, out)
    return out


def _ms(xs: list[float]) -> dict:
    return {"median_ms": 1000 * statistics.median(xs), "min_ms": 1000 * min(xs), "max_ms": 1000 * max(xs), "n": len(xs)}


# -- the answer ---------------------------------------------------------------------------------


def check_answer(matches: list, ref_name: str) -> dict:
    """Top match and its placement. `matches`: (video name, score, offset, speed, segments) with
    segments (query start, query end, reference start, reference end, score), best first."""
    if not matches:
        return {"found": False, "top": None, "matches": 0}
    name, score, offset, speed, segs = matches[0]
    tmid = Q_LEN / 2
    loc_err = abs(offset + speed * tmid - (Q_START + tmid))
    seg_rows = [
        {
            "query_s": [round(qs, 2), round(qe, 2)],
            "reference_s": [round(rs, 2), round(re_, 2)],
            "score": round(sc, 3),
            "error_at_middle_s": round(abs(0.5 * (rs + re_) - (0.5 * (qs + qe) + Q_START)), 2),
        }
        for qs, qe, rs, re_, sc in segs
    ]
    top_is_ref = name == ref_name
    return {
        "found": top_is_ref and loc_err <= LOC_TOLERANCE_S,
        "top": name,
        "top_is_reference": top_is_ref,
        "score": round(score, 3),
        "offset_s": round(offset, 3),
        "speed": round(speed, 4),
        "loc_err_s": round(loc_err, 3),
        "segments": seg_rows,
        "matches": len(matches),
        "others": [(n, round(s, 3)) for n, s, *_ in matches[1:4]],
    }


def _from_pb(resp) -> list:
    return [
        (
            m.video.name,
            m.score,
            m.offset_seconds,
            m.speed,
            [
                (
                    s.query_start_seconds,
                    s.query_end_seconds,
                    s.reference_start_seconds,
                    s.reference_end_seconds,
                    s.score,
                )
                for s in m.segments
            ],
        )
        for m in resp.matches
    ]


# -- 1. through the server ----------------------------------------------------------------------


def server_phase(data_dir: Path, query: Path, repeat: int, backend: str) -> dict:
    from frameseek.client import Client

    env = {
        **os.environ,
        "FRAMESEEK_METRICS_ADDRESS": "",
        "FRAMESEEK_LOG_LEVEL": "warning",
        "FRAMESEEK_EMBED_BACKEND": backend,
    }
    srv = bench_search.Server(data_dir, env)
    restart_s = srv.start().ready_s
    print(f"server {srv.address}: SERVING {restart_s:.1f} s after start", flush=True)
    out: dict = {"restart_s": round(restart_s, 2)}
    try:
        with Client(srv.address, timeout=900) as c:
            t0 = time.perf_counter()
            ing = c.ingest_video(
                VTEST, collection=bench_search.COLLECTION, external_key="vtest", filename=VTEST.name, timeout=900
            )
            ref = ing.video
            out["reference"] = {
                "name": ref.name,
                "duration_s": round(ref.duration_seconds, 2),
                "samples": ref.sample_count,
                "already_exists": ing.already_exists,
                "ingest_s": round(time.perf_counter() - t0, 2),
            }
            print(f"reference {ref.name}: {out['reference']}", flush=True)
            coll = [x for x in c.stats().collections if x.collection == f"collections/{bench_search.COLLECTION}"][0]
            out["index"] = {
                "videos": coll.video_count,
                "samples": coll.sample_count,
                "index_vectors": coll.index_vectors,
            }

            def call(fps: float) -> tuple[float, float, object]:
                cpu0, s = srv.cpu_s(), time.perf_counter()
                r = c.search_by_video(query, collection=bench_search.COLLECTION, fps=fps, timeout=600)
                return time.perf_counter() - s, srv.cpu_s() - cpu0, r

            cold, cold_cpu, r = call(0.0)
            out["cold_call"] = {
                "wall_ms": round(1000 * cold, 1),
                "server_cpu_s": round(cold_cpu, 2),
                "answer": check_answer(_from_pb(r), ref.name),
            }
            print(f"warm-up call: {1000 * cold:.0f} ms", flush=True)
            runs: dict[float, dict] = {fps: {"walls": [], "cpus": [], "answers": []} for fps in FPS_MODES}
            for i in range(repeat):
                for fps in FPS_MODES:  # interleaved, so drift hits both alike
                    w, cpu, r = call(fps)
                    run = runs[fps]
                    run["walls"].append(w)
                    run["cpus"].append(cpu)
                    run["answers"].append(check_answer(_from_pb(r), ref.name))
                    run["samples"] = r.query_samples
                    print(
                        f"  call {i + 1}/{repeat}, request fps {fps:g}: {1000 * w:.0f} ms (server CPU "
                        f"{cpu:.2f} s, {r.query_samples} samples), found {run['answers'][-1]['found']}",
                        flush=True,
                    )
            modes = {
                fps: {
                    "wall": _ms(run["walls"]),
                    "server_cpu_s": statistics.median(run["cpus"]),
                    "query_samples": run["samples"],
                    "answers": run["answers"],
                    "found_all": all(a["found"] for a in run["answers"]),
                }
                for fps, run in runs.items()
            }
            out.update(
                modes[0.0],
                modes={str(k): v for k, v in modes.items()},
                query_duration_s=round(r.query_duration_seconds, 2),
                query_bytes=query.stat().st_size,
                model=r.model,
                found_all=all(m["found_all"] for m in modes.values()),
            )
    finally:
        srv.stop()
    return out


# -- 2. where the time goes (in-process, the service's own functions) ---------------------------


class _Stages:
    """Wall time per stage of the calls it wraps (summed over calls until reset)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.last: dict[str, object] = {}

    def wrap(self, name: str, fn):
        def timed(*a, **kw):
            s = time.perf_counter()
            try:
                r = fn(*a, **kw)
                self.last[name] = r
                return r
            finally:
                self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - s

        return timed


async def _inprocess(data_dir: Path, query: Path, repeat: int, backend: str, ref_name: str) -> dict:
    from frameseek import matching
    from frameseek.api.names import video_name
    from frameseek.config import Settings
    from frameseek.service import FrameSeekService

    svc = FrameSeekService(
        Settings(data_dir=str(data_dir), metrics_address="", embed_backend=backend, log_level="warning")
    )
    t0 = time.perf_counter()
    await svc.start()
    load_s = time.perf_counter() - t0
    st = _Stages()
    saved = (matching.align, matching.refine_alignment)
    try:
        rec = await svc.collections.get(bench_search.COLLECTION)
        svc.core.embed = st.wrap("embed", svc.core.embed)
        svc.search.video_matches = st.wrap("matching", svc.search.video_matches)
        svc.storage.search = st.wrap("knn", svc.storage.search)
        matching.align = st.wrap("align", matching.align)
        matching.refine_alignment = st.wrap("refine", matching.refine_alignment)

        async def call() -> tuple[float, dict, object]:
            st.t.clear()
            s = time.perf_counter()
            res = await svc.search.by_video(rec, str(query), 10, 0.0, 0, {}, [], [], 0.0, None)
            return time.perf_counter() - s, dict(st.t), res

        await call()  # warm-up, as in the server phase
        rows: list[dict] = []
        for _ in range(repeat):
            total, stages, res = await call()
            ms = st.last["embed"].stats
            rows.append(
                {
                    "total": total,
                    **stages,
                    **{k: ms.get(k, 0.0) for k in ("decode_s", "preprocess_s", "embed_s", "regions_s")},
                }
            )
        answer = check_answer(
            [
                (
                    video_name(rec.name, m.video.id),
                    m.score,
                    m.offset,
                    m.speed,
                    [(g.query_start, g.query_end, g.ref_start, g.ref_end, g.score) for g in m.segments],
                )
                for m in res.matches
            ],
            ref_name,
        )
        media = st.last["embed"]
        views = len(media.views)
    finally:
        matching.align, matching.refine_alignment = saved
        await svc.close()
    med = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}
    return {
        "load_s": round(load_s, 2),
        "median_s": med,
        "runs": rows,
        "answer": answer,
        "query_views": views,
        "query_samples": len(media),
        "regions": [k for k, _ in media.regions],
        "decoder": media.decoder,
        "embedder": media.embedder,
    }


# -- 3. baseline: vPDQ --------------------------------------------------------------------------


def vpdq_hashes(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """run.py's vPDQ hashing (1 hash per second, vPDQ's default threads), uncached and timed:
    (hash bytes uint8[n, 32], quality int[n], seconds)."""
    s = time.perf_counter()
    h, q, _ = vpdq_hash_file(str(path))
    return h, q, time.perf_counter() - s


def vpdq_phase(query: Path, synthetic: int, frames: int, repeat: int) -> dict:
    ref_h, ref_q, _ = Embeddings().vpdq(str(VTEST))  # reference: hashed once, cached, untimed
    ref_h = ref_h[ref_q >= VPDQ_QUALITY]
    rng = np.random.default_rng(11)
    hashes = np.vstack([rng.integers(0, 256, size=(synthetic, 32), dtype=np.uint8), ref_h])
    REF = -1
    groups = np.concatenate([np.arange(synthetic, dtype=np.int64) // frames, np.full(len(ref_h), REF, np.int64)])
    hash_s, cmp_s, tot_s = [], [], []
    for _ in range(repeat):
        s = time.perf_counter()
        qh, qq, hs = vpdq_hashes(query)
        qh = np.unique(qh[qq >= VPDQ_QUALITY], axis=0)
        c0 = time.perf_counter()
        pct = vpdq_compare(qh, hashes, groups, VPDQ_DISTANCE)
        cmp_s.append(time.perf_counter() - c0)
        hash_s.append(hs)
        tot_s.append(time.perf_counter() - s)
    others = max((v for k, v in pct.items() if k != REF), default=0.0)
    return {
        "total": _ms(tot_s),
        "hash": _ms(hash_s),
        "compare": _ms(cmp_s),
        "indexed_hashes": len(hashes),
        "query_hashes": len(qh),
        "reference_query_pct": round(pct.get(REF, 0.0), 1),
        "best_other_query_pct": round(others, 1),
        "found": pct.get(REF, 0.0) >= VPDQ_FOUND_PCT,
    }


# -- report -------------------------------------------------------------------------------------


def _row(name: str, d: dict) -> str:
    return f"| {name} | {d['median_ms']:,.0f} | {d['min_ms']:,.0f} | {d['max_ms']:,.0f} |"


def report(a, srv: dict, inp: dict | None, vp: dict | None) -> None:
    idx = srv["index"]
    print(
        f"\nSearchByVideo of a real 60 s query (vtest.avi 10-70 s, half size, libx264 crf 28; "
        f"{srv['query_bytes'] / 1e6:.1f} MB, {srv['query_samples']} samples) through `frameseek serve` "
        f"(model {srv['model']}, embed backend {a.embed_backend}) against {idx['videos']:,} videos "
        f"({idx['index_vectors']:,} indexed samples: {a.videos * a.frames:,} synthetic + vtest.avi's "
        f"{srv['reference']['samples']}); {os.cpu_count()} cores, load average at start "
        f"{a.load_start:.2f}; median of {a.repeat} after one warm-up call\n"
    )
    print("| per query, ms | median | min | max |\n|---|---:|---:|---:|")
    print(
        _row(
            f"**frameseek SearchByVideo, client wall** (upload, decode, embed, kNN, align, re-align; server "
            f"default: {srv['query_samples']} samples)",
            srv["wall"],
        )
    )
    every = srv["modes"].get("1.0")
    if every:
        print(
            _row(
                f"frameseek SearchByVideo with fps = 1 in the request ({every['query_samples']} samples, no bound)",
                every["wall"],
            )
        )
    if vp:
        print(_row("baseline: vPDQ, hash query at 1 fps + brute-force compare", vp["total"]))
        print(_row("  of which vPDQ hashing of the 60 s query", vp["hash"]))
        print(
            _row(
                f"  of which brute-force Hamming compare ({vp['query_hashes']} x {vp['indexed_hashes']:,})",
                vp["compare"],
            )
        )
    print(
        f"\nfirst (warm-up) call {srv['cold_call']['wall_ms']:,.0f} ms; server CPU per call "
        f"{srv['server_cpu_s']:.2f} s (median)" + (f", {every['server_cpu_s']:.2f} s at fps 1" if every else "")
    )
    if every:
        ea = every["answers"][-1]
        print(
            f"fps 1 answer: reference top match in {sum(x['found'] for x in every['answers'])}/"
            f"{len(every['answers'])} calls; last: score {ea.get('score')}, error at the query's middle "
            f"{ea.get('loc_err_s')} s"
        )
    ans = srv["answers"][-1] if srv["answers"] else srv["cold_call"]["answer"]
    print(
        f"frameseek answer: reference top match in {sum(x['found'] for x in srv['answers'])}/{len(srv['answers'])} "
        f"calls; last: top {ans['top']} (score {ans.get('score')}, offset {ans.get('offset_s')} s at speed "
        f"{ans.get('speed')}, truth +{Q_START:g} s: error at the query's middle {ans.get('loc_err_s')} s); "
        f"segments {[(s['query_s'], s['reference_s'], s['error_at_middle_s']) for s in ans.get('segments', [])]}; "
        f"next candidates {ans.get('others')}"
    )
    if vp:
        print(
            f"vPDQ answer: reference matched {vp['reference_query_pct']}% of the query hashes "
            f"({'found' if vp['found'] else 'missed'} at >= {VPDQ_FOUND_PCT:g}%), best synthetic video "
            f"{vp['best_other_query_pct']}%; no alignment"
        )
    if inp:
        m = inp["median_s"]
        other = m["matching"] - m.get("knn", 0) - m.get("align", 0) - m.get("refine", 0)
        print(
            f"\nWhere the time goes: the same data dir in-process (FrameSeekService.search_video, no gRPC or "
            f"upload), median of {a.repeat}; {inp['query_views']} query views ({inp['query_samples']} samples "
            f"each; regions {inp['regions'] or 'none'}), decoder {inp['decoder']}, {inp['embedder']}\n"
        )
        print("| stage | ms / query |\n|---|---:|")
        rows = [
            ("search_video in-process, total", m["total"]),
            ("  decode + sample + embed (`embed_media`, wall)", m["embed"]),
            ("    decode (thread, overlaps)", m["decode_s"]),
            ("    preprocess (overlaps)", m["preprocess_s"]),
            ("    model inference", m["embed_s"]),
            ("    region detection + crops", m["regions_s"]),
            ("  matching (`search.video_matches`)", m["matching"]),
            (f"    kNN ({inp['query_views']} views x {inp['query_samples']} frames, k=32)", m.get("knn", 0)),
            ("    native alignment (`matching.align`)", m.get("align", 0)),
            ("    dense re-alignment (`matching.refine_alignment`)", m.get("refine", 0)),
            ("    rest (id -> time lookups, vector read-back)", other),
            (
                "client wall through the server minus in-process total: upload, gRPC, spooling (noisy)",
                srv["wall"]["median_ms"] / 1000 - m["total"],
            ),
        ]
        for name, s in rows:
            print(f"| {name} | {1000 * s:,.1f} |")
        ia = inp["answer"]
        print(f"\nin-process answer: top {ia['top']} (found {ia['found']}, loc err {ia.get('loc_err_s')} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=10_000, help="synthetic videos in the index")
    ap.add_argument("--frames", type=int, default=30, help="samples per synthetic video")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls (after one warm-up call)")
    ap.add_argument(
        "--index-coarse-scale",
        type=float,
        default=INDEX_COARSE_SCALE,
        help="the server's Settings.views.index_coarse_scale (default 1/2: every sample, filler ones "
        "too, indexed with a coarse twin; 0 = without)",
    )
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="default build/copydetect/scale-data-<videos>-<frames>/data (filled once, reused)",
    )
    ap.add_argument(
        "--embed-backend",
        choices=("onnx", "auto", "tensorrt"),
        default="onnx",
        help="the server's FRAMESEEK_EMBED_BACKEND (onnx = ONNX Runtime on the CPU)",
    )
    ap.add_argument("--no-breakdown", action="store_true", help="skip the in-process stage timing")
    ap.add_argument("--no-vpdq", action="store_true", help="skip the vPDQ baseline")
    a = ap.parse_args(argv)
    from frameseek.logs import configure

    configure(level="warning")  # the storage layer's and the in-process service's info logs
    M.ensure_tools()
    if not VTEST.exists():
        raise SystemExit(f"{VTEST} missing (apt-get install opencv-doc; `make setup` does)")
    a.load_start = os.getloadavg()[0]
    twins = a.index_coarse_scale > 0
    os.environ["FRAMESEEK_VIEWS__INDEX_COARSE_SCALE"] = str(a.index_coarse_scale)  # the server's and in-process
    data_dir = a.data_dir or CACHE / f"scale-data-{a.videos}-{a.frames}{'-twins' if twins else ''}" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    n = a.videos * a.frames
    twin_note = ", and a coarse twin each" if twins else ""
    print(
        f"filling {a.videos:,} videos x {a.frames} samples ({n:,} x {DIM}{twin_note}) into {data_dir} ...", flush=True
    )
    fill_info = bench_search.fill(data_dir, n, DIM, a.frames, profile="static", twins=twins)
    print(f"  {fill_info}", flush=True)
    query = make_query_clip()
    srv = server_phase(data_dir, query, a.repeat, a.embed_backend)
    inp = None
    if not a.no_breakdown:
        print("in-process stage timing ...", flush=True)
        inp = asyncio.run(_inprocess(data_dir, query, a.repeat, a.embed_backend, srv["reference"]["name"]))
    vp = None
    if not a.no_vpdq:
        print("vPDQ baseline ...", flush=True)
        vp = vpdq_phase(query, n, a.frames, a.repeat)
    report(a, srv, inp, vp)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        from frameseek import _native

        srv["simd"] = _native.simd_level()
    OUT.write_text(
        json.dumps(
            {
                "videos": a.videos,
                "frames": a.frames,
                "repeat": a.repeat,
                "embed_backend": a.embed_backend,
                "query": {
                    "source": str(VTEST),
                    "start_s": Q_START,
                    "seconds": Q_LEN,
                    "edit": "scale 0.5, libx264 crf 28",
                    "path": str(query.relative_to(ROOT)),
                },
                "fill": fill_info,
                "server": srv,
                "in_process": inp,
                "vpdq": vp,
                "cores": os.cpu_count(),
                "machine": platform.machine(),
                "load_average_start": a.load_start,
                "load_average_end": os.getloadavg()[0],
            },
            indent=2,
            default=float,
        )
    )
    print(f"wrote {OUT}")
    return 0 if srv["found_all"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
