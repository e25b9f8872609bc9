"""The web viewer (``nerfxl view``, nerfxl.viewer) end to end with a real browser: how long a camera move
takes to show, and frame times while flying across fetch-window borders.

The viewer runs in this process as ``view_on_process`` builds it (a :class:`FrameBackend` and a
:class:`Viewer` serving on a background thread); a headless Chromium (``/usr/bin/chromium`` driven by
playwright, viewport --viewport, 1280 × 720 by default) opens the page. The camera is moved from Python
the way the viewer itself moves it (``client.camera.wxyz`` / ``position`` in one ``client.atomic()``);
the browser echoes the camera back and that echo starts the render, as a mouse drag would. Figures come
from ``viewer.records`` (one FrameRecord per frame shown: level, size, render seconds, seconds since the
camera it answers changed); each record is matched to the pose it answers by the camera its render was
given (a thin FrameBackend subclass logs every ``render_rows`` call), not by counting versions, since the
browser may echo a move in more than one message.

1. Camera moves (whole model, default viewer options, refined frame's long side --resolution). Once the
   page is connected and idle (the initial camera's refined frame shown, nothing rendering), the camera
   is set to each of --poses poses of the run's orbit (``orbit_path``, away from the initial one), and for
   each: the first coarse frame's and the refined frame's ``latency_seconds`` (camera echo received →
   frame sent to the browser), ``python_to_shown_s`` (camera set in Python → frame sent: adds the browser's
   round trip), their sizes, render seconds and the refined frame's bands. The page's first frames after
   loading are reported apart (``initial``).
2. Flight with dynamic fetching (``load_for_fetching(RUN, --neighbourhood, --blocks, camera_limits="clamp")``,
   ``FrameBackend(..., fetcher=..., pixels_split=True)`` as ``nerfxl view --dynamic-fetch``): the camera
   follows --flight-poses poses of ``flyover_path`` at 80 % of the height limit for the browser camera's
   field of view and aspect (as ``render_fetching`` picks it: 0.2-block margin, 30° tilt), each set as soon
   as the previous pose's coarse frame was sent. The page opens at pose 0 (the viewer's own initial orbit
   view would be lowered or refused by the camera limits) and pose 0 is the warm-up (first-call costs, the
   initial window load, the browser's transient cameras). A flight stands for a continuous drag, in which
   the browser reports a new camera before the last one rests: the flights' viewers get a rest time of
   FLIGHT_REST_SECONDS, so no refined band starts between two poses (with the default 0.2 s one would start
   whenever a coarse frame plus the browser's round trip takes longer, and delay the next coarse frame by
   up to a band). Reported: p50 / p99 / max of the coarse frames' render seconds and latency, p99 / p50,
   the window fetches (``fetcher.log.fills``) and the frames that waited for one (``fetcher.log.waits``)
   during the timed poses, frames whose camera the fetcher lowered (``frames_clamped``) or could not show
   at all (``frames_refused``, see TimedBackend).
3. The same flight on the whole model (``load_trained``), side by side, with the ratios fetching / whole.

``reference`` renders a coarse-sized frame directly (no viewer, no browser) to show what the browser's own
CPU use (Chromium draws the page with SwiftShader when there is no GPU) costs the renders.

    python benchmarks/bench_viewer.py [--run RUN_DIR] [--resolution 1280] [--poses 3] [--flight-poses 60]
        [--neighbourhood 3] [--blocks 8x8] [--quick]

Without --run a run of 4 tiles is trained first (the "city" preset on the small city, --train-steps; --quick:
the "tiny" preset on the tiny city, 2 steps) in a temporary folder. Prints one JSON object to stdout;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader"]
MARGIN_BLOCKS = 0.2  # as render_fetching
HEIGHT_FRACTION = 0.8  # of the height limit, as render_fetching
POSE_ATOL = 1e-4  # |rendered camera − pose set| (model units) for a frame to answer that pose
FLIGHT_REST_SECONDS = 3600.0  # the flights' ViewerOptions.rest_seconds: no refined frame between poses


def log(msg: str) -> None:
    print(f"[bench_viewer] {msg}", file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict | None:
    """p50, p90, p99, max and mean of ``values``."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "mean": float(a.mean()), "n": len(a)}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- the run
def train_run(args, run_dir: Path) -> Path:
    """A run of 4 tiles of the "city" preset (--quick: the "tiny" one), trained --train-steps steps (as
    ``nerfxl train city --partitions 4`` would) and saved in ``run_dir``."""
    from bench_dynamic_fetch import train_and_save

    from nerfxl.data.city import ensure_city
    from nerfxl.presets import TRAIN_PRESETS

    base = TRAIN_PRESETS["tiny" if args.quick else "city"][1]
    config = dataclasses.replace(base, data=ensure_city(args.city, seed=0, progress=False), device=args.device,
                                 partitions=4, progress=False, eval_every=0, seed=0,
                                 **({"downscale": 4.0, "batch_rays": 256} if args.quick else {}))
    return train_and_save(config, run_dir, args.train_steps)


# ---------------------------------------------------------------------------------------------- instrumentation
def timed_backend_class():
    from nerfxl.viewer.backends import FrameBackend

    class TimedBackend(FrameBackend):
        """A FrameBackend that logs every band it renders: the camera it was given, size, rows, seconds,
        and whether dynamic fetching lowered the camera."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.calls: list[Call] = []
            self.refused: list[str] = []

        def render_rows(self, cameras, rows, settings):
            t0 = time.perf_counter()
            band, rendered = super().render_rows(cameras, rows, settings)
            refused = band is None  # a camera no fetch window can hold (the viewer refuses it)
            if refused:
                self.refused.append(self.refusal)
            t1 = time.perf_counter()
            c2w = cameras.camera_to_worlds[0].double().cpu().numpy()
            clamped = rendered is not None and not np.allclose(
                rendered.camera_to_worlds[0].double().cpu().numpy(), c2w, atol=1e-5)
            self.calls.append(Call(c2w, int(cameras.width[0]), int(cameras.height[0]), (int(rows[0]), int(rows[1])),
                                   t1 - t0, t1, clamped, refused))
            return band, rendered

    return TimedBackend


@dataclass
class Call:
    c2w: np.ndarray
    width: int
    height: int
    rows: tuple[int, int]
    seconds: float
    end: float
    clamped: bool
    refused: bool = False

    @property
    def whole_frame(self) -> bool:
        return self.rows == (0, self.height)


class RecordTap(list):
    """Replaces ``viewer.records``: also notes when each record was appended (the frame was just sent to
    the browser) and which render call produced it, and wakes the waiting benchmark."""

    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.shown_at: list[float] = []
        self.last_call: list[int] = []  # index into backend.calls of the frame's last band
        self.cond = threading.Condition()

    def append(self, record) -> None:
        with self.cond:
            super().append(record)
            self.shown_at.append(time.perf_counter())
            self.last_call.append(len(self.backend.calls) - 1)
            self.cond.notify_all()

    def camera(self, i: int) -> np.ndarray:
        return self.backend.calls[self.last_call[i]].c2w


# ---------------------------------------------------------------------------------------------- a served page
class ServedPage:
    """A Viewer serving on a background thread (as ``nerfxl view`` does on its main thread) and one
    browser page on it."""

    def __init__(self, browser, backend, scene, options, viewport: tuple[int, int], what: str,
                 initial_c2w: np.ndarray | None = None):
        from nerfxl.viewer.server import Viewer

        self.what = what
        self.backend = backend
        self.viewer = Viewer(backend, scene, options)
        if initial_c2w is not None:  # the page opens there (instead of the viewer's orbit view)
            c2w = np.asarray(initial_c2w, dtype=np.float64)
            initial = self.viewer.server.initial_camera
            initial.position = tuple(float(v) for v in c2w[:, 3])
            initial.look_at = tuple(float(v) for v in c2w[:, 3] - c2w[:, 2])
            initial.up = (0.0, 0.0, 1.0)  # the flyover's up (its cameras have no roll about z)
        self.tap = RecordTap(backend)
        self.viewer.records = self.tap
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name=f"viewer-{what}", daemon=True)
        self.thread.start()
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.loaded_at = time.perf_counter()
        self.page.goto(self.viewer.url)
        deadline = time.perf_counter() + 120
        while not self.viewer.server.get_clients():
            self.check()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{what}: the browser did not connect to {self.viewer.url}")
            time.sleep(0.02)
        self.client = list(self.viewer.server.get_clients().values())[0]
        log(f"{what}: browser connected to {self.viewer.url} in {time.perf_counter() - self.loaded_at:.1f} s")

    def _serve(self) -> None:
        try:
            self.viewer.serve_forever(self.stop)
        except BaseException as e:  # reported by check() on the main thread
            self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"{self.what}: the viewer's render loop failed: {self.error!r}") from self.error
        if not self.thread.is_alive() and not self.stop.is_set():
            raise RuntimeError(f"{self.what}: the viewer's render loop ended")

    def set_camera(self, c2w: np.ndarray) -> float:
        """Move the browser's camera to ``c2w`` ([3, 4] OpenGL, model frame); returns when it was set."""
        from nerfxl.viewer.camera import browser_pose

        position, wxyz = browser_pose(np.asarray(c2w, dtype=np.float64))
        t = time.perf_counter()
        with self.client.atomic():
            self.client.camera.wxyz = wxyz
            self.client.camera.position = position
        return t

    def wait_record(self, match, start: int, timeout: float, what: str) -> int:
        """The index of the first record from ``start`` on for which ``match(i)`` holds."""
        deadline = time.perf_counter() + timeout
        i = start
        with self.tap.cond:
            while True:
                while i < len(self.tap):
                    if match(i):
                        return i
                    i += 1
                self.check()
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(f"{self.what}: no {what} within {timeout:.0f} s")
                self.tap.cond.wait(min(left, 0.5))

    def frame_for(self, c2w: np.ndarray, start: int, timeout: float, levels=("coarse", "refined")) -> int:
        """The first frame from record ``start`` on rendered for camera ``c2w``."""
        target = np.asarray(c2w, dtype=np.float64)
        try:
            return self.wait_record(lambda i: self.tap[i].level in levels
                                    and np.allclose(self.tap.camera(i), target, atol=POSE_ATOL),
                                    start, timeout, f"{'/'.join(levels)} frame for the pose set")
        except TimeoutError as e:
            calls = self.backend.calls
            seen = [float(np.abs(c.c2w - target).max()) for c in calls[self.tap.last_call[start - 1] + 1:]] \
                if start > 0 else []
            raise TimeoutError(f"{e}; {len(self.tap) - start} frames since, cameras rendered differ from it by "
                               f"{[round(d, 5) for d in seen[-8:]]} (the browser holds "
                               f"{np.round(self.client.camera.position, 5).tolist()})") from None

    def settle(self, c2w: np.ndarray, timeout: float, quiet: float = 0.5) -> int:
        """After the page loaded: let the browser finish applying its initial camera (its frames for the
        transient cameras are rendered), then make sure it is at ``c2w``; returns that frame's record."""
        self.wait_record(lambda i: True, 0, timeout, "first frame")
        deadline = time.perf_counter() + timeout
        while time.perf_counter() - self.backend.calls[-1].end < quiet:
            self.check()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.what}: the initial camera did not settle within {timeout:.0f} s")
            time.sleep(0.05)
        with self.tap.cond:
            last = len(self.tap) - 1
            if np.allclose(self.tap.camera(last), c2w, atol=POSE_ATOL):
                return last
        start = len(self.tap)
        self.set_camera(c2w)
        return self.frame_for(c2w, start, timeout)

    def wait_idle(self, timeout: float, quiet: float = 1.0) -> None:
        """Until the last frame shown is refined and nothing has been rendered for ``quiet`` seconds."""
        deadline = time.perf_counter() + timeout
        while True:
            self.check()
            calls = self.backend.calls
            with self.tap.cond:
                last_refined = len(self.tap) > 0 and self.tap[-1].level == "refined"
            if last_refined and calls and time.perf_counter() - calls[-1].end >= quiet:
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.what}: the viewer did not become idle within {timeout:.0f} s")
            time.sleep(0.05)

    def browser_view(self):
        """The browser camera's View (its field of view and aspect)."""
        from nerfxl.viewer.camera import view_from_browser

        cam = self.client.camera
        return view_from_browser(cam.position, cam.wxyz, cam.fov, cam.aspect)

    def close(self) -> None:
        try:
            self.page.close()
        except Exception as e:  # the browser already went away
            log(f"{self.what}: closing the page: {e!r}")
        self.viewer.stop()
        self.thread.join(timeout=300)
        if self.thread.is_alive():
            log(f"{self.what}: the render loop did not stop within 300 s")
        self.backend.stop()
        self.viewer.close()
        self.backend.close()


def record_row(page: ServedPage, i: int, t_set: float | None = None) -> dict:
    r = page.tap[i]
    row = {"level": r.level, "width": r.width, "height": r.height, "render_s": r.render_seconds,
           "latency_s": r.latency_seconds, "version": r.version}
    if t_set is not None:
        row["python_to_shown_s"] = page.tap.shown_at[i] - t_set
    return row


def bands_of(page: ServedPage, i: int) -> int:
    """How many render calls made record ``i`` (a refined frame's bands)."""
    r, last = page.tap[i], page.tap.last_call[i]
    calls = page.backend.calls
    n, row = 0, r.height
    for c in reversed(calls[:last + 1]):  # back from the last band to the band starting at row 0
        if (c.width, c.height) != (r.width, r.height) or c.rows[1] != row:
            break
        n, row = n + 1, c.rows[0]
        if row == 0:
            break
    return n


# ---------------------------------------------------------------------------------------------- measurements
def reference_speed(backend, scene, long_side: int, repeats: int) -> dict:
    """Rays per second rendering a ``long_side``-wide 16:9 frame straight through the backend (no viewer,
    no browser): the median of ``repeats`` after one untimed call."""
    from nerfxl.viewer.backends import RenderSettings
    from nerfxl.viewer.camera import View

    c2w = initial_pose(scene)
    fov = (2 * math.atan(0.5 * float(scene.cameras.height[0]) / float(scene.cameras.fy[0]))
           if scene.cameras is not None else math.radians(50.0))
    view = View(c2w, fov, 16 / 9)
    cams = view.cameras(long_side)
    w, h = int(cams.width[0]), int(cams.height[0])
    seconds = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        backend.render_rows(cams, (0, h), RenderSettings())
        seconds.append(time.perf_counter() - t0)
    s = statistics.median(seconds[1:])
    backend.calls.clear()
    return {"width": w, "height": h, "render_s": s, "rays_per_second": w * h / s}


def initial_pose(scene) -> np.ndarray:
    from nerfxl.data.camera_paths import orbit_path

    box = torch.as_tensor(scene.scene_box, dtype=torch.float32)
    if scene.cameras is not None:
        return orbit_path(scene.cameras, box, 8)[0].double().numpy()
    centre = 0.5 * (scene.scene_box[0] + scene.scene_box[1])
    eye = centre + np.array([0.0, -1.5, 1.0]) * (scene.scene_box[1] - scene.scene_box[0]).max()
    from nerfxl.data.camera_paths import look_at

    return look_at(torch.as_tensor(eye), torch.as_tensor(centre), torch.tensor([0.0, 0.0, 1.0],
                                                                              dtype=torch.float64)).numpy()


def camera_moves(page: ServedPage, scene, n_poses: int, timeout: float) -> dict:
    """Part 1: page load → first frames, then --poses camera moves from an idle viewer."""
    from nerfxl.data.camera_paths import orbit_path

    first = page.wait_record(lambda i: True, 0, timeout, "first frame")
    initial = {"page_load_to_first_frame_s": page.tap.shown_at[first] - page.loaded_at,
               "first_frame": record_row(page, first)}
    refined = page.wait_record(lambda i: page.tap[i].level == "refined", first, timeout, "initial refined frame")
    initial["page_load_to_refined_s"] = page.tap.shown_at[refined] - page.loaded_at
    initial["refined_frame"] = record_row(page, refined)
    page.wait_idle(timeout)
    # The page's first frames may be for cameras the browser held before it applied the viewer's initial
    # camera (viser's default, then half-applied ones): listed, and the initial view's own frames found.
    loaded = page.loaded_at
    initial["frames_before_idle"] = [{**record_row(page, i), "shown_after_load_s": page.tap.shown_at[i] - loaded}
                                     for i in range(len(page.tap))]
    home = initial_pose(scene)
    own = [i for i in range(len(page.tap)) if np.allclose(page.tap.camera(i), home, atol=POSE_ATOL)]
    initial["page_load_to_initial_view_first_frame_s"] = page.tap.shown_at[own[0]] - page.loaded_at if own else None
    initial["frames_for_other_cameras_first"] = own[0] if own else None
    log(f"moves: first frame {initial['page_load_to_first_frame_s']:.2f} s after page load "
        f"({initial['first_frame']['width']}×{initial['first_frame']['height']}), refined "
        f"{initial['refined_frame']['width']}×{initial['refined_frame']['height']} after "
        f"{initial['page_load_to_refined_s']:.1f} s")

    if scene.cameras is not None:
        poses = orbit_path(scene.cameras, torch.as_tensor(scene.scene_box, dtype=torch.float32),
                           n_poses + 1)[1:].double().numpy()
    else:  # no training cameras: turn the initial pose about the up axis
        base = initial_pose(scene)
        centre = 0.5 * (scene.scene_box[0] + scene.scene_box[1])
        poses = []
        for k in range(1, n_poses + 1):
            a = 2 * math.pi * k / (n_poses + 1)
            rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
            poses.append(np.concatenate([rot @ base[:, :3], (rot @ (base[:, 3] - centre) + centre)[:, None]], 1))
        poses = np.stack(poses)
    rows = []
    for k, pose in enumerate(poses):
        start = len(page.tap)
        t_set = page.set_camera(pose)
        c = page.frame_for(pose, start, timeout)
        coarse = record_row(page, c, t_set) if page.tap[c].level == "coarse" else None
        version = page.tap[c].version
        r = c if coarse is None else page.wait_record(
            lambda i: page.tap[i].level == "refined" and page.tap[i].version == version, c, timeout, "refined frame")
        refined = {**record_row(page, r, t_set), "bands": bands_of(page, r)}
        # Frames between the set and the matching one: the browser echoed the move in several messages.
        rows.append({"coarse": coarse, "refined": refined, "frames_for_other_cameras": c - start})
        log(f"move {k + 1}/{len(poses)}: coarse "
            + (f"{coarse['width']}×{coarse['height']} shown {coarse['latency_s']:.3f} s after the echo "
               f"({coarse['python_to_shown_s']:.3f} s after the set)" if coarse else "skipped (fast enough)")
            + f", refined {refined['width']}×{refined['height']} in {refined['bands']} bands after "
              f"{refined['latency_s']:.1f} s (render {refined['render_s']:.1f} s)")
        page.wait_idle(timeout)

    coarse = [r["coarse"] for r in rows if r["coarse"] is not None]
    refined = [r["refined"] for r in rows]

    def med_each(items, key):
        each = [x[key] for x in items]
        return {"median": statistics.median(each), "each": each} if each else None

    return {
        "initial": initial,
        "poses": rows,
        "coarse_latency_s": med_each(coarse, "latency_s"),
        "coarse_python_to_shown_s": med_each(coarse, "python_to_shown_s"),
        "coarse_render_s": med_each(coarse, "render_s"),
        "coarse_size": [[c["width"], c["height"]] for c in coarse],
        "refined_latency_s": med_each(refined, "latency_s"),
        "refined_python_to_shown_s": med_each(refined, "python_to_shown_s"),
        "refined_render_s": med_each(refined, "render_s"),
        "refined_size": [[r["width"], r["height"]] for r in refined],
        "refined_bands": [r["bands"] for r in refined],
        "refined_rays_per_second": med_each([{"v": r["width"] * r["height"] / r["render_s"]} for r in refined], "v"),
    }


def flight_height(page: ServedPage, layout, neighbourhood: int, long_side: int) -> tuple[float, float]:
    """(height, height limit) above the ground for the browser camera's field of view and aspect, as
    ``render_fetching`` picks it (80 % of the limit at the flyover tilt, 0.2-block margin)."""
    from nerfxl.fetch.limits import TRIGGER_BLOCKS, CameraLimits, half_diagonal_fov_deg
    from nerfxl.data.camera_paths import FLYOVER_TILT_DEG

    cams = page.browser_view().cameras(long_side)
    limits = CameraLimits(neighbourhood, min(layout.block_size), half_diagonal_fov_deg(cams), TRIGGER_BLOCKS,
                          margin_blocks=MARGIN_BLOCKS)
    top = limits.max_height(FLYOVER_TILT_DEG)
    return HEIGHT_FRACTION * top, top


def fly(page: ServedPage, poses: np.ndarray, timeout: float, fetcher=None) -> dict:
    """Parts 2 and 3: follow ``poses`` from a page that opened at pose 0 (its first frame is the warm-up),
    each pose set once the previous one's coarse frame was sent."""
    warm = page.settle(poses[0], timeout)
    fills0 = len(fetcher.log.fills) if fetcher is not None else 0
    waits0 = fetcher.log.waits if fetcher is not None else 0
    calls0 = len(page.backend.calls)
    rows, t0 = [], time.perf_counter()
    for k in range(1, len(poses)):
        start = len(page.tap)
        t_set = page.set_camera(poses[k])
        i = page.frame_for(poses[k], start, timeout)
        rows.append({**record_row(page, i, t_set), "frames_for_other_cameras": i - start})
        if k % 10 == 0 or k == len(poses) - 1:
            log(f"  {page.what}: pose {k}/{len(poses) - 1}, last coarse {rows[-1]['width']}×{rows[-1]['height']} "
                f"render {rows[-1]['render_s'] * 1e3:.0f} ms, latency {rows[-1]['latency_s'] * 1e3:.0f} ms")
    seconds = time.perf_counter() - t0
    calls = page.backend.calls[calls0:]
    coarse = [r for r in rows if r["level"] == "coarse"]
    render = spread([r["render_s"] for r in coarse])
    latency = spread([r["latency_s"] for r in coarse])
    out = {
        "timed_poses": len(rows),
        "seconds": seconds,
        "warmup_frame": record_row(page, warm),
        "coarse_frames": len(coarse),
        "refined_instead_of_coarse": len(rows) - len(coarse),
        "coarse_sizes": sorted({(r["width"], r["height"]) for r in coarse}),
        "render_s": render,
        "latency_s": latency,
        "python_to_shown_s": spread([r["python_to_shown_s"] for r in coarse]),
        "p99_over_p50_render": ratio(render and render["p99"], render and render["p50"]),
        "p99_over_p50_latency": ratio(latency and latency["p99"], latency and latency["p50"]),
        "refined_bands_started": sum(1 for c in calls if not c.whole_frame),
        "refined_band_s": spread([c.seconds for c in calls if not c.whole_frame]),
        "frames_for_other_cameras": sum(r["frames_for_other_cameras"] for r in rows),
        "frames_clamped": sum(1 for c in calls if c.clamped),
        "frames_refused": sum(1 for c in calls if c.refused),
        "frames_refused_incl_warmup": sum(1 for c in page.backend.calls if c.refused),
        "each_render_s": [r["render_s"] for r in coarse],
        "each_latency_s": [r["latency_s"] for r in coarse],
    }
    if fetcher is not None:
        fills = fetcher.log.fills[fills0:]
        out.update({"fetches": len(fills), "waits": fetcher.log.waits - waits0,
                    "fetch_s": spread([f.total_s for f in fills]),
                    "fetches_total_incl_warmup": len(fetcher.log.fills), "waits_total_incl_warmup": fetcher.log.waits})
    return out


def summary_of_flight(name: str, f: dict) -> str:
    r, lat = f["render_s"], f["latency_s"]
    if r is None:
        return f"{name}: no coarse frame (every frame was rendered refined at once: fast enough)"
    s = (f"{name}: render p50 {r['p50'] * 1e3:.0f} ms p99 {r['p99'] * 1e3:.0f} ms (p99/p50 "
         f"{f['p99_over_p50_render']:.2f}), latency p50 {lat['p50'] * 1e3:.0f} ms p99 {lat['p99'] * 1e3:.0f} ms "
         f"(p99/p50 {f['p99_over_p50_latency']:.2f}), {f['refined_bands_started']} refined bands started")
    if "fetches" in f:
        s += f", {f['fetches']} fetches, {f['waits']} waits"
    return s


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a trained run (of several tiles, or a ground-plane model, for the fetching flight); "
                             "default: train one of 4 tiles in a temporary folder")
    parser.add_argument("--resolution", type=int, default=None,
                        help="the refined frame's longer side (default 1280: 1280×720 in the 16:9 viewport; "
                             "--quick 320)")
    parser.add_argument("--poses", type=int, default=None, help="camera moves timed to refined (default 3; --quick 2)")
    parser.add_argument("--flight-poses", type=int, default=None,
                        help="poses along the flyover, the first a warm-up (default 60; --quick 10)")
    parser.add_argument("--neighbourhood", type=int, default=3, help="fetch window side N")
    parser.add_argument("--blocks", default="8x8",
                        help="NXxNY cells (tiled run) or blocks (ground-plane model) of the fetch grid; a "
                             "plane-parallel run's own cut is used when this is 'run'")
    parser.add_argument("--viewport", default="1280x720", help="the browser's viewport, WxH")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="steps of the run trained without --run (default 300; --quick 2)")
    parser.add_argument("--device", default="auto", help="rendering device (auto: cuda if available)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for any one frame (default 900; --quick 60)")
    parser.add_argument("--no-fetch", action="store_true", help="skip the flight with dynamic fetching")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the tiny preset on the tiny city, 320-pixel refined frames, 2 moves, "
                             "10 flight poses")
    args = parser.parse_args()
    defaults = ({"resolution": 320, "poses": 2, "flight_poses": 10, "train_steps": 2, "timeout": 60.0} if args.quick
                else {"resolution": 1280, "poses": 3, "flight_poses": 60, "train_steps": 300, "timeout": 900.0})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.poses < 1 or args.flight_poses < 3:
        parser.error("--poses must be >= 1 and --flight-poses >= 3")
    try:
        viewport = tuple(int(v) for v in args.viewport.lower().split("x"))
        assert len(viewport) == 2 and min(viewport) > 0
    except (ValueError, AssertionError):
        parser.error(f"--viewport {args.viewport!r}: expected WxH, e.g. 1280x720")
    args.city = "tiny" if args.quick else "small"
    if not Path(CHROMIUM).exists():
        sys.exit(f"bench_viewer: {CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("bench_viewer: the playwright Python package is missing (pip install playwright)")

    from nerfxl.parallel.images import local_context
    from nerfxl.fetch.load import load_for_fetching
    from nerfxl.data.camera_paths import FLYOVER_TILT_DEG, flyover_path
    from nerfxl.parallel.distributed import resolve_device
    from nerfxl.run.trained import load_trained
    from nerfxl.view import scene_info
    from nerfxl.viewer.server import ViewerOptions

    # viser prints its banner (and chromium may print) to stdout: send file descriptor 1 to stderr until
    # the JSON document is written to the real stdout.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    device = resolve_device(args.device)
    TimedBackend = timed_backend_class()
    work = Path(tempfile.mkdtemp(prefix="viewer-bench-"))
    pages: list[ServedPage] = []
    fetching = None
    try:
        if args.run is None:
            t0 = time.perf_counter()
            run_dir = train_run(args, work / "run")
            log(f"trained a 4-tile run on the {args.city} city ({args.train_steps} steps) in "
                f"{time.perf_counter() - t0:.1f} s")
        else:
            run_dir = args.run
        options = ViewerOptions(port=free_port(), resolution=args.resolution)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            chromium_version = browser.version
            try:
                # ------------------------------------------------ whole model: moves, then the flight
                run = load_trained(run_dir, str(device))
                backend = TimedBackend(run.renderer, local_context(run.renderer))
                scene = scene_info(run, Path(run_dir).name)
                backend.n_train_images = scene.n_train_images
                reference = reference_speed(backend, scene, 160 if not args.quick else 64, 2 if args.quick else 3)
                log(f"reference: {reference['width']}×{reference['height']} in {reference['render_s']:.2f} s "
                    f"({reference['rays_per_second']:.0f} rays/s) without viewer and browser")
                page = ServedPage(browser, backend, scene, options, viewport, "moves")
                pages.append(page)
                moves = camera_moves(page, scene, args.poses, args.timeout)

                # The flight: the fetch layout's height limit for the browser camera (its fov and aspect).
                fetching = load_for_fetching(run_dir, args.neighbourhood, None if args.blocks == "run" else args.blocks,
                                             str(device), "memory", camera_limits="clamp")
                layout = fetching.layout
                height, top = flight_height(page, layout, args.neighbourhood, args.resolution)
                page.close()
                pages.remove(page)
                box = run.renderer.scene_box.cpu()
                poses = flyover_path(box, args.flight_poses, height, FLYOVER_TILT_DEG).double().numpy()
                log(f"flight: {args.flight_poses} poses at {height:.4f} above the ground (limit {top:.4f}), "
                    f"{fetching.summary}")
                # A flight is a continuous drag: the browser sends a new camera before the last one rests,
                # so no refined frame starts between poses (a raised rest time; the coarse frames are alike).
                flight_options = dataclasses.replace(options, rest_seconds=FLIGHT_REST_SECONDS)

                # ------------------------------------------------ whole model
                flight_options = dataclasses.replace(flight_options, port=free_port())
                page = ServedPage(browser, backend, scene, flight_options, viewport, "whole", initial_c2w=poses[0])
                pages.append(page)
                flight_whole = fly(page, poses, args.timeout)
                log(summary_of_flight("whole model", flight_whole))
                page.close()
                pages.remove(page)

                # ------------------------------------------------ dynamic fetching
                flight_fetch = None
                if not args.no_fetch:
                    frun = fetching.trained
                    fbackend = TimedBackend(frun.renderer, local_context(frun.renderer), fetcher=fetching.fetcher,
                                            pixels_split=True)
                    fscene = scene_info(frun, Path(run_dir).name, fetching)
                    fbackend.n_train_images = fscene.n_train_images
                    flight_options = dataclasses.replace(flight_options, port=free_port())
                    page = ServedPage(browser, fbackend, fscene, flight_options, viewport, "fetching",
                                      initial_c2w=poses[0])
                    pages.append(page)
                    flight_fetch = fly(page, poses, args.timeout, fetching.fetcher)
                    log(summary_of_flight("fetching", flight_fetch))
                    page.close()
                    pages.remove(page)
            finally:
                for page in pages:
                    page.close()
                browser.close()
    finally:
        if fetching is not None:
            fetching.fetcher.close()  # finishes a fetch in flight, stops its threads (again: a no-op)
        shutil.rmtree(work, ignore_errors=True)

    def p50(f, key):
        return f[key]["p50"] if f and f.get(key) else None

    def p99(f, key):
        return f[key]["p99"] if f and f.get(key) else None

    result = {
        "benchmark": "viewer",
        "config": {
            "quick": args.quick,
            "run": str(args.run) if args.run else (f"trained: 4 tiles, {'tiny' if args.quick else 'city'} preset, "
                                                   f"{args.city} city, {args.train_steps} steps"),
            "run_step": run.step,
            "tiles": run.renderer.n_tiles,
            "resolution": args.resolution,
            "viewport": list(viewport),
            "poses": args.poses,
            "flight_poses": args.flight_poses,
            "neighbourhood": args.neighbourhood,
            "fetch": fetching.summary,
            "viewer_options": dataclasses.asdict(dataclasses.replace(options, port=0)),
            "flight_rest_seconds": FLIGHT_REST_SECONDS,
            "device": str(device),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "chromium": chromium_version,
            "wall_seconds_total": time.perf_counter() - t_start,
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        },
        "reference": reference,
        "camera_moves": moves,
        "flight": {
            "camera_height": height,
            "max_height_at_tilt": top,
            "tilt_deg": FLYOVER_TILT_DEG,
            "fetching": flight_fetch,
            "whole_model": flight_whole,
            "p99_over_p50_render": {"fetching": flight_fetch and flight_fetch["p99_over_p50_render"],
                                    "whole_model": flight_whole["p99_over_p50_render"]},
            "p99_over_p50_latency": {"fetching": flight_fetch and flight_fetch["p99_over_p50_latency"],
                                     "whole_model": flight_whole["p99_over_p50_latency"]},
            "ratio_fetching_to_whole": {
                "p50_render": ratio(p50(flight_fetch, "render_s"), p50(flight_whole, "render_s")),
                "p99_render": ratio(p99(flight_fetch, "render_s"), p99(flight_whole, "render_s")),
                "p50_latency": ratio(p50(flight_fetch, "latency_s"), p50(flight_whole, "latency_s")),
                "p99_latency": ratio(p99(flight_fetch, "latency_s"), p99(flight_whole, "latency_s")),
            },
        },
        "note": "latency_s: the viewer's FrameRecord.latency_seconds, from the browser's camera echo reaching the "
                "viewer to the frame being sent; python_to_shown_s adds the round trip through the browser (set "
                "in Python → echo). render_s: the frame's render seconds (with fetching, including the fetcher's "
                "prepare and any wait for a window). Chromium draws the page with SwiftShader on the CPU here, "
                "so it takes cores from the renders (compare reference.rays_per_second with "
                "camera_moves.refined_rays_per_second). Coarse frames are sized by the measured speed to about "
                "ViewerOptions.coarse_seconds, never below 48 pixels on the long side.",
    }
    sys.stdout.flush()
    json_out.write(json.dumps(result, indent=2) + "\n")
    json_out.flush()


if __name__ == "__main__":
    main()
