"""Picture-in-picture inset detection (frameseek.regions) and query regions in the pipeline."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from frameseek import regions
from frameseek.regions import GRID_BOXES, InsetDetector, crop, region_boxes
from tests.media.conftest import write_video

W, H = 320, 240


def _texture(seed: int, w: int, h: int) -> np.ndarray:
    """A smooth random RGB texture (blobs at several scales, no straight edges)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((6, 1.0), (20, 0.6), (60, 0.3)):
        small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        acc += amp * np.asarray(Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BICUBIC), np.float32)
    acc = (acc - acc.min()) / (acc.max() - acc.min()) * 255
    return acc.astype(np.uint8)


def _moving(seed: int, n: int, w: int, h: int, step: tuple[int, int]) -> list[np.ndarray]:
    """n frames panning over a texture twice the size (content changes everywhere)."""
    big = _texture(seed, 2 * w, 2 * h)
    offs = [((i * step[0]) % w, (i * step[1]) % h) for i in range(n)]
    return [big[y : y + h, x : x + w].copy() for x, y in offs]


def _pip(n: int, box: tuple[int, int, int, int], seed: int = 1) -> list[np.ndarray]:
    """A moving background with another moving video pasted at `box` (x0, y0, x1, y1 px),
    clipped by the frame."""
    x0, y0, x1, y1 = box
    bg = _moving(seed, n, W, H, (9, 4))
    fg = _moving(seed + 100, n, x1 - x0, y1 - y0, (7, 6))
    out = []
    for b, f in zip(bg, fg):
        b = b.copy()
        b[y0 : min(y1, H), x0 : min(x1, W)] = f[: min(y1, H) - y0, : min(x1, W) - x0]
        out.append(b)
    return out


def _detect(frames: list[np.ndarray]) -> tuple[float, float, float, float] | None:
    d = InsetDetector()
    for f in frames:
        d.update_rgb(f)
    return d.detect()


def _px(box) -> np.ndarray:
    return np.array(box) * [W, H, W, H]


def test_no_inset_in_a_moving_video():
    assert _detect(_moving(5, 12, W, H, (11, 5))) is None


def test_no_inset_in_a_static_camera_video():
    """A fixed camera: the scene's edges persist, but the step across them never changes."""
    scene = _texture(8, W, H)
    scene[:, 150:] = scene[:, 150:] // 3  # a hard straight edge (a wall, a door frame)
    scene[100:, :] = 255 - scene[100:, :]
    frames = []
    for i in range(10):
        f = scene.copy()
        f[140:200, 20 + 15 * i : 60 + 15 * i] = 40  # someone walking past
        frames.append(f)
    assert _detect(frames) is None


def test_detects_a_picture_in_picture_inset_within_a_few_pixels():
    true = (140, 96, 300, 216)
    box = _detect(_pip(12, true))
    assert box is not None
    assert np.abs(_px(box) - true).max() <= 3


def test_detects_an_inset_cut_off_by_the_frame():
    box = _detect(_pip(12, (150, 100, W + 60, H + 50)))  # overflows right and bottom
    assert box is not None
    assert np.abs(_px(box) - (150, 100, W, H)).max() <= 3


def test_no_inset_for_a_static_logo_or_a_caption_band():
    bg = _moving(3, 12, W, H, (9, 4))
    logo = _texture(4, 80, 60)
    with_logo = []
    for f in bg:
        f = f.copy()
        f[10:70, 230:310] = logo  # static content inside a box
        with_logo.append(f)
    assert _detect(with_logo) is None
    band = []
    for f in bg:
        f = f.copy()
        f[190:] = f[190:] // 5  # a caption band: one straight full-width line
        band.append(f)
    assert _detect(band) is None


def test_needs_a_few_frames():
    assert _detect(_pip(2, (140, 96, 300, 216))) is None


def test_crop_and_region_boxes():
    img = np.arange(240 * 320 * 3, dtype=np.uint32).reshape(240, 320, 3).astype(np.uint8)
    c = crop(img, (0.5, 0.25, 1.0, 0.75))
    assert c.shape == (120, 160, 3) and c.flags["C_CONTIGUOUS"]
    assert np.array_equal(c, img[60:180, 160:320])
    assert crop(img, (0.5, 0.5, 0.5, 0.5)).shape == (1, 1, 3)
    inset = (0.4, 0.4, 0.9, 0.9)
    assert region_boxes("off", inset) == []
    assert region_boxes("auto", None) == []
    assert region_boxes("auto", inset) == [("inset", inset)]
    assert region_boxes("on", None) == [("grid", b) for b in GRID_BOXES]
    assert region_boxes("on", inset)[0] == ("inset", inset) and len(region_boxes("on", inset)) == 6
    with pytest.raises(ValueError):
        region_boxes("sometimes", inset)


def _write(path: Path, frames: list[np.ndarray], fps: int = 5) -> Path:
    return write_video(
        path,
        "libx264",
        [i / fps for i in range(len(frames))],
        frames,
        options={"preset": "ultrafast", "crf": "20"},
        rate=fps,
    )


@pytest.fixture(scope="module")
def embedder():
    from frameseek.embed import load_embedder

    return load_embedder()


def test_pipeline_embeds_the_detected_inset(tmp_path, embedder):
    """regions="auto": the encoded PiP clip gets one inset region whose vectors are the crops'
    embeddings of the kept frames; "off" embeds nothing extra; "on" adds the 5-crop grid."""
    from frameseek.pipeline import SamplingSettings, embed_media

    true = (140, 96, 300, 216)
    frames = _pip(40, true)  # 8 s at 5 fps, sampled at 1 fps
    clip = _write(tmp_path / "pip.mp4", frames)
    m = embed_media(str(clip), embedder, SamplingSettings.query(regions="auto"))
    assert [k for k, _ in m.regions] == ["inset"]
    assert np.abs(_px(m.regions[0][1]) - true).max() <= 4
    (rv,) = m.region_vectors
    assert rv.shape == m.vectors.shape and rv.dtype == np.float32
    assert np.allclose(np.linalg.norm(rv, axis=1), 1.0, atol=1e-4)
    # row i is the inset crop of kept frame i: compare with embedding the crop directly
    with av.open(str(clip)) as c:
        decoded = {round(float(f.time), 6): f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
    direct = embedder.embed([crop(decoded[round(t, 6)], m.regions[0][1]) for t in m.timestamps])
    assert np.allclose(np.sum(direct * rv, axis=1), 1.0, atol=1e-3)
    assert not np.allclose(rv, m.vectors, atol=1e-2)  # not the whole frames

    off = embed_media(str(clip), embedder, SamplingSettings.query())
    assert off.regions == [] and off.region_vectors == []
    on = embed_media(str(clip), embedder, SamplingSettings.query(regions="on"))
    assert [k for k, _ in on.regions] == ["inset"] + ["grid"] * 5 and len(on.region_vectors) == 6

    plain = _write(tmp_path / "plain.mp4", _moving(5, 40, W, H, (11, 5)))
    auto = embed_media(str(plain), embedder, SamplingSettings.query(regions="auto"))
    assert auto.regions == [] and auto.region_vectors == []
    with pytest.raises(ValueError):
        SamplingSettings.query(regions="maybe")


def test_pipeline_reads_a_stream_twice_for_regions(tmp_path, embedder):
    from frameseek.pipeline import SamplingSettings, embed_media

    clip = _write(tmp_path / "pip.mp4", _pip(30, (140, 96, 300, 216)))
    with open(clip, "rb") as fh:
        m = embed_media(fh, embedder, SamplingSettings.query(regions="auto"))
    assert [k for k, _ in m.regions] == ["inset"] and m.region_vectors[0].shape == m.vectors.shape


def test_module_exports():
    assert set(regions.__all__) >= {"InsetDetector", "crop", "region_boxes", "GRID_BOXES"}
