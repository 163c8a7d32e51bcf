"""Ingest throughput (video seconds per wall second, "x realtime") of the media pipeline, side by
side with vPDQ hashing the same files at 1 fps in the same run.

    python -m benchmarks.media.bench_ingest [--quick] [--out benchmarks/results/media_ingest.json]

Files: the opencv-doc videos (Megamind.avi, vtest.avi, tree.avi, box.mp4, cup.mp4 — the .mp4.gz are
gunzipped to a temp dir) and a 720p and a 1080p H.264 clip made with FFmpeg from the opencv-doc
footage. For frameseek the per-stage times are busy times of overlapping stages (decode thread:
decode + RGB at the model's input size; preprocess: blank filter + any resize left; inference
thread: embed), so they add up to more than the wall time. The embedder is loaded once before
timing (a server keeps it loaded). Both sides also report process CPU seconds: on a shared,
busy machine wall-clock ratios favour whichever side runs more threads, CPU seconds do not.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
HTML = Path("/usr/share/doc/opencv-doc/opencv4/html")
RESULTS = Path(__file__).resolve().parents[1] / "results"


def prepare_files(work: Path, clip_seconds: int) -> list[Path]:
    files = [DATA / n for n in ("Megamind.avi", "vtest.avi", "tree.avi") if (DATA / n).exists()]
    for n in ("box.mp4.gz", "cup.mp4.gz"):
        src = HTML / n
        if src.exists():
            dst = work / n[:-3]
            if not dst.exists():
                with gzip.open(src, "rb") as fi, open(dst, "wb") as fo:
                    shutil.copyfileobj(fi, fo)
            files.append(dst)
    # 720p / 1080p H.264 at 30 fps from real footage (vtest.avi looped, scaled up), CRF 23.
    for h in (720, 1080):
        dst = work / f"vtest_{h}p_{clip_seconds}s.mp4"
        if not dst.exists():
            subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-y",
                    "-stream_loop",
                    "-1",
                    "-i",
                    str(DATA / "vtest.avi"),
                    "-t",
                    str(clip_seconds),
                    "-vf",
                    f"scale=-2:{h},fps=30",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    "23",
                    "-pix_fmt",
                    "yuv420p",
                    "-an",
                    str(dst),
                ],
                check=True,
            )
        files.append(dst)
    return files


def run_frameseek(path: Path, embedder, fps: float, keyframes_only: bool = False) -> dict:
    from frameseek.pipeline import SamplingSettings, embed_media

    c0, t0 = time.process_time(), time.perf_counter()
    res = embed_media(path, embedder, SamplingSettings(fps=fps, keyframes_only=keyframes_only))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    s = res.stats
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "duration_s": res.duration,
        "x_realtime": res.duration / wall,
        "samples": len(res),
        "dropped_blank": res.dropped_blank,
        "decode_s": s["decode_s"],
        "preprocess_s": s["preprocess_s"],
        "embed_s": s["embed_s"],
        "decoded_frames": s["decoded_frames"],
        "width": res.width,
        "height": res.height,
        "codec": res.codec,
        "decoder": res.decoder,
        "embedder": res.embedder,
    }


def run_vpdq(path: Path, duration: float) -> dict:
    import vpdq

    c0, t0 = time.process_time(), time.perf_counter()
    feats = vpdq.computeHash(str(path), seconds_per_hash=1.0)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "x_realtime": duration / wall, "samples": len(feats)}


def print_table(rows: list[dict], agg: dict) -> None:
    def split(d: dict) -> str:
        return f"{d['decode_s']:.2f}/{d['preprocess_s']:.2f}/{d['embed_s']:.2f}"

    hdr = (
        f"{'file':<20} {'size':>9} {'codec':>8} {'dur s':>6} | {'query 1fps xRT':>14} {'dec/pre/emb s':>18} | "
        f"{'ref 3fps xRT':>12} {'dec/pre/emb s':>18} | {'keyfr xRT':>9} | {'vPDQ 1fps xRT':>13} | {'q/vPDQ':>6}"
    )
    print()
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        q, r, k, v = row["query_1fps"], row["reference_3fps"], row["keyframes_1fps"], row["vpdq_1fps"]
        vx = f"{v['x_realtime']:.1f}" if v else "n/a"
        ratio = f"{q['x_realtime'] / v['x_realtime']:.2f}" if v else "n/a"
        size = f"{q['width']}x{q['height']}"
        print(
            f"{row['file']:<20} {size:>9} {q['codec']:>8} {q['duration_s']:>6.1f} | {q['x_realtime']:>14.1f} "
            f"{split(q):>18} | {r['x_realtime']:>12.1f} {split(r):>18} | {k['x_realtime']:>9.1f} | {vx:>13} | "
            f"{ratio:>6}"
        )
    print("-" * len(hdr))
    print("all files (total video s / total wall s): " + ", ".join(f"{k} {v:.1f}x" for k, v in agg.items()))
    cpu = {
        k: sum(row[k]["cpu_s"] for row in rows)
        for k in ("query_1fps", "vpdq_1fps")
        if all(row.get(k) and "cpu_s" in row[k] for row in rows)  # older JSON has no cpu_s
    }
    if cpu:
        print("process CPU s over all files: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s synthetic clips instead of 60 s")
    ap.add_argument("--out", type=Path, default=RESULTS / "media_ingest.json")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "frameseek-bench-media")
    ap.add_argument("--show", type=Path, help="print the table of a saved JSON result and exit")
    args = ap.parse_args()
    if args.show:
        doc = json.loads(args.show.read_text())
        print("load average at the end of that run:", doc["meta"]["machine"]["load_avg"])
        print_table(doc["rows"], doc["aggregate_x_realtime"])
        return

    from frameseek.embed import load_embedder

    args.workdir.mkdir(parents=True, exist_ok=True)
    files = prepare_files(args.workdir, 10 if args.quick else 60)
    embedder = load_embedder()
    try:
        import vpdq  # noqa: F401

        have_vpdq = True
    except ImportError:
        have_vpdq = False

    rows = []
    for path in files:
        q = run_frameseek(path, embedder, 1.0)
        r = run_frameseek(path, embedder, 3.0)
        k = run_frameseek(path, embedder, 1.0, keyframes_only=True)
        v = run_vpdq(path, q["duration_s"]) if have_vpdq else None
        row = {"file": path.name, "query_1fps": q, "reference_3fps": r, "keyframes_1fps": k, "vpdq_1fps": v}
        rows.append(row)
        print(f"done {path.name}", flush=True)

    tot_d = sum(row["query_1fps"]["duration_s"] for row in rows)
    agg = {
        "query_1fps": tot_d / sum(row["query_1fps"]["wall_s"] for row in rows),
        "reference_3fps": tot_d / sum(row["reference_3fps"]["wall_s"] for row in rows),
        "keyframes_1fps": tot_d / sum(row["keyframes_1fps"]["wall_s"] for row in rows),
    }
    if have_vpdq:
        agg["vpdq_1fps"] = tot_d / sum(row["vpdq_1fps"]["wall_s"] for row in rows)
    print_table(rows, agg)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "embedder": f"{embedder.name}@{embedder.backend}",
        "quick": args.quick,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "aggregate_x_realtime": agg}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
