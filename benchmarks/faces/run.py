"""Face harness: detection, tracks, search and speed on real faces over real footage.

    python -m benchmarks.faces.run [--videos 4] [--seconds 20] [--detector-frames 6]

Media: benchmarks/faces/media.py (opencv-doc faces composited over vtest.avi / Megamind.avi at
720p during known intervals, with scale, position, lighting, blur, occlusion and x264 changes).
Half of the identities appear in the library (each in one video, or as a photo), the other half
never do: their queries measure false positives.

1. Detectors, side by side on the same sampled frames (720p, scaled to the server's
   faces.detect_short_side): recall (IoU >= 0.3 with a placed face), false detections per frame,
   ms per frame -- dlib HOG at upsample 0 and 1, dlib MMOD (CNN) on the first frames only.
2. The ingest pipeline itself (`embed_media` + `pipeline.faces.FaceCollector`, the server's
   code), frames-only beside faces-on on the same videos: x realtime at 1 fps, faces/s,
   detection recall and false detections, and track fragmentation.
3. A real server (gRPC on loopback): ingest into a faces collection, SearchByFace with every
   identity's query photo: recall@1, false positives of the people not in the library, interval
   IoU of the returned appearances with the truth, and the scores on both sides of the threshold.

Prints a table and writes benchmarks/results/faces.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.faces.media import FOOTAGE, load_identities, plan, render

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "faces.json"


def _faces_settings():
    """The server's faces settings, FRAMESEEK_FACES__* included (the harness's pipeline and the
    server it starts read the same), e.g. FRAMESEEK_FACES__UPSAMPLE=0 to measure that trade-off."""
    from frameseek.config import load_settings

    return load_settings().faces


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _truth_at(truth: dict, t: float, fps: int) -> list[tuple[int, tuple, str]]:
    """The faces placed on the frame shown at t: (identity, box in pixels, effect)."""
    out = []
    for ident, rows in truth["boxes"].items():
        for tt, box, effect in rows:
            if abs(tt - t) < 0.5 / fps:
                out.append((ident, box, effect))
    return out


def _match(found: np.ndarray, truth: list[np.ndarray]) -> tuple[int, int]:
    """(true faces found, false detections) with IoU >= 0.3, one detection per true face."""
    from frameseek.pipeline.faces import box_iou

    if not len(found):
        return 0, 0
    if not truth:
        return 0, len(found)
    iou = box_iou(np.asarray(truth, np.float32), np.asarray(found, np.float32))
    hit_t, used = 0, set()
    for i in range(len(truth)):
        j = int(iou[i].argmax())
        if iou[i, j] >= 0.3 and j not in used:
            used.add(j)
            hit_t += 1
    return hit_t, len(found) - len(used)


def _interval_iou(a: list[tuple[float, float]], b: list[tuple[float, float]], step: float = 0.05) -> float:
    if not a or not b:
        return 0.0
    end = max(e for _, e in a + b)
    t = np.arange(0.0, end + step, step)
    ma = np.zeros(len(t), bool)
    mb = np.zeros(len(t), bool)
    for s, e in a:
        ma |= (t >= s) & (t < e)
    for s, e in b:
        mb |= (t >= s) & (t < e)
    return float((ma & mb).sum() / max(1, (ma | mb).sum()))


def detectors(frames: list[tuple[np.ndarray, list]], mmod_frames: int, cfg) -> list[dict]:
    from frameseek.embed.faces import HogDetector, MmodDetector
    from frameseek.embed.faces_mtcnn import MtcnnDetector
    from frameseek.modality.faces import FaceModels
    from frameseek.pipeline.faces import detect_faces

    short_side = cfg.detect_short_side
    min_face = FaceModels(cfg).min_face_detected()
    rows = []
    candidates = (
        (HogDetector(0), len(frames), "upsample 0"),
        (HogDetector(1), len(frames), "upsample 1"),
        (MtcnnDetector(min_face), len(frames), f"min face {min_face}"),
        (MtcnnDetector(round(min_face * 4 / 3)), len(frames), f"min face {round(min_face * 4 / 3)}"),
        (MmodDetector(0), mmod_frames, "upsample 0"),
    )
    for det, n, how in candidates:
        found = miss = false = 0
        total = 0
        t0 = time.process_time()
        for rgb, truth in frames[:n]:
            boxes = [b.as_array() for b in detect_faces(det, rgb, short_side)]
            h, f = _match(np.asarray(boxes).reshape(-1, 4), [np.asarray(b, np.float32) for _, b, _ in truth])
            found, false, total = found + h, false + f, total + len(truth)
        cpu = time.process_time() - t0
        miss = total - found
        rows.append(
            {
                "detector": f"{det.name} {how}",
                "frames": n,
                "faces": total,
                "recall": found / max(1, total),
                "missed": miss,
                "false_per_frame": false / max(1, n),
                "cpu_ms_per_frame": 1000 * cpu / max(1, n),
            }
        )
    return rows


def pipeline(videos: list[dict], keep: int, sample_fps: float) -> tuple[dict, list]:
    """Frames-only and faces-on ingest of the same videos with the server's pipeline code, both
    sampled at `sample_fps`."""
    FACES = _faces_settings()
    from frameseek.embed import EmbedderSettings, load_embedder
    from frameseek.modality.faces import FaceModels
    from frameseek.pipeline import SamplingSettings, embed_media, index_views
    from frameseek.pipeline.faces import chain_samples

    embedder = load_embedder(EmbedderSettings())
    models = FaceModels(FACES)
    models.get()
    kept: list[tuple[np.ndarray, list]] = []
    out = {"frames_only_s": 0.0, "faces_s": 0.0, "frames_only_cpu_s": 0.0, "faces_cpu_s": 0.0}
    out |= {"media_s": 0.0, "samples": 0, "faces": 0, "truth": 0, "found": 0, "false": 0}
    tracks_per_app = []
    by_effect: dict[str, list[int]] = {}
    for v in videos:
        fps = v["fps"]
        base = dict(fps=sample_fps, views=index_views())
        t0, c0 = time.perf_counter(), time.process_time()
        embed_media(str(v["path"]), embedder, SamplingSettings(**base))
        out["frames_only_s"] += time.perf_counter() - t0
        out["frames_only_cpu_s"] += time.process_time() - c0
        collector = models.collector()
        frames: list[tuple[float, np.ndarray]] = []

        def grab(t, rgb, frames=frames, truth=v["truth"], fps=fps):
            # a copy: the decoder may reuse the frame's buffer for the next sample
            if len(frames) < keep and _truth_at(truth, t, fps):
                frames.append((t, rgb.copy()))

        t0, c0 = time.perf_counter(), time.process_time()
        media = embed_media(
            str(v["path"]),
            embedder,
            SamplingSettings(**base, sample_short_side=FACES.sample_short_side),
            on_sample=chain_samples(collector, grab),
        )
        out["faces_s"] += time.perf_counter() - t0
        out["faces_cpu_s"] += time.process_time() - c0
        out["media_s"] += float(media.duration)
        fs = collector.result()
        out["samples"] += len(np.unique(media.timestamps))
        out["faces"] += len(fs)
        w, h = v["size"]
        for t in np.unique(media.timestamps):
            truth = _truth_at(v["truth"], float(t), fps)
            found = fs.boxes[fs.times == t] * np.array([w, h, w, h], np.float32)
            hit, false = _match(found, [np.asarray(b, np.float32) for _, b, _ in truth])
            out["truth"] += len(truth)
            out["found"] += hit
            out["false"] += false
            for _, b, effect in truth:  # recall per effect: was this face found?
                got, _ = _match(found, [np.asarray(b, np.float32)])
                tally = by_effect.setdefault(effect or "plain", [0, 0])
                tally[0] += got
                tally[1] += 1
        for t, rgb in frames:
            scale = rgb.shape[1] / w
            kept.append((rgb, [(i, tuple(np.asarray(b) * scale), e) for i, b, e in _truth_at(v["truth"], t, fps)]))
        # fragmentation: tracks per true appearance (1 = each appearance is one track), counting
        # the tracks of the faces found on that identity's placed box
        from frameseek.pipeline.faces import box_iou

        px = np.array([w, h, w, h], np.float32)
        for ident, spans in v["truth"]["intervals"].items():
            for s, e in spans:
                tracks = set()
                for i in np.nonzero((fs.times >= s) & (fs.times < e))[0]:
                    for k, b, _ in _truth_at(v["truth"], float(fs.times[i]), fps):
                        iou = box_iou((fs.boxes[i] * px)[None], np.asarray(b, np.float32)[None])[0, 0]
                        if k == ident and iou >= 0.3:
                            tracks.add(int(fs.tracks[i]))
                if tracks:
                    tracks_per_app.append(len(tracks))
    secs = out["media_s"]
    summary = {
        "media_seconds": secs,
        "sample_fps": sample_fps,
        "samples": out["samples"],
        # wall clock on this (shared) machine, and from CPU time on 2 cores (load-independent)
        "frames_only_x_realtime": secs / out["frames_only_s"],
        "faces_x_realtime": secs / out["faces_s"],
        "frames_only_x_realtime_2core_cpu": secs / (out["frames_only_cpu_s"] / 2),
        "faces_x_realtime_2core_cpu": secs / (out["faces_cpu_s"] / 2),
        "faces_per_cpu_s": out["faces"] / out["faces_cpu_s"],
        "detection_recall": out["found"] / max(1, out["truth"]),
        "false_detections": out["false"],
        "tracks_per_appearance": float(np.mean(tracks_per_app)) if tracks_per_app else 0.0,
        **{f"recall_{k}": f / n for k, (f, n) in sorted(by_effect.items())},
    }
    return summary, kept


def _clustering(people, videos: list[dict], where: dict[int, str], names: dict[str, str]) -> dict:
    """Purity and completeness of ListPeople against the truth: each appearance (a track) is
    labelled with the identity placed there (the truth interval it overlaps most; a photo's
    identity); purity = appearances in their person's majority identity, completeness =
    appearances in their identity's majority person."""
    by_key = {v["path"].name: v["truth"]["intervals"] for v in videos}
    photo_ident = {key: ident for ident, key in where.items() if key not in by_key}
    labels: list[tuple[str, int]] = []  # (person, identity)
    for p in people:
        for a in p.appearances:
            key = names.get(a.video, "")
            if key in by_key:
                best, ident = 0.0, -1
                for i, spans in by_key[key].items():
                    for s, e in spans:
                        ov = max(0.0, min(e, a.end_seconds) - max(s, a.start_seconds))
                        if ov > best:
                            best, ident = ov, i
            else:
                ident = photo_ident.get(key, -1)
            labels.append((p.name, ident))
    if not labels:
        return {"people": 0}
    from collections import Counter

    n = len(labels)
    purity = sum(Counter(i for q, i in labels if q == p).most_common(1)[0][1] for p in {q for q, _ in labels}) / n
    completeness = (
        sum(Counter(q for q, i in labels if i == ident).most_common(1)[0][1] for ident in {i for _, i in labels}) / n
    )
    return {
        "people": len({q for q, _ in labels}),
        "identities_listed": len({i for _, i in labels if i >= 0}),
        "clustering_purity": purity,
        "clustering_completeness": completeness,
    }


def search(videos: list[dict], photos: list[tuple[int, np.ndarray]], idents, strangers: list[int], work: Path) -> dict:
    from benchmarks.copydetect.server_check import start_server
    from frameseek.client import Client, FrameSeekError
    from frameseek.modality.faces import DEFAULT_MIN_SCORE

    no_face = 0

    def query(fs, ident: int, **kw) -> list:
        nonlocal no_face
        try:
            r = fs.search_by_face(_png(idents[ident].query), collection="people", **kw)
        except FrameSeekError as exc:
            if exc.reason != "NO_FACE":
                raise
            no_face += 1  # the detector finds no face in the query photo: a miss
            return []
        return sorted((h for res in r.results for h in res.hits), key=lambda h: -h.score)

    proc, address, log = start_server(work / "data")
    try:
        with Client(address, timeout=600) as fs:
            fs.wait_ready(120)
            fs.create_collection("people", faces=True)
            where: dict[int, str] = {}
            names: dict[str, str] = {}  # video resource name -> external key
            truth_iv: dict[int, list] = {}
            for v in videos:
                r = fs.ingest_video(v["path"], collection="people", external_key=v["path"].name)
                names[r.video.name] = v["path"].name
                for ident, spans in v["truth"]["intervals"].items():
                    where[ident] = v["path"].name
                    truth_iv[ident] = spans
            for ident, rgb in photos:
                p = work / f"photo{ident}.png"
                p.write_bytes(_png(rgb))
                r = fs.ingest_image(p, collection="people", external_key=p.name)
                names[r.video.name] = p.name
                where[ident] = p.name
            top1, ious, true_scores, stranger_hits, stranger_scores = 0, [], [], 0, []
            for ident, key in where.items():
                hits = query(fs, ident, max_matches_per_video=20)
                if hits and hits[0].video.external_key == key:
                    top1 += 1
                    true_scores.append(hits[0].score)
                    if ident in truth_iv:
                        got = [(a.start_seconds, a.end_seconds) for a in hits[0].appearances]
                        ious.append(_interval_iou(got, truth_iv[ident]))
            clusters = _clustering(fs.list_people("people"), videos, where, names)
            for ident in strangers:
                scores = [h.score for h in query(fs, ident, min_score=1e-6)]
                stranger_scores.append(max(scores, default=0.0))
                stranger_hits += any(s >= DEFAULT_MIN_SCORE for s in scores)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "library_queries": len(where),
        "recall_at_1": top1 / max(1, len(where)),
        "interval_iou_mean": float(np.mean(ious)) if ious else 0.0,
        "interval_iou_min": float(np.min(ious)) if ious else 0.0,
        "min_true_score": float(min(true_scores, default=0.0)),
        "stranger_queries": len(strangers),
        "stranger_false_positives": stranger_hits,
        "max_stranger_score": float(max(stranger_scores, default=0.0)),
        "other_photo_queries": sum(idents[i].query_is_other_photo for i in where),
        "queries_without_a_detected_face": no_face,
        **clusters,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=int, default=10, help="frame rate of the composite videos")
    ap.add_argument(
        "--sample-fps",
        type=float,
        default=1.0,
        help="sampling rate of the throughput rows (the target's 1 fps; new collections sample at "
        "sampling.default_fps)",
    )
    ap.add_argument("--detector-frames", type=int, default=4, help="frames the (slow) MMOD detector runs on")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    FACES = _faces_settings()

    idents = load_identities()
    n = len(idents)
    library = list(range(0, n, 2))  # every other identity is in the library
    strangers = [i for i in range(n) if i not in library]
    per_video = 2
    in_videos = library[: a.videos * per_video]
    in_photos = library[a.videos * per_video :]
    work = Path(tempfile.mkdtemp(prefix="faces-bench-"))
    try:
        videos = []
        for k in range(a.videos):
            chosen = in_videos[k * per_video : (k + 1) * per_video]
            apps = plan(chosen, a.seconds, seed=a.seed + k)
            path = work / f"composite{k}.mp4"
            truth = render(path, idents, apps, a.seconds, FOOTAGE[k % len(FOOTAGE)], fps=a.fps)
            videos.append({"path": path, "truth": truth, "fps": a.fps, "size": truth["size"]})
        t0 = time.perf_counter()
        pipe, frames = pipeline(videos, keep=15, sample_fps=a.sample_fps)
        t1 = time.perf_counter()
        dets = detectors(frames, a.detector_frames, FACES)
        t2 = time.perf_counter()
        photos = [(i, idents[i].crop) for i in in_photos]
        found = search(videos, photos, idents, strangers, work)
        print(f"phases: pipeline {t1 - t0:.0f} s, detectors {t2 - t1:.0f} s, server {time.perf_counter() - t2:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "config": vars(a) | {"out": str(a.out), "identities": n, "faces": FACES.model_dump()},
        "detectors": dets,
        "pipeline": pipe,
        "search": found,
    }
    print(f"{'detector':<22}{'frames':>7}{'faces':>7}{'recall':>8}{'false/frame':>12}{'cpu ms/frame':>14}")
    for d in dets:
        print(
            f"{d['detector']:<22}{d['frames']:>7}{d['faces']:>7}{d['recall']:>8.3f}"
            f"{d['false_per_frame']:>12.2f}{d['cpu_ms_per_frame']:>14.1f}"
        )
    print()
    for k, v in {**pipe, **found}.items():
        print(f"{k:<28}{v:>12.3f}" if isinstance(v, float) else f"{k:<28}{v:>12}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
