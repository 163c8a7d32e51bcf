"""Views: named, declared transforms of a sampled frame, each embedded into its own vector set.

A view says how one sampled frame becomes one model input: which region of it (`crop`), blurred
or not (`blur_sigma`), mirrored or not (`mirror`), at which fraction of the model's input size
(`scale`). The pipeline (`embed_media`) embeds every kept frame once per view it is asked for and
returns one float32[n, dim] vector set per view name, rows aligned with the timestamps. Each
caller asks only for the views it uses (`query_views`, `image_query_views`, `index_views`, read
from the server's `views` settings group): SearchByImage embeds its image once (one model pass),
ingest the frame and its coarse twin, SearchByVideo every query view.

Why these views exist (README "Copy detection", benchmarks/copydetect):
- `mirror`: flipped re-uploads match their source's mirror image.
- `coarse` / `coarse_mirror`: copies degraded to little signal (80x60, 32 kb/s, x264 CRF 45+)
  match far better at half the model's input size, coarse to coarse; references are indexed with
  a coarse *twin* of every sample for that reason (`frameseek.ids`: vector n + i is sample i's twin).
- `deblock`: a Gaussian blur removes the block edges of heavy compression (off by default).
- crops (`crop`): picture-in-picture insets found by `frameseek.regions` (a second decode pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from ..config import VIEWS
from ..embed.spec import MIN_INPUT_SCALE
from ..regions import Box, crop

if TYPE_CHECKING:
    from ..config import ViewsConfig

#: The view names the server uses. `FULL` is every caller's primary view: its vectors are the
#: timestamps' vectors (`EmbeddedMedia.vectors`), the ones near-duplicate dropping compares.
FULL, MIRROR, COARSE, COARSE_MIRROR, DEBLOCK = "full", "mirror", "coarse", "coarse_mirror", "deblock"


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """`rgb` (HxWx3 uint8, host memory) under a Gaussian blur of `sigma` pixels."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).filter(ImageFilter.GaussianBlur(sigma)))


@dataclass(frozen=True)
class View:
    """One declared transform of a sampled frame -> one model input. Applied in this order:
    crop the normalised region `crop` (x0, y0, x1, y1 in [0, 1]), blur by `blur_sigma` pixels,
    then the embedder's own resize to `scale` x its input size, mirrored when `mirror`."""

    name: str
    mirror: bool = False
    scale: float = 1.0  # fraction of the model's input size (< 1: a coarse view)
    blur_sigma: float = 0.0  # Gaussian blur in pixels (0 = none)
    crop: Box | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a view needs a name")
        if not (self.scale == 1.0 or MIN_INPUT_SCALE <= self.scale < 1.0):
            raise ValueError(f"view {self.name!r}: scale must be 1 or in [{MIN_INPUT_SCALE}, 1)")
        if not 0 <= self.blur_sigma <= 16:
            raise ValueError(f"view {self.name!r}: blur_sigma must be in [0, 16] pixels")

    def unavailable(self, embedder: Any, gpu_input: bool) -> str | None:
        """Why this view cannot be embedded with `embedder`, or None when it can (`gpu_input`: the
        frames are decoded on the GPU and go to the embedder there)."""
        if self.scale != 1.0 and not getattr(embedder, "scalable_input", False):
            return f"{getattr(embedder, 'name', 'the embedder')} has a fixed input size"
        if (self.blur_sigma or self.crop is not None) and gpu_input:
            return "the frames stay on the GPU"
        return None

    def apply(self, pixels: Any, embedder: Any) -> Any:
        """The model input of this view of one frame (`pixels`: HxWx3 RGB, or a CUDA tensor for
        a view without crop or blur). Only the embedder options that differ from the plain input
        are passed: an embedder may take neither `flip` nor `scale`."""
        if self.crop is not None:
            pixels = crop(pixels, self.crop)
        if self.blur_sigma:
            pixels = gaussian_blur(pixels, self.blur_sigma)
        kw: dict[str, Any] = {}
        if self.mirror:
            kw["flip"] = True
        if self.scale != 1.0:
            kw["scale"] = self.scale
        return embedder.preprocess([pixels], **kw)[0]


FULL_VIEW = View(FULL)


def frame_views(
    mirror: bool = False, coarse_scale: float | None = None, deblock_sigma: float | None = None
) -> tuple[View, ...]:
    """The whole frame, then (each when asked for) its mirror, both at `coarse_scale`, and the
    frame blurred by `deblock_sigma`: the order in which their kNN results sit side by side."""
    out = [FULL_VIEW]
    if mirror:
        out.append(View(MIRROR, mirror=True))
    if coarse_scale:
        out.append(View(COARSE, scale=coarse_scale))
        if mirror:
            out.append(View(COARSE_MIRROR, mirror=True, scale=coarse_scale))
    if deblock_sigma:
        out.append(View(DEBLOCK, blur_sigma=deblock_sigma))
    return tuple(out)


def query_views(cfg: ViewsConfig = VIEWS) -> tuple[View, ...]:
    """SearchByVideo's views of every query frame: whole, mirrored, both coarse, and deblocked
    when `query_deblock_sigma` is set."""
    return frame_views(
        mirror=True, coarse_scale=cfg.query_coarse_scale or None, deblock_sigma=cfg.query_deblock_sigma or None
    )


def image_query_views(cfg: ViewsConfig = VIEWS) -> tuple[View, ...]:
    """SearchByImage's views: the whole image only (its search uses one vector: one model pass)."""
    return (FULL_VIEW,)


def index_views(cfg: ViewsConfig = VIEWS) -> tuple[View, ...]:
    """Ingest's views: the whole frame and its coarse twin (`index_coarse_scale`; 0 = none)."""
    return frame_views(coarse_scale=cfg.index_coarse_scale or None)


def region_views(boxes: list[tuple[str, Box]]) -> tuple[View, ...]:
    """One crop view per query region (`frameseek.regions.region_boxes`), named region0, region1 …"""
    return tuple(View(f"region{j}", crop=box) for j, (_, box) in enumerate(boxes))


__all__ = [
    "View",
    "FULL",
    "MIRROR",
    "COARSE",
    "COARSE_MIRROR",
    "DEBLOCK",
    "FULL_VIEW",
    "frame_views",
    "query_views",
    "image_query_views",
    "index_views",
    "region_views",
    "gaussian_blur",
]
