"""SearchByVector / SearchByImage / SearchByVideo end to end: embedded store vs Milvus Lite +
PostgreSQL, two real `frameseek serve` processes, same media, same run.

    python -m benchmarks.scale.bench_scale_e2e [--rounds 5] [--clips 3]

The library: opencv-doc's example videos (Debian's `opencv-doc`, real footage: Megamind.avi,
tree.avi, vtest.avi; Megamind_bugy.avi is left out because it is a re-encode of Megamind.avi, which
would make "is the source first" ambiguous) plus `--clips` generated 8 s clips
(tests.server.helpers.make_video). Each file is ingested through the SDK into both servers: one on
the embedded store (SQLite + vector log + native HNSW) and one with vector_store = milvus on Milvus
Lite's gRPC server and a PostgreSQL catalog on a Unix socket (benchmarks/scale/backends.py starts
both). Then, per indexed video, three queries go through the Python SDK (frameseek.client) to each
server, one at a time, rounds interleaved between the two servers (the machine's load drifts):

  SearchByVector  the SSCD embedding (computed here, same model) of the frame at 40 % of the video
  SearchByImage   that frame as a PNG (the server decodes and embeds it)
  SearchByVideo   a 5 s excerpt from 30 % of the video, re-encoded (x264, 3/4 scale: a re-upload)

Per store and call: p50 / p99 latency, sequential QPS (calls / summed latency), and what the answer
buys: the source video is found (a hit; for SearchByVideo a copy match above the server's
calibrated threshold), ranked first, and (SearchByVideo) aligned within 1 s of the excerpt's start.
Prints a markdown table and writes benchmarks/results/bench_scale_e2e.json (with the first round's
misses). Every process it starts (two servers, PostgreSQL, Milvus Lite) is stopped in a `finally`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import tempfile
import time

import numpy as np

from benchmarks.scale.backends import MilvusLite, PostgresCluster
from tests.server.helpers import OPENCV_DATA, ServerProcess, ffmpeg_subclip, grab_frame, make_video

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
OPENCV_VIDEOS = ("Megamind.avi", "tree.avi", "vtest.avi")
EXCERPT_S = 5.0
CLIENT_TIMEOUT_S = 600  # Milvus Lite answers slowly; a timeout here would be a benchmark failure


def _duration(path: pathlib.Path) -> float:
    import av

    with av.open(str(path)) as c:
        return float(c.duration) / 1e6


def _library(work: pathlib.Path, clips: int) -> list[pathlib.Path]:
    missing = [n for n in OPENCV_VIDEOS if not (OPENCV_DATA / n).exists()]
    if missing:
        raise SystemExit(f"opencv-doc's {missing} not found in {OPENCV_DATA}: apt-get install opencv-doc")
    media = work / "media"
    media.mkdir()
    generated = [make_video(media / f"clip{i}.mp4", seconds=8, seed=100 + i) for i in range(clips)]
    return [OPENCV_DATA / n for n in OPENCV_VIDEOS] + generated


def _queries(library: list[pathlib.Path], work: pathlib.Path) -> list[dict]:
    """Per video: the frame at 40 % (PNG + its embedding) and a 5 s re-encoded excerpt from 30 %."""
    from PIL import Image

    from frameseek.embed import load_embedder

    embedder = load_embedder()
    out = []
    for i, video in enumerate(library):
        d = _duration(video)
        frame = grab_frame(video, 0.4 * d, work / f"q{i}.png")
        start = min(0.3 * d, max(0.0, d - EXCERPT_S - 0.5))
        excerpt = ffmpeg_subclip(video, start, EXCERPT_S, work / f"q{i}.mp4")
        vector = embedder.embed([np.asarray(Image.open(frame).convert("RGB"))])[0]
        out.append({"video": video, "png": frame.read_bytes(), "mp4": excerpt.read_bytes(), "vector": vector})
        out[-1]["excerpt_start_s"] = start
    return out


def _call(client, kind: str, q: dict):
    if kind == "SearchByVector":
        return client.search_by_vector(q["vector"], k=10).hits
    if kind == "SearchByImage":
        return client.search_by_image(q["png"], k=10).hits
    return client.search_by_video(q["mp4"], k=10).matches


def _grade(kind: str, answer, q: dict, source_name: str) -> dict[str, bool]:
    """What the answer buys: the source is found at all (a hit; for SearchByVideo a copy match above
    the server's calibrated threshold), ranked first, and (SearchByVideo) aligned within 1 s."""
    names = [a.video.name for a in answer]
    grade = {"found": source_name in names, "first": names[:1] == [source_name]}
    if kind == "SearchByVideo":
        grade["offset_1s"] = grade["first"] and abs(answer[0].offset_seconds - q["excerpt_start_s"]) <= 1.0
    return grade


def _miss(store: str, kind: str, q: dict, answer, names: dict[pathlib.Path, str]) -> dict:
    """A query whose answer missed (first round): what came back instead, for the JSON."""
    file_of = {name: video.name for video, name in names.items()}
    top = answer[0] if answer else None
    return {
        "store": store,
        "call": kind,
        "source": q["video"].name,
        "top": file_of.get(top.video.name) if top else None,
        "top_offset_s": getattr(top, "offset_seconds", None),
        "excerpt_start_s": q["excerpt_start_s"],
    }


def _summary(lat: list[float], grades: list[dict[str, bool]]) -> dict:
    return {
        "p50_ms": 1000 * float(np.percentile(lat, 50)),
        "p99_ms": 1000 * float(np.percentile(lat, 99)),
        "qps": len(lat) / float(np.sum(lat)),
        "calls": len(lat),
        **{key: float(np.mean([g[key] for g in grades])) for key in grades[0]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="passes over every query, per store and call")
    ap.add_argument("--clips", type=int, default=3, help="generated 8 s clips added to opencv-doc's videos")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-scale-e2e-"))
    pg = milvus = None
    servers: dict[str, ServerProcess] = {}
    results: dict[str, dict] = {}
    try:
        library = _library(work, args.clips)
        seconds = sum(_duration(v) for v in library)
        queries = _queries(library, work)
        pg = PostgresCluster().start()
        milvus = MilvusLite(str(work / "milvus"), str(work / "milvus.log")).start()
        scale_out = {
            "vector_store": "milvus",
            "milvus_uri": milvus.uri,
            "catalog_url": pg.database(),
            "milvus_collection_prefix": "bench_",
            "server_id": "bench",
        }
        servers = {
            "embedded": ServerProcess(work / "embedded"),
            "milvus-lite+postgresql": ServerProcess(work / "scaleout", **scale_out),
        }
        for s in servers.values():
            s.start(wait=False)
        clients = {}
        for name, s in servers.items():
            clients[name] = s.client(timeout=CLIENT_TIMEOUT_S)
            clients[name].wait_ready(timeout=300)
        names: dict[str, dict[pathlib.Path, str]] = {name: {} for name in servers}
        for name, c in clients.items():
            t = time.perf_counter()
            for video in library:
                names[name][video] = c.ingest_video(video).video.name
            results[name] = {"ingest_s": time.perf_counter() - t}
            print(f"{name}: ingested {len(library)} videos in {results[name]['ingest_s']:.1f} s", flush=True)
        kinds = ("SearchByVector", "SearchByImage", "SearchByVideo")
        lat = {(n, k): [] for n in servers for k in kinds}
        ok = {(n, k): [] for n in servers for k in kinds}
        misses: list[dict] = []
        for c in clients.values():  # warm-up: first calls load lazily built state
            for kind in kinds:
                _call(c, kind, queries[0])
        for r in range(args.rounds):
            for kind in kinds:
                for name, c in clients.items():
                    for q in queries:
                        t = time.perf_counter()
                        answer = _call(c, kind, q)
                        lat[name, kind].append(time.perf_counter() - t)
                        grade = _grade(kind, answer, q, names[name][q["video"]])
                        ok[name, kind].append(grade)
                        if r == 0 and not all(grade.values()):
                            misses.append(_miss(name, kind, q, answer, names[name]))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        for name in servers:
            results[name] |= {kind: _summary(lat[name, kind], ok[name, kind]) for kind in kinds}
        for c in clients.values():
            c.close()
    finally:
        for s in servers.values():
            s.stop()
        if milvus:
            milvus.stop()
        if pg:
            pg.remove()
        shutil.rmtree(work, ignore_errors=True)
    videos = ", ".join(v.name for v in library)
    print(f"\n{len(library)} videos ({seconds:.0f} s: {videos}); {args.rounds} rounds x {len(queries)} queries\n")
    print("| store | call | p50 | p99 | QPS (sequential) | source found | source first | offset within 1 s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for kind in kinds:
            m = r[kind]
            offset = f"{m['offset_1s']:.0%}" if "offset_1s" in m else ""
            print(
                f"| {name} | {kind} | {m['p50_ms']:.1f} ms | {m['p99_ms']:.1f} ms | {m['qps']:.2f} "
                f"| {m['found']:.0%} | {m['first']:.0%} | {offset} |"
            )
    print("\n" + " / ".join(f"{name} ingest {r['ingest_s']:.1f} s" for name, r in results.items()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_scale_e2e.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine": platform.platform(),
                "library": [v.name for v in library],
                "library_seconds": seconds,
                "results": results,
                "misses_first_round": misses,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
