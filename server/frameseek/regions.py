"""Query regions for copy detection: picture-in-picture inset detection and a fixed crop grid.

A copy shown as a picture-in-picture inset fills a fraction of the query frame, and a
whole-frame descriptor is dominated by the unrelated background. Embedding the inset on its own
(as extra query frames beside the whole frame, see `frameseek.matching.search_neighbors`)
recovers it. This module finds the inset:

**Inset detection** (`InsetDetector`): an overlaid inset leaves a rectangle border whose position
is constant over time while the content on both sides of it changes. Over the sampled query
frames (gray, analysed at most `analysis_size` pixels on the long side) the detector accumulates,
per pixel, how often a strong gradient is present (edge *persistence*) and how much the pixel
changes between samples (*motion*). A border pixel is one whose persistence is high and clearly
higher than a few pixels to one side of it (a line, not persistent texture: a static camera's
textured wall is persistent on both sides). Columns and rows holding long runs of border pixels
are candidate sides; every rectangle made of candidate sides (or the frame edge, where an inset
is cut off by the frame) is scored by how much of each side is border, and the best rectangle
with at least one vertical and one horizontal real side, sensible size and moving content inside
is the inset. Everything is O(pixels) per frame and O(pixels) memory, however long the query.

What it deliberately does not report: a caption band or a letterbox bar (one straight line, or
two parallel ones, is no rectangle), a static logo or a held title card (no motion inside),
content-free frames (fewer than `min_frames` samples).

**Crop grid** (`GRID_BOXES`): four overlapping 60 % corners and the centre 60 %, the fallback
when no border is visible (an inset with no clear edge, a copy cropped into a corner).

Boxes are normalised `(x0, y0, x1, y1)` in [0, 1] (fractions of width/height).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]
RegionMode = Literal["off", "auto", "on"]
REGION_MODES: tuple[str, ...] = ("off", "auto", "on")

#: four overlapping 60 % corners + the centre 60 % (the unshipped crops experiment's grid:
#: 4/6 picture-in-picture copies at the default threshold, unrelated queries unchanged)
GRID_BOXES: tuple[Box, ...] = (
    (0.0, 0.0, 0.6, 0.6),
    (0.4, 0.0, 1.0, 0.6),
    (0.0, 0.4, 0.6, 1.0),
    (0.4, 0.4, 1.0, 1.0),
    (0.2, 0.2, 0.8, 0.8),
)


@dataclass(frozen=True)
class InsetSettings:
    """Knobs of `InsetDetector` (gray levels are 0..255 at analysis resolution)."""

    analysis_size: int = 320  # long side of the analysed gray frame (smaller frames stay as they are)
    min_frames: int = 3  # persistence needs a few samples
    edge_threshold: float = 8.0  # |I(x+1) - I(x-1)| that counts as an edge
    persistence: float = 0.6  # border pixel: an edge in at least this fraction of samples ...
    line_contrast: float = 0.25  # ... and this much more often than `line_offset` px to one side
    line_offset: int = 3
    min_edge_change: float = 6.0  # ... and the step across it changes over time (std, gray levels)
    min_side: float = 0.12  # a candidate side is at least this fraction of the frame's height/width
    side_coverage: float = 0.7  # a real side: at least this fraction of it is border pixels
    min_area: float = 0.04  # inset area as a fraction of the frame
    max_area: float = 0.8
    min_extent: float = 0.15  # inset width (height) as a fraction of the frame's width (height)
    min_motion: float = 1.0  # mean |I_t - I_(t-1)| inside the inset, gray levels per sample step
    edge_margin: int = 2  # a candidate line this close to the frame edge is the frame edge
    max_candidates: int = 8  # candidate lines per direction


def gray_for_analysis(rgb: np.ndarray, size: int = 320) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 gray, long side at most `size` (antialiased, PIL)."""
    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L")
    w, h = img.size
    s = size / max(w, h)
    if s < 1.0:
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _longest_runs(mask: np.ndarray, gap: int = 2) -> np.ndarray:
    """Longest run of True along axis 0 per column, holes of at most `gap` closed first."""
    n, w = mask.shape
    before = np.zeros_like(mask)  # a True pixel within `gap` rows above / below
    after = np.zeros_like(mask)
    for d in range(1, min(gap, n - 1) + 1):
        before[d:] |= mask[:-d]
        after[:-d] |= mask[d:]
    m = mask | (before & after)
    best = np.zeros(w, np.int64)
    run = np.zeros(w, np.int64)
    for i in range(n):  # n <= analysis_size: a short loop over rows, vectorised over columns
        run = np.where(m[i], run + 1, 0)
        np.maximum(best, run, out=best)
    return best


def _candidates(runs: np.ndarray, min_len: float, margin: int, k: int) -> list[int]:
    """Line positions (columns/rows) with long runs, strongest first, 3 px apart at least."""
    order = np.argsort(-runs, kind="stable")
    out: list[int] = []
    n = len(runs)
    for i in order.tolist():
        if runs[i] < min_len or len(out) >= k:
            break
        if i < margin or i >= n - margin:
            continue
        if all(abs(i - j) > 3 for j in out):
            out.append(i)
    return sorted(out)


class InsetDetector:
    """Streaming picture-in-picture inset detector: `update(gray)` per sampled frame, then
    `detect()` -> normalised box or None. Frames of another size than the first are ignored
    (a mid-stream resolution change)."""

    def __init__(self, settings: InsetSettings | None = None) -> None:
        self.s = settings or InsetSettings()
        self.n = 0
        self._shape: tuple[int, int] | None = None
        self._ev: np.ndarray | None = None  # edge counts, vertical lines (horizontal gradient)
        self._eh: np.ndarray | None = None  # edge counts, horizontal lines
        self._motion: np.ndarray | None = None  # sum |I_t - I_(t-1)|
        self._dv: np.ndarray | None = None  # sums of the signed step across vertical lines, and of its square
        self._dv2: np.ndarray | None = None
        self._dh: np.ndarray | None = None
        self._dh2: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self.last_candidates: dict[str, list[int]] = {}

    def update(self, gray: np.ndarray) -> None:
        g = np.asarray(gray, dtype=np.float32)
        if g.ndim != 2:
            raise ValueError("gray frame must be HxW")
        if self._shape is None:
            if min(g.shape) < 16:
                return  # too small to hold an inset worth finding
            self._shape = g.shape
            self._ev = np.zeros(g.shape, np.float32)
            self._eh = np.zeros(g.shape, np.float32)
            self._motion = np.zeros(g.shape, np.float32)
            self._dv, self._dv2, self._dh, self._dh2 = (np.zeros(g.shape, np.float64) for _ in range(4))
        elif g.shape != self._shape:
            return
        t = self.s.edge_threshold
        # centred differences: a border blurred over two pixels by scaling/compression still
        # shows its full step at one of them
        dv = g[:, 2:] - g[:, :-2]
        dh = g[2:, :] - g[:-2, :]
        self._ev[:, 1:-1] += np.abs(dv) >= t
        self._eh[1:-1, :] += np.abs(dh) >= t
        self._dv[:, 1:-1] += dv
        self._dv2[:, 1:-1] += dv * dv
        self._dh[1:-1, :] += dh
        self._dh2[1:-1, :] += dh * dh
        if self._prev is not None:
            self._motion += np.abs(g - self._prev)
        self._prev = g
        self.n += 1

    def update_rgb(self, rgb: np.ndarray) -> None:
        self.update(gray_for_analysis(rgb, self.s.analysis_size))

    def _line_mask(self, p: np.ndarray, change: np.ndarray, axis: int) -> np.ndarray:
        """Border pixels of lines perpendicular to `axis` (axis 1: vertical lines). `change` is
        the temporal std of the step across the line: an edge of a static scene (a door frame
        seen by a fixed camera) has a constant step; the border between two independent videos
        does not."""
        o = self.s.line_offset
        pad = [(0, 0), (0, 0)]
        pad[axis] = (o, o)
        pp = np.pad(p, pad, mode="edge")
        n = p.shape[axis]
        before = np.take(pp, np.arange(0, n), axis=axis)
        after = np.take(pp, np.arange(2 * o, n + 2 * o), axis=axis)
        m = (
            (p >= self.s.persistence)
            & (p - np.minimum(before, after) >= self.s.line_contrast)
            & (change >= self.s.min_edge_change)
        )
        # tolerate a one-pixel wobble of the line across the rows
        d = m.copy()
        if axis == 1:
            d[:, 1:] |= m[:, :-1]
            d[:, :-1] |= m[:, 1:]
        else:
            d[1:, :] |= m[:-1, :]
            d[:-1, :] |= m[1:, :]
        return d

    def detect(self) -> Box | None:
        """The inset rectangle, normalised `(x0, y0, x1, y1)`, or None."""
        s = self.s
        if self.n < s.min_frames or self._shape is None:
            return None
        h, w = self._shape
        pv = self._ev / self.n
        ph = self._eh / self.n
        n = self.n
        cv_std = np.sqrt(np.maximum(self._dv2 / n - (self._dv / n) ** 2, 0.0))
        ch_std = np.sqrt(np.maximum(self._dh2 / n - (self._dh / n) ** 2, 0.0))
        lv = self._line_mask(pv, cv_std, axis=1)  # [h, w]: pixel on a vertical border line
        lh = self._line_mask(ph, ch_std, axis=0)
        xs = _candidates(_longest_runs(lv), s.min_side * h, s.edge_margin, s.max_candidates)
        ys = _candidates(_longest_runs(lh.T), s.min_side * w, s.edge_margin, s.max_candidates)
        self.last_candidates = {"x": xs, "y": ys}
        if not xs or not ys:
            return None
        motion = self._motion / max(1, self.n - 1)
        cv = np.vstack([np.zeros((1, w)), np.cumsum(lv, axis=0)])  # column prefix sums over rows
        ch = np.hstack([np.zeros((h, 1)), np.cumsum(lh, axis=1)])  # row prefix sums over columns
        xe, ye = [0, *xs, w], [0, *ys, h]  # frame edges close an inset the frame cuts off

        def cover_v(x: int, a: int, b: int) -> float:
            a, b = a + 2, b - 2  # the corners belong to both sides
            return float(cv[b, x] - cv[a, x]) / max(1, b - a)

        def cover_h(y: int, a: int, b: int) -> float:
            a, b = a + 2, b - 2
            return float(ch[y, b] - ch[y, a]) / max(1, b - a)

        best: tuple[tuple[int, float, int], Box] | None = None
        for i, x0 in enumerate(xe):
            for x1 in xe[i + 1 :]:
                if x1 - x0 < s.min_extent * w:
                    continue
                for j, y0 in enumerate(ye):
                    for y1 in ye[j + 1 :]:
                        if y1 - y0 < s.min_extent * h:
                            continue
                        area = (x1 - x0) * (y1 - y0) / (w * h)
                        if not s.min_area <= area <= s.max_area:
                            continue
                        sides_v = [cover_v(x, y0, y1) for x in (x0, x1) if 0 < x < w]
                        sides_h = [cover_h(y, x0, x1) for y in (y0, y1) if 0 < y < h]
                        if not sides_v or not sides_h:
                            continue  # needs a corner: one vertical and one horizontal real side
                        sides = sides_v + sides_h
                        if min(sides) < s.side_coverage:
                            continue
                        if float(motion[y0:y1, x0:x1].mean()) < s.min_motion:
                            continue  # a static box: a logo, a held title card, a slate
                        key = (len(sides), float(np.mean(sides)), (x1 - x0) * (y1 - y0))
                        if best is None or key > best[0]:
                            best = (key, (x0 / w, y0 / h, x1 / w, y1 / h))
        return best[1] if best else None


def crop(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of `box` (normalised) of an HxWx3 frame, at least 1x1."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    a, b = int(round(x0 * w)), int(round(y0 * h))
    c, d = max(a + 1, int(round(x1 * w))), max(b + 1, int(round(y1 * h)))
    return np.ascontiguousarray(rgb[b:d, a:c])


def region_boxes(mode: str, inset: Box | None) -> list[tuple[str, Box]]:
    """The query regions to embed for `mode`: "off" none, "auto" the detected inset only,
    "on" the detected inset plus the fixed grid."""
    if mode not in REGION_MODES:
        raise ValueError(f"region mode must be one of {REGION_MODES}, not {mode!r}")
    out: list[tuple[str, Box]] = []
    if mode != "off" and inset is not None:
        out.append(("inset", inset))
    if mode == "on":
        out += [("grid", b) for b in GRID_BOXES]
    return out


__all__ = [
    "Box",
    "GRID_BOXES",
    "InsetDetector",
    "InsetSettings",
    "REGION_MODES",
    "RegionMode",
    "crop",
    "gray_for_analysis",
    "region_boxes",
]
