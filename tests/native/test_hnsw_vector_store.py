"""HnswIndex's float32 originals apart from the graph (issue 22, compact memory): the graph holds
int8 codes, the originals sit in a slot-indexed store (anonymous memory, or an unlinked memory-
mapped file once store_vectors_in() names a directory) and snapshots carry them themselves."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from frameseek import _native as N

DIM = 48


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _built(n: int = 2000, seed: int = 0) -> tuple[N.HnswIndex, np.ndarray]:
    x = _vectors(n, seed)
    index = N.HnswIndex(DIM, "l2", max_elements=64, M=8, ef_construction=64)
    index.add(np.arange(n, dtype=np.uint64), x, groups=np.arange(n, dtype=np.uint64) // 10, threads=1)
    return index, x


def _exact_top(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return ids[np.argsort(d, axis=1, kind="stable")[:, :k]]


def test_the_originals_go_to_an_unlinked_mapped_file_and_answers_do_not_change(tmp_path):
    index, x = _built()
    q = _vectors(30, 9)
    want = index.search(q, 10, ef=128)
    assert not index.vectors_file_backed
    index.store_vectors_in(str(tmp_path))
    assert index.vectors_file_backed
    assert os.listdir(tmp_path) == []  # scratch: unlinked at once, nothing a crash could leave behind
    got = index.search(q, 10, ef=128)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])  # exact float32 distances, re-ranked from the file
    np.testing.assert_array_equal(index.get_vectors(np.arange(0, 2000, 7, dtype=np.uint64)), x[::7])
    # later adds grow the file; their originals are exact too
    more = _vectors(3000, 5)
    index.add(np.arange(2000, 5000, dtype=np.uint64), more)
    np.testing.assert_array_equal(index.get_vectors(np.arange(2000, 5000, dtype=np.uint64)), more)


def test_a_directory_that_cannot_hold_the_file_is_an_error(tmp_path):
    index, _ = _built(100)
    with pytest.raises(RuntimeError, match="vector file"):
        index.store_vectors_in(str(tmp_path / "missing"))
    assert not index.vectors_file_backed and len(index) == 100  # still serving from memory


@pytest.mark.parametrize("file_backed", [False, True])
def test_get_vectors_is_exact_after_save_load_and_after_remove_and_slot_reuse(tmp_path, file_backed):
    index, x = _built()
    if file_backed:
        index.store_vectors_in(str(tmp_path))
    path = str(tmp_path / "a.fsh")
    index.save(path)
    # the removed slots are reused by the next add: the snapshot must not see the new vectors
    gone = np.arange(0, 2000, 3, dtype=np.uint64)
    assert index.remove(gone) == len(gone)
    newer = _vectors(len(gone), 11)
    new_ids = np.arange(10_000, 10_000 + len(gone), dtype=np.uint64)
    index.add(new_ids, newer)
    assert index.deleted_slots == 0 and index.capacity < 2000 + len(gone)  # reused, not grown past
    np.testing.assert_array_equal(index.get_vectors(new_ids), newer)
    kept = np.setdiff1d(np.arange(2000, dtype=np.uint64), gone)
    np.testing.assert_array_equal(index.get_vectors(kept), x[kept])

    # file-backed: the originals read straight into the mapped file
    again = N.HnswIndex.load(path, vectors_dir=str(tmp_path) if file_backed else None)
    assert again.vectors_file_backed == file_backed
    assert len(again) == 2000 and again.walk_precision == "int8"
    np.testing.assert_array_equal(again.get_vectors(np.arange(2000, dtype=np.uint64)), x)
    q = _vectors(20, 3)
    ids, dist = again.search(q, 5, ef=200)
    want = _exact_top(x, np.arange(2000, dtype=np.uint64), q, 5)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids.tolist(), want.tolist())]) >= 0.97
    np.testing.assert_allclose(dist, ((q[:, None, :] - x[ids.astype(np.int64)]) ** 2).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_changing_the_walk_precision_keeps_the_originals_exact(precision):
    index, x = _built(500)
    index.walk_precision = precision
    np.testing.assert_array_equal(index.get_vectors(np.arange(500, dtype=np.uint64)), x)
    index.walk_precision = "int8"
    np.testing.assert_array_equal(index.get_vectors(np.arange(500, dtype=np.uint64)), x)


def test_a_crash_in_the_middle_of_a_save_leaves_the_previous_snapshot_loadable(tmp_path):
    """The child saves a small index, then dies mid-write of a larger one (RLIMIT_FSIZE: SIGXFSZ
    kills it inside write(2)). The previous snapshot must still load, whole and unchanged."""
    path = tmp_path / "s.fsh"
    script = textwrap.dedent(f"""
        import resource, signal, numpy as np
        from frameseek import _native as N
        rng = np.random.default_rng(0)
        index = N.HnswIndex({DIM}, "l2", M=8, ef_construction=32)
        index.add(np.arange(300, dtype=np.uint64), rng.standard_normal((300, {DIM})).astype(np.float32))
        index.save({str(path)!r})
        size = __import__("os").path.getsize({str(path)!r})
        index.add(np.arange(300, 3300, dtype=np.uint64), rng.standard_normal((3000, {DIM})).astype(np.float32))
        resource.setrlimit(resource.RLIMIT_FSIZE, (size * 2, size * 2))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; a real crash does not
        index.save({str(path)!r})
        print("saved")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode < 0 and "saved" not in run.stdout, (run.returncode, run.stderr[-2000:])
    loaded = N.HnswIndex.load(str(path))
    want = np.random.default_rng(0).standard_normal((300, DIM)).astype(np.float32)
    assert len(loaded) == 300
    np.testing.assert_array_equal(loaded.get_vectors(np.arange(300, dtype=np.uint64)), want)
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the half-written part, never renamed


def test_searches_during_adds_report_exact_distances_of_the_ids_they_return(tmp_path):
    """The store's row of a slot is written after hnswlib links it (add() learns the slot only
    then), so a walk may reach a node whose original is not there yet; such a node must not be
    returned with a distance computed from a stale or empty row (a reused slot: another vector's)."""
    rng = np.random.default_rng(4)
    n, batch = 7000, 300
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    index = N.HnswIndex(DIM, "l2", max_elements=64, M=8, ef_construction=32)
    index.store_vectors_in(str(tmp_path))
    first = np.arange(1000, dtype=np.uint64)
    index.add(first, x[:1000])
    index.remove(first[::2])  # slots to reuse: a stale row would be another vector's
    q = rng.standard_normal((8, DIM)).astype(np.float32)
    bad: list[tuple[int, float, float]] = []
    done = threading.Event()

    def search():
        while not done.is_set():
            ids, dist = index.search(q, 10, ef=40, threads=1)
            for row_ids, row_d, qq in zip(ids, dist, q):
                for i, d in zip(row_ids.tolist(), row_d.tolist()):
                    if i == N.NO_ID:
                        continue
                    want = float(((x[i] - qq) ** 2).sum())
                    if abs(want - d) > 1e-3 * max(1.0, want):
                        bad.append((i, d, want))

    t = threading.Thread(target=search)
    t.start()
    try:
        for s in range(1000, n, batch):
            index.add(np.arange(s, s + batch, dtype=np.uint64), x[s : s + batch], threads=2)
    finally:
        done.set()
        t.join()
    assert not bad, bad[:5]
