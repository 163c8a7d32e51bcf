"""The frame-vote aggregation of _native.aggregate written plainly in numpy/Python.

Same method, parameters (defaults only) and tie-breaking as native/src/aggregate.cpp: the
benchmark's baseline and the tests' reference: vectorised where numpy makes it easy, a Python
loop for the one-to-one assignment.
"""

from __future__ import annotations

import numpy as np

from frameseek import _native
from frameseek.ids import NO_ID


def fit(x, y, w, speed, smin, smax):
    """Weighted least squares y = off + speed * x; the slope clamped to [smin, smax], kept when
    the x values do not spread."""
    mx, my = np.average(x, weights=w), np.average(y, weights=w)
    sxx = np.sum(w * (x - mx) ** 2)
    if sxx > 1e-6 * w.sum():
        speed = float(np.clip(np.sum(w * (x - mx) * (y - my)) / sxx, smin, smax))
    return speed, float(my - speed * mx)


def baseline_aggregate(
    query_times,
    ids,
    groups,
    times,
    sims,
    weights=None,
    *,
    min_similarity=0.5,
    speeds=None,
    tol=1.0,
    max_gap=3.0,
    min_frames=3,
    max_segments=4,
    max_candidates=20,
):
    speeds = np.asarray(speeds if speeds is not None else _native.aggregate_speed_grid())
    q, k = ids.shape
    order = np.argsort(query_times, kind="stable")
    rank = np.empty(q, np.int64)
    rank[order] = np.arange(q)
    ts = query_times[order]
    gaps = np.diff(ts)
    pos = np.sort(gaps[gaps > 0])
    dt = float(pos[len(pos) // 2]) if len(pos) else 1.0  # upper median, as nth_element in C++
    left = np.concatenate([[dt / 2], np.minimum(dt / 2, gaps / 2)])
    right = np.concatenate([np.minimum(dt / 2, gaps / 2), [dt / 2]])
    cell = left + right
    prefix = np.concatenate([[0], np.cumsum(cell)])
    total = prefix[-1]

    # value of a vote: weight * clamp(similarity, 0, 1), in float32 like the C++
    allval = np.clip(sims.astype(np.float32), 0, 1) * (np.float32(1) if weights is None else weights.astype(np.float32))
    ok = (ids != NO_ID) & (sims >= min_similarity) & (allval > 0)
    qi = np.broadcast_to(rank[:, None], ids.shape)[ok]
    g, r, tr = groups[ok], ids[ok], times[ok]
    val = allval[ok].astype(np.float64)
    tqm = ts[qi]
    srt = np.lexsort((r, qi, g))
    g, r, tr, val, qi, tqm = g[srt], r[srt], tr[srt], val[srt], qi[srt], tqm[srt]
    bounds = np.flatnonzero(np.diff(g)) + 1
    out = []
    for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(g)]])):
        vq, vr, vtr, vval, vtq = qi[lo:hi], r[lo:hi], tr[lo:hi], val[lo:hi], tqm[lo:hi]
        if len(np.unique(vq)) < min_frames:
            continue
        rgaps = np.diff(np.unique(vtr))
        ref_dt = min(float(np.sort(rgaps)[len(rgaps) // 2]), tol) if len(rgaps) else 0.0
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
            cells = []
            for phase, shift in enumerate((0.0, 0.5)):
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
                cells.append((sums, cs[cstarts], np.full(len(cstarts), phase), cb[cstarts], counts))
            # the best cell; ties go to the lowest speed, then phase, then bin (as in C++)
            sums, sis, phases, bins_, counts = (np.concatenate(x) for x in zip(*cells))
            j = np.lexsort((bins_, phases, sis, -sums))[0]
            if counts[j] < 2:
                break
            speed = float(speeds[sis[j]])
            off = float(bmin[sis[j], 0] + (bins_[j] + 0.5 - 0.5 * phases[j]) * tol)
            for _ in range(10):  # least-squares refinement on the band, best match per frame
                res = np.abs(vtr - (off + speed * vtq))
                band = np.flatnonzero(active & (res <= tol))
                if len(band) == 0:
                    break
                o = np.lexsort((res[band], -vval[band], vq[band]))
                pick = band[o][np.concatenate([[True], vq[band][o][1:] != vq[band][o][:-1]])]
                prev = (speed, off)
                speed, off = fit(vtq[pick], vtr[pick], vval[pick], speed, speeds[0], speeds[-1])
                if abs(speed - prev[0]) < 1e-12 and abs(off - prev[1]) < 1e-9:
                    break
            res = np.abs(vtr - (off + speed * vtq))
            band = np.flatnonzero(active & (res <= tol))
            o = sorted(band.tolist(), key=lambda j: (-vval[j], res[j], vq[j], vr[j]))
            per_ref = ref_dt / (speed * dt)
            capacity = int(np.ceil(per_ref - 1e-6)) if per_ref > 1 else 1
            used_q, used_r, pairs = set(), {}, []
            for j in o:  # one-to-one assignment; a reference frame serves `capacity` query frames
                if vq[j] in used_q or used_r.get(vr[j], 0) >= capacity or vr[j] in spent:
                    continue
                used_q.add(vq[j])
                used_r[vr[j]] = used_r.get(vr[j], 0) + 1
                pairs.append(j)
            active[band] = False
            pairs.sort(key=lambda j: vq[j])
            runs, cur = [], pairs[:1]
            for p_prev, p in zip(pairs, pairs[1:]):
                if vtq[p] - vtq[p_prev] > max_gap or any(vtq[p_prev] < s["query_start"] < vtq[p] for s in segments):
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
                seg_speed, seg_off = fit(vtq[run], vtr[run], vval[run], speed, speeds[0], speeds[-1])
                segments.append(
                    {
                        "query_start": qs,
                        "query_end": qe,
                        "ref_start": seg_off + seg_speed * qs,
                        "ref_end": seg_off + seg_speed * qe,
                        "offset": seg_off,
                        "speed": seg_speed,
                        "frames": len(run),
                        "score": min(1.0, m / ext),
                    }
                )
                matched += m
                spent.update(vr[run].tolist())
                active &= ~((vtq >= qs) & (vtq <= qe)) & ~np.isin(vr, list(spent))
        if segments:
            out.append(
                {
                    "video": int(g[lo]),
                    "score": matched / total,
                    "votes": sum(s["frames"] for s in segments),
                    "segments": sorted(segments, key=lambda s: s["query_start"]),
                }
            )
    out.sort(key=lambda c: (-c["score"], c["video"]))
    return out[:max_candidates]
