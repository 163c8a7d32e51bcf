"""Older HnswIndex snapshot formats, rewritten from a format 5 file (as save writes it), so that the loader's backward
compatibility is tested against the layouts earlier servers wrote (see hnsw_snapshot.cpp):

  8-byte magic | u32 version, dim, metric, reserved | u64 M, ef_construction, ef, seed, capacity,
  n_live, graph_bytes | graph (hnswlib's saveIndex layout) | n_live x (u64 id, u64 group[, u32 tag:
  version 1]) | [version 3: u32 precision, u32 reserved, u64 stride, the walk copy] | u32 CRC-32 of
  everything after the magic.

Formats 1-3 hold float32 element data in the graph; format 4 holds the walk codes there and the
float32 originals after the rows; format 5 aligns those to a page in the file (when they fill at
least that much) and gives them a trailer of their own (offset, bytes, CRC), which the trailing CRC
covers and the originals it leaves out."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

HEADER = 80  # the snapshot header; the graph section follows
HNSWLIB_HEADER = 96


def v5_layout(data: bytes) -> dict:
    """Where a format 5 file's float32 originals lie, as its trailer says: [vectors_at,
    vectors_at + vector_bytes); then u64 vectors_at, u64 vector_bytes, u32 CRC of the originals,
    u32 CRC of everything after the magic but them."""
    assert struct.unpack_from("<I", data, 8)[0] == 5
    n_live, graph_bytes = struct.unpack_from("<QQ", data, 64)
    vectors_at, vector_bytes = struct.unpack_from("<QQ", data, len(data) - 24)
    return {"walk_at": HEADER + graph_bytes + 16 * n_live, "vectors_at": vectors_at, "vector_bytes": vector_bytes}


def reseal(data: bytearray) -> bytes:
    """Correct CRC-32 trailers, as HnswIndex::save writes them: over everything after the magic
    (format 5: the originals' own CRC, then one over everything after the magic but them)."""
    if struct.unpack_from("<I", data, 8)[0] < 5:
        data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[8:-4])))
        return bytes(data)
    v = v5_layout(data)
    start, end = v["vectors_at"], v["vectors_at"] + v["vector_bytes"]
    data[-8:-4] = struct.pack("<I", zlib.crc32(bytes(data[start:end])))
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[8:start]) + bytes(data[end:-4])))
    return bytes(data)


def as_format_4(path: Path) -> None:
    """Rewrite the format 5 snapshot at `path` in format 4 (no padding, one CRC over all)."""
    data = path.read_bytes()
    v = v5_layout(data)
    body = (
        struct.pack("<I", 4)
        + data[12 : v["walk_at"] + 16]
        + data[v["vectors_at"] : v["vectors_at"] + v["vector_bytes"]]
    )
    path.write_bytes(data[:8] + body + struct.pack("<I", zlib.crc32(body)))


def v4_sections(data: bytes) -> dict:
    assert struct.unpack_from("<I", data, 8)[0] == 4
    dim = struct.unpack_from("<I", data, 12)[0]
    n_live, graph_bytes = struct.unpack_from("<QQ", data, 64)
    walk_at = HEADER + graph_bytes + 16 * n_live
    precision, _, stride = struct.unpack_from("<IIQ", data, walk_at)
    return {
        "dim": dim,
        "n_live": n_live,
        "graph_bytes": graph_bytes,
        "walk_at": walk_at,
        "precision": precision,
        "stride": stride,
    }


def as_old_format(path: Path, version: int) -> None:
    """Rewrite the int8-walk format 5 (or 4) snapshot at `path` in format `version` (1 to 4)."""
    if struct.unpack_from("<I", path.read_bytes(), 8)[0] == 5:
        as_format_4(path)
    if version == 4:
        return
    data = path.read_bytes()
    s = v4_sections(data)
    dim, n_live, graph_bytes = s["dim"], s["n_live"], s["graph_bytes"]
    assert s["precision"] == 2 and s["stride"] == dim + 8  # int8 codes: dim codes, scale, squared norm
    g = data[HEADER : HEADER + graph_bytes]
    off0, max_el, used, record, label_off, off_data = struct.unpack_from("<6Q", g, 0)
    originals = np.frombuffer(data, "<f4", count=used * dim, offset=s["walk_at"] + 16).reshape(used, dim)
    level0 = g[HNSWLIB_HEADER : HNSWLIB_HEADER + used * record]
    recs, copy = [], []
    copy_stride = (dim + 8 + 63) // 64 * 64  # format 3's walk copy: whole cache lines per slot
    for i in range(used):
        r = level0[i * record : (i + 1) * record]
        recs.append(r[:off_data] + originals[i].tobytes() + r[label_off : label_off + 8])
        copy.append(r[off_data : off_data + dim + 8].ljust(copy_stride, b"\0"))
    head = struct.pack("<6Q", off0, max_el, used, off_data + dim * 4 + 8, off_data + dim * 4, off_data)
    graph = head + g[48:HNSWLIB_HEADER] + b"".join(recs) + g[HNSWLIB_HEADER + used * record :]
    rows = np.frombuffer(data, "<u8", count=2 * n_live, offset=HEADER + graph_bytes).reshape(n_live, 2)
    if version == 1:
        old_rows = b"".join(struct.pack("<QQI", int(i), int(grp), 7) for i, grp in rows)
    else:
        old_rows = rows.astype("<u8").tobytes()
    walk = struct.pack("<IIQ", 2, 0, copy_stride) + b"".join(copy) if version == 3 else b""
    body = struct.pack("<I", version) + data[12:72] + struct.pack("<Q", len(graph)) + graph + old_rows + walk
    path.write_bytes(data[:8] + body + struct.pack("<I", zlib.crc32(body)))
