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

from nerfxl.data.camera_paths import FLYOVER_TILT_DEG, flyover_path, orbit_path
from nerfxl.data.cameras import Cameras
from nerfxl.errors import DataError
from nerfxl.evaluate import run_on_processes
from nerfxl.parallel.distributed import DistContext
from nerfxl.parallel.images import depth_as_grey, render_image, render_image_by_rows, to_uint8
from nerfxl.run.load import load_split
from nerfxl.run.trained import load_trained

PathKind = Literal["orbit", "flyover", "test", "train"]


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
