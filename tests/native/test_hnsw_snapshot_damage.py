"""HnswIndex.load on snapshots damaged *before* they were checksummed (or written by something
else): the CRC passes, so the loader's own checks of hnswlib's graph section must refuse them with
ValueError instead of crashing, overflowing or allocating without bound. The regress-* inputs are
the ones the fuzz target native/fuzz/fuzz_hnsw_load.cpp found (see native/fuzz/README.md)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from frameseek import _native as N
from tests.native.snapshot_formats import as_format_4, as_old_format, reseal

CORPUS = Path(__file__).resolve().parents[2] / "native" / "fuzz" / "corpus" / "fuzz_hnsw_load"
CAPACITY_AT = 56  # FileHeader::capacity in hnsw_index.cpp's format
GRAPH_AT = 80  # the graph section follows the 80-byte snapshot header
HNSWLIB_HEADER = 96


def saved(tmp_path: Path, n: int = 20) -> bytearray:
    index = N.HnswIndex(4, "l2", max_elements=32, M=4, ef_construction=16, seed=1)
    index.add(np.arange(n, dtype=np.uint64), np.random.default_rng(1).standard_normal((n, 4)).astype(np.float32))
    path = tmp_path / "good.fsh"
    index.save(str(path))
    return bytearray(path.read_bytes())


def load(tmp_path: Path, data: bytes):
    path = tmp_path / "damaged.fsh"
    path.write_bytes(data)
    return N.HnswIndex.load(str(path))


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("regress-*")))
def test_fuzzer_regressions_are_refused(tmp_path, name):
    raw = (CORPUS / name).read_bytes()
    flags, data = raw[0], bytearray(raw[1:])
    if flags & 1:
        data = bytearray(reseal(data))
    with pytest.raises(ValueError, match="HnswIndex.load"):
        load(tmp_path, bytes(data))


def test_a_neighbour_outside_the_graph_is_refused(tmp_path):
    data = saved(tmp_path)
    first_list = GRAPH_AT + HNSWLIB_HEADER  # element 0's level-0 record: u32 count, then neighbour ids
    assert struct.unpack_from("<H", data, first_list)[0] > 0
    struct.pack_into("<I", data, first_list + 4, 1_000_000)
    with pytest.raises(ValueError, match="bad level-0 link list"):
        load(tmp_path, reseal(data))


def test_a_capacity_beyond_this_machines_memory_is_refused(tmp_path):
    # memory / 50 slots: hnswlib's 44-byte records alone would fit (malloc succeeds), but its
    # per-slot locks, levels and pointers then touch more than the machine has (an OOM kill)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    data = saved(tmp_path)
    struct.pack_into("<Q", data, CAPACITY_AT, memory // 50)
    with pytest.raises(ValueError, match="needs more memory than this machine has"):
        load(tmp_path, reseal(data))


def test_an_undamaged_resealed_snapshot_still_loads(tmp_path):
    data = saved(tmp_path)
    index = load(tmp_path, reseal(data))
    assert len(index) == 20 and index.capacity == 32


def _walk_section_at(data: bytearray) -> int:
    """The walk section: after the header, the graph and the n_live x 16-byte id table."""
    n_live, graph_bytes = struct.unpack_from("<QQ", data, 64)
    return GRAPH_AT + graph_bytes + 16 * n_live


def _damage(data: bytearray, damage: str, stride: int, row: int) -> None:
    walk = _walk_section_at(data)
    if damage == "precision":
        struct.pack_into("<I", data, walk, 7)
    elif damage == "stride":
        struct.pack_into("<Q", data, walk + 8, stride // 2)
    elif damage == "short_section":
        del data[-4 - row : -4]  # one slot's row of the section missing
    elif damage == "link_size":
        used = struct.unpack_from("<Q", data, GRAPH_AT + 16)[0]
        record = struct.unpack_from("<Q", data, GRAPH_AT + 24)[0]
        struct.pack_into("<I", data, GRAPH_AT + HNSWLIB_HEADER + used * record, 3)  # element 0's lists: 3 bytes


DAMAGES = [
    ("precision", "walk copy section holds impossible values"),
    ("stride", "walk copy section does not match the header"),
    ("short_section", "does not match its header"),
    ("link_size", "link lists are truncated or corrupted"),
]


@pytest.mark.parametrize("damage,why", DAMAGES)
def test_a_damaged_format_4_section_is_refused(tmp_path, damage, why):
    saved(tmp_path)
    as_format_4(tmp_path / "good.fsh")
    data = bytearray((tmp_path / "good.fsh").read_bytes())
    assert struct.unpack_from("<I", data, 8)[0] == 4
    # int8 codes in the graph: 4 + 8 bytes a slot; then the float32 originals, 16 bytes a slot
    assert struct.unpack_from("<IIQ", data, _walk_section_at(data)) == (2, 0, 12)
    _damage(data, damage, stride=12, row=16)
    with pytest.raises(ValueError, match=why):
        load(tmp_path, reseal(data))


@pytest.mark.parametrize("damage,why", DAMAGES)
def test_a_damaged_format_3_section_is_refused(tmp_path, damage, why):
    saved(tmp_path)
    as_old_format(tmp_path / "good.fsh", 3)
    data = bytearray((tmp_path / "good.fsh").read_bytes())
    assert struct.unpack_from("<I", data, 8)[0] == 3
    assert struct.unpack_from("<IIQ", data, _walk_section_at(data)) == (2, 0, 64)  # round_up(4 + 8, 64) a slot
    _damage(data, damage, stride=64, row=64)
    with pytest.raises(ValueError, match=why):
        load(tmp_path, reseal(data))
