"""The blank / uninformative frame filter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from frameseek.media import BlankFilterSettings, analyse, is_blank

from .conftest import OPENCV_DATA, textured_frame


@settings(max_examples=50, deadline=None)
@given(r=st.integers(0, 255), g=st.integers(0, 255), b=st.integers(0, 255), h=st.integers(2, 300), w=st.integers(2, 300))
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
