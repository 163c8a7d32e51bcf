"""Blank / uninformative frame filter.

Black frames, fades, single-colour slates and nearly featureless frames all embed close to each
other (measured: cosine 0.9+ between unrelated black or title-card frames), so if they were indexed
they would vote for unrelated videos. They are dropped before indexing and before matching.

The test runs on a subsampled luma plane (at most ~160 px on the long side): the dark fraction
and the spread are stable under downscaling and this keeps the cost per sample well under a
millisecond.

"Low detail" needs two measures to agree. The mean gradient of that plane measures sharpness, so
alone it also rejects real content that is merely soft: a half-size copy of a smooth photo, scaled
back up to the model's input size, reads 2.5-3.0 where its reference reads 6-7 (measured on the
copy-detection harness, whose copies lost up to 8 of 12 frames that way). So a frame is low-detail
only when, in addition, its *coarse* detail is low: the mean |Laplacian| of the plane box-averaged
to 64 px. At that size a photo and its 0.5x, 0.25x and 0.125x copies look alike (opencv-doc's 90
photos: >= 4.9 at every one of those scales; the harness's copies: >= 3.2), while what the test is
for stays below it: ramps and vignettes 0.0-0.6, a photo under a Gaussian blur of sigma = 4 % of
its width 1.0-2.7 (and of 8 %, <= 0.8); the threshold, 2.5, sits between the two groups. The
Laplacian, unlike a gradient, is zero on a ramp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field


class BlankFilterSettings(BaseModel):
    """Thresholds of the blank-frame test (luma in 0..255, BT.601 weights)."""

    model_config = ConfigDict(frozen=True)

    dark_luma: float = Field(24.0, ge=0, le=255, description="a pixel darker than this counts as black")
    max_dark_fraction: float = Field(0.90, gt=0, le=1, description="blank when at least this share is black")
    min_luma_std: float = Field(6.0, ge=0, description="blank when the luma spread is below this (uniform)")
    min_gradient: float = Field(
        3.0,
        ge=0,
        description="low detail when the mean |horizontal|+|vertical| luma difference (on the analysis "
        "plane) is below this ...",
    )
    min_coarse_detail: float = Field(
        2.5,
        ge=0,
        description="... and when the mean |Laplacian| of the plane box-averaged to coarse_size px is below this",
    )
    coarse_size: int = Field(64, ge=8, description="long side of the box-averaged plane of the coarse-detail measure")
    analysis_size: int = Field(160, ge=16, description="long side of the subsampled plane analysed")


@dataclass(frozen=True)
class BlankVerdict:
    blank: bool
    reason: str  # "", "dark", "uniform" or "low_detail"
    dark_fraction: float
    luma_std: float
    gradient: float
    coarse_detail: float  # measured only when it decides (soft, neither dark nor uniform), NaN otherwise


def _luma(rgb: np.ndarray, analysis_size: int) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    step = max(1, max(h, w) // analysis_size)
    sub = rgb[::step, ::step].astype(np.float32)
    return sub[..., 0] * 0.299 + sub[..., 1] * 0.587 + sub[..., 2] * 0.114


def coarse_detail(y: np.ndarray, size: int) -> float:
    """Mean |4-neighbour Laplacian| of luma plane `y` box-averaged to `size` px on its long side
    (0 for a plane too small to have an interior)."""
    h, w = y.shape
    scale = min(1.0, size / max(h, w))
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    if cw < 3 or ch < 3:
        return 0.0
    plane = Image.fromarray(np.ascontiguousarray(y, np.float32), mode="F")
    c = np.asarray(plane.resize((cw, ch), Image.BOX), np.float32)
    lap = 4 * c[1:-1, 1:-1] - c[:-2, 1:-1] - c[2:, 1:-1] - c[1:-1, :-2] - c[1:-1, 2:]
    return float(np.abs(lap).mean())


def analyse(rgb: np.ndarray, settings: BlankFilterSettings | None = None) -> BlankVerdict:
    """Measure a frame and decide whether it is blank / uninformative."""
    s = settings or BlankFilterSettings()
    y = _luma(rgb, s.analysis_size)
    dark = float(np.mean(y < s.dark_luma))
    std = float(y.std())
    if y.shape[0] > 1 and y.shape[1] > 1:
        grad = float(np.abs(np.diff(y, axis=1)).mean() + np.abs(np.diff(y, axis=0)).mean())
    else:
        grad = 0.0
    coarse = float("nan")
    if dark >= s.max_dark_fraction:
        reason = "dark"
    elif std < s.min_luma_std:
        reason = "uniform"
    elif grad < s.min_gradient:
        # Only a soft frame that is neither dark nor uniform pays for the coarse measure (about
        # 0.3 ms): a sharp one passes on its gradient, a black one is decided already.
        coarse = coarse_detail(y, s.coarse_size)
        reason = "low_detail" if coarse < s.min_coarse_detail else ""
    else:
        reason = ""
    return BlankVerdict(bool(reason), reason, dark, std, grad, coarse)


def is_blank(rgb: np.ndarray, settings: BlankFilterSettings | None = None) -> bool:
    """True when `rgb` (HxWx3 uint8) is near-black, near-uniform or nearly featureless."""
    return analyse(rgb, settings).blank
