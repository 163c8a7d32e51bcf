"""kill -9 cycles during concurrent ingests, against a real server; checks that nothing
acknowledged is lost, damaged or indexed twice.

    python -m benchmarks.reliability.bench_kill9                       # 5 cycles, 3 ingest threads
    python -m benchmarks.reliability.bench_kill9 --cycles 100 --threads 4

Each cycle: start `frameseek serve` on the same data directory (timing process start -> SERVING),
ingest distinct synthetic videos (each second a different random texture, so every video and
second is recognisable) from `--threads` threads, kill -9 the server after a random 0.5-4 s,
restart it and check every video acknowledged so far (in this cycle or any earlier one):

- listed exactly once (by its content hash), state ACTIVE, with the acknowledged sample count;
- searchable: a frame of it (search_by_image) finds it as the top hit;
- an ingest that was in flight at the kill may be there or not, but never twice.

Prints a table per cycle and writes benchmarks/results/reliability_kill9.json. Everything stays on
127.0.0.1; the data directory is a temporary one unless --data-dir is given.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import platform
import random
import sys
import tempfile
import threading
import time

import numpy as np

from tests.server.helpers import ServerProcess

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MIN_SELF_SCORE = 0.9  # a frame of an indexed video scores ~0.95-1.0 against that video's own samples


def make_video(seed: int, seconds: int = 4, fps: int = 10, size=(160, 120)) -> tuple[bytes, bytes]:
    """(mp4 bytes, PNG of a frame at 1.5 s) of a video whose content changes every second."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    scenes = [
        np.kron(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
        for _ in range(seconds)
    ]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        st = out.add_stream("mpeg4", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.bit_rate = 4_000_000  # noise textures at the default rate lose what makes them unique
        for i in range(seconds * fps):
            for pkt in st.encode(av.VideoFrame.from_ndarray(scenes[i // fps], format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    png = io.BytesIO()
    Image.fromarray(scenes[1]).save(png, format="PNG")
    return buf.getvalue(), png.getvalue()


class Server(ServerProcess):
    """The reliability benchmarks' server (bench_soak's and bench_disk_full's too): two ingest
    workers, its output to `log_path`; start() waits for SERVING however long recovery takes."""

    def __init__(self, data_dir: pathlib.Path, log_path: pathlib.Path):
        super().__init__(data_dir, log_path=log_path, ingest_workers=2)

    def start(self, wait: bool = True, timeout: float = math.inf) -> Server:
        return super().start(wait, timeout)


def ingest_until_killed(address: str, seeds, acked: dict, in_flight: set, lock: threading.Lock, errors: list) -> None:
    from frameseek.client import Client, FrameSeekError

    with Client(address, retries=0, timeout=120) as fs:
        for seed in seeds:
            data, _ = make_video(seed)
            with lock:
                in_flight.add(seed)
            try:
                r = fs.ingest_video(data, filename=f"seed{seed}.mp4")
            except FrameSeekError as err:  # the kill: UNAVAILABLE / CANCELLED / connection reset
                if err.code.name not in ("UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL"):
                    errors.append(f"seed {seed}: {err}")
                return
            with lock:
                in_flight.discard(seed)
                acked[seed] = (r.video.name, r.video.content_sha256, r.video.sample_count)


def verify(address: str, acked: dict, maybe: set) -> dict:
    """Check every acknowledged video (see the module docstring); returns counts."""
    from frameseek.client import Client
    from frameseek.v1 import frameseek_pb2 as pb

    with Client(address, timeout=120) as fs:
        listed = list(fs.list_videos(page_size=1000))
        by_hash: dict[str, list] = {}
        for v in listed:
            by_hash.setdefault(v.content_sha256, []).append(v)
        lost = duplicated = damaged = unsearchable = wrong_count = 0
        misses, scores = [], []
        for seed, (name, sha, samples) in acked.items():
            got = by_hash.get(sha, [])
            if not any(v.name == name for v in got):
                lost += 1
                continue
            duplicated += len(got) > 1
            v = next(v for v in got if v.name == name)
            damaged += v.state != pb.VIDEO_STATE_ACTIVE
            wrong_count += v.sample_count != samples
            _, png = make_video(seed)
            # restricted to this video: its frame must be found there, nearly identical
            r = fs.search_by_image(png, k=1, videos=[name])
            score = r.hits[0].score if r.hits and r.hits[0].video.name == name else 0.0
            scores.append(score)
            if score < MIN_SELF_SCORE:
                unsearchable += 1
                misses.append(f"{name}: {score:.3f}")
        known = {sha for _, sha, _ in acked.values()}
        unexpected = sum(1 for sha, vs in by_hash.items() if sha not in known and len(vs) > 1)
        problems = list(fs.stats().recovery_problems)
    return {
        "listed": len(listed),
        "lost": lost,
        "duplicated": duplicated + unexpected,
        "damaged": damaged,
        "wrong_sample_count": wrong_count,
        "unsearchable": unsearchable,
        "in_flight_at_kill": len(maybe),
        "recovery_problems": problems,
        "unsearchable_videos": misses[:20],
        "min_self_score": round(min(scores, default=1.0), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--min-kill-s", type=float, default=0.5)
    ap.add_argument("--max-kill-s", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=pathlib.Path, default=None)
    ap.add_argument("--out", type=pathlib.Path, default=RESULTS / "reliability_kill9.json")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="frameseek-kill9-")
    base = pathlib.Path(tmp.name)
    data_dir = args.data_dir or base / "data"
    srv = Server(data_dir, base / "server.log")
    acked: dict[int, tuple[str, str, int]] = {}
    rows, errors = [], []
    next_seed = 1_000_000 * args.seed
    t_all = time.perf_counter()
    try:
        for cycle in range(1, args.cycles + 1):
            start_s = srv.start().ready_s
            if cycle > 1:
                rows[-1]["restart_s"] = round(start_s, 2)
                rows[-1].update(verify(srv.address, acked, rows[-1].pop("_maybe")))
            in_flight: set[int] = set()
            lock = threading.Lock()
            before = len(acked)
            threads = []
            for _ in range(args.threads):
                seeds = range(next_seed, next_seed + 1000)
                next_seed += 1000
                threads.append(
                    threading.Thread(
                        target=ingest_until_killed,
                        daemon=True,
                        args=(srv.address, seeds, acked, in_flight, lock, errors),
                    )
                )
            for t in threads:
                t.start()
            time.sleep(rnd.uniform(args.min_kill_s, args.max_kill_s))
            srv.kill9()
            for t in threads:
                t.join(timeout=120)
            rows.append(
                {
                    "cycle": cycle,
                    "acked_this_cycle": len(acked) - before,
                    "acked_total": len(acked),
                    "_maybe": set(in_flight),
                }
            )
        rows[-1]["restart_s"] = round(srv.start().ready_s, 2)
        rows[-1].update(verify(srv.address, acked, rows[-1].pop("_maybe")))
        srv.stop()
    finally:
        srv.kill9()
        if args.data_dir is None:
            tmp.cleanup()
    total = {
        k: sum(r[k] for r in rows)
        for k in ("lost", "duplicated", "damaged", "wrong_sample_count", "unsearchable", "in_flight_at_kill")
    }
    header = [
        "cycle",
        "acked_this_cycle",
        "acked_total",
        "in_flight_at_kill",
        "lost",
        "duplicated",
        "damaged",
        "wrong_sample_count",
        "unsearchable",
        "restart_s",
    ]
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(r.get(h, "")) for h in header))
    print(
        f"{args.cycles} kill -9 cycles, {len(acked)} acknowledged videos: lost {total['lost']}, "
        f"duplicated {total['duplicated']}, damaged {total['damaged']}, unsearchable {total['unsearchable']}; "
        f"client errors other than the kill: {len(errors)}; {time.perf_counter() - t_all:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "cycles": args.cycles,
                "threads": args.threads,
                "acked": len(acked),
                "totals": total,
                "rows": rows,
                "client_errors": errors,
                "machine": platform.platform(),
                "time": time.time(),
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    bad = total["lost"] + total["duplicated"] + total["damaged"] + total["wrong_sample_count"] + total["unsearchable"]
    return 1 if bad or errors else 0


if __name__ == "__main__":
    sys.exit(main())
