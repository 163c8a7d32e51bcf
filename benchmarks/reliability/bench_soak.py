"""A mixed soak against a real server: ingest, search and delete for a while, sampling the
server's resident memory, open files and threads, and checking the library at the end.

    python -m benchmarks.reliability.bench_soak                    # 60 s
    python -m benchmarks.reliability.bench_soak --duration 3600    # the 1-hour soak

Three client threads run until `--duration` passes: one ingests distinct synthetic videos (the
kill -9 script's `make_video`), one searches by a frame of a random indexed video (the video must
come back first), one deletes a random indexed video now and then (so the library churns). Every
`--sample-s` seconds the server process's RSS (/proc/PID/status VmRSS), open file descriptors
(/proc/PID/fd) and threads (/proc/PID/task) are recorded. At the end: every video still acknowledged
and not deleted is listed exactly once, and no call failed.

A leak shows as a trend: the table compares the first and the last quarter of the samples, and the
JSON (benchmarks/results/reliability_soak.json) holds every sample. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import random
import sys
import tempfile
import threading
import time

from .bench_kill9 import RESULTS, Server, make_video


def proc_sample(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {
        "rss_mb": round(rss_kb / 1024, 1),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }


def soak(args) -> dict:
    from frameseek.client import Client, FrameSeekError

    root = pathlib.Path(tempfile.mkdtemp(prefix="frameseek-soak-"))
    server = Server(root / "data", root / "server.log")
    server.start()
    stop = threading.Event()
    lock = threading.Lock()
    live: dict[str, bytes] = {}  # video name -> a PNG frame of it
    counts = {"ingested": 0, "searched": 0, "search_misses": 0, "deleted": 0}
    errors: list[str] = []
    rng = random.Random(args.seed)

    def guarded(fn):
        def run():
            try:
                with Client(server.address, retries=0, timeout=120) as fs:
                    while not stop.is_set():
                        fn(fs)
            except FrameSeekError as exc:
                errors.append(f"{fn.__name__}: {exc}")
                stop.set()

        return run

    def ingester(fs):
        seed = args.seed * 1_000_000 + counts["ingested"]
        mp4, png = make_video(seed)
        v = fs.ingest_video(mp4, filename=f"soak-{seed}.mp4").video
        with lock:
            live[v.name] = png
            counts["ingested"] += 1

    def searcher(fs):
        with lock:
            pick = rng.choice(sorted(live)) if live else None
            png = live.get(pick) if pick else None
        if pick is None:
            time.sleep(0.1)
            return
        hits = fs.search_by_image(png, k=1).hits
        with lock:
            counts["searched"] += 1
            # a hit on a video deleted meanwhile is no miss
            if pick in live and (not hits or hits[0].video.name != pick):
                counts["search_misses"] += 1

    def deleter(fs):
        time.sleep(args.delete_every_s)
        with lock:
            if len(live) < 4:
                return
            pick = rng.choice(sorted(live))
            live.pop(pick)
        fs.delete_video(pick)
        with lock:
            counts["deleted"] += 1

    threads = [threading.Thread(target=guarded(fn), name=fn.__name__) for fn in (ingester, searcher, deleter)]
    samples, t0 = [], time.perf_counter()
    for t in threads:
        t.start()
    try:
        while time.perf_counter() - t0 < args.duration and not stop.is_set():
            samples.append({"t": round(time.perf_counter() - t0, 1), **proc_sample(server.proc.pid)})
            stop.wait(args.sample_s)
    finally:
        stop.set()
        for t in threads:
            t.join()
    samples.append({"t": round(time.perf_counter() - t0, 1), **proc_sample(server.proc.pid)})
    with Client(server.address) as fs:
        listed = [v.name for v in fs.list_videos(page_size=1000)]
    missing = sorted(set(live) - set(listed))
    twice = len(listed) - len(set(listed))
    server.stop()
    q = max(1, len(samples) // 4)
    first, last = samples[:q], samples[-q:]

    def mean(rows, key):
        return round(sum(r[key] for r in rows) / len(rows), 1)

    return {
        "duration_s": args.duration,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "counts": counts,
        "errors": errors,
        "missing_after": missing,
        "listed_twice": twice,
        "first_quarter": {k: mean(first, k) for k in ("rss_mb", "open_files", "threads")},
        "last_quarter": {k: mean(last, k) for k in ("rss_mb", "open_files", "threads")},
        "samples": samples,
        "data_dir": str(root),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of mixed load")
    ap.add_argument("--sample-s", type=float, default=5.0, help="seconds between process samples")
    ap.add_argument("--delete-every-s", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "reliability_soak.json"))
    args = ap.parse_args(argv)
    r = soak(args)
    print(
        f"soak {r['duration_s']:.0f} s: {r['counts']['ingested']} ingested, {r['counts']['searched']} searches "
        f"({r['counts']['search_misses']} misses), {r['counts']['deleted']} deleted; errors {len(r['errors'])}, "
        f"missing at the end {len(r['missing_after'])}, listed twice {r['listed_twice']}"
    )
    print(f"{'server process':<16}{'first quarter':>15}{'last quarter':>15}")
    for key in ("rss_mb", "open_files", "threads"):
        print(f"{key:<16}{r['first_quarter'][key]:>15}{r['last_quarter'][key]:>15}")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(r, f, indent=1)
    print(f"wrote {args.out}")
    bad = r["errors"] or r["missing_after"] or r["listed_twice"] or r["counts"]["search_misses"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
