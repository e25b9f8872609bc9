"""What the viewer renders next: a coarse frame at once while the camera moves, the refined frame once
it rests.

The schedule is plain bookkeeping (no rendering, no clock of its own: every call is given ``now``) so
it is tested on its own. The coarse frame's size follows the measured rendering speed, so a coarse
frame takes about ``coarse_seconds`` on any device; the refined frame is rendered in bands of rows,
each about as long as a coarse frame, and dropped between two bands when the camera moves again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from nerfxl.viewer.camera import View

Level = Literal["coarse", "refined"]
FORGET = 0.7
"""How much of the speed measured so far each new frame keeps (older frames fade geometrically)."""


@dataclass(frozen=True)
class FrameJob:
    """One frame to render.

    Attributes:
        view: the camera.
        version: the schedule's version the frame is for (a newer version supersedes it).
        level: "coarse" or "refined".
        long_side: pixels of the frame's longer side.
        band_rows: rows rendered between two checks for a newer camera.
    """

    view: View
    version: int
    level: Level
    long_side: int
    band_rows: int

    @property
    def size(self) -> tuple[int, int]:
        return self.view.size(self.long_side)


class ProgressiveSchedule:
    """Decides, for one browser, which frame the render loop should produce next.

    Args:
        refined_long_side: the refined frame's longer side in pixels.
        coarse_seconds: what a coarse frame (and one band of a refined frame) should take.
        rest_seconds: how long the camera must rest before the refined frame starts.
        min_long_side: the smallest coarse frame.
        rays_per_second: the first guess of rendering speed (replaced by measurements).
    """

    def __init__(self, refined_long_side: int = 960, coarse_seconds: float = 0.1, rest_seconds: float = 0.2,
                 min_long_side: int = 48, rays_per_second: float = 50_000.0):
        self.refined_long_side = int(refined_long_side)
        self.coarse_seconds = coarse_seconds
        self.rest_seconds = rest_seconds
        self.min_long_side = min_long_side
        self.rays_per_second = rays_per_second
        self._rays, self._seconds = rays_per_second * coarse_seconds, coarse_seconds  # the guess, as one frame
        self.view: View | None = None
        self.version = 0
        self.moved_at = -math.inf
        self.shown: tuple[int, Level] | None = None  # (version, level) on screen

    # ------------------------------------------------------------------ inputs
    def set_view(self, view: View, now: float) -> bool:
        """The browser's camera now; returns whether it differs from the last one (a new version)."""
        if view.same_as(self.view):
            return False
        self.view = view
        self.version += 1
        self.moved_at = now
        return True

    def invalidate(self, now: float, coarse_first: bool = True) -> None:
        """What is on screen is out of date (a setting changed, or the model did while training).

        ``coarse_first``: show a coarse frame first (a setting the user just changed); otherwise the
        next frame is the refined one (the model changed under a resting camera: no flicker)."""
        self.version += 1
        if coarse_first:
            self.moved_at = now
        else:
            self.shown = (self.version, "coarse")

    def set_refined_long_side(self, long_side: int, now: float) -> None:
        if int(long_side) != self.refined_long_side:
            self.refined_long_side = int(long_side)
            self.invalidate(now)

    # ------------------------------------------------------------------ decisions
    def coarse_long_side(self) -> int:
        """The coarse frame's longer side: as many pixels as ``coarse_seconds`` of rendering allows."""
        aspect = self.view.aspect if self.view is not None else 16 / 9
        pixels = max(self.rays_per_second * self.coarse_seconds, 1.0)
        long_side = math.sqrt(pixels * max(aspect, 1 / aspect))
        return int(min(max(long_side, self.min_long_side), self.refined_long_side))

    def band_rows(self, width: int) -> int:
        return max(1, int(self.rays_per_second * self.coarse_seconds / max(width, 1)))

    def next_job(self, now: float) -> FrameJob | None:
        """The frame to render now, or None (nothing to do, or waiting for the camera to rest)."""
        if self.view is None:
            return None
        if self.shown is None or self.shown[0] != self.version:
            coarse = self.coarse_long_side()
            if coarse >= self.refined_long_side:  # fast enough: the refined frame is the coarse one
                return self._job("refined", self.refined_long_side)
            return self._job("coarse", coarse)
        if self.shown[1] == "coarse" and now - self.moved_at >= self.rest_seconds:
            return self._job("refined", self.refined_long_side)
        return None

    def seconds_until_due(self, now: float) -> float | None:
        """How long until :meth:`next_job` has work without new input (None: not without new input)."""
        if self.view is None:
            return None
        if self.shown is None or self.shown[0] != self.version:
            return 0.0
        if self.shown[1] == "coarse":
            return max(0.0, self.rest_seconds - (now - self.moved_at))
        return None

    def _job(self, level: Level, long_side: int) -> FrameJob:
        width = self.view.size(long_side)[0]
        return FrameJob(self.view, self.version, level, long_side, self.band_rows(width))

    def superseded(self, job: FrameJob) -> bool:
        """Whether a newer camera or setting makes ``job`` not worth finishing."""
        return job.version != self.version

    # ------------------------------------------------------------------ feedback
    def rendered(self, job: FrameJob, seconds: float, rays: int, shown: bool = True) -> None:
        """``rays`` of ``job`` took ``seconds`` (a whole frame, or the bands before it was dropped)."""
        if rays > 0 and seconds > 0:
            # Rays over seconds of the recent frames, older ones fading: weighted by time, so a cheap
            # frame of sky cannot inflate the estimate tenfold, and a device that got busier (training)
            # is followed within a few frames.
            self._rays = FORGET * self._rays + rays
            self._seconds = FORGET * self._seconds + seconds
            self.rays_per_second = self._rays / self._seconds
        if shown and job.version == self.version:
            self.shown = (job.version, job.level)
