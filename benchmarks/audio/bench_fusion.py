"""Fusion in SearchByVideo: picture-only edits found through the soundtrack, frames-only vs fused,
in one run (`python -m benchmarks.audio.bench_fusion`).

One `frameseek serve` (loopback, fresh data dir under build/audio/fusion/) holds the same
references twice: in a collection without audio ("frames": the frame votes alone) and in one
created with audio ("fused": frames + soundtrack). References are bench_audio's (espeak-ng speech
and fluidsynth MIDI music laid under opencv-doc's real footage, H.264 + AAC). Every reference is
queried, in both collections, by an excerpt at a seeded offset under:
  - each picture-only edit of sources.PICTURE_EDITS (crop, mirror, overlay, picture replaced by
    black; the soundtrack copied untouched) -- the fused search must find every one;
  - new audio: the same picture under an unrelated soundtrack -- still found by its frames.
Unrelated clips (ffmpeg's synthetic pictures under audio that no reference contains) measure
false positives: every match reported at the server's default threshold counts, and so does
every match of an edited query other than its source.

Prints a table and writes benchmarks/results/audio_fusion.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.audio import sources
from benchmarks.audio.bench_audio import CACHE, ROOT, make_references
from benchmarks.copydetect.server_check import start_server

RESULTS = ROOT / "benchmarks" / "results" / "audio_fusion.json"
COLLECTIONS = {"frames": False, "fused": True}  # name -> audio on
#: synthetic pictures (ffmpeg lavfi sources) for the references beyond the distinct real films
REF_SYNTHETIC = ["testsrc2=s=320x240", "cellauto=s=320x240:rule=110", "mandelbrot=s=320x240"]
#: pictures of other kinds than any reference's, for the unrelated clips (two pictures of one kind,
#: e.g. two cellular automata, look alike to the frame model: a frame match, not what this measures)
UNRELATED_SYNTHETIC = [
    "life=s=320x240:mold=10:r=25:seed=99:ratio=0.3",
    "smptehdbars=s=320x240",
    "yuvtestsrc=s=320x240",
    "rgbtestsrc=s=320x240",
]


def reference_pictures(n: int) -> list[Path]:
    """n pictures no two references share (a shared picture would make two references true frame
    copies of each other): opencv-doc's distinct films (Megamind_bugy is Megamind again), then
    synthetic ones."""
    films = [p for p in sources.footage() if "_bugy" not in p.stem]
    if n > len(films) + len(REF_SYNTHETIC):
        raise SystemExit(f"--refs at most {len(films) + len(REF_SYNTHETIC)} (distinct pictures)")
    out = []
    for i, spec in enumerate(REF_SYNTHETIC[: max(0, n - len(films))]):
        out.append(synthetic(CACHE / f"picture-{i}-{spec.split('=')[0]}.mp4", spec, 30.0))
    return (films + out)[:n]


def synthetic(out: Path, picture: str, seconds: float) -> Path:
    """A silent H.264 clip of an ffmpeg lavfi source."""
    if not out.exists():
        _ffmpeg(
            ["-f", "lavfi", "-i", picture, "-t", f"{seconds:.3f}", "-vf", "fps=25,format=yuv420p"]
            + ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "28", str(out)]
        )
    return out


def _ffmpeg(args: list[str]) -> None:
    proc = subprocess.run(["ffmpeg", "-v", "error", "-y", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr[-2000:]}")


def new_audio(out: Path, video: Path, audio: Path, start: float, seconds: float) -> Path:
    """The picture of `video` from `start` under `audio` (unrelated to it)."""
    if not out.exists():
        _ffmpeg(
            ["-ss", f"{start:.3f}", "-t", f"{seconds:.3f}", "-i", str(video), "-stream_loop", "-1", "-i", str(audio)]
            + ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-shortest", str(out)]
        )
    return out


def unrelated_clip(out: Path, picture: str, audio: Path, seconds: float) -> Path:
    """A synthetic picture under unrelated audio."""
    if not out.exists():
        _ffmpeg(
            ["-f", "lavfi", "-i", picture, "-stream_loop", "-1", "-i", str(audio), "-t", f"{seconds:.3f}"]
            + ["-map", "0:v", "-map", "1:a", "-vf", "fps=25,format=yuv420p", "-c:v", "libx264", "-preset"]
            + ["ultrafast", "-crf", "28", "-c:a", "aac", "-b:a", "128k", str(out)]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=int, default=4, help="reference videos (half speech, half music; at most 6)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the music references, s")
    ap.add_argument("--query-seconds", type=float, default=8.0, help="length of each query excerpt, s")
    ap.add_argument("--unrelated", type=int, default=4, help="unrelated clips (false-positive queries)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    sources.ensure_tools()
    from frameseek.client import Client, FrameSeekError

    t0 = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    refs, unrelated_audio = make_references(a.refs, a.seconds, a.seed, pictures=reference_pictures(a.refs))
    qdir = CACHE / "fusion-queries"
    qdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    queries = []  # (kind, source key or None, path)
    for i, (key, _, mp4) in enumerate(refs):
        dur = float(
            subprocess.run(
                ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(mp4)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        start = round(rng.uniform(0.0, max(0.0, dur - a.query_seconds - 0.5)), 2)
        for edit in sources.PICTURE_EDITS:
            queries.append((edit, key, sources.picture_edit(qdir, mp4, edit, start, a.query_seconds)))
        other = unrelated_audio[i % len(unrelated_audio)]
        swapped = new_audio(qdir / f"{mp4.stem}.new-audio.{start:.2f}.mp4", mp4, other, start, a.query_seconds)
        queries.append(("new_audio", key, swapped))
    for j in range(a.unrelated):
        audio = unrelated_audio[(j + 1) % len(unrelated_audio)]
        picture = UNRELATED_SYNTHETIC[j % len(UNRELATED_SYNTHETIC)]
        path = unrelated_clip(qdir / f"unrelated-{a.seed}-{j}.mp4", picture, audio, a.query_seconds)
        queries.append(("unrelated", None, path))
    media_s = time.perf_counter() - t0

    work = CACHE / "fusion"
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    proc, address, _ = start_server(work / "data")
    rows = []
    try:
        c = Client(address, timeout=600)
        c.wait_ready(timeout=300)
        threshold = c.stats().copy_threshold
        t1 = time.perf_counter()
        for name, audio in COLLECTIONS.items():
            c.create_collection(name, audio=audio)
            for key, _, mp4 in refs:
                c.ingest_video(mp4, collection=name, external_key=key)
        ingest_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        for kind, source, path in queries:
            row = {"kind": kind, "source": source, "query": path.name}
            for name in COLLECTIONS:
                try:
                    matches = c.search_by_video(path, collection=name, k=5).matches
                    found = [
                        {
                            "key": m.video.external_key,
                            "score": round(m.score, 3),
                            "frame_score": round(m.frame_score, 3),
                            "audio_score": round(m.audio_score, 3),
                        }
                        for m in matches
                    ]
                    error = ""
                except FrameSeekError as exc:  # e.g. a black picture alone: refused as blank
                    found, error = [], exc.reason or str(exc.code)
                row[name] = {
                    "found": bool(source) and any(f["key"] == source for f in found),
                    "false_positives": sum(f["key"] != source for f in found),
                    "matches": found,
                    "error": error,
                }
            rows.append(row)
        search_s = time.perf_counter() - t2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    kinds = list(sources.PICTURE_EDITS) + ["new_audio", "unrelated"]
    table = {}
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        table[kind] = {
            name: {
                "queries": len(mine),
                "found": sum(r[name]["found"] for r in mine),
                "false_positives": sum(r[name]["false_positives"] for r in mine),
                "refused": sum(bool(r[name]["error"]) for r in mine),
            }
            for name in COLLECTIONS
        }
    report = {
        "config": vars(a) | {"copy_threshold": threshold},
        "media_seconds": media_s,
        "ingest_seconds": ingest_s,
        "search_seconds": search_s,
        "table": table,
        "queries": rows,
    }
    print(f"\nSearchByVideo, {a.refs} references, {a.query_seconds:g} s excerpts, copy threshold {threshold:g}")
    print("| query | n | found frames-only | found fused | false pos. frames-only | false pos. fused |")
    print("|---|---|---|---|---|---|")

    def cell(kind: str, r: dict) -> str:
        found = "—" if kind == "unrelated" else str(r["found"])
        return found + (f" ({r['refused']} refused)" if r["refused"] else "")

    for kind, t in table.items():
        fr, fu = t["frames"], t["fused"]
        fps = f"{fr['false_positives']} | {fu['false_positives']}"
        print(f"| {kind} | {fr['queries']} | {cell(kind, fr)} | {cell(kind, fu)} | {fps} |")
    print(f"(media {media_s:.0f} s, ingest {ingest_s:.0f} s for 2 x {a.refs} videos, search {search_s:.0f} s)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    edits_missed = sum(t["fused"]["queries"] - t["fused"]["found"] for k, t in table.items() if k != "unrelated")
    new_fp = sum(t["fused"]["false_positives"] - t["frames"]["false_positives"] for t in table.values())
    return 1 if edits_missed or new_fp > 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
