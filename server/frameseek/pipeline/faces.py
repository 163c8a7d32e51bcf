"""Sampled frames -> faces: detect, align + embed, and link into tracks.

`FaceCollector` rides on the frame pipeline (`embed_media(on_sample=collector)`): every sampled
frame that goes on to be embedded (blank frames are not) is handed to it on the decode thread,
where detection and face embedding overlap the frame model's inference on the calling thread.
It detects on the frame scaled to `detect_short_side` (the detector's cost grows with the pixel
count; the boxes are scaled back), embeds every face with the encoder (5-point alignment + 128-d
ResNet for dlib's), and links faces of consecutive samples into tracks (`link_tracks`), so that a
person's presence becomes intervals (`FaceSet.intervals`), not dots.

`FaceSet` is what the face modality stores for a video (storage `ModalityData`: times + vectors,
the rest in the payload: boxes normalised to the frame, detector scores, track ids).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..embed.faces import FaceBox, FaceDetector, FaceEncoder

#: Payload layout of a FaceSet (one record per face, little-endian), after a 2-byte version tag.
PAYLOAD_VERSION = b"F1"
PAYLOAD_DTYPE = np.dtype([("box", "<f4", (4,)), ("score", "<f4"), ("track", "<i4")])


@dataclass(frozen=True)
class TrackSettings:
    """When two faces of nearby samples are the same appearance (one track)."""

    # Longest gap (s) between two faces of one track: about two sampling periods at 1 fps, so a
    # face the detector misses on one sample does not split the track.
    max_gap_s: float = 2.5
    # Faces closer than this (L2 between descriptors) continue a track wherever they are in the
    # frame; dlib's published same-person threshold is 0.6, tracks use a stricter one.
    link_distance: float = 0.5
    # ... and faces whose boxes overlap at least this much (IoU) continue it up to `max_distance`
    # (the same face moving a little, under blur or a lighting change).
    link_iou: float = 0.3
    max_distance: float = 0.6


@dataclass
class FaceSet:
    """The faces of one video (or image), in time order."""

    times: np.ndarray  # float64[n] seconds
    vectors: np.ndarray  # float32[n, dim]
    boxes: np.ndarray  # float32[n, 4] x0, y0, x1, y1 as fractions of the frame's width / height
    scores: np.ndarray  # float32[n] detector confidence
    tracks: np.ndarray  # int32[n] track id within the video (0..)

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @classmethod
    def empty(cls, dim: int) -> FaceSet:
        return cls(
            np.zeros(0, np.float64),
            np.zeros((0, dim), np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
        )

    def payload(self) -> bytes:
        rec = np.zeros(len(self), PAYLOAD_DTYPE)
        rec["box"], rec["score"], rec["track"] = self.boxes, self.scores, self.tracks
        return PAYLOAD_VERSION + rec.tobytes()

    @classmethod
    def from_stored(cls, times: np.ndarray, vectors: np.ndarray | None, payload: bytes) -> FaceSet:
        if payload[:2] != PAYLOAD_VERSION:
            raise ValueError(f"unknown face payload version {payload[:2]!r}")
        rec = np.frombuffer(payload, PAYLOAD_DTYPE, offset=2)
        if len(rec) != len(times):
            raise ValueError(f"face payload holds {len(rec)} faces for {len(times)} times")
        vecs = np.zeros((len(times), 0), np.float32) if vectors is None else np.asarray(vectors, np.float32)
        return cls(
            np.asarray(times, np.float64),
            vecs,
            rec["box"].astype(np.float32),
            rec["score"].astype(np.float32),
            rec["track"].astype(np.int32),
        )

    def intervals(self, track: int, period: float) -> tuple[float, float]:
        """(start, end) seconds of one track: its first face to its last plus one sampling period
        (a face seen on one sample at 1 fps is on screen for about that second)."""
        t = self.times[self.tracks == track]
        return float(t.min()), float(t.max()) + period


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a[n, 4] against b[m, 4] -> [n, m]."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def _covered(face: FaceBox, region: FaceBox) -> float:
    """The fraction of `face`'s area inside `region`."""
    w = max(0.0, min(face.x1, region.x1) - max(face.x0, region.x0))
    h = max(0.0, min(face.y1, region.y1) - max(face.y0, region.y0))
    return w * h / max(face.area, 1e-12)


def link_tracks(times: np.ndarray, vectors: np.ndarray, boxes: np.ndarray, settings: TrackSettings) -> np.ndarray:
    """Track ids (int32[n], 0.. in order of first appearance) for faces in time order.

    Each face continues the open track whose last face is within `max_gap_s` and is most alike:
    linked when their descriptors are within `link_distance`, or within `max_distance` with boxes
    overlapping by `link_iou`. Greedy by distance, one face per track per sample (two people side
    by side stay two tracks)."""
    n = len(times)
    tracks = np.full(n, -1, np.int32)
    last: list[int] = []  # per track: index of its latest face
    i = 0
    while i < n:
        j = i
        while j < n and times[j] == times[i]:
            j += 1
        frame = np.arange(i, j)
        open_tracks = [k for k, f in enumerate(last) if times[i] - times[f] <= settings.max_gap_s + 1e-9]
        if open_tracks:
            prev = np.asarray([last[k] for k in open_tracks])
            dist = np.linalg.norm(vectors[frame, None, :] - vectors[None, prev, :], axis=2)
            iou = box_iou(boxes[frame], boxes[prev])
            ok = (dist <= settings.link_distance) | ((iou >= settings.link_iou) & (dist <= settings.max_distance))
            pairs = sorted((dist[a, b], a, b) for a, b in zip(*np.nonzero(ok)))
            used_f, used_t = set(), set()
            for _, a, b in pairs:
                if a in used_f or b in used_t:
                    continue
                used_f.add(a)
                used_t.add(b)
                tracks[frame[a]] = open_tracks[b]
                last[open_tracks[b]] = int(frame[a])
        for a in frame:
            if tracks[a] < 0:
                tracks[a] = len(last)
                last.append(int(a))
        i = j
    return tracks


@dataclass
class FaceCollector:
    """`embed_media`'s on_sample for the face modality (module docstring). Call it with every
    sampled frame; `result()` gives the video's FaceSet."""

    detector: FaceDetector
    encoder: FaceEncoder
    detect_short_side: int = 360
    min_face_px: int = 20  # faces smaller than this (in the frame as sampled) are dropped
    max_faces_per_frame: int = 32
    tracking: TrackSettings = field(default_factory=TrackSettings)
    # A face that stays put (box IoU >= `still_iou` with a face of the previous sample) keeps that
    # face's vector for up to `reembed_every` - 1 samples instead of being embedded again: the
    # encoder is the largest cost per face (~100 ms of CPU), and a face that has not moved has
    # not changed identity. 1 = embed every face.
    reembed_every: int = 3
    still_iou: float = 0.6
    _rows: list[tuple[float, np.ndarray, np.ndarray, float]] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _previous: list[tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list, init=False)

    def __call__(self, t: float, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        found = detect_faces(self.detector, rgb, self.detect_short_side)
        found = [b for b in found if min(b.x1 - b.x0, b.y1 - b.y0) >= self.min_face_px][: self.max_faces_per_frame]
        scale = np.array([w, h, w, h], np.float32)
        boxes = [np.clip(b.as_array() / scale, 0.0, 1.0) for b in found]
        with self._lock:
            previous = self._previous
            vecs: list[np.ndarray | None] = [None] * len(found)
            ages = [0] * len(found)
            if previous and found and self.reembed_every > 1:
                iou = box_iou(np.stack(boxes), np.stack([p[0] for p in previous]))
                for i in range(len(found)):
                    j = int(iou[i].argmax())
                    if iou[i, j] >= self.still_iou and previous[j][2] + 1 < self.reembed_every:
                        vecs[i], ages[i] = previous[j][1], previous[j][2] + 1
            todo = [i for i, v in enumerate(vecs) if v is None]
            if todo:
                for i, v in zip(todo, self.encoder.encode(rgb, [found[i] for i in todo])):
                    vecs[i] = v
            self._previous = [(b, v, a) for b, v, a in zip(boxes, vecs, ages)]
            for b, v, box in zip(found, vecs, boxes):
                self._rows.append((float(t), v, box, b.score))

    def result(self) -> FaceSet:
        with self._lock:
            rows = sorted(self._rows, key=lambda r: r[0])  # stable: detector order within a sample
        if not rows:
            return FaceSet.empty(int(self.encoder.dim))
        times = np.array([r[0] for r in rows], np.float64)
        vectors = np.stack([r[1] for r in rows]).astype(np.float32)
        boxes = np.stack([r[2] for r in rows]).astype(np.float32)
        scores = np.array([r[3] for r in rows], np.float32)
        return FaceSet(times, vectors, boxes, scores, link_tracks(times, vectors, boxes, self.tracking))


def chain_samples(*callbacks):
    """One on_sample callback that calls each of `callbacks` (None entries skipped) in order."""
    live = [c for c in callbacks if c is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def both(t: float, rgb: np.ndarray) -> None:
        for c in live:
            c(t, rgb)

    return both


def detect_faces(detector: FaceDetector, rgb: np.ndarray, short_side: int | None) -> list[FaceBox]:
    """Faces of an image in its own pixel coordinates, detected on a copy scaled down to
    `short_side` (None, or an image already that small: as it is)."""
    h, w = rgb.shape[:2]
    f = 1.0 if short_side is None else min(1.0, short_side / min(h, w))
    if f >= 1.0:
        return detector.detect(rgb)
    small = Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR
    )
    return [b.scaled(1.0 / f) for b in detector.detect(np.asarray(small))]


def query_faces(
    detector: FaceDetector,
    encoder: FaceEncoder,
    rgb: np.ndarray,
    box: FaceBox | None = None,
    short_side: int | None = None,
) -> tuple[list[FaceBox], np.ndarray]:
    """The faces of a query photo and their vectors: every face found, or, with `box`, the found
    face that overlaps it most (the box itself when none overlaps: the caller knows where it is)."""
    found = detect_faces(detector, rgb, short_side)
    if not found:
        h, w = rgb.shape[:2]
        # a face cropped tight to the photo's border (a profile picture, a cut-out) leaves the
        # detector's window no margin: one more look with a border of repeated edge pixels
        # (a query is one image, so the second pass is cheap)
        ph, pw = max(1, h // 4), max(1, w // 4)
        padded = np.pad(rgb, ((ph, ph), (pw, pw), (0, 0)), mode="edge")
        found = [
            FaceBox(max(0.0, b.x0 - pw), max(0.0, b.y0 - ph), min(w, b.x1 - pw), min(h, b.y1 - ph), b.score)
            for b in detect_faces(detector, padded, short_side)
        ]
        found = [b for b in found if b.x1 > b.x0 and b.y1 > b.y0]
    if box is not None:
        inside = [_covered(b, box) for b in found]
        # the detected face most inside the box (a loose box around a face, or a region of the
        # photo with one face in it); none: the box is taken as the face
        found = [found[int(np.argmax(inside))]] if inside and max(inside) >= 0.5 else [box]
    return found, encoder.encode(rgb, found)


__all__ = [
    "FaceCollector",
    "chain_samples",
    "FaceSet",
    "TrackSettings",
    "box_iou",
    "detect_faces",
    "link_tracks",
    "query_faces",
]
