"""The copy-detection harness's own measuring code (benchmarks/copydetect/run.py): vPDQ's
localisation baseline and segment AP on constructed inputs, and the queries' ground truth against
their pixels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from benchmarks.copydetect.run import segment_ap
from benchmarks.copydetect.vpdq_baseline import vpdq_locate


def _hashes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)


def _flip_bits(h: np.ndarray, bits: int, seed: int) -> np.ndarray:
    """h with `bits` random bits flipped in every row (a re-encode's small hash drift)."""
    out = h.copy()
    rng = np.random.default_rng(seed)
    for row in out:
        for b in rng.choice(256, size=bits, replace=False):
            row[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def test_vpdq_locate_recovers_the_offset_and_span_of_a_copied_stretch():
    """Reference hashes every 1.0 s; the query is reference seconds 5-14 with 12 bits of drift
    per hash, starting at query time 0: offset 5 s, box 0-10 s x 5-15 s."""
    rh = _hashes(20, 1)
    rt = np.arange(20, dtype=np.float64)
    qh = _flip_bits(rh[5:15], 12, 2)
    qt = np.arange(10, dtype=np.float64)
    full = np.full(20, 100)
    p = vpdq_locate(qh, full[:10], qt, rh, full, rt)
    assert p is not None
    assert p.offset == pytest.approx(5.0)
    assert p.box == pytest.approx((0.0, 10.0, 5.0, 15.0))
    assert p.pairs == 10
    # a low-quality query frame is left out, as ThreatExchange's matcher does
    q = full[:10].copy()
    q[0] = 10
    assert vpdq_locate(qh, q, qt, rh, full, rt).pairs == 9


def test_vpdq_locate_is_none_without_a_frame_within_the_distance():
    rh, qh = _hashes(20, 1), _hashes(8, 3)  # independent hashes differ by ~128 bits
    full = np.full(20, 100)
    assert vpdq_locate(qh, full[:8], np.arange(8.0), rh, full, np.arange(20.0)) is None
    # every frame under the quality tolerance: nothing to place
    assert vpdq_locate(rh, np.zeros(20, int), np.arange(20.0), rh, full, np.arange(20.0)) is None


def test_segment_ap_counts_one_true_positive_per_copy():
    """A second correct box on an already-found copy is a false positive; an unfound copy lowers
    AP through n_gt."""
    assert segment_ap([(0.9, True, "a"), (0.8, True, "b")], 2) == pytest.approx(1.0)
    # ranks: a (TP), a again (FP), b (TP) -> (1/1 + 2/3) / 2
    assert segment_ap([(0.9, True, "a"), (0.8, True, "a"), (0.7, True, "b")], 2) == pytest.approx((1 + 2 / 3) / 2)
    assert segment_ap([(0.9, True, "a")], 2) == pytest.approx(0.5)


def _frames(path) -> list[tuple[float, np.ndarray]]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(float(f.pts * s.time_base), f.to_ndarray(format="gray").astype(np.float32)) for f in c.decode(s)]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
@pytest.mark.parametrize("name", ["fps", "fps3", "reencode"])
def test_query_ground_truth_matches_the_pixels(tmp_path, name):
    """The harness's ground truth t_ref = offset + speed * t_query against where each query frame
    really comes from (the reference frame with the same pixels): ffmpeg's fps filter shows the
    source frame half an output interval later, which the ground truth must carry."""
    from benchmarks.copydetect import media as M

    ref = tmp_path / "ref.mp4"  # every frame different: ffmpeg's test pattern with its frame counter
    M._run(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "4", *M._enc(12), str(ref)])
    q = tmp_path / f"q_{name}.mp4"
    off, speed, q0, q1 = M.make_query(q, name, ref, 4.0, 0, ref, ref, ref)
    ref_frames = _frames(ref)
    ref_t = np.array([t for t, _ in ref_frames])
    for t, img in _frames(q):
        if not q0 + 0.5 <= t <= q1 - 0.5 or abs(t - round(t)) > 1e-3:
            continue
        src = ref_t[int(np.argmin([np.mean((img - r) ** 2) for _, r in ref_frames]))]
        assert abs(src - (off + speed * t)) <= 0.021, (name, t, src, off)  # within half a 25 fps frame
