"""Frame-vote aggregation throughput: _native.aggregate vs the same vote in numpy/Python.

Workload (as SearchByVideo sees it): 600-frame query videos (2 fps, 300 s) with k = 32 neighbours
per frame from a 10,000-video library. Each query copies one reference video (a sub-clip at an
offset, some at speed 0.8x / 1.25x, some in two parts) and every true frame comes with its
near-duplicate temporal neighbours; the rest of the k slots are distractors from other videos.

The baseline implements the same method with numpy (vectorised Hough vote per speed, numpy
least-squares refinement, Python loop for the one-to-one assignment), so the comparison is of
implementation, not of algorithm; the table also reports whether both found the same top video
and offset.

    python -m benchmarks.native.bench_aggregate [--queries 12] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import numpy as np

from frameseek import _native

NO_ID = np.uint64(2**64 - 1)
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


# ---- numpy / Python baseline of the same vote ------------------------------------------------


def baseline_aggregate(query_times, ids, groups, times, sims, *, min_similarity=0.5, speeds=None,
                       tol=1.0, max_gap=3.0, min_frames=3, max_segments=4, max_candidates=20):
    speeds = np.asarray(speeds if speeds is not None else _native.aggregate_speed_grid())
    q, k = ids.shape
    order = np.argsort(query_times, kind="stable")
    rank = np.empty(q, np.int64)
    rank[order] = np.arange(q)
    ts = query_times[order]
    gaps = np.diff(ts)
    dt = float(np.median(gaps[gaps > 0])) if np.any(gaps > 0) else 1.0
    left = np.concatenate([[dt / 2], np.minimum(dt / 2, gaps / 2)])
    right = np.concatenate([np.minimum(dt / 2, gaps / 2), [dt / 2]])
    cell = left + right
    prefix = np.concatenate([[0], np.cumsum(cell)])
    total = prefix[-1]

    ok = (ids != NO_ID) & (sims >= min_similarity)
    qi = np.broadcast_to(rank[:, None], ids.shape)[ok]
    g, r, tr = groups[ok], ids[ok], times[ok]
    val = np.clip(sims[ok], 0, 1).astype(np.float64)
    tqm = ts[qi]
    srt = np.lexsort((r, qi, g))
    g, r, tr, val, qi, tqm = g[srt], r[srt], tr[srt], val[srt], qi[srt], tqm[srt]
    bounds = np.flatnonzero(np.diff(g)) + 1
    out = []
    for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(g)]])):
        vq, vr, vtr, vval, vtq = qi[lo:hi], r[lo:hi], tr[lo:hi], val[lo:hi], tqm[lo:hi]
        if len(np.unique(vq)) < min_frames:
            continue
        active = np.ones(hi - lo, bool)
        spent = set()
        segments, matched = [], 0.0
        for _ in range(2 * max_segments + 2):
            if len(segments) >= max_segments or not active.any():
                break
            # Hough: all speeds at once; per (speed, bin) each query frame adds its best value.
            a = np.flatnonzero(active)
            b = vtr[a][None, :] - speeds[:, None] * vtq[a][None, :]
            bmin = b.min(axis=1, keepdims=True)
            best = (0.0, 0, 0, 0.0)
            for shift in (0.0, 0.5):
                bins = np.floor((b - bmin) / tol + shift).astype(np.int64)
                key_s = np.repeat(np.arange(len(speeds)), len(a))
                key_b, key_q = bins.ravel(), np.tile(vq[a], len(speeds))
                vals = np.tile(vval[a], len(speeds))
                o = np.lexsort((key_q, key_b, key_s))
                ks, kb, kq, kv = key_s[o], key_b[o], key_q[o], vals[o]
                new = np.concatenate([[True], (ks[1:] != ks[:-1]) | (kb[1:] != kb[:-1]) | (kq[1:] != kq[:-1])])
                starts = np.flatnonzero(new)
                best_per_q = np.maximum.reduceat(kv, starts)
                cs, cb = ks[starts], kb[starts]
                cell_new = np.concatenate([[True], (cs[1:] != cs[:-1]) | (cb[1:] != cb[:-1])])
                cstarts = np.flatnonzero(cell_new)
                sums = np.add.reduceat(best_per_q, cstarts)
                counts = np.diff(np.concatenate([cstarts, [len(cs)]]))
                j = int(np.argmax(sums))
                if sums[j] > best[0]:
                    si = int(cs[cstarts[j]])
                    best = (float(sums[j]), int(counts[j]), si,
                            float(bmin[si, 0] + (cb[cstarts[j]] + 0.5 - shift) * tol))
            if best[1] < 2:
                break
            speed, off = float(speeds[best[2]]), best[3]
            for _ in range(10):  # least-squares refinement on the band, best match per frame
                res = np.abs(vtr - (off + speed * vtq))
                band = np.flatnonzero(active & (res <= tol))
                if len(band) == 0:
                    break
                o = np.lexsort((res[band], -vval[band], vq[band]))
                pick = band[o][np.concatenate([[True], vq[band][o][1:] != vq[band][o][:-1]])]
                w, x, y = vval[pick], vtq[pick], vtr[pick]
                mx, my = np.average(x, weights=w), np.average(y, weights=w)
                sxx = np.sum(w * (x - mx) ** 2)
                prev = (speed, off)
                if sxx > 1e-6 * w.sum():
                    speed = float(np.clip(np.sum(w * (x - mx) * (y - my)) / sxx, speeds[0], speeds[-1]))
                off = my - speed * mx
                if abs(speed - prev[0]) < 1e-12 and abs(off - prev[1]) < 1e-9:
                    break
            res = np.abs(vtr - (off + speed * vtq))
            band = np.flatnonzero(active & (res <= tol))
            o = sorted(band.tolist(), key=lambda j: (-vval[j], res[j], vq[j], vr[j]))
            used_q, used_r, pairs = set(), set(), []
            for j in o:  # one-to-one assignment (reference capacity 1 at equal sampling rates)
                if vq[j] in used_q or vr[j] in used_r or vr[j] in spent:
                    continue
                used_q.add(vq[j]), used_r.add(vr[j]), pairs.append(j)
            active[band] = False
            pairs.sort(key=lambda j: vq[j])
            runs, cur = [], pairs[:1]
            for p_prev, p in zip(pairs, pairs[1:]):
                if vtq[p] - vtq[p_prev] > max_gap:
                    runs.append(cur)
                    cur = []
                cur.append(p)
            if cur:
                runs.append(cur)
            for run in runs:
                if len(run) < min_frames or len(segments) >= max_segments:
                    continue
                qs, qe = vtq[run[0]], vtq[run[-1]]
                m = float(np.sum(cell[vq[run]] * vval[run]))
                ext = prefix[np.searchsorted(ts, qe, "right")] - prefix[np.searchsorted(ts, qs, "left")]
                segments.append({"query_start": qs, "query_end": qe, "offset": off, "speed": speed,
                                 "frames": len(run), "score": m / ext})
                matched += m
                spent.update(vr[run].tolist())
                active &= ~((vtq >= qs) & (vtq <= qe)) & ~np.isin(vr, list(spent))
        if segments:
            out.append({"video": int(g[lo]), "score": matched / total, "votes": sum(s["frames"] for s in segments),
                        "segments": sorted(segments, key=lambda s: s["query_start"])})
    out.sort(key=lambda c: (-c["score"], c["video"]))
    return out[:max_candidates]


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
    for (arrays, (video, speed, offset)) in queries:
        nat = _native.aggregate(*arrays)
        base = baseline_aggregate(*arrays)
        nseg = max(nat[0]["segments"], key=lambda s: s["frames"]) if nat else None
        native_ok += bool(nat and nat[0]["video"] == video and abs(nseg["offset"] - offset) <= 1.0
                          and abs(nseg["speed"] - speed) <= 0.01 * speed)
        if nat and base and nat[0]["video"] == base[0]["video"]:
            bseg = max(base[0]["segments"], key=lambda s: s["frames"])
            agree += abs(bseg["offset"] - nseg["offset"]) <= 1.0

    rows = []
    for name, fn in [
        ("native aggregate (1 thread)", lambda a: _native.aggregate(*a)),
        ("native aggregate + idf weights", lambda a: _native.aggregate(
            *a, _native.neighbor_idf_weights(a[1], a[2], a[4]))),
        ("numpy/Python baseline", lambda a: baseline_aggregate(*a)),
    ]:
        secs = [timeit(lambda a=a: fn(a), args.repeat) for a, _ in queries]
        per = float(np.mean(secs))
        rows.append({"implementation": name, "us_per_query": per * 1e6, "queries_per_s": 1 / per})
    base_us = rows[-1]["us_per_query"]
    for r in rows:
        r["speedup_vs_baseline"] = base_us / r["us_per_query"]

    print(f"\nFrame-vote aggregation: {args.queries} query videos x {Q} frames, k = {K}, "
          f"{len(_native.aggregate_speed_grid())} speeds; best of {args.repeat}, mean over queries")
    print(f"{'implementation':34s} {'µs / query video':>17s} {'queries / s':>12s} {'vs baseline':>12s}")
    for r in rows:
        print(f"{r['implementation']:34s} {r['us_per_query']:17,.0f} {r['queries_per_s']:12,.1f} "
              f"{r['speedup_vs_baseline']:11.1f}x")
    print(f"native found the copied video with offset within 1 s and speed within 1%: "
          f"{native_ok}/{len(queries)}; baseline agrees on top video + offset: {agree}/{len(queries)}")

    out = pathlib.Path(__file__).resolve().parents[1] / "results" / "aggregate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "aggregate", "query_frames": Q, "k": K, "queries": args.queries, "repeat": args.repeat,
        "speeds": len(_native.aggregate_speed_grid()), "rows": rows, "native_correct": int(native_ok),
        "baseline_agrees": int(agree), "machine": platform.processor() or platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
