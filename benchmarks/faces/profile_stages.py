"""Where the faces-on ingest's CPU goes, per sample: each stage timed on its own, in one thread.

    python -m benchmarks.faces.profile_stages [--seconds 20] [--videos 2]

Renders the harness's composites (benchmarks/faces/media.py), runs the frame pipeline once
(frames-only CPU per sample, and it hands over the sampled frames exactly as the face collector
gets them), then replays every sampled frame through each face stage separately, timing it with
the thread's CPU clock (load on the shared machine does not inflate it):

- detect: the frame scaled to `faces.detect_short_side` + each detector (`faces.detector`'s and
  the others, side by side);
- landmarks: dlib's 5-point shape predictor, per face;
- encode: dlib's ResNet per face (one call per face) and per sample (all of a sample's faces in
  one call), and the same chips through any other encoder;
- the collector end to end (with `faces.reembed_every`), i.e. what ingest pays per sample.

Prints a table (ms of CPU per sample and per face) and writes benchmarks/results/faces_profile.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.faces.media import FOOTAGE, load_identities, plan, render

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "faces_profile.json"


def _cpu_ms(fn, *args) -> tuple[float, object]:
    t0 = time.thread_time()
    out = fn(*args)
    return 1000 * (time.thread_time() - t0), out


def sampled_frames(paths: list[Path], sample_short_side: int, fps: float) -> tuple[list[np.ndarray], dict]:
    """Every sample the face collector would see, and the frame pipeline's own CPU per sample."""
    from frameseek.embed import EmbedderSettings, load_embedder
    from frameseek.pipeline import SamplingSettings, embed_media, index_views

    embedder = load_embedder(EmbedderSettings())
    base = dict(fps=fps, views=index_views())
    frames: list[np.ndarray] = []
    cpu = media_s = 0.0
    for p in paths:
        c0 = time.process_time()
        m = embed_media(str(p), embedder, SamplingSettings(**base))
        cpu += time.process_time() - c0
        media_s += float(m.duration)
        embed_media(
            str(p),
            embedder,
            SamplingSettings(**base, sample_short_side=sample_short_side),
            on_sample=lambda t, rgb: frames.append(rgb.copy()),
        )
    return frames, {
        "samples": len(frames),
        "media_s": media_s,
        "frames_only_cpu_ms_per_sample": 1000 * cpu / len(frames),
    }


def profile(frames: list[np.ndarray], detectors: dict, encoders: dict, cfg) -> dict:
    from frameseek.modality.faces import FaceModels
    from frameseek.pipeline.faces import detect_faces

    out: dict = {}
    found_by: dict[str, list] = {}
    for name, det in detectors.items():
        ms, faces = 0.0, []
        for rgb in frames:
            t, boxes = _cpu_ms(detect_faces, det, rgb, cfg.detect_short_side)
            ms += t
            faces.append([b for b in boxes if min(b.x1 - b.x0, b.y1 - b.y0) >= cfg.min_face_px])
        found_by[name] = faces
        out[f"detect {name}"] = {"ms_per_sample": ms / len(frames), "faces": sum(map(len, faces))}
    # the faces the configured detector finds are the ones every encoder is timed on
    faces = found_by[cfg.detector]
    n_faces = max(1, sum(map(len, faces)))
    for name, enc in encoders.items():
        if hasattr(enc, "landmarks"):
            ms = sum(_cpu_ms(enc.landmarks, rgb, b)[0] for rgb, bs in zip(frames, faces) for b in bs)
            out[f"landmarks {name}"] = {"ms_per_face": ms / n_faces}
        ms = sum(_cpu_ms(enc.encode, rgb, [b])[0] for rgb, bs in zip(frames, faces) for b in bs)
        out[f"encode {name}, one call per face"] = {"ms_per_face": ms / n_faces}
        ms = sum(_cpu_ms(enc.encode, rgb, bs)[0] for rgb, bs in zip(frames, faces) if bs)
        out[f"encode {name}, one call per sample"] = {"ms_per_face": ms / n_faces}
    collector = FaceModels(cfg).collector()
    ms = sum(_cpu_ms(collector, float(i), rgb)[0] for i, rgb in enumerate(frames))
    out["collector (detect + embed as ingest does)"] = {
        "ms_per_sample": ms / len(frames),
        "faces": len(collector.result()),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fps", type=int, default=25, help="frame rate of the composite videos")
    ap.add_argument("--sample-fps", type=float, default=1.0, help="sampling rate (the target's 1 fps)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    from frameseek.config import load_settings
    from frameseek.embed.face_detectors import DETECTORS, load_detector
    from frameseek.embed.faces import DlibResNetEncoder

    cfg = load_settings().faces
    idents = load_identities()
    work = Path(tempfile.mkdtemp(prefix="faces-profile-"))
    try:
        paths = []
        for k in range(a.videos):
            apps = plan([2 * k, 2 * k + 2], a.seconds, seed=a.seed + k)
            paths.append(work / f"composite{k}.mp4")
            render(paths[-1], idents, apps, a.seconds, FOOTAGE[k % len(FOOTAGE)], fps=a.fps)
        frames, base = sampled_frames(paths, cfg.sample_short_side, a.sample_fps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from frameseek.modality.faces import FaceModels

    min_face = FaceModels(cfg).min_face_detected()
    detectors = {d: load_detector(d, cfg.upsample, min_face) for d in DETECTORS if d != "mmod"}
    stages = profile(frames, detectors, {"dlib": DlibResNetEncoder()}, cfg)
    result = {"config": cfg.model_dump(), **base, "stages": stages}
    print(f"{base['samples']} samples of {base['media_s']:.0f} s of 720p at {a.sample_fps:g} fps")
    print(f"faces settings {cfg.model_dump()}")
    print(f"frames-only pipeline: {base['frames_only_cpu_ms_per_sample']:.1f} ms CPU per sample")
    print(f"{'stage':<48}{'ms/sample':>10}{'ms/face':>10}{'faces':>7}")
    for k, v in stages.items():
        print(
            f"{k:<48}{v.get('ms_per_sample', float('nan')):>10.1f}{v.get('ms_per_face', float('nan')):>10.1f}"
            f"{v.get('faces', ''):>7}"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
