"""The viewer's page: a viser server whose browser camera is rendered progressively by our renderer.

Threads: viser answers the browser on its own threads; their callbacks only record what changed
(the camera, a setting) under one lock. Rendering happens on the thread that calls :meth:`Viewer.work`
(the main thread of ``nerfxl view``, or the training loop between steps), one unit at a time: a coarse
frame, or one band of rows of a refined frame. So the page never waits for a render, and a refined
frame the camera has left is dropped after at most one band.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nerfxl.data.cameras import Cameras
from nerfxl.data.transform import SceneTransform
from nerfxl.viewer.backends import BACKGROUNDS, OUTPUTS, FrameBackend, RenderSettings, band_image
from nerfxl.viewer.camera import View, browser_pose, view_of
from nerfxl.viewer.camera_path import Keyframe, camera_path_json, interpolate_path, save_camera_path
from nerfxl.viewer.overlays import boxes_as_segments, frustums, scene_scale, window_box
from nerfxl.viewer.progressive import FrameJob, ProgressiveSchedule

SAMPLING_CHOICES = ("0.25", "0.5", "1", "2", "4")
RESOLUTION_MARKS = (256, 640, 1280, 1920)


@dataclass
class FetchGeometry:
    """Where the fetch window lies: the block grid's origin and block size (model units), N and the z range."""

    xy_min: tuple[float, float]
    block_size: tuple[float, float]
    n: int
    z_range: tuple[float, float]


@dataclass
class SceneInfo:
    """What the page shows besides the renders (all in the model frame).

    Attributes:
        run_dir: the run folder (camera paths are saved under it).
        transform: model ↔ dataset frame (camera paths are written in the dataset's).
        scene_box: [2, 3].
        tile_boxes: [K, 2, 3] tiles (or branch blocks).
        owners: the process owning each tile (its overlay colour).
        block_boxes: [B, 2, 3] ground blocks (plane-parallel sub-planes or the fetch grid), or None.
        cameras: the training cameras (frustums; the first view), or None.
        up: the scene's up vector.
        n_train_images: appearance embeddings to choose from.
        image_size: (width, height) of the training images (camera paths render at it).
        label: the page title.
        fetch: the fetch window's geometry with dynamic fetching, else None.
    """

    run_dir: Path
    transform: SceneTransform
    scene_box: np.ndarray
    tile_boxes: np.ndarray
    owners: list[int]
    block_boxes: np.ndarray | None = None
    cameras: Cameras | None = None
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    n_train_images: int = 0
    image_size: tuple[int, int] = (1280, 720)
    label: str = "nerfxl"
    fetch: FetchGeometry | None = None


@dataclass
class ViewerOptions:
    """How the viewer serves and renders (the ``nerfxl view`` flags)."""

    host: str = "127.0.0.1"
    port: int = 7007
    resolution: int = 960
    coarse_seconds: float = 0.1
    rest_seconds: float = 0.2
    max_frustums: int = 200
    jpeg_quality: int = 85


@dataclass
class FrameRecord:
    """A frame shown in a browser: its level, size, render seconds and the seconds since the camera
    (or setting) it answers changed."""

    level: str
    width: int
    height: int
    render_seconds: float
    latency_seconds: float
    version: int


@dataclass
class _Session:
    """One browser tab: its camera's schedule and the refined frame in progress."""

    client: object
    schedule: ProgressiveSchedule
    job: FrameJob | None = None
    bands: list = field(default_factory=list)
    next_row: int = 0
    seconds: float = 0.0
    shown_view: View | None = None
    model_changed: bool = False
    """The model changed while a frame was in progress: re-render once it is shown (not before: a
    refined frame slower than the refresh interval would otherwise never finish)."""


class Viewer:
    """The viser page of a run, rendered by ``backend`` (rank 0 of its processes).

    Call :meth:`work` repeatedly (it renders one unit and returns whether there was one), or
    :meth:`serve_forever`.
    """

    def __init__(self, backend: FrameBackend, scene: SceneInfo, options: ViewerOptions | None = None):
        import viser

        self.backend = backend
        self.scene = scene
        self.options = options or ViewerOptions()
        self.settings = RenderSettings()
        self.records: list[FrameRecord] = []
        self.frames_shown = 0
        self.keyframes: list[Keyframe] = []
        self._lock = threading.Condition()
        self._sessions: dict[int, _Session] = {}
        self._stop_event = threading.Event()
        self._window_shown = None
        self.server = viser.ViserServer(host=self.options.host, port=self.options.port, label=scene.label,
                                        verbose=False)
        self.server.scene.set_up_direction(tuple(float(v) for v in scene.up))
        self._set_initial_camera()
        self._build_overlays()
        self._build_panel()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)

    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = self.options.host if self.options.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ page setup
    def _set_initial_camera(self) -> None:
        box = self.scene.scene_box
        centre = 0.5 * (box[0] + box[1])
        cams = self.scene.cameras
        if cams is not None and len(cams):
            import torch

            from nerfxl.data.camera_paths import orbit_path

            pose = orbit_path(cams, torch.as_tensor(box, dtype=torch.float32), 8)[0].double().numpy()
            fov = float(2 * np.arctan(0.5 * float(cams.height[0]) / float(cams.fy[0])))
        else:
            eye = centre + np.array([0.0, -1.5, 1.0]) * (box[1] - box[0]).max()
            pose = np.concatenate([np.eye(3), eye[:, None]], axis=1)
            fov = np.radians(50.0)
        self._initial = (tuple(float(v) for v in pose[:, 3]), tuple(float(v) for v in centre),
                         tuple(float(v) for v in self.scene.up), float(fov))
        initial = self.server.initial_camera
        initial.position, initial.look_at, initial.up, initial.fov = self._initial

    def _build_overlays(self) -> None:
        scene = self.server.scene
        width = 2.0
        segments, colours = boxes_as_segments(self.scene.tile_boxes, self.scene.owners)
        self.tile_overlay = scene.add_line_segments("/overlays/tiles", segments, colours, thickness=width,
                                                    thickness_units="screen")
        self.block_overlay = None
        if self.scene.block_boxes is not None and len(self.scene.block_boxes):
            seg, _ = boxes_as_segments(self.scene.block_boxes, [0] * len(self.scene.block_boxes))
            self.block_overlay = scene.add_line_segments("/overlays/blocks", seg, (160, 160, 160), thickness=1.0,
                                                         thickness_units="screen", visible=False)
        self.camera_overlay = scene.add_frame("/overlays/cameras", show_axes=False, visible=False)
        if self.scene.cameras is not None:
            size = 0.02 * scene_scale(self.scene.scene_box)
            for f in frustums(self.scene.cameras, self.options.max_frustums):
                scene.add_camera_frustum(f"/overlays/cameras/{f['index']}", f["fov"], f["aspect"], scale=size,
                                         thickness=1.0, thickness_units="screen", color=(240, 120, 40),
                                         wxyz=f["wxyz"], position=f["position"])
        self.window_overlay = None
        self.path_overlay = None

    def _build_panel(self) -> None:
        gui = self.server.gui
        # No share button: viser's share link tunnels the page through an outside server, which would
        # undo the loopback default (see docs/viewer.md, Security).
        gui.configure_theme(control_width="large", show_share_button=False)
        with gui.add_folder("Render"):
            self.frame_text = gui.add_text("Frame", "waiting for a browser camera", disabled=True)
            self.resolution = gui.add_slider("Resolution", 16, max(2048, int(self.options.resolution)), 16,
                                             int(self.options.resolution),
                                             marks=RESOLUTION_MARKS, hint="pixels of the refined frame's longer side")
            self.output = gui.add_dropdown("Output", OUTPUTS, initial_value="rgb")
            self.sampling = gui.add_dropdown("Samples ×", SAMPLING_CHOICES, initial_value="1",
                                             hint="samples per ray relative to the trained marching step")
            self.background = gui.add_dropdown("Background", BACKGROUNDS, initial_value="trained")
            self.appearance = gui.add_number("Appearance", -1, min=-1, max=max(self.scene.n_train_images - 1, -1),
                                             step=1, hint="training image whose appearance embedding is used "
                                                          "(−1: the zero embedding of novel views)")
        for handle in (self.resolution, self.output, self.sampling, self.background, self.appearance):
            handle.on_update(lambda _: self._settings_changed())
        with gui.add_folder("Overlays"):
            self.show_tiles = gui.add_checkbox("Tile boxes", True, hint="coloured by the process that owns them")
            self.show_cameras = gui.add_checkbox("Training cameras", False)
            self.show_blocks = gui.add_checkbox("Blocks", False, visible=self.block_overlay is not None)
            self.show_window = gui.add_checkbox("Fetch window", self.scene.fetch is not None,
                                                visible=self.scene.fetch is not None)
        self.show_tiles.on_update(lambda e: setattr(self.tile_overlay, "visible", e.target.value))
        self.show_cameras.on_update(lambda e: setattr(self.camera_overlay, "visible", e.target.value))
        if self.block_overlay is not None:
            self.show_blocks.on_update(lambda e: setattr(self.block_overlay, "visible", e.target.value))
        self.show_window.on_update(lambda e: self._show_window_overlay())
        with gui.add_folder("Camera path"):
            self.path_text = gui.add_text("Keyframes", "0", disabled=True)
            add = gui.add_button("Add keyframe")
            remove = gui.add_button("Remove last")
            clear = gui.add_button("Clear")
            self.path_seconds = gui.add_number("Seconds", 4.0, min=0.1, max=600.0, step=0.1)
            self.path_fps = gui.add_number("FPS", 24.0, min=1.0, max=120.0, step=1.0)
            preview = gui.add_button("Preview")
            self.path_name = gui.add_text("File name", "camera_path")
            save = gui.add_button("Save camera_path.json")
            self.path_saved = gui.add_text("Saved", "", disabled=True)
        add.on_click(self._add_keyframe)
        remove.on_click(lambda _: self._edit_keyframes(self.keyframes[:-1]))
        clear.on_click(lambda _: self._edit_keyframes([]))
        preview.on_click(self._preview_path)
        save.on_click(lambda _: self._save_path())

    # ------------------------------------------------------------------ browsers
    def _on_connect(self, client) -> None:
        session = _Session(client, ProgressiveSchedule(int(self.resolution.value), self.options.coarse_seconds,
                                                       self.options.rest_seconds))

        def camera_moved(camera) -> None:
            view = view_of(camera)
            with self._lock:
                if session.schedule.set_view(view, time.perf_counter()):
                    self._lock.notify_all()

        # Start from the run's view, not whatever camera the page had before it applied the initial one.
        position, look_at, up, fov = self._initial
        with client.atomic():
            client.camera.up_direction = up
            client.camera.position = position
            client.camera.look_at = look_at
            client.camera.fov = fov
        client.camera.on_update(camera_moved)
        with self._lock:
            self._sessions[client.client_id] = session
        camera_moved(client.camera)

    def _on_disconnect(self, client) -> None:
        with self._lock:
            self._sessions.pop(client.client_id, None)

    def _settings_changed(self) -> None:
        now = time.perf_counter()
        with self._lock:
            self.settings = RenderSettings(sampling=float(self.sampling.value), appearance=int(self.appearance.value),
                                           background=self.background.value, output=self.output.value)
            for s in self._sessions.values():
                s.schedule.set_refined_long_side(int(self.resolution.value), now)
                s.schedule.invalidate(now)
            self._lock.notify_all()

    def model_changed(self) -> None:
        """The model was updated (training): re-render every browser's view, refined at once."""
        now = time.perf_counter()
        with self._lock:
            for s in self._sessions.values():
                if s.job is None:
                    s.schedule.invalidate(now, coarse_first=False)
                else:
                    s.model_changed = True
            self._lock.notify_all()

    # ------------------------------------------------------------------ rendering
    def _pick(self, now: float) -> tuple[_Session, FrameJob] | tuple[None, None]:
        """The session to work on: one with a frame in progress that is still wanted, else the one whose
        next frame is most urgent (coarse frames first)."""
        best = None
        for s in self._sessions.values():
            if s.job is not None and not s.schedule.superseded(s.job):
                return s, s.job
            job = s.schedule.next_job(now)
            if job is not None and (best is None or (job.level == "coarse" and best[1].level != "coarse")):
                best = (s, job)
        return best if best is not None else (None, None)

    def seconds_until_due(self) -> float | None:
        now = time.perf_counter()
        with self._lock:
            waits = [w for s in self._sessions.values() if (w := s.schedule.seconds_until_due(now)) is not None]
        return min(waits) if waits else None

    def work(self) -> bool:
        """Render one unit (a coarse frame, or one band of a refined one) for some browser; False when
        there was nothing to do."""
        now = time.perf_counter()
        with self._lock:
            session, job = self._pick(now)
            if session is None:
                return False
            if session.job is not job:  # a new frame: drop what the last one had done
                if session.job is not None:
                    session.schedule.rendered(session.job, session.seconds, session.next_row * session.job.size[0],
                                              shown=False)
                session.job, session.bands, session.next_row, session.seconds = job, [], 0, 0.0
            settings = self.settings
        width, height = job.size
        rows = (session.next_row, height if job.level == "coarse" else min(height, session.next_row + job.band_rows))
        t0 = time.perf_counter()
        band, rendered = self.backend.render_rows(job.view.cameras(job.long_side), rows, settings)
        seconds = time.perf_counter() - t0
        if band is None:
            return self._refuse(session, job, seconds)
        clamped = rendered is not None and not np.allclose(rendered.camera_to_worlds[0].double().numpy(),
                                                           job.view.c2w, atol=1e-5)
        with self._lock:
            session.bands.append(band)
            session.next_row, session.seconds = rows[1], session.seconds + seconds
            if rows[1] < height:
                return True
            session.schedule.rendered(job, session.seconds, width * height)
            session.job = None
            if session.model_changed:
                session.model_changed = False
                session.schedule.invalidate(time.perf_counter(), coarse_first=False)
            latency = time.perf_counter() - session.schedule.moved_at
            bands, total = session.bands, session.seconds
        image = band_image(bands, width, height, settings.output)
        session.shown_view = job.view if not clamped else view_from_rendered(rendered, job.view)
        self._publish(session, image)
        self.frames_shown += 1
        self.records.append(FrameRecord(job.level, width, height, total, latency, job.version))
        self.frame_text.value = (f"{job.level} {width}×{height} in {1000 * total:.0f} ms · "
                                 f"frame {self.frames_shown}")
        if clamped:  # the limits are part of the UI: the browser's camera goes where the render was
            move_browser_camera(session.client, session.shown_view.c2w)
        self._update_window_overlay()
        return True

    def _refuse(self, session: _Session, job: FrameJob, seconds: float) -> bool:
        """Dynamic fetching cannot serve this camera: say so, and put the browser back on the last camera
        that was rendered (the limits are part of the UI)."""
        with self._lock:
            session.schedule.rendered(job, seconds, 0)  # handled: nothing more for this camera
            session.job = None
            back = session.shown_view
        self.frame_text.value = f"camera refused: {self.backend.refusal}"
        if back is not None:
            move_browser_camera(session.client, back.c2w)
        return True

    def _publish(self, session: _Session, image: np.ndarray) -> None:
        try:
            session.client.scene.set_background_image(image, format="jpeg", jpeg_quality=self.options.jpeg_quality)
        except Exception:  # the tab closed mid-frame: forget it
            with self._lock:
                self._sessions.pop(getattr(session.client, "client_id", None), None)

    def _update_window_overlay(self) -> None:
        report = self.backend.last_report
        fetch = self.scene.fetch
        if fetch is None or report is None or report.window is None or report.window == self._window_shown:
            return
        self._window_shown = report.window
        box = window_box(fetch.xy_min, fetch.block_size, report.window.x0, report.window.y0, fetch.n, fetch.z_range)
        segments, _ = boxes_as_segments(box[None], [0])
        self.window_overlay = self.server.scene.add_line_segments(
            "/overlays/window", segments, (255, 255, 255), thickness=3.0, thickness_units="screen",
            visible=bool(self.show_window.value))

    def _show_window_overlay(self) -> None:
        if self.window_overlay is not None:
            self.window_overlay.visible = bool(self.show_window.value)

    # ------------------------------------------------------------------ camera path
    def _add_keyframe(self, event) -> None:
        view = view_of(event.client.camera)
        self._edit_keyframes([*self.keyframes, Keyframe(view.c2w, float(np.degrees(view.fov_y)))])

    def _edit_keyframes(self, keyframes: list[Keyframe]) -> None:
        self.keyframes = keyframes
        self.path_text.value = str(len(keyframes))
        if self.path_overlay is not None:
            self.path_overlay.remove()
            self.path_overlay = None
        if len(keyframes) >= 2:
            poses, _ = interpolate_path(keyframes, 16 * len(keyframes))
            points = poses[:, :3, 3]
            segments = np.stack([points[:-1], points[1:]], axis=1)
            self.path_overlay = self.server.scene.add_line_segments("/overlays/path", segments, (80, 200, 255),
                                                                    thickness=2.0, thickness_units="screen")

    def _preview_path(self, event) -> None:
        """Fly the browser's camera along the path at its speed (the renders follow, coarse while moving)."""
        if len(self.keyframes) < 2:
            self.path_saved.value = "add at least 2 keyframes"
            return
        fps = float(self.path_fps.value)
        poses, fovs = interpolate_path(self.keyframes, max(2, round(float(self.path_seconds.value) * fps)))
        client = event.client
        for pose, fov in zip(poses, fovs):
            move_browser_camera(client, pose, float(np.radians(fov)))
            time.sleep(1.0 / fps)

    def _save_path(self) -> Path | None:
        if len(self.keyframes) < 2:
            self.path_saved.value = "add at least 2 keyframes"
            return None
        width, height = self.scene.image_size
        doc = camera_path_json(self.keyframes, self.scene.transform, float(self.path_seconds.value),
                               float(self.path_fps.value), width, height)
        path = save_camera_path(self.scene.run_dir, str(self.path_name.value), doc)
        self.path_saved.value = str(path)
        return path

    # ------------------------------------------------------------------ loop
    def stop(self) -> None:
        """End :meth:`serve_forever` (from any thread) without waiting for its next heartbeat."""
        self._stop_event.set()
        with self._lock:
            self._lock.notify_all()

    def serve_forever(self, stop: threading.Event | None = None, heartbeat_s: float = 1.0) -> None:
        """Render until ``stop`` is set, :meth:`stop` is called or Ctrl-C; with several processes, idle
        waits send heartbeats."""
        if stop is not None:
            self._stop_event = stop
        stop = self._stop_event
        last = time.perf_counter()
        try:
            while not stop.is_set():
                if self.work():
                    last = time.perf_counter()
                    continue
                due = self.seconds_until_due()
                wait = heartbeat_s if due is None else min(max(due, 0.005), heartbeat_s)
                with self._lock:
                    if not stop.is_set():
                        self._lock.wait(timeout=wait)
                if time.perf_counter() - last >= heartbeat_s:
                    self.backend.idle()
                    last = time.perf_counter()
        except KeyboardInterrupt:
            pass

    def close(self) -> None:
        self.server.stop()


def view_from_rendered(rendered: Cameras, asked: View) -> View:
    """The view a (lowered) rendered camera shows, with the asked view's lens."""
    return View(rendered.camera_to_worlds[0].double().numpy(), asked.fov_y, asked.aspect)


def move_browser_camera(client, c2w: np.ndarray, fov_y: float | None = None) -> None:
    """Put a browser's camera at an OpenGL camera-to-world [3, 4] (and vertical fov, radians), in one update."""
    position, wxyz = browser_pose(c2w)
    with client.atomic():
        client.camera.wxyz = wxyz
        client.camera.position = position
        if fov_y is not None:
            client.camera.fov = fov_y
