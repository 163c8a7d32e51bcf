"""A full disk, then kill -9: ingests answer DISK_FULL or succeed, and nothing acknowledged is lost.

    sudo python -m benchmarks.reliability.bench_disk_full              # 3 rounds on a 40 MiB tmpfs
    sudo python -m benchmarks.reliability.bench_disk_full --rounds 10

Needs root (it mounts a tmpfs for the data directory). Each round: fill the filesystem up to
`leave` bytes for a sweep of levels (400 KB down to 0) and ingest one new video at each (so every
kind of write meets the full disk at some level: the upload spool, the catalog, the vector log),
free the space, ingest two more, kill -9 the server and restart it; then every video acknowledged
so far must be listed once, ACTIVE, and found by a frame of it (SearchByImage restricted to it).
Every refusal must be RESOURCE_EXHAUSTED with reason DISK_FULL.

Prints a table per round and writes benchmarks/results/reliability_disk_full.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from .bench_kill9 import RESULTS, Server, make_video, verify

LEVELS = (400_000, 300_000, 200_000, 150_000, 120_000, 100_000, 80_000, 60_000, 30_000, 0)


def fill(path: pathlib.Path, leave: int) -> None:
    st = os.statvfs(path.parent)
    left = st.f_bavail * st.f_frsize - leave
    with open(path, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while left > 0:
            left -= f.write(b"\0" * min(left, 1 << 20))


def where(message: str) -> str:
    if "vector log" in message:
        return "vector_log"
    if "catalog" in message:
        return "catalog"
    return "upload_spool"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=40)
    ap.add_argument("--out", type=pathlib.Path, default=RESULTS / "reliability_disk_full.json")
    args = ap.parse_args()
    from frameseek.client import Client, FrameSeekError

    tmp = tempfile.TemporaryDirectory(prefix="frameseek-diskfull-")
    mnt = pathlib.Path(tmp.name, "disk")
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={args.size_mb}m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        print(f"cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}", file=sys.stderr)
        return 2
    srv = Server(mnt / "data", pathlib.Path(tmp.name, "server.log"))
    filler = mnt / "filler"
    acked: dict[int, tuple[str, str, int]] = {}
    rows, wrong = [], []
    seed = 0
    t0 = time.perf_counter()
    try:
        srv.start()
        for rnd in range(1, args.rounds + 1):
            refused = {"upload_spool": 0, "catalog": 0, "vector_log": 0}
            before = len(acked)
            with Client(srv.address, retries=0, timeout=300) as fs:
                for leave in LEVELS + (None, None):  # None: space freed
                    seed += 1
                    if leave is not None:
                        fill(filler, leave)
                    try:
                        v = fs.ingest_video(make_video(seed)[0]).video
                        acked[seed] = (v.name, v.content_sha256, v.sample_count)
                    except FrameSeekError as err:
                        if err.code.name != "RESOURCE_EXHAUSTED" or err.reason != "DISK_FULL":
                            wrong.append(f"round {rnd} leave {leave}: {err}")
                        else:
                            refused[where(err.message)] += 1
                    filler.unlink(missing_ok=True)
            srv.kill9()
            restart_s = srv.start().ready_s
            row = {
                "round": rnd,
                "attempts": len(LEVELS) + 2,
                "acked": len(acked) - before,
                **refused,
                "restart_s": round(restart_s, 2),
                **verify(srv.address, acked, set()),
            }
            rows.append(row)
        srv.stop()
    finally:
        srv.kill9()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        tmp.cleanup()
    header = [
        "round",
        "attempts",
        "acked",
        "upload_spool",
        "catalog",
        "vector_log",
        "lost",
        "duplicated",
        "damaged",
        "unsearchable",
        "restart_s",
    ]
    print("refusals (DISK_FULL) by the write that met the full disk; checks after kill -9 + restart")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    bad = sum(row[k] for row in rows for k in ("lost", "duplicated", "damaged", "unsearchable", "wrong_sample_count"))
    print(
        f"{args.rounds} rounds, {len(acked)} acknowledged: {bad} lost/duplicated/damaged/unsearchable, "
        f"{len(wrong)} answers other than DISK_FULL; {time.perf_counter() - t0:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rounds": rows,
                "other_answers": wrong,
                "size_mb": args.size_mb,
                "machine": platform.platform(),
                "time": time.time(),
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    return 1 if bad or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
