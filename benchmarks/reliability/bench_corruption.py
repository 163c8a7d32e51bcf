"""Byte flips in each kind of on-disk file, then a restart: is every corruption detected and
recovered, or refused with a clear message? Never silently wrong.

    python -m benchmarks.reliability.bench_corruption               # 20 trials per file kind
    python -m benchmarks.reliability.bench_corruption --trials 100

Each trial builds a data directory through the storage engine (the same files a server writes:
SQLite catalog, vector log segments, index snapshots): 40 videos of 8 random 64-d vectors, a
snapshot after 15 and after 30 (so a current and a previous snapshot exist), the last 10 only in
the log, then a crash (no clean close). It flips a random 1-64-byte burst in one file of the kind
under test and opens the directory again. Outcomes:

- `intact`: opened, nothing reported, every video active with exactly its vectors (the flip hit
  bytes that are not read, e.g. free space or a part of the log already covered by a snapshot);
- `recovered`: opened, the damage reported (`recovery_problems`), every video either active with
  exactly its vectors or listed as damaged;
- `refused`: did not open, with an error that names the damage and how to repair it;
- `undetected`: opened, nothing reported, but a video's catalog fields differ (SQLite keeps no
  checksums: each video row carries a CRC-32 of its fields, checked at start, so that a flip
  inside a row's text or number marks the video damaged instead; see storage/catalog.py);
- `WRONG`: an active video with other vectors, not found by its own vector, or missing from the
  listing without a report; or an unexpected exception. Must be 0.

Prints a table (trials per outcome per file kind) and writes benchmarks/results/reliability_corruption.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import random
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DIM = 64
KINDS = (
    "log_newest",
    "log_older",
    "snapshot_index",
    "snapshot_index_previous",
    "snapshot_videos",
    "snapshot_json",
    "catalog",
)
OUTCOMES = ("intact", "recovered", "refused", "undetected", "WRONG")


def _crash(st) -> None:
    for ci in st._colls.values():
        ci.log.close()
    st.catalog._db.close()


def build(d: pathlib.Path, rng: np.random.Generator):
    from frameseek.storage import EmbeddedStorage, VideoRecord

    st = EmbeddedStorage(str(d))
    st.open()
    c = st.create_collection("default", model="m", dimension=DIM, metric="ip", sampling={}, index={"ef_search": 64})
    videos = {}
    for i in range(40):
        v = rng.standard_normal((8, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        rec = VideoRecord(
            id=0,
            collection_id=0,
            kind="video",
            duration=8.0,
            width=64,
            height=48,
            sample_count=0,
            size_bytes=1000 + i,
            content_sha256=f"{i:064x}",
            labels={"i": str(i)},
        )
        got = st.add_video(c.id, rec, np.arange(8.0), v)
        videos[got.id] = (got, v)
        if i in (14, 29):
            st.snapshot()
    _crash(st)
    return c.id, videos


def target(d: pathlib.Path, cid: int, kind: str) -> pathlib.Path:
    coll = d / "collections" / str(cid)
    meta = json.loads((coll / "snapshot.json").read_text())
    segs = sorted(coll.glob("vectors-*.log"))
    return {
        "log_newest": segs[-1],
        "log_older": segs[0],
        "snapshot_index": coll / meta["index"],
        "snapshot_index_previous": coll / meta["previous"]["index"],
        "snapshot_videos": coll / meta["videos"],
        "snapshot_json": coll / "snapshot.json",
        "catalog": d / "catalog.sqlite3",
    }[kind]


def flip(path: pathlib.Path, rnd: random.Random) -> tuple[int, int]:
    data = bytearray(path.read_bytes())
    n = rnd.randint(1, 64)
    at = rnd.randrange(0, max(1, len(data) - n))
    for i in range(at, min(at + n, len(data))):
        data[i] ^= rnd.randrange(1, 256)
    path.write_bytes(bytes(data))
    return at, n


def check(d: pathlib.Path, cid: int, videos: dict) -> tuple[str, str]:
    from frameseek.ids import split_sample_ids
    from frameseek.storage import EmbeddedStorage, VideoQuery
    from frameseek.storage.catalog import CatalogDamaged

    try:
        st = EmbeddedStorage(str(d))
        st.open()
    except CatalogDamaged as exc:
        return "refused", str(exc)[:200]
    except Exception:
        return "WRONG", "unexpected: " + traceback.format_exc(limit=3)[-400:]
    try:
        problems = st.recovery_problems()
        listed = {v.id: v for v in st.list_videos(VideoQuery(collection_id=cid), None, 1000)[0]}
        changed = False
        for vid, (rec, vecs) in videos.items():
            got = listed.get(vid)
            if got is None:
                if not problems:
                    return "WRONG", f"video {vid} missing without a report"
                continue
            if got.state == "damaged":
                continue
            if np.abs(st.video_vectors(vid) - vecs).max() > 1e-6:
                return "WRONG", f"video {vid} is active with other vectors"
            ids, _ = st.search(cid, vecs[3:4], 1)
            if int(split_sample_ids(ids[0])[0][0]) != vid:
                return "WRONG", f"video {vid} not found by its own vector"
            changed |= got != rec or not np.array_equal(st.video_timestamps(vid), np.arange(8.0))
        if problems:
            return "recovered", problems[0][:200]
        return ("undetected", "a catalog row changed") if changed else ("intact", "")
    finally:
        st.close(snapshot=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="per file kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ", ".join(KINDS))
    ap.add_argument("--out", type=pathlib.Path, default=RESULTS / "reliability_corruption.json")
    args = ap.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))  # quiet: 1000s of opens
    rnd = random.Random(args.seed)
    kinds = [k for k in args.kinds.split(",") if k]
    if set(kinds) - set(KINDS):
        ap.error(f"unknown kinds {sorted(set(kinds) - set(KINDS))}")
    counts = {k: dict.fromkeys(OUTCOMES, 0) for k in kinds}
    examples: dict[str, dict[str, str]] = {k: {} for k in kinds}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="frameseek-corrupt-") as tmp:
        for kind in kinds:
            for trial in range(args.trials):
                d = pathlib.Path(tmp, f"{kind}-{trial}")
                cid, videos = build(d, np.random.default_rng(rnd.randrange(1 << 30)))
                path = target(d, cid, kind)
                at, n = flip(path, rnd)
                outcome, detail = check(d, cid, videos)
                counts[kind][outcome] += 1
                examples[kind].setdefault(outcome, f"{path.name}@{at}+{n}: {detail}")
                for root, dirs, files in os.walk(d, topdown=False):  # keep the temp dir small
                    for f in files:
                        os.remove(os.path.join(root, f))
                    for x in dirs:
                        os.rmdir(os.path.join(root, x))
    print("file kind | " + " | ".join(OUTCOMES))
    for kind in kinds:
        print(f"{kind} | " + " | ".join(str(counts[kind][o]) for o in OUTCOMES))
    wrong = sum(c["WRONG"] for c in counts.values())
    print(f"{args.trials} trials per kind, {time.perf_counter() - t0:.0f} s; WRONG: {wrong}")
    for kind in kinds:
        for o, ex in examples[kind].items():
            if o != "intact":
                print(f"  {kind} {o}: {ex}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "trials_per_kind": args.trials,
                "counts": counts,
                "examples": examples,
                "machine": platform.platform(),
                "time": time.time(),
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
