"""Writes the seed corpus of the fuzz targets (native/fuzz/corpus/<target>/seed-*), from the real
encoders: request seeds are serialised by protobuf from frameseek.v1, snapshot seeds are saved by
the native module's HnswIndex. Run from the repository root after `make setup`:

    .venv/bin/python native/fuzz/make_seeds.py

Seeds are small on purpose (a few hundred bytes each): libFuzzer mutates small inputs fastest,
and the corpus stays in the repository. Re-running rewrites the seed-* files only; the inputs
libFuzzer found (and regressions, named regress-*) are kept.
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

from frameseek import _native as N
from frameseek.v1 import frameseek_pb2 as pb

CORPUS = Path(__file__).resolve().parent / "corpus"


def write(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def request_seeds() -> None:
    v4 = [0.25, -0.5, 1.0, 0.125]
    reqs = {
        "plain": pb.SearchByVectorRequest(vector=v4),
        "default-options": pb.SearchByVectorRequest(parent="collections/1", vector=v4, options=pb.SearchOptions()),
        "cosine-k3-m2": pb.SearchByVectorRequest(
            parent="collections/2",
            vector=v4,
            options=pb.SearchOptions(k=3, max_matches_per_video=2, ef=16, min_score=-0.5),
        ),
        "filters": pb.SearchByVectorRequest(
            parent="collections/1",
            vector=v4,
            options=pb.SearchOptions(
                k=2,
                filter=pb.SearchFilter(
                    videos=["collections/1/videos/2", "collections/1/videos/3", "collections/2/videos/5"],
                    exclude_videos=["collections/1/videos/3"],
                ),
            ),
        ),
        "exclude-only": pb.SearchByVectorRequest(
            vector=v4, options=pb.SearchOptions(filter=pb.SearchFilter(exclude_videos=["collections/1/videos/1"]))
        ),
        "labels": pb.SearchByVectorRequest(  # the fast path forwards label filters to Python
            vector=v4, options=pb.SearchOptions(filter=pb.SearchFilter(labels={"a": "b"}))
        ),
        "negative-k": pb.SearchByVectorRequest(vector=v4, options=pb.SearchOptions(k=-1)),
        "wrong-dim": pb.SearchByVectorRequest(vector=v4[:3]),
        "nan": pb.SearchByVectorRequest(vector=[float("nan")] * 4),
    }
    for name, r in reqs.items():
        write("fuzz_search_request", name, r.SerializeToString())
    # unpacked floats (field 2 as four fixed32 fields): valid proto3, read by the fast path too
    unpacked = b"".join(b"\x15" + struct.pack("<f", x) for x in v4)
    write("fuzz_search_request", "unpacked", unpacked)


def response_seeds() -> None:
    # FuzzedDataProvider input: any bytes; a few lengths so the first runs already build hits
    rng = np.random.default_rng(3)
    for n in (8, 64, 512):
        write("fuzz_search_response", f"random-{n}", rng.bytes(n))


def snapshot_seeds() -> None:
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as tmp:
        for name, metric, n, removed in (
            ("l2-8", "l2", 8, 0),
            ("ip-12-removed", "ip", 12, 3),
            ("l2-empty", "l2", 0, 0),
            # format 5 maps float32 vectors of at least a page (4096 bytes: 256 of dim 4) from the file
            ("l2-260-mapped", "l2", 260, 2),
        ):
            index = N.HnswIndex(4, metric, max_elements=max(16, n), M=2, ef_construction=8, seed=1)
            if n:
                ids = np.arange(n, dtype=np.uint64) + 100
                index.add(ids, rng.standard_normal((n, 4)).astype(np.float32), groups=ids // 3, threads=1)
                index.remove(ids[:removed])
            path = Path(tmp) / "index.fsh"
            index.save(str(path))
            data = path.read_bytes()
            # flag byte: bit 0 = the harness re-seals the file's CRC after mutation
            write("fuzz_hnsw_load", f"{name}-sealed", b"\x01" + data)
            write("fuzz_hnsw_load", f"{name}-raw", b"\x00" + data)


def vectorlog_seeds() -> None:
    """Segments written by VectorLog itself (format v2, dimension 4, as fuzz_vectorlog.py reads
    them). The v1-* inputs beside them are version 1 segments (still read) from before v2."""
    from frameseek.storage.vectorlog import VectorLog, segment_path

    rng = np.random.default_rng(9)
    with tempfile.TemporaryDirectory() as tmp:
        log = VectorLog(tmp, 4)
        list(log.replay(1))
        header = Path(segment_path(tmp, 1)).read_bytes()
        ends = []
        for video, n in ((1, 1), (2, 3), (3, 2)):
            log.append(video, rng.standard_normal((n, 4)).astype(np.float32), f"content-{video}")
            ends.append(Path(segment_path(tmp, 1)).stat().st_size)
        log.close()
        three = Path(segment_path(tmp, 1)).read_bytes()
    # the second record's vectors damaged: replay resynchronises at the third record's SYNC
    middle = bytearray(three)
    middle[ends[1] - 3] ^= 0xFF
    # flag byte: bit 0 = this segment is sealed (an intact newer one follows)
    write("fuzz_vectorlog", "three-records", b"\x00" + three)
    write("fuzz_vectorlog", "three-records-sealed", b"\x01" + three)
    write("fuzz_vectorlog", "header-only", b"\x00" + header)
    write("fuzz_vectorlog", "torn-tail", b"\x00" + three[:-5])
    write("fuzz_vectorlog", "damaged-middle", b"\x00" + bytes(middle))
    write("fuzz_vectorlog", "damaged-middle-sealed", b"\x01" + bytes(middle))


def main() -> int:
    request_seeds()
    vectorlog_seeds()
    response_seeds()
    snapshot_seeds()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"corpus: {sum(1 for f in CORPUS.rglob('*') if f.is_file())} files, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
