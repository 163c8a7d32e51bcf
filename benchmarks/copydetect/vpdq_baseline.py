"""vPDQ, the baseline of the copy-detection harness: hashing a video (one hash per second),
ThreatExchange's brute-force matcher, and the localisation `run` gives it (ThreatExchange has none)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def vpdq_hash_file(path: str, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """vPDQ of a video file at one hash per second: (hash bytes uint8[n, 32], quality int[n],
    the hashed frames' timestamps in seconds float[n]). `kw`: more vpdq.computeHash arguments
    (thread_count)."""
    import vpdq

    feats = vpdq.computeHash(str(path), seconds_per_hash=1.0, **kw)
    h = np.array(
        [np.frombuffer(bytes.fromhex(vpdq.hash_to_hex(x.hash)), np.uint8) for x in feats], dtype=np.uint8
    ).reshape(-1, 32)
    return (
        h,
        np.array([x.quality for x in feats], dtype=np.int32),
        np.array([x.timestamp for x in feats], dtype=np.float64),
    )


# -- vPDQ (ThreatExchange semantics) -----------------------------------------------------------

_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between every hash of `a` [n, 32] and every hash of `b` [m, 32]: int32 [n, m]."""
    return _POP[np.bitwise_xor(a[:, None, :], b[None, :, :])].sum(axis=2, dtype=np.int32)


def vpdq_match(qh, qq, rh, rq, distance: int = 31, quality: int = 50) -> tuple[float, float]:
    """ThreatExchange `match_VPDQ_hash_brute`: drop frames under the quality tolerance, dedupe
    hashes, a hash matches when any hash of the other side is within `distance` bits.
    Returns (query match %, compared match %)."""
    a = np.unique(qh[qq >= quality], axis=0)
    b = np.unique(rh[rq >= quality], axis=0)
    if len(a) == 0 or len(b) == 0:
        return 0.0, 0.0
    m = hamming(a, b) <= distance
    return 100.0 * m.any(axis=1).mean(), 100.0 * m.any(axis=0).mean()


@dataclass(frozen=True)
class VpdqPlacement:
    """Where vPDQ's frame matches put a query inside one reference (see vpdq_locate)."""

    offset: float  # t_ref = offset + t_query (speed 1)
    box: tuple[float, float, float, float]  # query start, end x reference start, end (s)
    pairs: int  # matched query frames


def vpdq_locate(qh, qq, qt, rh, rq, rt, distance: int = 31, quality: int = 50) -> VpdqPlacement | None:
    """A localisation for vPDQ, which ThreatExchange's matcher does not give (it returns match
    percentages only): the obvious one on top of its frame matches, so that frameseek's
    localisation is compared with something. Every query frame of sufficient quality that has a
    reference frame within `distance` bits is paired with its nearest one (ties: the earliest);
    the offset is the median of t_ref - t_query over the pairs (vPDQ has no speed model); the box
    spans the matched frames on both sides, each frame 1 s long (one hash per second). None when
    no frame matches."""
    qs, rs = qq >= quality, rq >= quality
    if not qs.any() or not rs.any():
        return None
    a, ta = qh[qs], qt[qs]
    b, tb = rh[rs], rt[rs]
    d = hamming(a, b)
    nearest = d.argmin(axis=1)
    hit = d[np.arange(len(a)), nearest] <= distance
    if not hit.any():
        return None
    tq, tr = ta[hit], tb[nearest[hit]]
    return VpdqPlacement(
        float(np.median(tr - tq)),
        (float(tq.min()), float(tq.max()) + 1.0, float(tr.min()), float(tr.max()) + 1.0),
        int(hit.sum()),
    )
