"""Frame-vote aggregation throughput: _native.aggregate vs the same vote in numpy/Python.

Workload (as SearchByVideo sees it): 600-frame query videos (2 fps, 300 s) with k = 32 neighbours
per frame from a 10,000-video library. Each query copies one reference video (a sub-clip at an
offset, some at speed 0.8x / 1.25x, some in two parts) and every true frame comes with its
near-duplicate temporal neighbours; the rest of the k slots are distractors from other videos.

The baseline (benchmarks/native/aggregate_reference.py, also the tests' reference) implements the
same method with numpy (vectorised Hough vote over all speeds, numpy least squares, a Python loop
for the one-to-one assignment), so the comparison is of implementation, not of algorithm; the run
also reports whether both found the same top video, offset and score.

    python -m benchmarks.native.bench_aggregate [--queries 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import numpy as np

from benchmarks.native.aggregate_reference import baseline_aggregate
from frameseek import _native
from frameseek.ids import NO_ID

Q, K, QUERY_FPS, REF_FPS, N_VIDEOS, REF_LEN = 600, 32, 2.0, 2.0, 10_000, 900  # REF_LEN seconds


def make_query(rng: np.random.Generator):
    """One query's neighbour table: (query_times, ids, groups, times, sims), plus the truth."""
    tq = np.arange(Q) / QUERY_FPS
    video = int(rng.integers(0, N_VIDEOS))
    speed = float(rng.choice([1.0, 1.0, 0.8, 1.25]))
    offset = float(rng.uniform(0, REF_LEN - speed * tq[-1] - 1))
    ids = np.full((Q, K), NO_ID, np.uint64)
    groups = np.zeros((Q, K), np.uint64)
    times = np.zeros((Q, K))
    sims = np.full((Q, K), -np.inf, np.float32)
    for i in range(Q):
        c = 0
        if rng.random() < 0.85:  # most query frames find their true frame and its neighbours
            f = int(np.floor((offset + speed * tq[i]) * REF_FPS + 0.5))
            base = rng.uniform(0.6, 0.95)
            for d in range(-4, 5):
                ids[i, c], groups[i, c], times[i, c] = video * 10_000 + f + d, video, (f + d) / REF_FPS
                sims[i, c] = base - 0.03 * abs(d)
                c += 1
        n = K - c
        dv = rng.integers(0, N_VIDEOS, n)
        df = rng.integers(0, int(REF_LEN * REF_FPS), n)
        ids[i, c:] = (dv * 10_000 + df).astype(np.uint64)
        groups[i, c:] = dv
        times[i, c:] = df / REF_FPS
        sims[i, c:] = rng.uniform(0.3, 0.7, n)
    return (tq, ids, groups, times, sims), (video, speed, offset)


# ---- driver ----------------------------------------------------------------------------------


def timeit(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    queries = [make_query(rng) for _ in range(args.queries)]

    # Correctness first: both implementations should find the copied video and its offset.
    agree = native_ok = 0
    score_diff = 0.0
    for arrays, (video, speed, offset) in queries:
        nat = _native.aggregate(*arrays)
        base = baseline_aggregate(*arrays)
        nseg = max(nat[0]["segments"], key=lambda s: s["frames"]) if nat else None
        native_ok += bool(
            nat
            and nat[0]["video"] == video
            and abs(nseg["offset"] - offset) <= 1.0
            and abs(nseg["speed"] - speed) <= 0.01 * speed
        )
        if nat and base and nat[0]["video"] == base[0]["video"]:
            bseg = max(base[0]["segments"], key=lambda s: s["frames"])
            agree += abs(bseg["offset"] - nseg["offset"]) <= 1.0
            score_diff = max(score_diff, abs(base[0]["score"] - nat[0]["score"]))

    rows = []
    for name, fn in [
        ("native aggregate (1 thread)", lambda a: _native.aggregate(*a)),
        (
            "native aggregate + idf weights",
            lambda a: _native.aggregate(*a, _native.neighbor_idf_weights(a[1], a[2], a[4])),
        ),
        ("numpy/Python baseline", lambda a: baseline_aggregate(*a)),
    ]:
        secs = [timeit(lambda a=a, fn=fn: fn(a), args.repeat) for a, _ in queries]
        per = float(np.mean(secs))
        rows.append({"implementation": name, "us_per_query": per * 1e6, "queries_per_s": 1 / per})
    base_us = rows[-1]["us_per_query"]
    for r in rows:
        r["speedup_vs_baseline"] = base_us / r["us_per_query"]

    print(
        f"\nFrame-vote aggregation: {args.queries} query videos x {Q} frames, k = {K}, "
        f"{len(_native.aggregate_speed_grid())} speeds; best of {args.repeat}, mean over queries"
    )
    print(f"{'implementation':34s} {'µs / query video':>17s} {'queries / s':>12s} {'vs baseline':>12s}")
    for r in rows:
        print(
            f"{r['implementation']:34s} {r['us_per_query']:17,.0f} {r['queries_per_s']:12,.1f} "
            f"{r['speedup_vs_baseline']:11.1f}x"
        )
    print(
        f"native found the copied video with offset within 1 s and speed within 1%: "
        f"{native_ok}/{len(queries)}; baseline agrees on top video + offset: {agree}/{len(queries)}, "
        f"top score differs by <= {score_diff:.4f}"
    )

    out = pathlib.Path(__file__).resolve().parents[1] / "results" / "aggregate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "aggregate",
                "query_frames": Q,
                "k": K,
                "queries": args.queries,
                "repeat": args.repeat,
                "speeds": len(_native.aggregate_speed_grid()),
                "rows": rows,
                "native_correct": int(native_ok),
                "baseline_agrees": int(agree),
                "max_top_score_diff": score_diff,
                "machine": platform.processor() or platform.machine(),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
