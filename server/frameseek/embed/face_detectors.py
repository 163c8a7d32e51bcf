"""Face detectors by name (the settings' faces.detector): dlib's HOG and MMOD (embed.faces) and
MTCNN on ONNX Runtime (embed.faces_mtcnn); benchmarks/faces measures them side by side."""

from __future__ import annotations

from .faces import FaceDetector, HogDetector, MmodDetector
from .faces_mtcnn import MtcnnDetector

#: Detector names accepted by `load_detector`.
DETECTORS = ("hog", "mmod", "mtcnn")


def load_detector(name: str, upsample: int = 1, min_face: int = 20) -> FaceDetector:
    """A detector by name; `upsample` for dlib's (HOG, MMOD), `min_face` (px, in the image the
    detector is given) for MTCNN's pyramid."""
    if name == "hog":
        return HogDetector(upsample)
    if name == "mmod":
        return MmodDetector(upsample)
    if name == "mtcnn":
        return MtcnnDetector(min_face)
    raise ValueError(f"unknown face detector {name!r}; one of {DETECTORS}")


__all__ = ["DETECTORS", "load_detector"]
