"""Blank / uninformative frame filter.

Black frames, fades, single-colour slates and nearly featureless frames all embed close to each
other (measured: cosine 0.9+ between unrelated black or title-card frames), so if they were indexed
they would vote for unrelated videos. They are dropped before indexing and before matching.

The test runs on a subsampled luma plane (at most ~160 px on the long side): the statistics it
uses (dark fraction, spread, mean gradient) are stable under downscaling and this keeps the cost
per sample in the tens of microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class BlankFilterSettings(BaseModel):
    """Thresholds of the blank-frame test (luma in 0..255, BT.601 weights)."""

    model_config = ConfigDict(frozen=True)

    dark_luma: float = Field(24.0, ge=0, le=255, description="a pixel darker than this counts as black")
    max_dark_fraction: float = Field(0.90, gt=0, le=1, description="blank when at least this share is black")
    min_luma_std: float = Field(6.0, ge=0, description="blank when the luma spread is below this (uniform)")
    min_gradient: float = Field(
        3.0, ge=0, description="blank when the mean |horizontal|+|vertical| luma difference (on the analysis plane) is below this"
    )
    analysis_size: int = Field(160, ge=16, description="long side of the subsampled plane analysed")


@dataclass(frozen=True)
class BlankVerdict:
    blank: bool
    reason: str  # "", "dark", "uniform" or "low_detail"
    dark_fraction: float
    luma_std: float
    gradient: float


def _luma(rgb: np.ndarray, analysis_size: int) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    step = max(1, max(h, w) // analysis_size)
    sub = rgb[::step, ::step].astype(np.float32)
    return sub[..., 0] * 0.299 + sub[..., 1] * 0.587 + sub[..., 2] * 0.114


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
    if dark >= s.max_dark_fraction:
        reason = "dark"
    elif std < s.min_luma_std:
        reason = "uniform"
    elif grad < s.min_gradient:
        reason = "low_detail"
    else:
        reason = ""
    return BlankVerdict(bool(reason), reason, dark, std, grad)


def is_blank(rgb: np.ndarray, settings: BlankFilterSettings | None = None) -> bool:
    """True when `rgb` (HxWx3 uint8) is near-black, near-uniform or nearly featureless."""
    return analyse(rgb, settings).blank
