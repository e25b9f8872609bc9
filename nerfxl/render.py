"""Rendering a trained run along camera paths: test views, an orbit, or a nerfstudio camera path."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.errors import DataError
from nerfxl.evaluate import render_image, run_on_processes, to_uint8
from nerfxl.parallel.distributed import DistContext
from nerfxl.run.load import load_split
from nerfxl.run.trained import load_trained

PathKind = Literal["orbit", "flyover", "test", "train"]
FLYOVER_TILT_DEG = 30.0


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """[3, 4] OpenGL camera-to-world at ``eye`` looking at ``target`` (−Z towards it, +Y ≈ ``up``)."""
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-6:  # looking along up: any perpendicular right vector will do
        right = torch.linalg.cross(forward, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype))
    right = right / right.norm()
    true_up = torch.linalg.cross(right, forward)
    return torch.stack([right, true_up, -forward, eye], dim=1)


def orbit_path(cameras: Cameras, scene_box: Tensor, n_frames: int = 120) -> Tensor:
    """[n_frames, 3, 4] a circle around the scene like the training cameras see it.

    The circle's height is the training cameras' median height above the box centre (about their
    mean up direction) and its radius makes the view pitch the training cameras' median pitch
    (capped by their median horizontal distance), so an aerial capture gets an aerial orbit and an
    object capture an orbit at its usual distance. The cameras look at the centre of the box.
    """
    pos = cameras.positions.double()
    center = 0.5 * (scene_box[0] + scene_box[1]).double()
    up = cameras.camera_to_worlds[:, :3, 1].double().mean(0)
    up = up / up.norm()
    rel = pos - center
    height = float((rel @ up).median())
    horizontal = rel - (rel @ up)[:, None] * up
    radius = float(horizontal.norm(dim=-1).median())
    forward = -cameras.camera_to_worlds[:, :3, 2].double()
    pitch_down = float(torch.asin((-(forward @ up)).clamp(-1, 1)).median())
    if pitch_down > 1e-3 and height > 0:
        radius = min(radius, height / math.tan(pitch_down))
    a = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    if a.norm() < 1e-6:
        a = torch.linalg.cross(up, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    target = center
    poses = []
    for i in range(n_frames):
        phi = 2 * math.pi * i / n_frames
        eye = center + radius * (math.cos(phi) * a + math.sin(phi) * b) + height * up
        poses.append(look_at(eye, target, up))
    return torch.stack(poses).float()


def flyover_path(scene_box: Tensor, n_frames: int, height: float, tilt_deg: float = 30.0,
                 extent: float = 0.7) -> Tensor:
    """[n_frames, 3, 4] a loop over the ground at ``height`` above the box's bottom (z up), looking ahead
    and down, ``tilt_deg`` from straight down.

    The loop is a rounded square (the superellipse |x|⁴ + |y|⁴ = 1) spanning ``extent`` of the box's x-y
    size, flown once at constant speed, so along a city it crosses many block borders in both directions.
    """
    lo, hi = scene_box[0].double(), scene_box[1].double()
    centre, half = 0.5 * (lo[:2] + hi[:2]), 0.5 * extent * (hi[:2] - lo[:2])
    phi = torch.linspace(0, 2 * math.pi, 64 * max(n_frames, 8) + 1, dtype=torch.float64)
    c, s_ = torch.cos(phi), torch.sin(phi)
    curve = centre + half * torch.stack([c.sign() * c.abs().sqrt(), s_.sign() * s_.abs().sqrt()], dim=1)
    # Resample by arc length: equal distances between frames.
    arc = torch.cat([torch.zeros(1, dtype=torch.float64), (curve[1:] - curve[:-1]).norm(dim=1).cumsum(0)])
    wanted = torch.arange(n_frames + 1, dtype=torch.float64) * (arc[-1] / n_frames)
    index = torch.searchsorted(arc, wanted).clamp(1, len(arc) - 1)
    w = ((wanted - arc[index - 1]) / (arc[index] - arc[index - 1]).clamp_min(1e-12))[:, None]
    points = (1 - w) * curve[index - 1] + w * curve[index]
    tilt = math.radians(tilt_deg)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    poses = []
    for i in range(n_frames):
        eye = torch.cat([points[i], (lo[2] + height).reshape(1)])
        heading = torch.cat([points[i + 1] - points[i], torch.zeros(1, dtype=torch.float64)])
        heading = heading / heading.norm().clamp_min(1e-12)
        view = math.sin(tilt) * heading - math.cos(tilt) * up
        poses.append(look_at(eye, eye + view, heading if tilt_deg < 1 else up))
    return torch.stack(poses).float()


def read_camera_path(path: Path) -> tuple[Tensor, float, int, int, float]:
    """A nerfstudio ``camera_path.json`` → (poses [N, 3, 4], vertical fov deg, width, height, fps)."""
    try:
        data = json.loads(Path(path).read_text())
        frames = data["camera_path"]
        width, height = int(data["render_width"]), int(data["render_height"])
        poses, fovs = [], []
        for i, f in enumerate(frames):
            m = np.asarray(f["camera_to_world"], dtype=np.float64).reshape(4, 4)
            if not np.isfinite(m).all():
                raise ValueError(f"frame {i}: camera_to_world is not finite")
            poses.append(m[:3, :4])
            fovs.append(float(f.get("fov", data.get("default_fov", 50.0))))
        fps = float(data.get("fps", 24))
    except FileNotFoundError:
        raise DataError(path, "camera path file is missing") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON (line {e.lineno}: {e.msg})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"not a nerfstudio camera path ({e})") from None
    if not poses:
        raise DataError(path, "camera path has no frames")
    return torch.tensor(np.stack(poses), dtype=torch.float32), float(np.mean(fovs)), width, height, fps


def cameras_for_poses(poses: Tensor, width: int, height: int, fov_y_deg: float) -> Cameras:
    fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return Cameras.create(poses, fy, fy, width / 2, height / 2, width, height)


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """MP4 (H.264 via imageio-ffmpeg's bundled ffmpeg); written to a temp name then renamed."""
    import imageio.v2 as imageio

    from nerfxl.fileio import atomic_path

    with atomic_path(path) as tmp:
        mp4 = tmp.with_suffix(".mp4")
        # yuv420p (what players expect) needs even sizes; frames are cropped by a row/column if odd.
        writer = imageio.get_writer(mp4, fps=fps, codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p")
        for f in frames:
            h, w = f.shape[:2]
            writer.append_data(f[: h - h % 2, : w - w % 2])
        writer.close()
        mp4.replace(tmp)


def depth_as_grey(depth: Tensor, opacity: Tensor) -> Tensor:
    """Depths [...] → grey [..., 3] in [0, 1]: near is dark, the 98th percentile of the opaque pixels'
    depths (opacity > 0.5) is white."""
    valid = opacity > 0.5
    scale = float(depth[valid].quantile(0.98)) if bool(valid.any()) else 1.0
    return (depth / max(scale, 1e-6)).clamp(0, 1)[..., None].expand(*depth.shape, 3)


def frame_image(rendered: dict[str, Tensor], depth: bool) -> np.ndarray:
    """A rendered view as uint8 RGB, with its depth map (grey, scaled to the 98th percentile) beside it."""
    rgb = to_uint8(rendered["rgb"])
    if not depth:
        return rgb
    return np.concatenate([rgb, to_uint8(depth_as_grey(rendered["depth"], rendered["opacity"]))], axis=1)


def render_path(renderer, cameras: Cameras, out_dir: Path, fps: float = 24.0, video: Path | None = None,
                depth: bool = False, progress: bool = True, ctx: DistContext | None = None,
                before_frame: Callable[[Cameras, int], Cameras] | None = None,
                render_frame: Callable = render_image) -> dict | None:
    """Render every camera (model frame) to PNGs in ``out_dir`` and an MP4 (``video``, default
    ``out_dir/video.mp4``).

    Every process of ``ctx`` must call it; rank 0 writes the files and returns the summary (with each
    frame's seconds), the others return None. ``before_frame(cameras, i)`` runs before frame i and may
    return changed cameras (dynamic fetching: load the window, clamp the camera); ``render_frame``
    replaces :func:`render_image` (same arguments).
    """
    import imageio.v3 as iio
    from tqdm.auto import tqdm

    main = ctx is None or ctx.is_main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    frames, seconds = [], []
    for i in tqdm(range(len(cameras)), desc="render", disable=not (progress and main), unit="frame"):
        t0 = time.perf_counter()
        if before_frame is not None:
            cameras = before_frame(cameras, i)
        rendered = render_frame(renderer, cameras, i, ctx)
        seconds.append(time.perf_counter() - t0)
        if rendered is None:
            continue
        frames.append(frame_image(rendered, depth))
        iio.imwrite(out_dir / f"frame_{i:05d}.png", frames[-1])
    if not main:
        return None
    video = Path(video) if video is not None else out_dir / "video.mp4"
    write_video(frames, video, fps)
    return {"frames": len(frames), "folder": str(out_dir), "video": str(video), "frame_seconds": seconds}


def path_cameras(run, path: PathKind | Path, n_frames: int, fps: float,
                 flyover_height: Callable[[Cameras], float] | None = None) -> tuple[Cameras, str, float]:
    """A path's cameras in the model frame of ``run`` (a TrainedRun), its name and its frame rate
    (a camera path file's own fps replaces ``fps``). ``flyover_height(camera)``: the flyover's height
    above the ground for the training intrinsics (default: the training cameras' median height)."""
    if isinstance(path, Path) or path not in ("orbit", "flyover", "test", "train"):
        poses, fov, w, h, fps = read_camera_path(Path(path))
        return cameras_for_poses(run.transform.poses(poses), w, h, fov), Path(path).stem, fps
    data = load_split(run.config, "test" if path == "test" else "train")
    cams = run.transform.cameras(data.cameras)
    box = run.renderer.scene_box.cpu()
    if path == "orbit":
        poses = orbit_path(cams, box, n_frames)
    elif path == "flyover":
        first = cams[0]
        height = (flyover_height(first) if flyover_height is not None
                  else float((cams.positions[:, 2] - box[0, 2]).median()))
        poses = flyover_path(box, n_frames, height, FLYOVER_TILT_DEG)
    else:
        return cams, path, fps
    cams = Cameras.create(poses, cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0], cams.width[0], cams.height[0])
    return cams, path, fps


def render_run(run_dir: Path, path: PathKind | Path = "orbit", output: Path | None = None, n_frames: int = 120,
               fps: float = 24.0, resolution_scale: float = 1.0, device: str = "auto", depth: bool = False,
               progress: bool = True, devices: int = 1, video: Path | None = None) -> dict | None:
    """Render a run's latest checkpoint along a path on ``devices`` processes → PNGs + MP4 in
    ``output`` (default RUN/renders/NAME). Returns the summary (None on ranks other than 0 under torchrun)."""
    return run_on_processes(render_on_process, run_dir, devices, device,
                            args=(Path(run_dir), path, output, n_frames, fps, resolution_scale, depth, progress, video))


def render_on_process(ctx: DistContext, run_dir: Path, path: PathKind | Path, output: Path | None, n_frames: int,
                      fps: float, resolution_scale: float, depth: bool, progress: bool,
                      video: Path | None = None) -> dict | None:
    """One process's part of :func:`render_run` (module level: the spawner pickles it by name)."""
    run = load_trained(run_dir, ctx=ctx)
    cams, name, fps = path_cameras(run, path, n_frames, fps)
    if resolution_scale != 1.0:
        cams = cams.rescale(resolution_scale)
    out_dir = Path(output) if output else run_dir / "renders" / name
    result = render_path(run.renderer, cams.to(ctx.device), out_dir, fps=fps, depth=depth, progress=progress, ctx=ctx,
                         video=video)
    if result is not None:
        result["step"] = run.step
    return result


def render_fetching(run_dir: Path, path: PathKind | Path = "flyover", output: Path | None = None, n_frames: int = 120,
                    fps: float = 24.0, resolution_scale: float = 1.0, device: str = "auto", depth: bool = False,
                    progress: bool = True, video: Path | None = None, neighbourhood: int = 3, blocks: str | None = None,
                    store: str = "memory", camera_limits: str = "error", overlap: bool = True,
                    devices: int = 1) -> dict | None:
    """Render a ground-plane run along a path with dynamic fetching: only the N × N blocks around the
    camera are on each device (docs/fetching.md). With ``devices`` > 1 every process holds the same
    window (rank 0 reads the host and broadcasts the new blocks) and renders a share of every frame's
    pixels. The flyover flies at 80 % of the height limit for its tilt. Returns rank 0's summary with
    the fetch statistics (None on other ranks under torchrun)."""
    from nerfxl.parallel.launch import launch, launched_externally

    args = (Path(run_dir), path, output, n_frames, fps, resolution_scale, depth, progress, video, neighbourhood, blocks,
            store, camera_limits, overlap)
    return launch(render_fetching_on_process, None if launched_externally() else devices, args=args,
                  device=device).get(0)


def render_fetching_on_process(ctx: DistContext, run_dir: Path, path: PathKind | Path, output: Path | None,
                               n_frames: int, fps: float, resolution_scale: float, depth: bool, progress: bool,
                               video: Path | None, neighbourhood: int, blocks: str | None, store: str,
                               camera_limits: str, overlap: bool) -> dict | None:
    """One process's part of :func:`render_fetching` (module level: the spawner pickles it by name)."""
    from nerfxl.evaluate import render_image_by_rows
    from nerfxl.fetch.limits import TRIGGER_BLOCKS, CameraLimits, half_diagonal_fov_deg
    from nerfxl.fetch.load import load_for_fetching

    fetching = load_for_fetching(run_dir, neighbourhood, blocks, str(ctx.device), store, overlap, camera_limits,
                                 ctx=ctx)
    run, fetcher = fetching.trained, fetching.fetcher

    def limits_for(camera: Cameras) -> CameraLimits:
        return CameraLimits(neighbourhood, min(fetching.layout.block_size), half_diagonal_fov_deg(camera),
                            TRIGGER_BLOCKS, margin_blocks=0.2)

    def flyover_height(camera: Cameras) -> float:
        return 0.8 * limits_for(camera.rescale(resolution_scale)).max_height(FLYOVER_TILT_DEG)

    cams, name, fps = path_cameras(run, path, n_frames, fps, flyover_height)
    if resolution_scale != 1.0:
        cams = cams.rescale(resolution_scale)
    out_dir = Path(output) if output else Path(run_dir) / "renders" / f"{name}-fetched"
    reports = []

    def before_frame(cameras: Cameras, i: int) -> Cameras:
        cameras, report = fetcher.prepare(cameras, i)
        reports.append(report)
        return cameras

    shared = ctx.world_size > 1
    try:
        result = render_path(run.renderer, cams.to(ctx.device), out_dir, fps=fps, depth=depth, progress=progress,
                             video=video, ctx=ctx if shared else None, before_frame=before_frame,
                             render_frame=render_image_by_rows if shared else render_image)
    finally:
        fetcher.close()
    if result is None:
        return None
    fills = fetcher.log.fills
    result.update({
        "step": run.step,
        "processes": ctx.world_size,
        "neighbourhood": neighbourhood,
        "blocks": str(fetching.layout.split),
        "fetched": fetching.summary,
        "buffer_bytes": fetcher.buffer_bytes,
        "fetches": len(fills),
        "frames_waiting": fetcher.log.waits,
        "wait_seconds": [r.waited_s for r in reports],
        "fetch_seconds": [f.total_s for f in fills],
        "host_bytes_read": sum(f.new_bytes for f in fills),
        "limits": {"max_height_at_30deg": limits_for(cams[0]).max_height(FLYOVER_TILT_DEG),
                   "block_size": list(fetching.layout.block_size)},
    })
    return result
