"""The face harness's media: real faces composited over real footage during known intervals.

No multi-photo identity dataset can be downloaded here, so the harness is built from the real face
photos that Debian's opencv-doc package ships (its sample data and the photos in its HTML
documentation): each *identity* is one face crop (found by dlib's HOG detector on the photo,
taken with a margin so the head and some context come along). A few identities have a second,
different photo (another frame of the same sitter, another lighting of the Yale face), used as
their search query; the others are queried with a re-photographed version of the crop (rescaled,
mirrored, relit, re-compressed) -- an easier query, reported separately.

A composite video places identities over real footage (vtest.avi, Megamind.avi scaled to 720p)
during known intervals, with the face's scale and position drifting, lighting changing, blur, a
partial occlusion (a bar over the lower face) and x264 compression; `truth` records per video and
identity the intervals and the per-frame box.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

DOC = pathlib.Path("/usr/share/doc/opencv-doc")
HTML = DOC / "opencv4/html"
DATA = DOC / "examples/data"
FOOTAGE = (DATA / "vtest.avi", DATA / "Megamind.avi")

#: (photo, face index in HOG order or None = largest) -> one identity each; `QUERY_PHOTOS` gives
#: a different photo of the same person where opencv-doc has one.
SINGLE_PHOTOS = (
    "example.jpg",
    "230501201_1.jpg",
    "227943776_1.jpg",
    "julia_facedetect_sample.jpg",
    "lbp_yale.jpg",
    "ab.jpg",
    "resimg.jpg",
    "imgs.jpg",
)
GRID_PHOTO = "2.jpg"  # a grid of 22+ different people (~76 px faces)
QUERY_PHOTOS = {"example.jpg": ("example.jpg", 2), "lbp_yale.jpg": ("lbp_yale.jpg", 1)}


@dataclasses.dataclass
class Identity:
    name: str
    crop: np.ndarray  # RGB head crop (face + margin)
    face: tuple[float, float, float, float]  # the face inside the crop (pixels)
    query: np.ndarray  # a photo to search this person with
    query_is_other_photo: bool


def _detector():
    from frameseek.embed.faces import HogDetector

    return HogDetector(upsample=1)


def _crop(rgb: np.ndarray, box, margin: float = 0.6) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    h, w = rgb.shape[:2]
    bw, bh = box.x1 - box.x0, box.y1 - box.y0
    x0, y0 = max(0, int(box.x0 - margin * bw)), max(0, int(box.y0 - margin * bh))
    x1, y1 = min(w, int(box.x1 + margin * bw)), min(h, int(box.y1 + margin * bh))
    return rgb[y0:y1, x0:x1].copy(), (box.x0 - x0, box.y0 - y0, box.x1 - x0, box.y1 - y0)


def rephotograph(rgb: np.ndarray, seed: int) -> np.ndarray:
    """The same photo taken again: rescaled, mirrored, relit and JPEG-recompressed."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rgb)
    f = rng.uniform(0.7, 1.4)
    img = img.resize((max(8, int(img.width * f)), max(8, int(img.height * f))), Image.Resampling.BICUBIC)
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(50, 80)))
    return np.asarray(Image.open(buf).convert("RGB"))


def load_identities(limit: int | None = None) -> list[Identity]:
    det = _detector()
    out: list[Identity] = []

    def load(name: str) -> np.ndarray:
        return np.asarray(Image.open(HTML / name).convert("RGB"))

    for i, name in enumerate(SINGLE_PHOTOS):
        rgb = load(name)
        faces = sorted(det.detect(rgb), key=lambda b: b.x0)
        if not faces:
            continue
        face = max(faces, key=lambda b: b.area) if name not in QUERY_PHOTOS else faces[0]
        crop, inner = _crop(rgb, face)
        if name in QUERY_PHOTOS:
            qname, qi = QUERY_PHOTOS[name]
            qrgb = load(qname)
            qfaces = sorted(det.detect(qrgb), key=lambda b: b.x0)
            query, _ = _crop(qrgb, qfaces[min(qi, len(qfaces) - 1)])
            out.append(Identity(name, crop, inner, query, True))
        else:
            out.append(Identity(name, crop, inner, rephotograph(crop, seed=i), False))
    grid = load(GRID_PHOTO)
    for j, face in enumerate(sorted(det.detect(grid), key=lambda b: (round(b.y0 / 40), b.x0))):
        crop, inner = _crop(grid, face, margin=0.3)
        out.append(Identity(f"{GRID_PHOTO}#{j}", crop, inner, rephotograph(crop, seed=100 + j), False))
    return out[:limit] if limit else out


@dataclasses.dataclass
class Appearance:
    identity: int
    start: float
    end: float
    size0: float  # face width (px at 720p) at start and end
    size1: float
    x0: float  # face centre (fractions of the frame) at start and end
    y0: float
    x1: float
    y1: float
    effect: str  # "" | "dark" | "bright" | "blur" | "occlude"


def _footage(path: pathlib.Path, size: tuple[int, int], n: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as c:
        for fr in c.decode(video=0):
            frames.append(np.asarray(fr.to_image().resize(size, Image.Resampling.BILINEAR)))
            if len(frames) >= n:
                break
    return frames


def _place(frame: Image.Image, ident: Identity, a: Appearance, t: float) -> tuple[float, float, float, float]:
    u = (t - a.start) / max(1e-6, a.end - a.start)
    face_w = a.size0 + (a.size1 - a.size0) * u
    crop = Image.fromarray(ident.crop)
    fw = ident.face[2] - ident.face[0]
    s = face_w / fw
    crop = crop.resize((max(8, int(crop.width * s)), max(8, int(crop.height * s))), Image.Resampling.BILINEAR)
    if a.effect == "dark":
        crop = ImageEnhance.Brightness(crop).enhance(0.55)
    elif a.effect == "bright":
        crop = ImageEnhance.Brightness(crop).enhance(1.4)
    elif a.effect == "blur":
        crop = crop.filter(ImageFilter.GaussianBlur(radius=max(1.0, face_w / 80)))
    cx = (a.x0 + (a.x1 - a.x0) * u) * frame.width
    cy = (a.y0 + (a.y1 - a.y0) * u) * frame.height
    fx0, fy0 = ident.face[0] * s, ident.face[1] * s
    fx1, fy1 = ident.face[2] * s, ident.face[3] * s
    ox, oy = int(cx - (fx0 + fx1) / 2), int(cy - (fy0 + fy1) / 2)
    frame.paste(crop, (ox, oy))
    box = (ox + fx0, oy + fy0, ox + fx1, oy + fy1)
    if a.effect == "occlude":  # a bar over the lower third of the face (a hand, a microphone)
        arr = np.asarray(frame).copy()
        y = int(box[1] + 0.7 * (box[3] - box[1]))
        arr[max(0, y) : max(0, int(box[3])), max(0, int(box[0])) : max(0, int(box[2]))] = (90, 90, 90)
        frame.paste(Image.fromarray(arr))
    return box


def plan(identities: Sequence[int], seconds: float, seed: int) -> list[Appearance]:
    """Each identity appears once or twice in [0, seconds), 4-9 s each, with its own effect, in its
    own lane of the frame (at most 2 identities per 720p video keep their crops apart)."""
    rng = np.random.default_rng(seed)
    effects = ["", "dark", "bright", "blur", "occlude", ""]
    out = []
    for k, ident in enumerate(identities):
        t = float(rng.uniform(0.5, 3.0)) + k * 2.0
        for _ in range(int(rng.integers(1, 3))):
            dur = float(rng.uniform(4.0, 9.0))
            if t + dur > seconds - 0.5:
                break
            # one lane per identity, so that a face never covers another (the truth stays visible)
            lane = (k + 0.5) / len(identities)
            x, y = float(lane + rng.uniform(-0.05, 0.05)), float(rng.uniform(0.3, 0.6))
            out.append(
                Appearance(
                    ident,
                    t,
                    t + dur,
                    float(rng.uniform(90, 200)),
                    float(rng.uniform(90, 200)),
                    x,
                    y,
                    float(np.clip(x + rng.uniform(-0.05, 0.05), 0.15, 0.85)),
                    float(np.clip(y + rng.uniform(-0.1, 0.1), 0.25, 0.65)),
                    effects[int(rng.integers(len(effects)))],
                )
            )
            t += dur + float(rng.uniform(2.0, 5.0))
    return out


def render(
    path: pathlib.Path,
    idents: Sequence[Identity],
    appearances: Sequence[Appearance],
    seconds: float,
    footage: pathlib.Path,
    fps: int = 25,
    size: tuple[int, int] = (1280, 720),
    crf: int = 26,
) -> dict:
    """Write a composite H.264 video; returns the truth {identity: [(start, end)], "boxes": ...}."""
    n = int(seconds * fps)
    bg = _footage(footage, size, n)
    boxes: dict[int, list[tuple[float, tuple, str]]] = {}
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        st.options = {"crf": str(crf), "preset": "ultrafast"}
        for i in range(n):
            t = i / fps
            frame = Image.fromarray(bg[i % len(bg)])
            for a in appearances:
                if a.start <= t < a.end:
                    box = _place(frame, idents[a.identity], a, t)
                    boxes.setdefault(a.identity, []).append((t, box, a.effect))
            for pkt in st.encode(av.VideoFrame.from_image(frame)):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return {
        "intervals": {
            a.identity: [(b.start, b.end) for b in appearances if b.identity == a.identity] for a in appearances
        },
        "boxes": boxes,
        "size": size,
    }


__all__ = ["FOOTAGE", "Appearance", "Identity", "load_identities", "plan", "render", "rephotograph"]
