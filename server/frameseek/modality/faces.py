"""The face modality: faces detected on the sampled frames; matched as a person's appearances.

- extracts: every face on the frames the frame modality samples (`pipeline.faces.FaceCollector`
  on `embed_media`'s on_sample: one decode for both modalities), on frames sampled at
  `faces.sample_short_side` rather than the frame model's input size;
- embeds: the collection's face encoder (dlib's 5-point alignment + 128-d ResNet), one vector per
  face, linked into tracks across consecutive samples;
- indexes: the face vectors in the collection's "faces" index (storage extras: times, vectors,
  and boxes + scores + track ids in the payload), committed with the frame vectors; on when the
  collection was created with `faces` (collection_flag);
- aggregates: `appearances` -- nearest faces -> per video, per track: the interval the track
  covers, its best face (timestamp, box) and a calibrated score; videos by their best score.

Scores: dlib's descriptors are compared by L2 distance. The model's published rule is "same person
below 0.6" (99.38 % on LFW); on benchmarks/faces (30 real identities from opencv-doc, many of them
small faces of similar-looking people) same-person distances reached 0.41 and different people
came as close as 0.45, so 0.6 let 4.7 % of stranger pairs through. `score(d)` is a logistic with
0.5 at `MATCH_DISTANCE` (0.45, between the two) and width `SCORE_SLOPE`, and a search's default
threshold (`DEFAULT_MIN_SCORE` = 0.5) is that distance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import FACES, FacesConfig
from ..errors import failed_precondition
from ..ids import NO_ID, split_sample_ids
from ..pipeline.faces import FaceCollector, FaceSet, chain_samples, query_faces

NAME = "faces"
#: L2 distance at which dlib's ResNet calls two faces the same person (its published figure).
SAME_PERSON_DISTANCE = 0.6
#: The distance that scores 0.5, calibrated on benchmarks/faces (module docstring): stricter than
#: the published figure, which let strangers through on the harness.
MATCH_DISTANCE = 0.45
#: Width of the logistic around it: a same-person face at 0.35 scores ~0.97, a stranger at 0.5 ~0.16.
SCORE_SLOPE = 0.03
#: A search's threshold when the request names none: the model's own same-person rule.
DEFAULT_MIN_SCORE = 0.5
#: What the faces index's walks read (HnswIndex.walk_precision): the float32 vectors themselves.
#: The int8 copy that frame indexes walk costs a 128-d vector 192 more bytes (codes + scale + norm
#: in whole 64-byte lines, 38 % of the vector) and saves only 320 of the 512 bytes a visit reads;
#: without it a face vector takes 0.29 of a 512-d frame vector's memory instead of 0.36
#: (benchmarks/faces/README.md, bench_face_index).
FACE_INDEX_WALK = "float32"


def score(distance: np.ndarray | float) -> np.ndarray:
    """Calibrated score in (0, 1) of an L2 distance between face descriptors (module docstring)."""
    d = np.asarray(distance, np.float64)
    return 1.0 / (1.0 + np.exp((d - MATCH_DISTANCE) / SCORE_SLOPE))


@dataclass
class Appearance:
    """One track of a video that matched: when the person is on screen, and the best face."""

    track: int
    start: float
    end: float
    timestamp: float
    box: tuple[float, float, float, float]  # fractions of the frame
    score: float
    person: int = 0  # the person the track was assigned to (0: not yet assigned)
    person_name: str = ""


@dataclass
class FaceHit:
    video: int
    score: float
    appearances: list[Appearance]


class FaceModels:
    """The detector and encoder, loaded on first use (dlib's weights take ~1 s and ~100 MB):
    a server without face collections never loads them."""

    def __init__(self, cfg: FacesConfig = FACES):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._models: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        with self._lock:
            if self._models is None:
                from ..embed.face_detectors import load_detector
                from ..embed.faces import DlibResNetEncoder, FaceModelUnavailable

                try:
                    detector = load_detector(self.cfg.detector, self.cfg.upsample, self.min_face_detected())
                    self._models = (detector, DlibResNetEncoder())
                except FaceModelUnavailable as exc:
                    raise failed_precondition(
                        f"the face models could not be loaded on this server: {exc}", "MODEL_UNAVAILABLE"
                    ) from None
            return self._models

    def min_face_detected(self) -> int:
        """`min_face_px` (in the sampled frame) in the frame copy the detector runs on."""
        shrink = min(1.0, self.cfg.detect_short_side / self.cfg.sample_short_side)
        return max(12, round(self.cfg.min_face_px * shrink))

    def index_spec(self) -> dict:
        from ..embed.faces import DlibResNetEncoder

        return {
            "dimension": DlibResNetEncoder.dim,
            "metric": DlibResNetEncoder.metric,
            "encoder": DlibResNetEncoder.name,
            "walk_precision": FACE_INDEX_WALK,
        }

    def collector(self) -> FaceCollector:
        detector, encoder = self.get()
        return FaceCollector(
            detector,
            encoder,
            detect_short_side=self.cfg.detect_short_side,
            min_face_px=self.cfg.min_face_px,
            reembed_every=self.cfg.reembed_every,
        )


class FaceModality:
    """Faces (module docstring); `FACES_MODALITY` is the instance the service uses."""

    name = NAME
    collection_flag = NAME

    @staticmethod
    def appearances(
        ids: np.ndarray,
        distances: np.ndarray,
        faces_of: Any,
        period: float,
        min_score: float,
        k: int,
        max_appearances: int,
    ) -> list[FaceHit]:
        """Nearest faces of one or more query faces -> videos, best first.

        `ids`/`distances` [q, n]: item ids (frameseek.ids) and L2 distances from the faces index;
        `faces_of(video)` -> the video's FaceSet (None: deleted meanwhile). A hit's track stands
        for the whole track: its interval is the track's (first to last face + one `period`),
        its timestamp and box those of the track's face nearest to the query."""
        best: dict[tuple[int, int], tuple[float, int]] = {}  # (video, face index) -> (distance, query)
        valid = ids != NO_ID
        vids, items = split_sample_ids(np.where(valid, ids, 0))
        for qi, col in zip(*np.nonzero(valid)):
            key = (int(vids[qi, col]), int(items[qi, col]))
            d = float(distances[qi, col])
            if key not in best or d < best[key][0]:
                best[key] = (d, int(qi))
        per_video: dict[int, dict[int, Appearance]] = {}
        sets: dict[int, FaceSet | None] = {}
        for (vid, item), (d, _) in sorted(best.items(), key=lambda kv: kv[1][0]):
            s = float(score(d))
            if s < min_score:
                continue
            if vid not in sets:
                sets[vid] = faces_of(vid)
            fs = sets[vid]
            if fs is None or item >= len(fs):
                continue
            track = int(fs.tracks[item])
            tracks = per_video.setdefault(vid, {})
            if track in tracks:
                continue  # the track's nearest face came first
            start, end = fs.intervals(track, period)
            box = tuple(float(x) for x in fs.boxes[item])
            tracks[track] = Appearance(track, start, end, float(fs.times[item]), box, s)  # type: ignore[arg-type]
        hits = []
        for vid, tracks in per_video.items():
            apps = sorted(tracks.values(), key=lambda a: -a.score)[:max_appearances]
            hits.append(FaceHit(vid, apps[0].score, sorted(apps, key=lambda a: a.start)))
        hits.sort(key=lambda h: (-h.score, h.video))
        return hits[:k]


FACES_MODALITY = FaceModality()

__all__ = [
    "chain_samples",
    "query_faces",
    "DEFAULT_MIN_SCORE",
    "FACES_MODALITY",
    "MATCH_DISTANCE",
    "SAME_PERSON_DISTANCE",
    "SCORE_SLOPE",
    "Appearance",
    "FaceHit",
    "FaceModality",
    "FaceModels",
    "score",
]
