"""Audio fingerprint matching in the native core against a numpy reference.

- popcount kernels (every SIMD level this CPU has, through the `_xor_popcount_for_level` /
  `_hamming_for_level` hooks) against numpy's bit counts;
- `verify_fingerprint_offset` against a float64 numpy re-statement of its rule;
- `FingerprintIndex.search` against a brute-force scan of every offset of every video (what the
  inverted index + voting must find without scanning), on synthetic sub-fingerprints with
  controlled bit errors, plus add/replace/remove bookkeeping.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frameseek import _native

LEVELS = _native.supported_popcount_levels()


def popcounts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(a.astype(np.uint32), b.astype(np.uint32))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 4), axis=1).sum(1).astype(np.uint32)


def test_levels_include_scalar_and_the_best_is_in_use():
    assert LEVELS[0] == "scalar"
    assert _native.popcount_simd_level() == LEVELS[-1]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 33, 1000, 4099])
def test_popcount_kernels_match_numpy(level, n):
    rng = np.random.default_rng(n)
    a = rng.integers(0, 2**32, n, dtype=np.uint32)
    b = rng.integers(0, 2**32, n, dtype=np.uint32)
    b[: n // 3] = a[: n // 3]  # zeros
    b[n // 3 : n // 2] = ~a[n // 3 : n // 2]  # 32s
    want = popcounts(a, b)
    np.testing.assert_array_equal(_native._xor_popcount_for_level(level, a, b), want)
    assert _native._hamming_for_level(level, a, b) == int(want.sum())


@given(st.lists(st.integers(0, 2**32 - 1), max_size=80), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_popcount_kernels_on_any_words(words, mask):
    a = np.array(words, dtype=np.uint32)
    b = a ^ np.uint32(mask)
    for level in LEVELS:
        assert _native._hamming_for_level(level, a, b) == len(words) * bin(mask).count("1")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("words", [1, 15, 16, 17, 32])
def test_hamming_rows_matches_numpy(level, words):
    rng = np.random.default_rng(words)
    q = rng.integers(0, 2**32, words, dtype=np.uint32)
    rows = rng.integers(0, 2**32, (37, words), dtype=np.uint32)
    rows[0] = q  # distance 0
    rows[1] = ~q  # every bit
    want = np.array([popcounts(q, r).sum() for r in rows], dtype=np.uint32)
    np.testing.assert_array_equal(_native._hamming_rows_for_level(level, q, rows), want)
    assert len(_native._hamming_rows_for_level(level, q, rows[:0])) == 0
    with pytest.raises(ValueError, match="words per row"):
        _native._hamming_rows_for_level(level, q, rows[:, :-1] if words > 1 else rows.ravel())


def test_popcount_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="length"):
        _native._hamming_for_level("scalar", [1, 2], [1])


def noisy(values: np.ndarray, ber: float, rng) -> np.ndarray:
    """`values` with each bit flipped with probability `ber`."""
    flips = rng.random((len(values), 32)) < ber
    mask = np.packbits(flips, axis=1, bitorder="little").view(np.uint32).reshape(-1)
    return values ^ mask


def reference_verify(q: np.ndarray, r: np.ndarray, offset: int, p) -> tuple[int, int, int, float] | None:
    """verify_offset's rule in float64 numpy: the longest run of windows with BER <= limit, edge
    items no better than chance trimmed; (query_start, ref_start, length, ber) or None."""
    q0, q1 = max(0, -offset), min(len(q), len(r) - offset)
    if q1 - q0 < max(p.min_length, 1):
        return None
    e = popcounts(q[q0:q1], r[q0 + offset : q1 + offset]).astype(np.float64)
    w = min(p.window, len(e))
    sums = np.convolve(e, np.ones(w), mode="valid")
    good = sums / (32.0 * w) <= p.max_window_ber + 1e-12
    best, run = None, None
    for s, g in enumerate(good):
        if g and run is None:
            run = s
        if g and (best is None or s - run > best[1] - best[0]):
            best = (run, s)
        if not g:
            run = None
    if best is None:
        return None
    a, b = best[0], best[1] + w
    while b - a > 1 and e[a] >= 16:
        a += 1
    while b - a > 1 and e[b - 1] >= 16:
        b -= 1
    if b - a < p.min_length:
        return None
    return q0 + a, q0 + a + offset, b - a, float(e[a:b].sum() / (32.0 * (b - a)))


@pytest.mark.parametrize("offset", [-50, 0, 5, 69, 70, 71, 120])  # the copy sits at 70
@pytest.mark.parametrize("ber", [0.0, 0.1, 0.25, 0.5])
def test_verify_offset_matches_the_numpy_rule(offset, ber):
    rng = np.random.default_rng(int(ber * 100) + offset + 100)
    ref = rng.integers(0, 2**32, 400, dtype=np.uint32)
    start = 100
    q = noisy(ref[start : start + 150].copy(), ber, rng)
    q = np.concatenate([rng.integers(0, 2**32, 30, dtype=np.uint32), q, rng.integers(0, 2**32, 20, dtype=np.uint32)])
    p = _native.FingerprintMatchParams()
    got = _native.verify_fingerprint_offset(q, ref, offset, p)
    want = reference_verify(q, ref, offset, p)
    if want is None:
        assert got is None
    else:
        assert (got["query_start"], got["ref_start"], got["length"]) == want[:3]
        assert got["ber"] == pytest.approx(want[3], abs=1e-12)


def brute_force(query: np.ndarray, refs: dict[int, np.ndarray], p) -> dict[int, tuple]:
    """Every offset of every reference verified: the best placement per video by agreeing bits."""
    best = {}
    for vid, r in refs.items():
        for off in range(-len(query) + 1, len(r)):
            m = reference_verify(query, r, off, p)
            if m is not None and (vid not in best or m[2] * (1 - 2 * m[3]) > best[vid][2] * (1 - 2 * best[vid][3])):
                best[vid] = m
    return best


@pytest.mark.parametrize("ber", [0.0, 0.1, 0.2])
def test_search_finds_what_a_brute_force_scan_finds(ber):
    rng = np.random.default_rng(7 + int(ber * 100))
    refs = {vid: rng.integers(0, 2**32, int(rng.integers(200, 600)), dtype=np.uint32) for vid in range(1, 31)}
    index = _native.FingerprintIndex()
    for vid, r in refs.items():
        index.add(vid, r)
    assert len(index) == 30 and index.items == sum(map(len, refs.values()))
    p = _native.FingerprintMatchParams()
    for target, start, length in [(3, 0, 120), (17, 150, 80), (30, 37, 100)]:
        query = np.concatenate(
            [rng.integers(0, 2**32, 25, dtype=np.uint32), noisy(refs[target][start : start + length], ber, rng)]
        )
        want = brute_force(query, {v: refs[v] for v in (target, 1, 2)}, p)
        got = index.search(query, p)
        assert got, "the copy was not found"
        top = got[0]
        assert top["video"] == target
        w = want[target]
        assert (top["query_start"], top["ref_start"], top["length"]) == w[:3]
        assert top["ber"] == pytest.approx(w[3], abs=1e-12)
        # unrelated random videos never verify (the brute force finds nothing there either)
        assert 1 not in want and 2 not in want
        assert all(m["video"] == target for m in got)


def test_add_replace_remove():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**32, 300, dtype=np.uint32)
    b = rng.integers(0, 2**32, 300, dtype=np.uint32)
    index = _native.FingerprintIndex()
    index.add(5, a)
    index.add(6, b)
    assert 5 in index and 6 in index and 7 not in index and "x" not in index
    assert index.search(a[50:150])[0]["video"] == 5
    index.add(5, b)  # replaced: now a copy of 6's audio
    assert index.items == 600
    assert {m["video"] for m in index.search(a[50:150])} == set()
    assert {m["video"] for m in index.search(b[50:150])} == {5, 6}
    assert index.remove(6) and not index.remove(6)
    assert [m["video"] for m in index.search(b[50:150])] == [5]
    assert index.items == 300 and len(index) == 1
    index.add(8, a)  # reuses 6's slot
    assert index.search(a[10:100])[0]["video"] == 8


def test_common_band_values_are_skipped():
    """A value shared by more than max_postings items (silence, hum) casts no votes."""
    index = _native.FingerprintIndex()
    hum = np.full(500, 0x12345678, dtype=np.uint32)
    for vid in range(3):
        index.add(vid, hum)
    p = _native.FingerprintMatchParams()
    p.max_postings = 100
    assert index.search(hum[:50], p) == []
    p.max_postings = 10_000
    assert {m["video"] for m in index.search(hum[:50], p)} == {0, 1, 2}


def test_bad_input_is_refused():
    index = _native.FingerprintIndex()
    with pytest.raises(TypeError):
        index.add(1, np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        index.add(1, np.array([-1, 2]))
    assert index.search(np.zeros(0, dtype=np.uint32)) == []


@pytest.mark.parametrize("level", LEVELS)
def test_frameseek_simd_caps_the_popcount_level(level):
    """FRAMESEEK_SIMD caps the popcount kernels as it does the distance kernels (run in a fresh
    process: the level is chosen once)."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "from frameseek import _native; print(_native.popcount_simd_level())"],
        env={**os.environ, "FRAMESEEK_SIMD": level},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == level
