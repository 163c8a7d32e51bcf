"""Distance kernels vs a float64 numpy reference, under every SIMD path this CPU supports.

Each path's table is called directly through the `_distances_for_level` test hook (it goes through
`kernels_for(level)`), so one process checks scalar, AVX2 and AVX-512 (or NEON) side by side;
the FRAMESEEK_SIMD route is covered by a subprocess test below and in test_native_build.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frameseek import _native

LEVELS = _native.supported_simd_levels()
ENTRIES = ["pair", "many", "block"]
DIMS = [1, 3, 17, 127, 128, 513, 1024]


def reference(metric: str, q: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 reference, per-element error scale) for the raw kernel output.

    A float32 sum of d products has rounding error bounded by ~d * eps * sum|terms|, so the scale
    is sum|terms| (for l2 the terms are all positive: the distance itself).
    """
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "ip":
        return q64 @ x64.T, np.abs(q64) @ np.abs(x64).T
    d2 = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    return d2, d2


def check(level: str, metric: str, q: np.ndarray, x: np.ndarray, entry: str) -> None:
    got = _native._distances_for_level(level, metric, q, x, entry)
    assert got.dtype == np.float32 and got.shape == (len(q), len(x))
    ref, scale = reference(metric, q, x)
    # 4 * sqrt(d) * eps relative to the error scale: loose enough for any summation order,
    # ~1000x tighter than a wrong index or a dropped tail element would produce.
    tol = 4 * np.sqrt(q.shape[1]) * np.finfo(np.float32).eps * scale + 1e-30
    bad = np.abs(got - ref) > tol
    assert not bad.any(), (level, metric, entry, q.shape, np.argwhere(bad)[:5])


def test_this_machine_has_a_simd_path():
    # The CI machine is x86-64 with AVX2; a build where only scalar runs would test nothing.
    assert _native.simd_level() in ("avx2", "avx512", "neon") or "FRAMESEEK_SIMD" in os.environ
    assert "scalar" in LEVELS


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_kernels_match_float64(level, dim, metric, entry):
    rng = np.random.default_rng([dim, len(level), len(entry)])
    # 9 queries x 13 vectors: exercises full 4x4 / 4x3 tiles and every edge (9 % 4, 13 % 4, 13 % 3)
    q = rng.standard_normal((9, dim)).astype(np.float32)
    x = (rng.standard_normal((13, dim)) * 3 + 1).astype(np.float32)
    check(level, metric, q, x, entry)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("offset", [1, 2, 3, 5, 7])
def test_unaligned_rows(level, offset):
    # Slicing a flat buffer at an odd float offset: no row starts on a 16/32/64-byte boundary.
    rng = np.random.default_rng(offset)
    dim = 37
    buf = rng.standard_normal(offset + 11 * dim).astype(np.float32)
    x = buf[offset:].reshape(11, dim)
    assert x.ctypes.data % 16 != 0 and x.flags.c_contiguous
    qbuf = rng.standard_normal(offset + 6 * dim).astype(np.float32)
    q = qbuf[offset:].reshape(6, dim)
    for metric in ("ip", "l2"):
        for entry in ENTRIES:
            check(level, metric, q, x, entry)


@pytest.mark.parametrize("level", LEVELS)
def test_tail_does_not_read_past_the_row(level):
    # The row ends right before a huge value: a tail that loads past d would pick it up.
    for dim in (1, 5, 15, 17, 31):
        buf = np.full(2 * dim + 64, 1e30, dtype=np.float32)
        x = buf[:dim].reshape(1, dim)
        x[:] = 1.0
        q = np.ones((1, dim), dtype=np.float32)
        for entry in ENTRIES:
            assert _native._distances_for_level(level, "ip", q, x, entry)[0, 0] == dim
            assert _native._distances_for_level(level, "l2", q, x, entry)[0, 0] == 0.0


@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=40, deadline=None)
@given(
    nq=st.integers(1, 11),
    n=st.integers(1, 19),
    dim=st.integers(1, 300),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_shapes(level, nq, n, dim, scale, seed):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((nq, dim)) * scale).astype(np.float32)
    x = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    for metric in ("ip", "l2"):
        check(level, metric, q, x, "block")
        check(level, metric, q[:1], x, "many")


def test_paths_agree_closely_with_each_other():
    rng = np.random.default_rng(7)
    q = rng.standard_normal((5, 512)).astype(np.float32)
    x = rng.standard_normal((40, 512)).astype(np.float32)
    base = _native._distances_for_level("scalar", "ip", q, x)
    for level in LEVELS:
        np.testing.assert_allclose(_native._distances_for_level(level, "ip", q, x), base, atol=1e-3)


def test_unknown_level_or_entry_is_an_error():
    q = np.ones((1, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _native._distances_for_level("sse9", "ip", q, q)
    with pytest.raises(ValueError, match="entry"):
        _native._distances_for_level("scalar", "ip", q, q, "gemm")
    with pytest.raises(ValueError, match="metric"):
        _native._distances_for_level("scalar", "cosine", q, q)
    missing = {"scalar", "neon", "avx2", "avx512"} - set(LEVELS)
    for level in missing:
        with pytest.raises(RuntimeError, match="not available"):
            _native._distances_for_level(level, "ip", q, q)


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_drives_flat_search(level):
    # FRAMESEEK_SIMD caps the level the indexes use; results match the default path.
    code = (
        "import numpy as np; from frameseek import _native as n; "
        "r = np.random.default_rng(3); x = r.standard_normal((300, 45)).astype(np.float32); "
        "f = n.FlatIndex(45, 'l2'); f.add(np.arange(300, dtype=np.uint64), x); "
        "i, d = f.search(x[:7], 5); import json; print(n.simd_level()); print(json.dumps(i.tolist()))"
    )
    env = dict(os.environ, FRAMESEEK_SIMD=level)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    reported, ids = out.stdout.splitlines()
    assert reported == level
    rows = json.loads(ids)
    assert [r[0] for r in rows] == list(range(7))  # each row's own vector is its nearest


# --------------------------------------------------------------------------- fp16 storage


def check_f16(level, metric, q, x16, entry):
    got = _native._distances_for_level(level, metric, q, x16, entry)
    ref, scale = reference(metric, q, x16.astype(np.float32))  # the stored (rounded) values
    tol = 4 * np.sqrt(q.shape[1]) * np.finfo(np.float32).eps * scale + 1e-30
    bad = np.abs(got - ref) > tol
    assert not bad.any(), (level, metric, entry, q.shape, np.argwhere(bad)[:5])


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_fp16_storage_kernels_match_float64(level, dim, metric, entry):
    rng = np.random.default_rng([dim, 16, len(level), len(entry)])
    q = rng.standard_normal((9, dim)).astype(np.float32)
    x16 = (rng.standard_normal((13, dim)) * 3).astype(np.float16)
    check_f16(level, metric, q, x16, entry)


@pytest.mark.parametrize("level", LEVELS)
def test_fp16_unaligned_and_tail(level):
    rng = np.random.default_rng(5)
    for dim in (1, 7, 9, 15, 17, 33):
        buf = np.full(3 + 5 * dim + 64, np.inf, dtype=np.float16)  # inf right after the rows
        x16 = buf[3 : 3 + 5 * dim].reshape(5, dim)
        x16[:] = rng.standard_normal((5, dim)).astype(np.float16)
        q = rng.standard_normal((3, dim)).astype(np.float32)
        for metric in ("ip", "l2"):
            for entry in ENTRIES:
                check_f16(level, metric, q, x16, entry)


def test_float16_conversion_matches_numpy_exactly():
    every_half = np.arange(2**16, dtype=np.uint16).view(np.float16)
    finite = every_half[np.isfinite(every_half)].astype(np.float32)
    np.testing.assert_array_equal(_native._float16_roundtrip(finite), finite)
    rng = np.random.default_rng(0)
    samples = np.concatenate(
        [
            rng.standard_normal(100_000).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 100_000),
            # exact ties between two fp16 values (round half to even) and the overflow edge
            (finite[:-1].astype(np.float64) + np.diff(finite.astype(np.float64)) / 2)[::7],
            np.array([65504, 65519, 65520, 1e6, -1e6, 5.96e-8, 2.98e-8, 2.99e-8, 0.0, -0.0], np.float64),
        ]
    ).astype(np.float32)
    with np.errstate(over="ignore"):  # values beyond 65504 round to inf, as they should
        want = samples.astype(np.float16).astype(np.float32)
    got = _native._float16_roundtrip(samples)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


# --------------------------------------------------------------------------- per-kernel dispatch


def _cpu_vendor() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":")[1].strip() for line in f if line.startswith("vendor_id")), "")


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        return set(next((line.split(":")[1].split() for line in f if line.startswith("flags")), []))


def test_kernel_simd_levels_reports_each_use():
    levels = _native.kernel_simd_levels()
    assert set(levels) == {"pair", "block", "scan_one", "scan_one_rule", "int8_dot"}
    assert levels["pair"] == levels["block"] == _native.simd_level()
    # The int8 walk's distances: VNNI wherever the AVX-512 table runs on a CPU that has it.
    expected_int8 = {"scalar": "scalar", "neon": "neon smull", "avx2": "avx2 maddubs"}.get(levels["pair"])
    if levels["pair"] == "avx512":
        expected_int8 = "avx512 vnni" if "avx512_vnni" in _cpu_flags() else "avx2 maddubs"
    assert levels["int8_dot"] == expected_int8
    # The memory-bound single-query scan: under AVX-512, the AVX-512 stream on Intel and the AVX2
    # one elsewhere; every other level scans with its own kernel. The report names the rule.
    if "FRAMESEEK_SCAN_SIMD" in os.environ:
        assert levels["scan_one_rule"] == "FRAMESEEK_SCAN_SIMD"
    elif _native.simd_level() == "avx512":
        vendor = _cpu_vendor()
        assert levels["scan_one"] == ("avx512" if vendor == "GenuineIntel" else "avx2")
        assert levels["scan_one_rule"].startswith(
            vendor + ": the " + ("AVX-512" if vendor == "GenuineIntel" else "AVX2")
        )
    else:
        assert levels["scan_one"] == _native.simd_level()
        assert levels["scan_one_rule"] == "the selected level"


def test_the_scan_rule_by_cpu_vendor():
    assert _native._scan_simd_level_for("avx512", "GenuineIntel") == "avx512"
    assert _native._scan_simd_level_for("avx512", "AuthenticAMD") == "avx2"
    assert _native._scan_simd_level_for("avx512", "") == "avx2"  # unknown: the stream measured on Zen 4
    assert _native._scan_simd_level_for("avx2", "GenuineIntel") == "avx2"
    assert _native._scan_simd_level_for("scalar", "AuthenticAMD") == "scalar"


_SCAN_CODE = (
    "import json, numpy as np; from frameseek import _native as n; "
    "r = np.random.default_rng(5); x = r.standard_normal((5000, 77)).astype(np.float32); "
    "q = r.standard_normal((1, 77)).astype(np.float32); "
    "f = n.FlatIndex(77, 'l2'); f.add(np.arange(5000, dtype=np.uint64), x); "
    "i, d = f.search(q, 10, threads=1); "
    "ref = ((x.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1); "
    "print(json.dumps({'levels': n.kernel_simd_levels(), 'ids': i[0].tolist(), "
    "'err': float(np.max(np.abs(d[0] - ref[i[0].astype(np.int64)]) / ref[i[0].astype(np.int64)])), "
    "'ref': np.argsort(ref, kind='stable')[:10].tolist()}))"
)


@pytest.mark.parametrize("level", LEVELS)
def test_forced_scan_level_single_query_matches_float64(level):
    # FRAMESEEK_SCAN_SIMD pins the single-query scan kernel (for A/B runs); every path gives the
    # exact top-10 of a float64 numpy reference.
    env = dict(os.environ, FRAMESEEK_SIMD=level, FRAMESEEK_SCAN_SIMD=level)
    out = subprocess.run([sys.executable, "-c", _SCAN_CODE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["levels"]["scan_one"] == level
    assert res["ids"] == res["ref"]
    assert res["err"] < 1e-5


@pytest.mark.parametrize("scan", [lv for lv in ("avx2", "avx512") if lv in LEVELS])
def test_either_scan_stream_under_the_default_level_matches_float64(scan):
    """Both streams the rule picks between, forced under the default (highest) level: the exact
    top-10 of a float64 numpy reference either way."""
    env = {k: v for k, v in os.environ.items() if k != "FRAMESEEK_SIMD"}
    env["FRAMESEEK_SCAN_SIMD"] = scan
    out = subprocess.run([sys.executable, "-c", _SCAN_CODE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["levels"]["scan_one"] == scan and res["levels"]["scan_one_rule"] == "FRAMESEEK_SCAN_SIMD"
    assert res["levels"]["pair"] == LEVELS[-1]
    assert res["ids"] == res["ref"]
    assert res["err"] < 1e-5


def test_scan_level_above_the_selected_level_is_an_error():
    env = dict(os.environ, FRAMESEEK_SIMD="scalar", FRAMESEEK_SCAN_SIMD=LEVELS[-1])
    code = "from frameseek import _native as n; print(n.kernel_simd_levels())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if LEVELS[-1] == "scalar":
        assert out.returncode == 0
    else:
        assert out.returncode != 0 and "FRAMESEEK_SCAN_SIMD" in out.stderr


# --- int8 codes (HnswIndex's int8 walk) ------------------------------------------------------------
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dim", [1, 15, 31, 32, 33, 63, 64, 65, 127, 512, 513, 1000])
def test_int8_dot_is_exact(level, dim):
    rng = np.random.default_rng([dim, len(level)])
    a = rng.integers(-127, 128, (5, dim)).astype(np.int8)
    b = rng.integers(-127, 128, (7, dim)).astype(np.int8)
    # the extremes, where a 16-bit pair sum is closest to saturating: 2 * 127 * 127
    a[0], b[0], b[1] = 127, 127, -127
    got = _native._dot_i8_for_level(level, a, b)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64).T)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("offset", [1, 3, 7])
def test_int8_dot_unaligned_rows(level, offset):
    rng = np.random.default_rng(offset)
    dim = 77
    buf = rng.integers(-127, 128, offset + 4 * dim).astype(np.int8)
    a = buf[offset:].reshape(4, dim)
    assert a.ctypes.data % 32 != 0 and a.flags.c_contiguous
    np.testing.assert_array_equal(_native._dot_i8_for_level(level, a, a), a.astype(np.int64) @ a.astype(np.int64).T)
