"""The face models and the face pipeline on real photos (opencv-doc), without a server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from frameseek.embed.faces import LANDMARKS_5, DlibResNetEncoder, FaceBox, HogDetector, models_dir
from frameseek.modality.faces import DEFAULT_MIN_SCORE, MATCH_DISTANCE, score
from frameseek.pipeline.faces import FaceCollector, FaceSet, TrackSettings, link_tracks, query_faces

HTML = "/usr/share/doc/opencv-doc/opencv4/html/"


@pytest.fixture(scope="module")
def models():
    return HogDetector(1), DlibResNetEncoder()


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(HTML + name).convert("RGB"))


def test_weights_are_the_5_point_model_never_the_68_point_one(models):
    assert (models_dir() / LANDMARKS_5).is_file()
    _, encoder = models
    rgb = _photo("example.jpg")
    face = models[0].detect(rgb)[0]
    assert encoder.landmarks(rgb, face).shape == (5, 2)


def test_same_person_is_near_and_different_people_are_far(models):
    detector, encoder = models
    # example.jpg: three frames of one sitter; 230501201_1.jpg and 227943776_1.jpg: two other men
    boxes, same = query_faces(detector, encoder, _photo("example.jpg"))
    assert len(boxes) == 3
    _, a = query_faces(detector, encoder, _photo("230501201_1.jpg"))
    _, b = query_faces(detector, encoder, _photo("227943776_1.jpg"))
    within = [np.linalg.norm(same[i] - same[j]) for i in range(3) for j in range(i + 1, 3)]
    across = [np.linalg.norm(x - y) for x, y in ((same[0], a[0]), (same[0], b[0]), (a[0], b[0]))]
    assert max(within) < MATCH_DISTANCE < min(across)
    assert score(max(within)) > DEFAULT_MIN_SCORE > score(min(across))


def test_no_face_in_a_flat_image(models):
    boxes, vectors = query_faces(*models, np.full((200, 300, 3), 90, np.uint8))
    assert boxes == [] and vectors.shape == (0, 128)


def test_collector_links_a_still_face_into_one_track_and_reuses_its_vector(models):
    detector, encoder = models
    rgb = _photo("example.jpg")
    calls = []

    class Counting:
        name, dim, metric = encoder.name, encoder.dim, encoder.metric

        def encode(self, img, boxes):
            calls.append(len(boxes))
            return encoder.encode(img, boxes)

    collector = FaceCollector(detector, Counting(), reembed_every=3)
    for t in range(6):
        collector(float(t), rgb)
    fs = collector.result()
    assert len(fs) == 18  # three faces on six samples
    assert len(np.unique(fs.tracks)) == 3  # one track per face across the samples
    assert sum(calls) == 6  # each face embedded on samples 0 and 3 only
    assert fs.intervals(int(fs.tracks[0]), 1.0) == (0.0, 6.0)


def test_tracks_split_by_a_gap_and_by_identity():
    v = np.zeros((4, 128), np.float32)
    v[3, 0] = 1.0  # far from the others
    boxes = np.array([[0.1, 0.1, 0.3, 0.3]] * 4, np.float32)
    times = np.array([0.0, 1.0, 5.0, 6.0])
    tracks = link_tracks(times, v, boxes, TrackSettings(max_gap_s=2.5))
    assert tracks.tolist() == [0, 0, 1, 2]  # a 4 s gap ends a track; a different face is another


def test_payload_round_trip():
    fs = FaceSet(
        np.array([0.0, 1.0]),
        np.ones((2, 128), np.float32),
        np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32),
        np.array([1.5, 0.7], np.float32),
        np.array([0, 0], np.int32),
    )
    back = FaceSet.from_stored(fs.times, fs.vectors, fs.payload())
    assert np.array_equal(back.boxes, fs.boxes) and back.tracks.tolist() == [0, 0]
    with pytest.raises(ValueError):
        FaceSet.from_stored(fs.times[:1], None, fs.payload())


def test_chosen_box_picks_the_face_inside_it(models):
    detector, encoder = models
    rgb = _photo("example.jpg")
    found = sorted(detector.detect(rgb), key=lambda b: b.x0)
    right = FaceBox(rgb.shape[1] * 2 / 3, 0, rgb.shape[1], rgb.shape[0])
    boxes, vectors = query_faces(detector, encoder, rgb, right)
    assert len(boxes) == 1 and boxes[0].x0 == found[-1].x0


def test_a_face_cropped_tight_to_the_border_is_found(models):
    detector, encoder = models
    rgb = _photo("227943776_1.jpg")
    (face,) = detector.detect(rgb)
    dw, dh = 0.15 * (face.x1 - face.x0), 0.15 * (face.y1 - face.y0)  # inside the face box
    tight = np.ascontiguousarray(rgb[int(face.y0 + dh) : int(face.y1 - dh), int(face.x0 + dw) : int(face.x1 - dw)])
    assert detector.detect(tight) == []  # no margin around the face: HOG's window does not fit
    boxes, vectors = query_faces(detector, encoder, tight, short_side=720)
    assert len(boxes) == 1 and vectors.shape == (1, 128)
    assert 0 <= boxes[0].x0 < boxes[0].x1 <= tight.shape[1]
