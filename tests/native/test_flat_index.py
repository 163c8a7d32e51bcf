"""FlatIndex vs an exact float64 numpy reference: filters, removals, re-adds, groups, padding,
threads, concurrency and argument checking."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frameseek._native import NO_ID, Filter, FlatIndex


def ref_dist(metric, q, x):
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "ip":
        return 1.0 - q64 @ x64.T
    return ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)


def check_topk(index, ids, x, q, k, metric, mask=None, **kw):
    """Exact top-k for each query; ids compared up to float32 near-ties."""
    got_ids, got_d = index.search(q, k, **kw)
    assert got_ids.shape == (len(q), k) and got_ids.dtype == np.uint64
    assert got_d.shape == (len(q), k) and got_d.dtype == np.float32
    full = ref_dist(metric, q, x)
    if mask is not None:
        full = np.where(mask[None, :], full, np.inf)
    n_ok = int(np.isfinite(full[0]).sum()) if len(q) else 0
    for r in range(len(q)):
        order = np.argsort(full[r], kind="stable")[: min(k, n_ok)]
        want_d = full[r, order]
        m = len(order)
        np.testing.assert_allclose(got_d[r, :m], want_d, rtol=1e-4, atol=1e-4)
        # same set of ids except where the reference distances tie within float32 noise
        id_of = dict(zip(ids[order].tolist(), want_d.tolist()))
        for gid, gd in zip(got_ids[r, :m].tolist(), got_d[r, :m].tolist()):
            assert gid in id_of or abs(gd - want_d[-1]) < 1e-4, (r, gid)
        assert np.all(np.diff(got_d[r, :m]) >= 0)
        assert np.all(got_ids[r, m:] == NO_ID) and np.all(np.isinf(got_d[r, m:]))
    return got_ids, got_d


def make(n, dim, metric="ip", seed=0, groups=None, normalise=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    if normalise:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.choice(10**12, size=n, replace=False).astype(np.uint64)
    index = FlatIndex(dim, metric)
    index.add(ids, x, groups=groups)
    return index, ids, x


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("dim", [1, 17, 128, 513])
@pytest.mark.parametrize("nq", [1, 3, 64, 70])
def test_exact_vs_numpy(metric, dim, nq):
    index, ids, x = make(5000, dim, metric, seed=dim)
    q = np.random.default_rng(1).standard_normal((nq, dim)).astype(np.float32)
    check_topk(index, ids, x, q, 10, metric)
    assert len(index) == 5000 and index.dim == dim and index.metric == metric


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_thread_counts_give_identical_results(threads):
    # 20k rows: enough to split the scan over vector ranges (>= 4096 rows per thread).
    index, ids, x = make(20000, 32, "l2", seed=5)
    q = np.random.default_rng(2).standard_normal((9, 32)).astype(np.float32)
    base = index.search(q, 7, threads=1)
    got = index.search(q, 7, threads=threads)
    np.testing.assert_array_equal(got[0], base[0])
    np.testing.assert_array_equal(got[1], base[1])
    check_topk(index, ids, x, q, 7, "l2", threads=threads)


def test_k_larger_than_n_pads_with_no_id_and_inf():
    index, ids, x = make(5, 8)
    got_ids, got_d = index.search(x[:2], 9)
    assert set(got_ids[0, :5].tolist()) == set(ids.tolist())
    assert np.all(got_ids[:, 5:] == NO_ID) and np.all(got_d[:, 5:] == np.inf)
    assert NO_ID == 2**64 - 1


def test_empty_index_returns_padding():
    index = FlatIndex(4)
    got_ids, got_d = index.search(np.ones((2, 4), np.float32), 3)
    assert np.all(got_ids == NO_ID) and np.all(np.isinf(got_d))
    g, i, d = index.search_groups(np.ones(4, np.float32), 2)
    assert g.shape == (1, 2) and np.all(g == NO_ID) and np.all(i == NO_ID)


def test_ip_distance_is_one_minus_dot_and_self_is_nearest():
    index, ids, x = make(300, 24, "ip")
    got_ids, got_d = index.search(x[:20], 1)
    np.testing.assert_array_equal(got_ids[:, 0], ids[:20])
    np.testing.assert_allclose(got_d[:, 0], 0.0, atol=1e-6)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_filters_ids_groups(metric):
    n = 3000
    rng = np.random.default_rng(11)
    groups = rng.integers(0, 40, n).astype(np.uint64)
    index, ids, x = make(n, 33, metric, seed=3, groups=groups)
    q = rng.standard_normal((5, 33)).astype(np.float32)

    some_ids = rng.choice(ids, 50, replace=False)
    check_topk(index, ids, x, q, 10, metric, mask=np.isin(ids, some_ids), filter=Filter(ids=some_ids))
    check_topk(index, ids, x, q, 10, metric, mask=np.isin(groups, [3, 7]), filter=Filter(groups={3, 7}))
    many_ids = rng.choice(ids, 1500, replace=False)
    both = np.isin(groups, list(range(20))) & np.isin(ids, many_ids)
    check_topk(
        index,
        ids,
        x,
        q,
        10,
        metric,
        mask=both,
        filter=Filter(groups=np.arange(20), ids=many_ids.astype(np.int64)),
    )
    # a filter that keeps everything takes the unfiltered path and agrees with it
    everything = Filter(groups=range(40))
    np.testing.assert_array_equal(index.search(q, 10, filter=everything)[0], index.search(q, 10)[0])


def test_filter_with_fewer_matches_than_k_and_empty_filter():
    index, ids, x = make(100, 8)
    got_ids, got_d = index.search(x[:1], 5, filter=Filter(ids=[ids[3], ids[9], 123456789]))
    assert set(got_ids[0, :2].tolist()) == {int(ids[3]), int(ids[9])}
    assert np.all(got_ids[0, 2:] == NO_ID) and np.all(np.isinf(got_d[0, 2:]))
    got_ids, _ = index.search(x[:1], 5, filter=Filter(ids=[]))
    assert np.all(got_ids == NO_ID)


def test_filter_api():
    f = Filter(ids=[1, 2], groups=[7])
    assert f.allows(1, 7) and not f.allows(3, 7) and not f.allows(1, 6)
    assert Filter().allows(5, 5)
    assert repr(f) == "Filter(ids=<2 values>, groups=<1 values>)" and repr(Filter()) == "Filter(ids=None, groups=None)"
    with pytest.raises(ValueError, match="non-negative"):
        Filter(ids=[-1])
    with pytest.raises(TypeError, match="integers"):
        Filter(groups=[1.5])
    with pytest.raises(ValueError, match="2\\*\\*64"):
        Filter(groups=[2**64])
    with pytest.raises(TypeError):  # the per-vector tags are gone (never used)
        Filter(tags=[1])


# Values a filter's hash set must tell apart: the ends of uint64 (2**64-1 is the one value its table
# cannot store in place), runs of consecutive values (one video's frame ids) and repeats.
filter_values = st.lists(
    st.one_of(
        st.integers(0, 2**64 - 1),
        st.sampled_from([0, 1, 2**63, 2**64 - 2, 2**64 - 1]),
        st.integers(0, 300),
    ),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(ids=filter_values, groups=filter_values, probes=filter_values)
def test_filter_membership_matches_python_sets(ids, groups, probes):
    f = Filter(ids=np.array(ids, np.uint64), groups=np.array(groups, np.uint64))
    id_set, group_set = set(ids), set(groups)
    assert repr(f) == f"Filter(ids=<{len(id_set)} values>, groups=<{len(group_set)} values>)"
    for v in probes + ids[:50] + groups[:50]:
        assert f.allows(v, groups[0] if groups else 0) == (v in id_set and bool(groups))
        assert f.allows(ids[0] if ids else 0, v) == (bool(ids) and v in group_set)


def test_remove_swap_with_last_and_readd():
    index, ids, x = make(2000, 16, "l2", seed=4)
    rng = np.random.default_rng(9)
    gone = rng.choice(len(ids), 700, replace=False)
    assert index.remove(np.concatenate([ids[gone], ids[gone[:10]], np.array([424242], np.uint64)])) == 700
    keep = np.setdiff1d(np.arange(len(ids)), gone)
    assert len(index) == len(keep)
    assert all(int(i) not in index for i in ids[gone[:50]])
    assert all(int(i) in index for i in ids[keep[:50]])
    q = rng.standard_normal((6, 16)).astype(np.float32)
    check_topk(index, ids[keep], x[keep], q, 15, "l2")
    # re-add some removed ids with new vectors: the new vectors are found, the old are not
    back = gone[:100]
    newx = rng.standard_normal((100, 16)).astype(np.float32)
    index.add(ids[back], newx)
    allx = np.concatenate([x[keep], newx])
    allids = np.concatenate([ids[keep], ids[back]])
    check_topk(index, allids, allx, q, 15, "l2")
    assert index.remove(allids) == len(allids) and len(index) == 0
    assert np.all(index.search(q, 3)[0] == NO_ID)


def ref_groups(metric, q, x, ids, groups, k):
    full = ref_dist(metric, q, x)
    out = []
    for r in range(len(q)):
        best = {}
        for j in np.argsort(full[r], kind="stable"):
            best.setdefault(int(groups[j]), (full[r, j], int(ids[j])))
        out.append(sorted(best.items(), key=lambda kv: (kv[1][0], kv[0]))[:k])
    return out


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("threads", [1, 2])
def test_search_groups_vs_numpy(metric, threads):
    n = 9000
    rng = np.random.default_rng(21)
    groups = np.repeat(np.arange(n // 30, dtype=np.uint64), 30)  # 300 "videos" of 30 frames
    index, ids, x = make(n, 20, metric, seed=8, groups=groups)
    q = rng.standard_normal((4, 20)).astype(np.float32)
    g, i, d = index.search_groups(q, 12, threads=threads)
    want = ref_groups(metric, q, x, ids, groups, 12)
    for r in range(len(q)):
        assert len(set(g[r].tolist())) == 12  # distinct groups
        assert g[r].tolist() == [kv[0] for kv in want[r]]
        assert i[r].tolist() == [kv[1][1] for kv in want[r]]
        np.testing.assert_allclose(d[r], [kv[1][0] for kv in want[r]], rtol=1e-4, atol=1e-4)
    # with a filter, and k larger than the number of allowed groups
    f = Filter(groups=[5, 6, 7])
    g, i, d = index.search_groups(q, 5, filter=f)
    assert sorted(g[0, :3].tolist()) == [5, 6, 7]
    assert np.all(g[:, 3:] == NO_ID) and np.all(i[:, 3:] == NO_ID) and np.all(np.isinf(d[:, 3:]))


def test_groups_default_to_the_ids():
    index = FlatIndex(3, "l2")
    x = np.eye(3, dtype=np.float32)
    index.add(np.array([10, 20, 30], dtype=np.uint64), x)
    g, i, _ = index.search_groups(x[:1], 3)
    assert g[0].tolist() == [10, 20, 30] == i[0].tolist()  # group defaults to the id
    assert index.search(x[:1], 3, filter=Filter(groups=[20]))[0][0, 0] == 20


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 300),
    dim=st.integers(1, 70),
    nq=st.integers(1, 9),
    k=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    metric=st.sampled_from(["ip", "l2"]),
)
def test_random_shapes_exact(n, dim, nq, k, seed, metric):
    index, ids, x = make(n, dim, metric, seed=seed, normalise=False)
    q = np.random.default_rng(seed + 1).standard_normal((nq, dim)).astype(np.float32)
    check_topk(index, ids, x, q, k, metric)


def test_concurrent_searches_and_writes():
    index, ids, x = make(4000, 24, "l2", seed=12)
    q = x[:16].copy()
    expected = index.search(q, 5)
    errors = []

    def searcher():
        try:
            for _ in range(30):
                got = index.search(q, 5, threads=2)
                # the 4000 original rows are never removed, so their self-matches always win
                assert np.array_equal(got[0][:, 0], expected[0][:, 0])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def writer():
        try:
            rng = np.random.default_rng(1)
            for r in range(30):
                new = (rng.standard_normal((50, 24)) * 10 + 100).astype(np.float32)
                new_ids = np.arange(50, dtype=np.uint64) + 10**13 + r * 100
                index.add(new_ids, new)
                assert index.remove(new_ids) == 50
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(index) == 4000


# --------------------------------------------------------------------------- argument checking


def test_add_rejects_bad_input_and_stays_unchanged():
    index, ids, x = make(10, 6)
    good = np.ones((2, 6), np.float32)
    with pytest.raises(TypeError, match="float32"):
        index.add([1, 2], good.astype(np.float64))
    with pytest.raises(TypeError, match="ndarray"):
        index.add([1, 2], good.tolist())
    with pytest.raises(ValueError, match="dimension 5"):
        index.add([1, 2], np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        index.add([1], np.ones(6, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        index.add([1, 2], np.ones((6, 2), np.float32).T)
    with pytest.raises(ValueError, match="length"):
        index.add([1, 2, 3], good)
    with pytest.raises(ValueError, match="NaN"):
        index.add([1, 2], np.array([[0] * 6, [0, 0, np.nan, 0, 0, 0]], np.float32))
    with pytest.raises(ValueError, match="NaN or infinity"):
        index.add([1, 2], np.full((2, 6), np.inf, np.float32))
    with pytest.raises(ValueError, match="already in the index"):
        index.add([1, ids[0]], good)
    with pytest.raises(ValueError, match="duplicate id 7"):
        index.add([7, 7], good)
    with pytest.raises(ValueError, match="reserved"):
        index.add([1, NO_ID], good)
    with pytest.raises(ValueError, match="non-negative"):
        index.add(np.array([-1, 2]), good)
    with pytest.raises(TypeError, match="integers"):
        index.add(np.array([1.0, 2.0]), good)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        index.add([1, 2], good, groups=[0, 2**64])
    assert len(index) == 10 and 1 not in index and 7 not in index
    index.add(np.array([1, 2], dtype=np.int64), good, groups=np.array([5, 5], np.uint8))
    assert len(index) == 12 and 1 in index


def test_search_rejects_bad_input():
    index, ids, x = make(10, 6)
    with pytest.raises(TypeError, match="float32"):
        index.search(x.astype(np.float64), 2)
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((1, 7), np.float32), 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        index.search(np.ones((12, 2), np.float32)[::2, :].reshape(6, 2).T, 2)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 6), np.nan, np.float32), 2)
    with pytest.raises(ValueError, match="k must be"):
        index.search(x[:1], 0)
    with pytest.raises(ValueError, match="threads"):
        index.search(x[:1], 1, threads=-1)
    with pytest.raises(TypeError, match="Filter"):
        index.search(x[:1], 1, filter={"ids": [1]})
    with pytest.raises(ValueError, match="3-D"):
        index.search(np.ones((1, 1, 6), np.float32), 1)
    with pytest.raises(ValueError, match="metric"):
        FlatIndex(4, "cosine")
    with pytest.raises(ValueError, match="dim"):
        FlatIndex(0)
    # a 1-D query is one row; big-endian float32 is not native float32
    assert index.search(x[0], 2)[0].shape == (1, 2)
    with pytest.raises(TypeError, match="float32"):
        index.search(x[:1].astype(">f4"), 1)


def test_contains_accepts_any_integer_like():
    index, ids, _ = make(3, 4)
    assert int(ids[0]) in index and ids[0] in index
    assert -5 not in index and 2**70 not in index and "x" not in index and 1.5 not in index
    assert repr(index) == "FlatIndex(dim=4, metric='ip', storage='float32', size=3)"


# --------------------------------------------------------------------------- fp16 storage


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("nq", [1, 64])
def test_float16_storage_exact_on_rounded_vectors(metric, nq):
    rng = np.random.default_rng(31)
    n, dim = 12000, 96
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.uint64) * 7
    groups = (np.arange(n) % 3).astype(np.uint64)
    index = FlatIndex(dim, metric, storage="float16")
    assert index.storage == "float16"
    index.add(ids, x, groups=groups)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    stored = x.astype(np.float16).astype(np.float32)  # what the index really holds
    check_topk(index, ids, stored, q, 10, metric, threads=2)
    check_topk(index, ids, stored, q, 10, metric, mask=groups == 1, filter=Filter(groups=[1]))
    gone = np.arange(0, n, 2)
    assert index.remove(ids[gone]) == len(gone)
    keep = np.arange(1, n, 2)
    check_topk(index, ids[keep], stored[keep], q, 10, metric)


def test_float16_storage_range_and_names():
    index = FlatIndex(2, "l2", storage="float16")
    with pytest.raises(ValueError, match="float16 range"):
        index.add([1], np.array([[70000.0, 0.0]], np.float32))
    assert len(index) == 0
    index.add([1], np.array([[65504.0, -65504.0]], np.float32))
    assert index.search(np.zeros(2, np.float32), 1)[1][0, 0] == pytest.approx(2 * 65504.0**2)
    with pytest.raises(ValueError, match="storage"):
        FlatIndex(2, storage="int8")
    assert FlatIndex(2).storage == "float32"


def test_empty_batches():
    index = FlatIndex(4)
    index.add([], np.zeros((0, 4), np.float32))
    assert len(index) == 0 and index.remove([]) == 0
    index.add([1], np.ones((1, 4), np.float32))
    ids, dist = index.search(np.zeros((0, 4), np.float32), 3)
    assert ids.shape == dist.shape == (0, 3)
    assert index.search_groups(np.zeros((0, 4), np.float32), 2)[0].shape == (0, 2)


def test_a_drained_index_gives_memory_back_and_keeps_the_rest_intact():
    """remove() releases the row storage of an index that drained to a quarter of its peak (the
    fresh segment after a bulk insert); what is left is read and searched as before."""
    n, dim = 40_000, 512  # 80 MB of float32 rows: past the 64 MB below which nothing is released
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    idx = FlatIndex(dim, "l2")
    idx.add(np.arange(n, dtype=np.uint64), x)
    idx.remove(np.arange(n - 5_000, dtype=np.uint64))
    left = np.arange(n - 5_000, n, dtype=np.uint64)
    assert len(idx) == 5_000
    np.testing.assert_array_equal(idx.get_vectors(left[::7]), x[left[::7].astype(np.int64)])
    ids, dist = idx.search(x[-3:], 1)
    assert ids[:, 0].tolist() == left[-3:].tolist() and np.allclose(dist[:, 0], 0)


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_rows_survive_every_growth_and_shrink(storage):
    """The row storage grows by remapping its pages (no copy) past the 4 MiB huge-page threshold
    and shrinks back: every stored row reads back and is found after each step."""
    dim, batch = 256, 700
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (60 * batch, dim)).astype(np.float32)
    if storage == "float16":
        x = x.astype(np.float16).astype(np.float32)  # exactly representable: rows read back equal
    idx = FlatIndex(dim, "l2", storage=storage)
    for b in range(60):
        idx.add(np.arange(b * batch, (b + 1) * batch, dtype=np.uint64), x[b * batch : (b + 1) * batch])
        if b % 7 == 6:
            stored = np.arange((b + 1) * batch, dtype=np.uint64)
            np.testing.assert_array_equal(idx.get_vectors(stored[::5]), x[::5][: len(stored[::5])])
    idx.remove(np.arange(55 * batch, dtype=np.uint64))
    left = np.arange(55 * batch, 60 * batch, dtype=np.uint64)
    np.testing.assert_array_equal(idx.get_vectors(left), x[55 * batch :])
    idx.add(np.arange(60 * batch, 61 * batch, dtype=np.uint64), x[:batch])
    np.testing.assert_array_equal(idx.get_vectors(np.arange(60 * batch, 61 * batch, dtype=np.uint64)), x[:batch])
    ids, _ = idx.search(x[-2:], 1)
    assert ids[:, 0].tolist() == [60 * batch - 2, 60 * batch - 1]
