"""Query-embedding cost of region search (SamplingSettings.regions off / auto / on), side by side.

    python -m benchmarks.copydetect.run                 # first: makes the seed-7 media
    python -m benchmarks.copydetect.bench_regions [--reps 2]

Embeds the picture-in-picture copy queries and as many other queries (re-encoded copies and
unrelated clips, where "auto" usually finds no inset) with the server's query pipeline
(1 fps + mirrored frames) in each mode, modes interleaved per query so that machine load hits
them alike; prints the median wall time per query per mode and the ratio to "off", and writes
benchmarks/results/copydetect_regions.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.copydetect import media as M
from benchmarks.copydetect.run import CACHE, ROOT
from frameseek.embed import load_embedder
from frameseek.pipeline import SamplingSettings, embed_media, frame_views

MODES = ("off", "auto", "on")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", default=str(CACHE / "media" / "seed7_refs20"))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "copydetect_regions.json"))
    a = ap.parse_args(argv)
    os.nice(5)
    qdir = Path(a.media) / "queries"
    pip = sorted(glob.glob(str(qdir / f"q_pip{M.RECIPE_VERSION.get('pip', '')}_*.mp4")))
    other = sorted(glob.glob(str(qdir / "q_reencode_*.mp4")))[:3] + sorted(glob.glob(str(qdir / "u_*.mp4")))[:3]
    if not pip:
        raise SystemExit(f"no picture-in-picture queries under {qdir}: run python -m benchmarks.copydetect.run first")
    emb = load_embedder()
    embed_media(pip[0], emb, SamplingSettings.query())  # warm-up (model, caches)
    groups = {"picture-in-picture copies": pip, "other queries": other}
    res: dict = {}
    for g, paths in groups.items():
        times = {m: [] for m in MODES}
        regions = {m: [] for m in MODES}
        for p in paths:
            for r in range(a.reps):
                for m in MODES if r % 2 == 0 else MODES[::-1]:
                    t0 = time.perf_counter()
                    # coarse view off: this measures the regions alone, as in the README table
                    e = embed_media(p, emb, SamplingSettings.query(views=frame_views(mirror=True), regions=m))
                    times[m].append(time.perf_counter() - t0)
                    if r == 0:
                        regions[m].append(len(e.regions))
        base = statistics.median(times["off"])
        res[g] = {
            m: {
                "median_s": statistics.median(times[m]),
                "ratio_to_off": statistics.median(times[m]) / base,
                "mean_regions": statistics.mean(regions[m]),
            }
            for m in MODES
        }
        res[g]["queries"] = len(paths)
    print("\n| queries | n | off (s) | auto (s) | on (s) | auto / off | on / off | regions per query auto / on |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for g, r in res.items():
        print(
            f"| {g} | {r['queries']} | {r['off']['median_s']:.2f} | {r['auto']['median_s']:.2f} | "
            f"{r['on']['median_s']:.2f} | {r['auto']['ratio_to_off']:.2f}x | {r['on']['ratio_to_off']:.2f}x | "
            f"{r['auto']['mean_regions']:.1f} / {r['on']['mean_regions']:.1f} |"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"reps": a.reps, "media": a.media, "results": res}, indent=2))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
