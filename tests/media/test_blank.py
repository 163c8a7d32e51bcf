"""The blank / uninformative frame filter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from frameseek.media import BlankFilterSettings, analyse, is_blank

from .conftest import OPENCV_DATA, textured_frame


@settings(max_examples=50, deadline=None)
@given(
    r=st.integers(0, 255), g=st.integers(0, 255), b=st.integers(0, 255), h=st.integers(2, 300), w=st.integers(2, 300)
)
def test_any_uniform_frame_is_blank(r, g, b, h, w):
    assert is_blank(np.full((h, w, 3), (r, g, b), np.uint8))


def test_reasons():
    rng = np.random.default_rng(0)
    black_noise = rng.integers(0, 20, (240, 320, 3), dtype=np.uint8)
    assert analyse(black_noise).reason == "dark"
    grey_noise = (128 + rng.integers(-3, 4, (240, 320, 3))).astype(np.uint8)
    assert analyse(grey_noise).reason == "uniform"
    ramp = np.repeat(np.linspace(0, 255, 320, dtype=np.float64)[None, :, None], 240, 0).repeat(3, 2).astype(np.uint8)
    v = analyse(ramp)  # wide luma spread but no detail
    assert v.reason == "low_detail" and v.luma_std > 50


def test_title_card_is_blank_but_real_frames_are_not():
    card = Image.new("RGB", (640, 360))
    ImageDraw.Draw(card).text((280, 170), "THE END", fill=(255, 255, 255))
    assert analyse(np.asarray(card)).reason == "dark"
    assert not is_blank(textured_frame(0))
    for name in ("baboon.jpg", "fruits.jpg", "home.jpg"):
        p = OPENCV_DATA / name
        if p.exists():
            assert not is_blank(np.asarray(Image.open(p).convert("RGB"))), name


def test_dark_fraction_threshold_is_the_setting():
    f = np.full((100, 100, 3), 200, np.uint8)
    f[:89] = 0  # 89% black: informative enough by default
    f[89:, ::2] = 50  # keep some detail in the lit part
    assert analyse(f).reason != "dark"
    assert analyse(f, BlankFilterSettings(max_dark_fraction=0.85)).reason == "dark"
    f[:91] = 0
    assert analyse(f).reason == "dark"


def test_rejects_non_rgb():
    with pytest.raises(ValueError):
        analyse(np.zeros((10, 10), np.uint8))


def _slideshow_frame(name: str, zoom: float) -> Image.Image:
    """A 320x240 frame of photo `name` as the harness's slideshows show it (filled, zoomed in)."""
    im = ImageOps.fit(Image.open(OPENCV_DATA / name).convert("RGB"), (640, 480))
    w, h = round(640 / zoom), round(480 / zoom)
    x, y = (640 - w) // 2, (480 - h) // 2
    return im.crop((x, y, x + w, y + h)).resize((320, 240), Image.BILINEAR)


def test_a_soft_small_copy_of_a_photo_is_not_blank():
    """A quarter-size copy of a smooth close-up, scaled back up to the model's input size, is soft
    (its mean gradient falls below min_gradient) but is still the photo: the coarse measure keeps it."""
    if not (OPENCV_DATA / "apple.jpg").exists():
        pytest.skip("opencv-doc photos not installed")
    frame = _slideshow_frame("apple.jpg", 1.3)
    copy = np.asarray(frame.resize((80, 60), Image.BILINEAR).resize((384, 288), Image.BILINEAR))
    v = analyse(copy)
    assert v.gradient < BlankFilterSettings().min_gradient  # the sharpness test alone would drop it ...
    assert analyse(copy, BlankFilterSettings(min_coarse_detail=float("inf"))).reason == "low_detail"
    assert not v.blank and v.coarse_detail > BlankFilterSettings().min_coarse_detail  # ... the coarse one keeps it
    assert not is_blank(np.asarray(frame.resize((384, 288), Image.BILINEAR)))


@pytest.mark.parametrize("kind", ["ramp", "vignette", "blurred photo"])
def test_featureless_frames_stay_low_detail(kind):
    h, w = 288, 384
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "ramp":
        luma = (xx + yy) / (w + h) * 255
    elif kind == "vignette":
        luma = 200 - 120 * (np.hypot(xx - w / 2, yy - h / 2) / 240) ** 2
    else:  # a photo under a Gaussian blur of sigma = 8 % of its width: colours, no structure
        if not (OPENCV_DATA / "baboon.jpg").exists():
            pytest.skip("opencv-doc photos not installed")
        img = Image.open(OPENCV_DATA / "baboon.jpg").convert("RGB").resize((w, h), Image.BILINEAR)
        frame = np.asarray(img.filter(ImageFilter.GaussianBlur(32)))
    if kind != "blurred photo":
        frame = np.repeat(luma[..., None], 3, 2).astype(np.uint8)
    v = analyse(frame)
    assert v.reason == "low_detail" and v.luma_std > 10, v
    assert v.coarse_detail < BlankFilterSettings().min_coarse_detail


def test_coarse_detail_of_tiny_planes_is_zero():
    assert analyse(np.full((2, 2, 3), 128, np.uint8)).reason == "uniform"
    from frameseek.media.blank import coarse_detail

    assert coarse_detail(np.zeros((2, 50), np.float32), 64) == 0.0
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.float32)
    assert coarse_detail(checker, 64) == pytest.approx(4 * 255)  # no averaging at or below the size
