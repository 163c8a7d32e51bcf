"""Sampling by presentation time.

A sampler sees every decoded frame's presentation time (seconds from the stream start, in
presentation order) and says whether to keep it. It never counts frames: variable frame rate,
dropped frames and frame-rate changes cannot shift the grid. Sampling every N-th frame (as vPDQ
does) puts a query and a reference on grids that are out of phase as soon as either has a different
frame rate or an added intro; a time grid keeps the phase error below one sample period.
"""

from __future__ import annotations

import math


class TimeGridSampler:
    """Keep the first frame at or after each tick of a grid with period 1/fps (ticks at 0, 1/fps, ...).

    After keeping a frame at time t, the next tick is the first grid point strictly after t, so a
    long-held frame (VFR, slideshow) is kept once rather than once per tick it spans. `fps=None`
    or `fps<=0` keeps every frame.
    """

    # Frames whose pts lands within this many seconds *before* a tick count as "at" the tick:
    # 29.97 fps timestamps (e.g. 1.9686 s) must not lose the tick at 2.0 to rounding in the muxer.
    EPS = 1e-3

    def __init__(self, fps: float | None) -> None:
        self.fps = fps if fps and fps > 0 else None
        self._next_tick = 0  # index k of the next grid tick k/fps still to serve
        self._last: float | None = None

    def accept(self, t: float) -> bool:
        """True when the frame presented at `t` seconds should be sampled."""
        if self._last is not None and t <= self._last:
            # Non-monotonic timestamps (broken muxers, B-frame reordering glitches): never sample
            # two frames for the same instant, never step backwards.
            return False
        if self.fps is None:
            self._last = t
            return True
        k = self.tick_of(t)
        if k < self._next_tick:
            return False
        self._last = t
        self._next_tick = k + 1
        return True

    def tick_of(self, t: float) -> int:
        """Index of the last grid tick at or before `t` (with the EPS tolerance)."""
        assert self.fps is not None
        return math.floor((t + self.EPS) * self.fps)

    def expected_samples(self, duration: float | None) -> int | None:
        """Estimated number of samples for a stream of `duration` seconds (for progress)."""
        if duration is None or not math.isfinite(duration) or duration <= 0:
            return None
        if self.fps is None:
            return None
        return max(1, math.ceil(duration * self.fps - self.EPS))


def plan_indices(pts: list[float], fps: float | None, keyframes: list[bool] | None = None) -> list[int]:
    """Indices (into presentation-ordered `pts`) that a `TimeGridSampler` would keep.

    Used by index-addressed decoders (NVDEC's SimpleDecoder) that decode only the frames they are
    asked for: the demuxer's packet timestamps plan the samples, the GPU decodes just those.
    """
    sampler = TimeGridSampler(fps)
    out = []
    for i, t in enumerate(pts):
        if keyframes is not None and not keyframes[i]:
            continue
        if sampler.accept(t):
            out.append(i)
    return out
