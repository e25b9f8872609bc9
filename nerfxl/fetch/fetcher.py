"""Dynamic fetching: keep the N × N blocks around the camera on the device, ping-pong (landmark.md §6).

Before each frame, :meth:`DynamicFetcher.prepare` looks at the camera:

1. a fetch that has finished since the last frame is taken: the buffers swap roles (compute ↔
   prefetch) and the grid reads the new window — on the first frame after the copy completed;
2. if the compute window holds the frame's footprint (:mod:`.limits`), the frame renders from it at once;
   when the camera has moved more than ``trigger`` blocks from the window's centre (in the direction it
   moves) the window re-centred on the camera is fetched in the background into the prefetch buffer;
3. only a frame the compute window cannot show waits: for the fetch in flight if its window will do,
   otherwise for a direct re-centre on the camera (a long jump).

So rendering never waits for a fetch it does not need yet. Copies run on a background thread
(the target's fill, e.g. :func:`.buffers.fill_window`: kept blocks device → device while new blocks
come host → device).

With several processes rendering the same frames (``ctx``), rank 0 alone reads the host and broadcasts
each new block (on a second process group, since the copies run on another thread), and the processes
agree once per frame whether the fetch in flight has finished everywhere, so that every process shows
the same window and starts the same fetches in the same order.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from nerfxl.data.cameras import Cameras

from .buffers import FillTiming
from .limits import TRIGGER_BLOCKS, camera_position_in_blocks, check_camera, footprint, footprint_in_blocks
from .window import BlockLayout, Window


@dataclass
class FrameFetch:
    """What :meth:`DynamicFetcher.prepare` did before one frame."""

    window: Window
    swapped: bool = False
    started: Window | None = None
    waited_s: float = 0.0
    recentred: bool = False


@dataclass
class FetchLog:
    """Every fill so far (timings) and the frames that had to wait."""

    fills: list[FillTiming] = field(default_factory=list)
    waits: int = 0


class FetchTarget(Protocol):
    """What the fetcher streams into: blocks of one ground plane (:class:`.field.BlockTarget`) or whole
    NeRF-XL tiles (:class:`.tiles.TileTarget`). ``layout`` places the windows (N × N cells of the scene's
    x-y) whatever the unit."""

    layout: BlockLayout
    n: int

    def new_buffer(self):
        """An empty device buffer for one window (it has ``window`` and ``nbytes``)."""

    def fill(self, store, src, dst, window: Window, overlap: bool, pool, ctx) -> FillTiming:
        """Fill ``dst`` with ``window``: what ``src`` (the compute buffer, or None) holds device → device,
        the rest from ``store``; sets ``dst.window``."""

    def show(self, buffer) -> None:
        """Make the renderer read ``buffer``."""


class DynamicFetcher:
    """Ping-pong window buffers for one :class:`FetchTarget`, filled from a host store.

    Args:
        target: what the renderer reads (it is shown the compute buffer).
        store: the host store of the target's units (:mod:`.store`, :mod:`.tiles`).
        z_range: the scene box's (bottom, top) z in model units (for the cameras' footprints).
        trigger: blocks from the window centre at which the next fetch starts.
        overlap: overlap device → device and host → device copies (False: one after the other).
        camera_limits: "error" (a one-line error for a camera that sees past any window) or "clamp"
            (lower it until it does not).
        ctx: the processes rendering together (None: this one alone); every one must call
            :meth:`prepare` for the same cameras.
    """

    def __init__(self, target: FetchTarget, store, z_range: tuple[float, float], trigger: float = TRIGGER_BLOCKS,
                 overlap: bool = True, camera_limits: str = "error", ctx=None):
        self.target = target
        self.store = store
        self.layout: BlockLayout = target.layout
        self.n = target.n
        self.layout.check_neighbourhood(self.n)
        self.z_range = z_range
        self.trigger = trigger
        self.overlap = overlap
        self.camera_limits = camera_limits
        self.compute = target.new_buffer()
        self.prefetch = target.new_buffer()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nerfxl-fetch")
        self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nerfxl-fetch-d2d")
        self._pending: Future | None = None
        self._pending_window: Window | None = None
        self.log = FetchLog()
        self.ctx = ctx
        self.fetch_ctx = None
        if ctx is not None and ctx.world_size > 1:
            from nerfxl.parallel.distributed import duplicate_context

            self.fetch_ctx = duplicate_context(ctx)

    # ------------------------------------------------------------------ buffers
    @property
    def buffer_bytes(self) -> int:
        """Device bytes of both window buffers (what dynamic fetching adds to the resident modules)."""
        return self.compute.nbytes + self.prefetch.nbytes

    def _fill(self, window: Window) -> FillTiming:
        timing = self.target.fill(self.store, self.compute if self.compute.window else None, self.prefetch, window,
                                  self.overlap, self._copier, self.fetch_ctx)
        self.log.fills.append(timing)
        return timing

    def _swap(self) -> None:
        self.compute, self.prefetch = self.prefetch, self.compute
        self.target.show(self.compute)

    def _start(self, window: Window) -> None:
        self._pending_window = window
        self._pending = self._background.submit(self._fill, window)

    def _finish_pending(self) -> float:
        """Wait for the fetch in flight (if any), swap to it; returns the seconds waited."""
        if self._pending is None:
            return 0.0
        t0 = time.perf_counter()
        self._pending.result()  # re-raises a failed copy here, on the rendering thread
        waited = time.perf_counter() - t0
        self._pending = self._pending_window = None
        self._swap()
        return waited

    def load(self, window: Window) -> None:
        """Load ``window`` now and show it (the first frame, or a direct re-centre)."""
        self._finish_pending()
        self._fill(window)
        self._swap()

    # ------------------------------------------------------------------ per frame
    def prepare(self, cameras: Cameras, index: int) -> tuple[Cameras, FrameFetch]:
        """Make camera ``index``'s view renderable; returns the cameras (one lowered with
        ``camera_limits="clamp"``) and what was done."""
        position, rect, target = self._view(cameras, index)
        if not self.layout.covers(target, rect):  # beyond the limits: an error, or the camera lowered
            cameras = check_camera(self.layout, cameras, index, self.n, self.z_range, self.camera_limits)
            position, rect, target = self._view(cameras, index)
        report = FrameFetch(window=target)
        if self._fetch_finished():
            self._finish_pending()
            report.swapped = True
        if self.compute.window is None:
            self.load(target)
            report.swapped = report.recentred = True
        elif not self.layout.covers(self.compute.window, rect):
            # This frame needs another window now.
            if self._pending is not None and self.layout.covers(self._pending_window, rect):
                report.waited_s = self._finish_pending()
            else:
                t0 = time.perf_counter()
                self.load(target)
                report.waited_s = time.perf_counter() - t0
                report.recentred = True
            report.swapped = True
            self.log.waits += 1
        if (self._pending is None and target != self.compute.window
                and self._moved_past_trigger(position, self.compute.window, target)):
            self._start(target)
            report.started = target
        report.window = self.compute.window
        return cameras, report

    def _view(self, cameras: Cameras, index: int):
        """Camera ``index``'s position and footprint in block units, and the window centred on it."""
        position = camera_position_in_blocks(self.layout, cameras, index)
        rect = footprint_in_blocks(self.layout, footprint(cameras, index, self.z_range))
        return position, rect, self.layout.window_around(position, self.n)

    def _fetch_finished(self) -> bool:
        """Whether a fetch is in flight and has finished (on every process of ``ctx``)."""
        done = self._pending is not None and self._pending.done()
        if self.fetch_ctx is None:
            return done
        from nerfxl.parallel.distributed import all_reduce_scalar

        return all_reduce_scalar(float(done), self.ctx, op="min") > 0

    def _moved_past_trigger(self, position: tuple[float, float], window: Window, target: Window) -> bool:
        cx, cy = window.centre
        dx = abs(position[0] - cx) if target.x0 != window.x0 else 0.0
        dy = abs(position[1] - cy) if target.y0 != window.y0 else 0.0
        return max(dx, dy) > self.trigger

    def close(self) -> None:
        """Finish any fetch in flight and stop the copy threads."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        self._background.shutdown()
        self._copier.shutdown()

    def __enter__(self) -> "DynamicFetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
