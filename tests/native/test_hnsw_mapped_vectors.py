"""Snapshots are mapped, not read (issue 22): HnswIndex.load reads and checks the graph, its codes
and the ids, but maps the float32 originals from the snapshot file (format 5 aligns them for it),
so a restart costs no read of them; re-ranks and get_vectors fault in the rows they touch. Their
CRC is checked later (check_mapped_vectors), and nothing written to the index reaches the file."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from frameseek import _native as N
from tests.native.snapshot_formats import as_format_4, v5_layout

DIM = 48


def _vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _saved(path: Path, n: int = 3000, dim: int = DIM) -> np.ndarray:
    x = _vectors(n, 0, dim)
    index = N.HnswIndex(dim, "l2", max_elements=n + 100, M=8, ef_construction=32)
    index.add(np.arange(n, dtype=np.uint64), x)
    index.save(str(path))
    return x


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_maps_the_originals_instead_of_reading_them(tmp_path):
    """A fresh process loads a snapshot whose originals are 40 MB: its resident memory (anonymous,
    file and shared) grows by the graph and the ids, not by the originals."""
    n, dim = 20_000, 512
    path = tmp_path / "big.fsh"
    _saved(path, n, dim)
    float_bytes = n * dim * 4
    script = textwrap.dedent(f"""
        import numpy as np
        from frameseek import _native as N
        def resident():
            fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
            return sum(int(fields[k].split()[0]) for k in ("RssAnon", "RssFile", "RssShmem")) * 1024
        before = resident()
        index = N.HnswIndex.load({str(path)!r}, vectors_dir={str(tmp_path)!r})
        after = resident()
        rows = index.get_vectors(np.arange(0, {n}, 1000, dtype=np.uint64))
        print(after - before, index.mapped_vector_bytes, float(rows.sum()))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grew, mapped, total = run.stdout.split()
    assert int(mapped) >= float_bytes - 4096  # whole pages mapped; the partial last one read
    # measured: 16.5 MB (the graph's codes and links, the ids); 55.8 MB when the originals are read
    assert int(grew) < float_bytes * 3 // 4, (int(grew), float_bytes)
    want = _vectors(n, 0, dim)[::1000].sum(dtype=np.float64)
    assert abs(float(total) - want) < 1e-2 * max(1.0, abs(want))


@pytest.mark.parametrize("file_backed", [False, True])
def test_mapped_rows_are_exact_after_load_reuse_and_growth_and_the_file_never_changes(tmp_path, file_backed):
    path = tmp_path / "a.fsh"
    x = _saved(path)
    digest = _sha(path)
    index = N.HnswIndex.load(str(path), vectors_dir=str(tmp_path) if file_backed else None)
    assert index.mapped_vector_bytes > 0 and index.vectors_file_backed == file_backed
    all_ids = np.arange(3000, dtype=np.uint64)
    np.testing.assert_array_equal(index.get_vectors(all_ids), x)
    q = _vectors(10, 7)
    ids, dist = index.search(q, 5, ef=64)
    np.testing.assert_allclose(dist, ((q[:, None, :] - x[ids.astype(np.int64)]) ** 2).sum(-1), rtol=1e-5)

    # removed slots reused: their rows are written in memory (copy-on-write), never into the file
    gone = all_ids[::3]
    index.remove(gone)
    newer = _vectors(len(gone), 11)
    new_ids = np.arange(10_000, 10_000 + len(gone), dtype=np.uint64)
    index.add(new_ids, newer)
    assert index.deleted_slots == 0 and index.mapped_vector_bytes > 0
    kept = np.setdiff1d(all_ids, gone)
    np.testing.assert_array_equal(index.get_vectors(new_ids), newer)
    np.testing.assert_array_equal(index.get_vectors(kept), x[kept.astype(np.int64)])
    assert _sha(path) == digest

    # a newer snapshot renamed over the path, then the file deleted: the mapping keeps the old one
    index.save(str(path))
    path.unlink()
    np.testing.assert_array_equal(index.get_vectors(kept), x[kept.astype(np.int64)])
    assert index.check_mapped_vectors() == ""  # the file as it was mapped, not the rows as written since

    # growing past the capacity copies the mapped rows into the store's own memory
    more = _vectors(2000, 12)
    index.add(np.arange(20_000, 22_000, dtype=np.uint64), more)
    assert index.mapped_vector_bytes == 0
    np.testing.assert_array_equal(index.get_vectors(kept), x[kept.astype(np.int64)])
    np.testing.assert_array_equal(index.get_vectors(new_ids), newer)
    np.testing.assert_array_equal(index.get_vectors(np.arange(20_000, 22_000, dtype=np.uint64)), more)


def test_a_damaged_float_section_loads_and_the_later_check_reports_it(tmp_path):
    path = tmp_path / "a.fsh"
    x = _saved(path)
    data = bytearray(path.read_bytes())
    at = v5_layout(data)["vectors_at"]
    assert at % 4096 == 0
    assert N.HnswIndex.load(str(path)).check_mapped_vectors() == ""
    struct.pack_into("<f", data, at + 4 * (5 * DIM + 3), 1e6)  # slot 5's element 3
    path.write_bytes(bytes(data))
    index = N.HnswIndex.load(str(path))  # the graph, codes and ids are intact: it serves
    assert len(index) == 3000
    assert "checksum" in index.check_mapped_vectors()
    got = index.get_vectors(np.arange(3000, dtype=np.uint64))  # what the damage means: one wrong value
    wrong = np.argwhere(got != x)
    assert len(wrong) == 1 and wrong[0][1] == 3 and got[tuple(wrong[0])] == 1e6


def test_a_damaged_byte_outside_the_float_section_is_still_refused_at_load(tmp_path):
    path = tmp_path / "a.fsh"
    _saved(path)
    data = bytearray(path.read_bytes())
    data[-8] ^= 1  # the originals' CRC itself is covered by the trailing one
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        N.HnswIndex.load(str(path))


def test_originals_shorter_than_a_page_are_read_and_checked_at_load(tmp_path):
    path = tmp_path / "small.fsh"
    _saved(path, n=10)
    data = bytearray(path.read_bytes())
    v = v5_layout(data)
    assert v["vector_bytes"] < 4096 and N.HnswIndex.load(str(path)).mapped_vector_bytes == 0
    data[v["vectors_at"] + 1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="float32 vectors"):
        N.HnswIndex.load(str(path))


def test_a_format_4_snapshot_is_read_as_before(tmp_path):
    path = tmp_path / "a.fsh"
    x = _saved(path)
    as_format_4(path)
    index = N.HnswIndex.load(str(path))
    assert index.mapped_vector_bytes == 0 and index.check_mapped_vectors() == ""
    np.testing.assert_array_equal(index.get_vectors(np.arange(3000, dtype=np.uint64)), x)


def test_moving_the_originals_to_a_file_copies_the_rows_in_use_not_the_capacity(tmp_path):
    """store_vectors_in on an index reserved for 200k 512-d vectors (400 MB) holding 2,000: the
    process's resident memory grows by those rows, not by the capacity, and every row reads back."""
    capacity, n, dim = 200_000, 2_000, 512
    script = textwrap.dedent(f"""
        import numpy as np
        from frameseek import _native as N
        def resident():
            fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
            return sum(int(fields[k].split()[0]) for k in ("RssAnon", "RssFile", "RssShmem")) * 1024
        x = np.random.default_rng(0).standard_normal(({n}, {dim})).astype(np.float32)
        index = N.HnswIndex({dim}, "ip", max_elements={capacity}, M=8, ef_construction=32)
        index.add(np.arange({n}, dtype=np.uint64), x)
        before = resident()
        index.store_vectors_in({str(tmp_path)!r})
        after = resident()
        same = bool(np.array_equal(index.get_vectors(np.arange({n}, dtype=np.uint64)), x))
        print(after - before, index.vectors_file_backed, same)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grew, backed, same = run.stdout.split()
    assert backed == "True" and same == "True"
    assert int(grew) < capacity * dim * 4 // 10, int(grew)  # the rows in use: 4 MB; the capacity: 400 MB
