"""Copy-detection harness: frameseek (frameseek.matching) vs vPDQ on the same real-media pairs.

    python -m benchmarks.copydetect.run [--quick] [--per-transform N] [--seed S]

Builds (and caches under build/copydetect/) references from the opencv-doc videos and photo
slideshows, edited copy queries (benchmarks/copydetect/media.py), unrelated queries from a
disjoint photo pool, and title-card pairs; embeds everything with the server's pipeline
(the frame modality's index views for references -- whole frame + coarse twin -- and its clip
query views for queries: whole, mirrored, coarse, coarse mirrored; `frameseek.pipeline.views`);
indexes the references in a native FlatIndex; runs the server's copy search
(`frameseek.modality.frames.copy_search`: kNN -> twin mapping -> align -> refine, exactly what
SearchByVideo runs, over this FlatIndex) and vPDQ (ThreatExchange semantics) on every query;
prints a table per transform and writes benchmarks/results/copydetect.json.

Metrics (per transform; "unrelated pairs" = every (query, reference) pair that is not a copy):
- recall@thr: copies whose source is reported with score >= the default threshold.
- FP: unrelated pairs at/above threshold (counted over all queries, reported once).
- µAP (VSC22 descriptor track): average precision of all (query, reference) pairs ranked by
  score, over the transform's copy queries and all unrelated queries.
- loc err: median |predicted - true reference time| at the middle of the copied query interval,
  over detected copies.
- segAP (VSC22 matching track, simplified): one predicted box per (query, reference) match (the
  bounding box of its segments in query time x reference time), ranked by match score over the
  transform's copies and all unrelated queries; a prediction is correct when it is the first to
  cover its ground-truth copy with 2-D box IoU >= 0.5; AP over all ground-truth copies. (VSC22
  scores precision/recall by overlapping area instead of an IoU cut.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.copydetect import media as M
from benchmarks.copydetect.vpdq_baseline import vpdq_hash_file, vpdq_locate, vpdq_match
from frameseek import _native, matching
from frameseek.config import VIEWS
from frameseek.ids import sample_ids
from frameseek.modality import Purpose
from frameseek.modality.frames import FRAMES, copy_search
from frameseek.pipeline import COARSE, FULL, INDEX_COARSE_SCALE, QUERY_COARSE_SCALE, QUERY_FPS, REFERENCE_FPS

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "copydetect"
RESULTS = ROOT / "benchmarks" / "results" / "copydetect.json"


# -- media ------------------------------------------------------------------------------------


def build_media(
    seed: int, n_refs: int, per_transform: int, severity: bool = False
) -> tuple[list[M.Clip], list[M.Query]]:
    M.ensure_tools()
    sc = M.scenes(seed)
    n_show = max(2, min(n_refs - 4, len(sc) - 6))
    # one cache folder per (seed, size): which scene is a reference and which a distractor depends on both
    mdir = CACHE / "media" / f"seed{seed}_refs{n_show}"
    mdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    refs: list[M.Clip] = []
    for name, src, T in (("megamind", "Megamind.avi", 12), ("vtest", "vtest.avi", 16), ("tree", "tree.avi", 16)):
        p = mdir / f"ref_{name}.mp4"
        M.real_reference(p, M.DATA / src, T)
        refs.append(M.Clip(name, str(p), M.probe_duration(str(p))))
    # one scene per photo reference (3 shots: its images, or one image framed 3 ways, hard cuts);
    # the last reference scene goes to the title-card reference; the rest are distractor scenes
    ref_scenes, tc_scene, dis_scenes = sc[:n_show], sc[n_show], sc[n_show + 1 :]

    def shots(scene: list[Path], r: random.Random) -> list[Path]:
        return [scene[j % len(scene)] for j in range(3)] if len(scene) <= 3 else r.sample(scene, 3)

    for i, scene in enumerate(ref_scenes):
        p = mdir / f"ref_show{i:02d}_{seed}.mp4"
        M.slideshow(p, shots(scene, rng), seed * 1000 + i)
        refs.append(M.Clip(f"show{i:02d}", str(p), M.probe_duration(str(p))))
    # distractor clips from the other scenes: never indexed; unrelated queries and PiP backgrounds
    dis: list[Path] = []
    dpics = [p for scene in dis_scenes for p in scene]
    for i in range(max(4, n_show)):
        p = mdir / f"dis{i:02d}_{seed}.mp4"
        M.slideshow(p, rng.sample(dpics, 3), seed * 2000 + i)
        dis.append(p)
    tc_body = mdir / f"tcbody_{seed}.mp4"
    M.slideshow(tc_body, shots(tc_scene, rng), seed * 3000)
    card = mdir / "card_a.mp4"
    M.title_card(card, "FRAMESEEK PRESENTS", 3.0, "navy")
    card_b = mdir / "card_b.mp4"
    M.title_card(card_b, "A FILM BY NOBODY", 6.0, "darkred")
    logo = M.DATA / "opencv-logo.png"
    # title-card pair: an indexed reference starting with card_b, an unrelated query with the same card
    tc_ref = mdir / f"ref_tcard_{seed}.mp4"
    M.concat(tc_ref, [card_b, tc_body])
    refs.append(M.Clip("tcard", str(tc_ref), M.probe_duration(str(tc_ref))))

    queries: list[M.Query] = []
    # the natural copy: Megamind_bugy = Megamind's 270 frames at 30 fps instead of 23.976
    bugy = M.probe_duration(str(M.DATA / "Megamind_bugy.avi"))
    queries.append(
        M.Query(
            "megamind_bugy",
            str(M.DATA / "Megamind_bugy.avi"),
            "natural(bugy)",
            "megamind",
            0.0,
            11.261 / 9.0,
            0.0,
            min(bugy, 12 / (11.261 / 9.0)),
        )
    )
    qdir = mdir / "queries"
    qdir.mkdir(exist_ok=True)
    for tname in M.TRANSFORMS + (list(M.SEVERITY) if severity else []):
        t_i = M.TRANSFORMS.index(M.SEVERITY.get(tname, tname))  # a severity variant: its base's sources
        order = list(range(len(refs) - 1))  # never the title-card reference itself
        random.Random(seed * 31 + t_i).shuffle(order)
        for j in order[:per_transform]:
            r = refs[j]
            qs = seed * 100003 + t_i * 1009 + j
            other = dis[(j + t_i) % len(dis)]
            out = qdir / f"q_{tname.replace('@', '-')}{M.RECIPE_VERSION.get(tname, '')}_{r.name}_{seed}.mp4"
            off, sp, q0, q1 = M.make_query(out, tname, Path(r.path), r.duration, qs, other, logo, card)
            queries.append(M.Query(out.stem, str(out), tname, r.name, off, sp, q0, q1))
    # unrelated queries: distractor clips, some edited like the copies
    for i, d in enumerate(dis):
        tname = ["reencode", "crop", "hflip", "caption", "scale0.5"][i % 5]
        out = qdir / f"u_{tname}_{i:02d}_{seed}.mp4"
        M.make_query(out, tname, d, M.probe_duration(str(d)), seed + i, dis[(i + 1) % len(dis)], logo, card)
        queries.append(M.Query(out.stem, str(out), "unrelated", None))
    # unrelated queries sharing only a static title card with an indexed reference (tc_ref)
    for i in range(min(4, len(dis))):
        out = qdir / f"u_tcard_{i:02d}_{seed}.mp4"
        M.concat(out, [card_b, dis[-1 - i]])
        queries.append(M.Query(out.stem, str(out), "unrelated(title card)", None))
    return refs, queries


# -- embeddings (cached) ------------------------------------------------------------------------


def _key(path: str, tag: str) -> str:
    st = os.stat(path)
    return hashlib.sha1(f"{path}|{st.st_size}|{int(st.st_mtime)}|{tag}".encode()).hexdigest()[:16]


def _blank_filter_tag() -> str:
    """A short digest of the blank filter's settings: a change of them re-makes the embeddings."""
    from frameseek.media import BlankFilterSettings

    return "-blank" + hashlib.sha1(BlankFilterSettings().model_dump_json().encode()).hexdigest()[:8]


class Embeddings:
    def __init__(
        self,
        regions: str = "off",
        coarse_scale: float | None = None,
        query_fps: float = QUERY_FPS,
        deblock_sigma: float | None = None,
        index_coarse_scale: float | None = None,
    ) -> None:
        self._embedder = None
        self.index_coarse_scale = index_coarse_scale or None  # the references' coarse twins
        self.deblock_sigma = deblock_sigma or None  # SamplingSettings.deblock_sigma for queries
        self.query_fps = query_fps  # SamplingSettings.fps for queries
        self.regions = regions  # SamplingSettings.regions for queries
        self.coarse_scale = coarse_scale or None  # SamplingSettings.coarse_scale for queries
        (CACHE / "emb").mkdir(parents=True, exist_ok=True)
        (CACHE / "vpdq").mkdir(parents=True, exist_ok=True)

    def embedder(self):
        if self._embedder is None:
            from frameseek.embed import load_embedder

            self._embedder = load_embedder()
        return self._embedder

    def views_config(self):
        """The server's `views` settings group with this run's scales (--coarse-scale ...)."""
        return VIEWS.model_copy(
            update={
                "query_coarse_scale": self.coarse_scale or 0.0,
                "index_coarse_scale": self.index_coarse_scale or 0.0,
                "query_deblock_sigma": self.deblock_sigma or 0.0,
            }
        )

    def get(self, path: str, query: bool) -> dict:
        """{"t": sample times, "sets": {view name: vectors} (the server's order), "duration", timings,
        and for queries "kinds" (the regions embedded)}."""
        from frameseek.pipeline import SamplingSettings

        tag = (
            (
                "q-views"
                + ("" if self.regions == "off" else f"-regions-{self.regions}-2")
                + (f"-coarse{self.coarse_scale:.4f}" if self.coarse_scale else "")
            )
            if query
            else ("ref-views" + (f"-coarse{self.index_coarse_scale:.4f}" if self.index_coarse_scale else ""))
        )
        tag += _blank_filter_tag()  # which frames are embedded at all
        if query and self.query_fps != QUERY_FPS:
            tag += f"-fps{self.query_fps:g}"
        if query and self.deblock_sigma:
            tag += f"-deblock{self.deblock_sigma:g}"
        f = CACHE / "emb" / f"{_key(path, tag + self.embedder().name)}.npz"
        if not f.exists():
            purpose = Purpose.CLIP_QUERY if query else Purpose.INDEX
            views = FRAMES.views(purpose, self.views_config())
            s = (
                SamplingSettings.query(fps=self.query_fps, regions=self.regions, views=views)
                if query
                else SamplingSettings.reference(views=views)
            )
            m = FRAMES.embed(path, self.embedder(), s)
            np.savez(
                f,
                t=m.timestamps,
                names=np.array(list(m.sets), dtype="U32"),
                **{f"set_{k}": v for k, v in m.sets.items()},
                duration=np.float64(m.duration),
                embed_s=np.float64(m.stats["embed_s"]),
                regions_s=np.float64(m.stats.get("regions_s", 0.0)),
                wall_s=np.float64(m.stats["wall_s"]),
                kinds=np.array([k for k, _ in m.regions], dtype="U8"),
            )
        z = np.load(f)
        d = {k: z[k] for k in z.files if not k.startswith("set_") and k != "names"}
        d["sets"] = {str(n): z[f"set_{n}"] for n in z["names"]}
        return d

    def vpdq(self, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash bytes uint8[n, 32], quality int[n], timestamp s float[n]) at one hash per second."""
        f = CACHE / "vpdq" / f"{_key(path, 'vpdq2')}.npz"
        if f.exists():
            z = np.load(f)
            return z["h"], z["q"], z["t"]
        h, q, t = vpdq_hash_file(path, thread_count=1)
        np.savez(f, h=h, q=q, t=t)
        return h, q, t


# -- metrics ------------------------------------------------------------------------------------


def vpdq_rank(r: dict, vid: int) -> float:
    """vPDQ's score of the pair (query row r, reference vid) for ranking: query %, with compared %
    breaking ties."""
    return r["vp"][vid][0] + 1e-3 * r["vp"][vid][1]


def _pair_scores(rows: list[dict], ref_id: dict) -> tuple[list[float], list[float], list[bool]]:
    """Every (query, reference) pair of `rows`: frameseek's score, vPDQ's (query % with compared %
    breaking ties) and whether the pair is a copy -- the inputs of µAP."""
    fs, vp, labels = [], [], []
    for r in rows:
        src = ref_id.get(r["q"].source) if r["q"].source else None
        for vid in ref_id.values():
            m = r["fs"].get(vid)
            fs.append(m.score if m else 0.0)
            vp.append(vpdq_rank(r, vid))
            labels.append(vid == src)
    return fs, vp, labels


def average_precision(scores: list[float], labels: list[bool], n_pos: int | None = None) -> float:
    """AP of a ranked list (ties broken pessimistically: negatives first)."""
    n_pos = sum(labels) if n_pos is None else n_pos
    if n_pos == 0:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], labels[i]))
    tp = 0
    ap = 0.0
    for rank, i in enumerate(order, 1):
        if labels[i]:
            tp += 1
            ap += tp / rank
    return ap / n_pos


def _iou_box(a, b) -> float:
    (aq0, aq1, ar0, ar1), (bq0, bq1, br0, br1) = a, b
    iq = max(0.0, min(aq1, bq1) - max(aq0, bq0))
    ir = max(0.0, min(ar1, br1) - max(ar0, br0))
    inter = iq * ir
    ua = (aq1 - aq0) * (ar1 - ar0) + (bq1 - bq0) * (br1 - br0) - inter
    return inter / ua if ua > 0 else 0.0


def _match_box(m) -> tuple[float, float, float, float]:
    """A match's predicted copy as one box (query interval x reference interval): the bounding box
    of its segments, each frame counted as 1 s long (the query sampling interval)."""
    segs = m.segments
    return (
        min(s.query_start for s in segs),
        max(s.query_end for s in segs) + 1.0,
        min(min(s.ref_start, s.ref_end) for s in segs),
        max(max(s.ref_start, s.ref_end) + s.speed for s in segs),
    )


# -- main ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _References:
    """The indexed references as `frameseek.modality.ReferenceStore` (copy_search reads them)."""

    times: dict[int, np.ndarray]
    durations: dict[int, float]
    vectors: dict[int, np.ndarray]
    twins: dict[int, np.ndarray | None]

    def video(self, video: int) -> tuple[np.ndarray, float] | None:
        return (self.times[video], self.durations[video]) if video in self.times else None

    def dense(self, video: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        return (self.vectors[video], self.twins[video]) if video in self.vectors else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset (8 references, 2 queries per transform)")
    ap.add_argument("--per-transform", type=int, default=None, help="copy queries per transform (default 6)")
    ap.add_argument("--refs", type=int, default=None, help="number of references (default 24)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threshold", type=float, default=matching.COPY_THRESHOLD)
    ap.add_argument(
        "--min-similarity",
        type=float,
        default=matching.DEFAULT_MIN_SIMILARITY,
        help="vote floor (MatchSettings.min_similarity; calibration experiments)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--no-refine",
        action="store_true",
        help="skip matching.refine_alignment (the aligner's placement only; for comparison)",
    )
    ap.add_argument(
        "--severity",
        action="store_true",
        help="also the stronger re-encode / scale / frame-rate / brightness settings (media.SEVERITY); "
        "report in benchmarks/README.md, write with --out elsewhere",
    )
    ap.add_argument(
        "--regions",
        choices=["off", "auto", "on"],
        default="auto",
        help="query regions (SamplingSettings.regions; the server's default is auto)",
    )
    ap.add_argument(
        "--coarse-scale",
        type=float,
        default=QUERY_COARSE_SCALE,
        help="input scale of the coarse query view (SamplingSettings.coarse_scale; 0 = off; "
        "the server's default, Settings.query_coarse_scale, is 1/2)",
    )
    ap.add_argument(
        "--index-coarse-scale",
        type=float,
        default=INDEX_COARSE_SCALE,
        help="input scale of the references' coarse twins (the server's Settings.index_coarse_scale, "
        "default 1/2; 0 = references indexed without them)",
    )
    ap.add_argument(
        "--deblock-sigma",
        type=float,
        default=None,
        help="SamplingSettings.deblock_sigma of the queries (a blurred query view; default off)",
    )
    ap.add_argument(
        "--query-fps",
        type=float,
        default=QUERY_FPS,
        help="sampling rate of the query clips (the server's Settings.query_fps, default 1)",
    )
    ap.add_argument(
        "--speed-prior",
        type=float,
        default=None,
        help="MatchSettings.refine_speed_prior (experiments; default: the library's)",
    )
    a = ap.parse_args(argv)
    n_refs = a.refs or (8 if a.quick else 24)
    per_t = a.per_transform or (2 if a.quick else 6)
    settings = matching.MatchSettings(
        threshold=a.threshold,
        min_similarity=a.min_similarity,
        **({} if a.speed_prior is None else {"refine_speed_prior": a.speed_prior}),
    )
    os.nice(5)  # a shared 2-core machine: ffmpeg children are niced further in media._run
    t0 = time.perf_counter()
    refs, queries = build_media(a.seed, n_refs, per_t, a.severity)
    t_media = time.perf_counter() - t0
    print(f"media: {len(refs)} references, {len(queries)} queries ({t_media:.0f} s)", file=sys.stderr)

    E = Embeddings(a.regions, a.coarse_scale, a.query_fps, a.deblock_sigma, a.index_coarse_scale)
    t1 = time.perf_counter()
    index = _native.FlatIndex(512, "ip")
    ref_times: dict[int, np.ndarray] = {}
    ref_vectors: dict[int, np.ndarray] = {}
    ref_twins: dict[int, np.ndarray | None] = {}
    durations: dict[int, float] = {}
    ref_id = {r.name: i + 1 for i, r in enumerate(refs)}
    ref_hashes = {}
    for r in refs:
        e = E.get(r.path, query=False)
        vid = ref_id[r.name]
        vectors, twins = e["sets"][FULL], e["sets"].get(COARSE)  # FRAMES.index_vectors, as the server indexes
        if index.dim != vectors.shape[1]:
            index = _native.FlatIndex(vectors.shape[1], "ip")
        ids = sample_ids(vid, len(e["t"]))
        index.add(ids, np.ascontiguousarray(vectors, dtype=np.float32), groups=np.full(len(ids), vid, np.uint64))
        ref_twins[vid] = twins
        if twins is not None:  # as the server: vector n + i of a video is sample i's coarse twin
            index.add(
                sample_ids(vid, len(ids), first=len(ids)),
                np.ascontiguousarray(twins, dtype=np.float32),
                groups=np.full(len(ids), vid, np.uint64),
            )
        ref_times[vid] = e["t"]
        ref_vectors[vid] = vectors
        durations[vid] = float(e["duration"])
        ref_hashes[vid] = E.vpdq(r.path)
    print(f"references embedded/indexed: {len(index)} frames", file=sys.stderr)
    references = _References(ref_times, durations, ref_vectors, ref_twins)

    rows = []  # one per query: {query, transform, source, fs: {vid: (score, match)}, vp: {vid: (qp, cp)}}
    t_match = 0.0
    for i, q in enumerate(queries):
        e = E.get(q.path, query=True)
        qh, qq, qt = E.vpdq(q.path)
        tm = time.perf_counter()
        # the server's copy search (SearchByVideo), over this run's FlatIndex and references
        ms = copy_search(
            e["t"],
            list(e["sets"].values()),
            index,
            references,
            settings,
            max_candidates=len(refs),
            query_interval=1.0 / a.query_fps,
            ref_interval=1.0 / REFERENCE_FPS,
            refine_above=None if a.no_refine else settings.threshold,
        )
        t_match += time.perf_counter() - tm
        vp = {vid: vpdq_match(qh, qq, *ref_hashes[vid][:2]) for vid in ref_id.values()}
        vl = {vid: vpdq_locate(qh, qq, qt, *ref_hashes[vid]) for vid in ref_id.values()}
        rows.append(
            {
                "q": q,
                "fs": {m.video: m for m in ms},
                "vp": vp,
                "vl": vl,
                "frames": len(e["t"]),
                "regions": [str(k) for k in e.get("kinds", [])],
                "embed_s": float(e.get("embed_s", np.nan)),
                "regions_s": float(e.get("regions_s", np.nan)),
                "wall_s": float(e.get("wall_s", np.nan)),
            }
        )
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(queries)} queries", file=sys.stderr)
    t_all = time.perf_counter() - t1
    report = evaluate(rows, refs, ref_id, settings.threshold)
    report["timing"] = {
        "media_s": t_media,
        "embed_and_match_s": t_all,
        "matching_s": t_match,
        "matching_ms_per_query": 1000 * t_match / max(1, len(queries)),
    }
    inset: dict[str, list[int]] = {}
    for r in rows:
        c = inset.setdefault(r["q"].transform, [0, 0])
        c[0] += "inset" in r["regions"]
        c[1] += 1
    wall = [r["wall_s"] for r in rows if np.isfinite(r["wall_s"])]
    reg = [r["regions_s"] for r in rows if np.isfinite(r["regions_s"])]
    cost: dict[str, list[float]] = {}  # transform -> [query embed wall s, of which regions s]
    for r in rows:
        if np.isfinite(r["wall_s"]) and np.isfinite(r["regions_s"]):
            c = cost.setdefault(r["q"].transform, [0.0, 0.0])
            c[0] += r["wall_s"]
            c[1] += r["regions_s"]
    report["regions"] = {
        "mode": a.regions,
        "queries_with_inset": inset,
        "cost_by_transform": cost,
        "query_embed_wall_s": float(sum(wall)),
        "regions_s": float(sum(reg)),
        "timed_queries": len(wall),
    }
    report["config"] = {
        "seed": a.seed,
        "references": len(refs),
        "queries": len(queries),
        "per_transform": per_t,
        "threshold": settings.threshold,
        "regions": a.regions,
        "coarse_scale": a.coarse_scale,
        "index_coarse_scale": a.index_coarse_scale,
        "refine": not a.no_refine,
        "settings": asdict(settings),
        "index_frames": len(index),
    }
    print_table(report)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwrote {a.out}")
    return 0


def segment_ap(preds: list[tuple[float, bool, str]], n_gt: int) -> float:
    """Segment AP of (score, box covers its ground truth, query name) predictions: one true
    positive per ground truth -- later boxes on an already-found copy count as false."""
    seen, scores, labels = set(), [], []
    for s, ok, qn in sorted(preds, key=lambda x: -x[0]):
        hit = ok and qn not in seen
        if hit:
            seen.add(qn)
        scores.append(s)
        labels.append(hit)
    return average_precision(scores, labels, n_gt)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _share_within(xs: list[float], bound: float) -> float:
    return sum(x <= bound for x in xs) / len(xs) if xs else float("nan")


def evaluate(rows, refs, ref_id, thr) -> dict:
    name_of = {v: k for k, v in ref_id.items()}
    # global negatives: all pairs that are not copies
    neg_fs, neg_vp = [], []
    worst_fp = []
    for r in rows:
        src = ref_id.get(r["q"].source) if r["q"].source else None
        for vid in ref_id.values():
            if vid == src:
                continue
            m = r["fs"].get(vid)
            s = m.score if m else 0.0
            neg_fs.append(s)
            neg_vp.append(r["vp"][vid][0])
            if s >= thr:
                worst_fp.append((r["q"].name, name_of[vid], s))
    fp_fs = sum(s >= thr for s in neg_fs)
    fp_vp = sum(s >= 80.0 for s in neg_vp)
    by_t: dict[str, list] = {}
    for r in rows:
        if r["q"].source:
            by_t.setdefault(r["q"].transform, []).append(r)
    unrelated = [r for r in rows if not r["q"].source]
    per = {}
    for t, rs in by_t.items():
        det_fs = det_vp = 0
        loc, loc_vp = [], []
        seg_preds, seg_vp, n_gt = [], [], len(rs)
        for r in rs:
            q = r["q"]
            src = ref_id[q.source]
            m = r["fs"].get(src)
            tmid = 0.5 * (q.gt_q0 + q.gt_q1)
            true_ref = q.gt_offset + q.gt_speed * tmid
            if m and m.score >= thr:
                det_fs += 1
                seg = m.main
                # the segment that holds tmid (else the main one) gives the prediction
                for sg in m.segments:
                    if sg.query_start - 0.5 <= tmid <= sg.query_end + 0.5:
                        seg = sg
                        break
                loc.append(abs((seg.offset + seg.speed * tmid) - true_ref))
            if r["vp"][src][0] >= 80.0:
                det_vp += 1
                pl = r["vl"][src]
                loc_vp.append(abs(pl.offset + tmid - true_ref) if pl else float("inf"))
            gt_box = (q.gt_q0, q.gt_q1, q.gt_offset + q.gt_speed * q.gt_q0, q.gt_offset + q.gt_speed * q.gt_q1)
            for vid, mm in r["fs"].items():
                if mm.segments:
                    seg_preds.append((mm.score, vid == src and _iou_box(_match_box(mm), gt_box) >= 0.5, q.name))
            for vid, pl in r["vl"].items():
                if pl:
                    seg_vp.append((vpdq_rank(r, vid), vid == src and _iou_box(pl.box, gt_box) >= 0.5, q.name))
        pairs_fs, pairs_vp, lab = _pair_scores(rs + unrelated, ref_id)
        for r in unrelated:
            seg_preds += [(mm.score, False, r["q"].name) for mm in r["fs"].values() if mm.segments]
            seg_vp += [(vpdq_rank(r, vid), False, r["q"].name) for vid, pl in r["vl"].items() if pl]
        per[t] = {
            "n": len(rs),
            "recall_frameseek": det_fs / len(rs),
            "recall_vpdq": det_vp / len(rs),
            "uap_frameseek": average_precision(pairs_fs, lab),
            "uap_vpdq": average_precision(pairs_vp, lab),
            "median_loc_err_s": _median(loc),
            "loc_within_1s": _share_within(loc, 1.0),
            "segment_ap": segment_ap(seg_preds, n_gt),
            "median_loc_err_s_vpdq": _median(loc_vp),
            "loc_within_1s_vpdq": _share_within(loc_vp, 1.0),
            "segment_ap_vpdq": segment_ap(seg_vp, n_gt),
        }
    all_fs, all_vp, all_lab = _pair_scores(rows, ref_id)
    pos_scores = sorted(
        (r["fs"].get(ref_id[r["q"].source]).score if r["fs"].get(ref_id[r["q"].source]) else 0.0, r["q"].name)
        for r in rows
        if r["q"].source
    )
    return {
        "per_transform": per,
        "unrelated_pairs": len(neg_fs),
        "fp_frameseek": fp_fs,
        "fp_vpdq": fp_vp,
        "max_unrelated_score_frameseek": max(neg_fs) if neg_fs else 0.0,
        "max_unrelated_query_pct_vpdq": max(neg_vp) if neg_vp else 0.0,
        "false_positives": worst_fp[:20],
        "weakest_copies": pos_scores[:10],
        "median_copy_score_frameseek": statistics.median(s for s, _ in pos_scores) if pos_scores else 0.0,
        "copy_scores": {n: s for s, n in pos_scores},
        "uap_all_frameseek": average_precision(all_fs, all_lab),
        "uap_all_vpdq": average_precision(all_vp, all_lab),
        "n_unrelated_queries": len(unrelated),
    }


def print_table(rep: dict) -> None:
    thr = rep["config"]["threshold"]
    print(
        f"\nCopy detection: frameseek (threshold {thr}) vs vPDQ (query % >= 80), "
        f"{rep['config']['references']} references, {rep['config']['queries']} queries, "
        f"{rep['n_unrelated_queries']} unrelated queries\n"
    )
    print(
        "frameseek / vPDQ in every pair of columns; vPDQ's localisation is vpdq_locate (its frame matches' "
        "median offset), over the copies it detects\n"
    )
    print("| transform | n | recall | µAP | median loc err (s) | loc err ≤ 1 s | segment AP |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t, p in rep["per_transform"].items():
        print(
            f"| {t} | {p['n']} | {p['recall_frameseek']:.2f} / {p['recall_vpdq']:.2f} "
            f"| {p['uap_frameseek']:.3f} / {p['uap_vpdq']:.3f} "
            f"| {p['median_loc_err_s']:.2f} / {p['median_loc_err_s_vpdq']:.2f} "
            f"| {p['loc_within_1s']:.2f} / {p['loc_within_1s_vpdq']:.2f} "
            f"| {p['segment_ap']:.3f} / {p['segment_ap_vpdq']:.3f} |"
        )
    print(
        f"\nunrelated pairs: {rep['unrelated_pairs']}; false positives: frameseek {rep['fp_frameseek']}, "
        f"vPDQ {rep['fp_vpdq']}; max unrelated score frameseek {rep['max_unrelated_score_frameseek']:.3f}, "
        f"vPDQ max query % {rep['max_unrelated_query_pct_vpdq']:.1f}"
    )
    print(f"µAP over all pairs: frameseek {rep['uap_all_frameseek']:.3f}, vPDQ {rep['uap_all_vpdq']:.3f}")
    print(f"median copy score frameseek {rep['median_copy_score_frameseek']:.3f}")
    print(f"weakest copies (frameseek score): {[(round(s, 3), n) for s, n in rep['weakest_copies']]}")
    if rep["false_positives"]:
        print(f"false positives: {rep['false_positives']}")
    rg = rep.get("regions")
    if rg:
        ins = ", ".join(f"{t} {a}/{b}" for t, (a, b) in rg["queries_with_inset"].items() if a)
        print(f"query regions: {rg['mode']}; inset detected in: {ins or 'none'}")
        if rg["timed_queries"]:
            print(
                f"query embedding ({rg['timed_queries']} queries, timed when first embedded) "
                f"{rg['query_embed_wall_s']:.1f} s "
                f"wall, of which regions (inset detection + second pass + crop embeddings) {rg['regions_s']:.1f} s"
            )
            pc = rg["cost_by_transform"].get("pip")
            if pc and pc[0] > pc[1]:
                print(
                    f"  picture-in-picture queries: {pc[0]:.1f} s wall, regions {pc[1]:.1f} s "
                    f"({pc[0] / (pc[0] - pc[1]):.2f}x the cost without regions)"
                )
    tm = rep["timing"]
    print(
        f"time: media {tm['media_s']:.0f} s, embed+match {tm['embed_and_match_s']:.0f} s, "
        f"matching {tm['matching_ms_per_query']:.1f} ms/query"
    )


if __name__ == "__main__":
    raise SystemExit(main())
