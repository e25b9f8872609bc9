"""Write a city as a nerfstudio dataset, atomically: a folder appears complete or not at all.

Layout of the dataset folder::

    transforms.json          nerfstudio format (PINHOLE), written last
    images/frame_00000.png   RGB 8-bit, supersampled
    depth/frame_00000.npy    float32 [H, W] z-depth in metres (0 = sky), depth_unit_scale_factor 1
    points.ply               binary PLY, x y z float32 + red green blue uint8

Everything is written into a hidden sibling folder and renamed into place only when complete,
so an interrupted run never leaves a folder that loads as a dataset. With ``overwrite`` the old
folder is moved aside only once the new one is complete, then deleted.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from nerfxl.data.city.flights import Intrinsics, intrinsics_for, plan_cameras
from nerfxl.data.city.layout import build_city
from nerfxl.data.city.raycast import cast_rays
from nerfxl.data.city.render import render_view
from nerfxl.data.city.scene import CityScene
from nerfxl.data.city.specs import CITY_FORMAT_VERSION, city_spec
from nerfxl.data.pointcloud import write_ply
from nerfxl.errors import NerfxlError
from nerfxl.fileio import write_json_atomic


def default_city_path(size: str = "small", seed: int = 0) -> Path:
    """Cache folder of a generated city: ``$NERFXL_CACHE/city-<size>-<seed>``, or
    ``~/.cache/nerfxl/city-<size>-<seed>`` when NERFXL_CACHE is not set."""
    root = os.environ.get("NERFXL_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "nerfxl"
    return base / f"city-{size}-{int(seed)}"


def is_complete_city(path: str | Path, size: str, seed: int) -> bool:
    """True when ``path`` holds a finished city of this size, seed and format version."""
    try:
        meta = json.loads((Path(path) / "transforms.json").read_text())
    except (OSError, ValueError):
        return False
    expected = {"size": size, "seed": int(seed), "version": CITY_FORMAT_VERSION}
    return isinstance(meta, dict) and meta.get("nerfxl_city") == expected


def ensure_city(size: str = "small", seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """The cached city of ``size`` and ``seed``, generated on first use (or when the cached copy
    is from an older generator version)."""
    city_spec(size)
    path = default_city_path(size, seed)
    if not is_complete_city(path, size, seed):
        generate_city(path, size, seed, overwrite=True, progress=progress, workers=workers)
    return path


def generate_city(out_dir: str | Path, size: str = "small", seed: int = 0, overwrite: bool = False,
                  progress: bool = True, workers: int | None = None) -> Path:
    """Render the city of ``size`` and ``seed`` into the nerfstudio dataset folder ``out_dir``.

    Args:
        out_dir: the dataset folder; it must not exist or be empty unless ``overwrite``.
        size: "tiny", "small", "medium" or "large" (see :mod:`nerfxl.data.city`).
        seed: layout and camera seed; the same (size, seed) gives bit-identical files.
        overwrite: replace an existing non-empty ``out_dir`` (only once the new city is complete).
        progress: show a tqdm progress bar.
        workers: rendering processes (default: 1 for tiny, else one per available core, at most 16).
    Returns:
        ``out_dir``.
    Raises:
        NerfxlError: ``out_dir`` is a file, or a non-empty folder without ``overwrite``; unknown size.
    """
    city_spec(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise NerfxlError(f"city seed must be a non-negative integer, got {seed!r}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise NerfxlError(f"{out_dir}: exists and is not a folder; choose another output folder")
        if not overwrite and any(out_dir.iterdir()):
            raise NerfxlError(f"{out_dir}: folder exists and is not empty; choose an empty or new folder, "
                              f"or pass overwrite=True (--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}-", dir=out_dir.parent))
    try:
        os.chmod(partial, 0o755)  # mkdtemp makes it owner-only
        write_city_files(partial, size, seed, progress, workers)
        _install(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def _remove_stale_partials(out_dir: Path) -> None:
    """Delete partial folders beside ``out_dir`` left by generations that were killed outright
    (no chance to clean up); folders of processes still running are left alone."""
    if os.name != "posix":  # os.kill(pid, 0) only probes on POSIX
        return
    prefix = f".{out_dir.name}.partial-"
    for path in out_dir.parent.glob(prefix + "*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OSError):
            pass  # alive (another user's process) or cannot tell: leave it


def _install(partial: Path, out_dir: Path) -> None:
    """Rename the finished ``partial`` folder onto ``out_dir``, replacing what is there."""
    if not out_dir.exists():
        os.replace(partial, out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        os.replace(partial, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    try:
        os.replace(partial, out_dir)
    except BaseException:
        os.replace(old, out_dir)  # put the previous dataset back
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def single_threaded():
    """Run torch ops on one thread for the duration (restored afterwards).

    The walk issues many medium-sized ops; with two intra-op threads each op needs both cores at
    once, which stalls badly as soon as anything else runs on the machine. One thread per process
    (and several processes, see ``workers``) is both faster and steadier.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def auto_workers(size: str) -> int:
    """Worker processes for a city: 1 for tiny (process start-up would dominate), else the cores."""
    if size == "tiny":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


_WORKER: dict = {}


def _worker_init(size: str, seed: int) -> None:
    torch.set_num_threads(1)
    spec = city_spec(size)
    _WORKER.update(scene=build_city(size, seed), spec=spec, intr=intrinsics_for(spec))


def _worker_render(folder: str, indices: list[int], poses: np.ndarray) -> int:
    w = _WORKER
    for k, c2w in zip(indices, poses):
        image, depth = render_view(w["scene"], c2w, w["intr"], w["spec"].supersample)
        save_frame(Path(folder), k, image, depth, c2w)
    return len(indices)


def write_city_files(folder: Path, size: str, seed: int, progress: bool = False, workers: int | None = None) -> None:
    """Render all frames, the point cloud and transforms.json (last) into an existing folder.

    Frames are rendered independently (in ``workers`` processes when > 1), so the files do not
    depend on the number of workers.
    """
    spec = city_spec(size)
    workers = auto_workers(size) if workers is None else max(1, int(workers))
    scene = build_city(size, seed)
    train, test = plan_cameras(scene, spec, seed)
    intr = intrinsics_for(spec)
    poses = np.concatenate([train, test])
    (folder / "images").mkdir()
    (folder / "depth").mkdir()
    with tqdm(total=len(poses) + 1, desc=f"city {size} (seed {seed})", unit="view", disable=not progress,
              leave=False) as bar, single_threaded():
        if workers == 1:
            for k, c2w in enumerate(poses):
                image, depth = render_view(scene, c2w, intr, spec.supersample)
                save_frame(folder, k, image, depth, c2w)
                bar.update(1)
        else:
            # Small tasks keep both the progress bar and the load balance smooth.
            tasks = [list(range(i, min(i + 4, len(poses)))) for i in range(0, len(poses), 4)]
            context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                     initargs=(size, seed)) as pool:
                futures = [pool.submit(_worker_render, str(folder), t, poses[t]) for t in tasks]
                try:
                    for done in as_completed(futures):
                        bar.update(done.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        points, colors = surface_points(scene, train, intr, spec.points, seed)
        write_ply(folder / "points.ply", points, colors)
        bar.update(1)
    names = [f"images/frame_{k:05d}.png" for k in range(len(poses))]
    meta = {
        "camera_model": "PINHOLE",
        "fl_x": intr.fx,
        "fl_y": intr.fy,
        "cx": intr.cx,
        "cy": intr.cy,
        "w": intr.width,
        "h": intr.height,
        "depth_unit_scale_factor": 1.0,
        "ply_file_path": "points.ply",
        "scene_box": scene.scene_box.tolist(),
        "nerfxl_city": {"size": size, "seed": int(seed), "version": CITY_FORMAT_VERSION},
        "train_filenames": names[: len(train)],
        "test_filenames": names[len(train):],
        "frames": [frame_entry(k, c2w) for k, c2w in enumerate(poses)],
    }
    write_json_atomic(folder / "transforms.json", meta)


def frame_entry(index: int, c2w: np.ndarray) -> dict:
    """transforms.json entry of frame ``index``."""
    name = f"frame_{index:05d}"
    return {
        "file_path": f"images/{name}.png",
        "transform_matrix": [[float(v) for v in row] for row in np.asarray(c2w, dtype=np.float64)],
        "depth_file_path": f"depth/{name}.npy",
    }


def save_frame(folder: Path, index: int, image: np.ndarray, depth: np.ndarray, c2w: np.ndarray) -> None:
    """Write one frame's PNG and depth map (named as in :func:`frame_entry`)."""
    name = f"frame_{index:05d}"
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(folder / "images" / f"{name}.png", format="PNG")
    np.save(folder / "depth" / f"{name}.npy", np.ascontiguousarray(depth, dtype=np.float32))


def surface_points(scene: CityScene, poses: np.ndarray, intr: Intrinsics, count: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points on surfaces the training cameras see, with their colours (a stand-in for
    SfM points): rays through random points of random training images, kept where they hit.

    Returns:
        points [count, 3] float32 (exact surface points) and colours [count, 3] uint8.
    """
    rng = np.random.default_rng([int(seed), 0x9C5])
    c2w = torch.from_numpy(np.ascontiguousarray(poses[:, :3], dtype=np.float64))
    pts, cols, have = [], [], 0
    while have < count:
        m = max(1024, 2 * (count - have))
        cam = torch.from_numpy(rng.integers(0, len(poses), size=m))
        u = torch.from_numpy(rng.uniform(0.0, intr.width, size=m))
        v = torch.from_numpy(rng.uniform(0.0, intr.height, size=m))
        x, y = (u - intr.cx) / intr.fx, -(v - intr.cy) / intr.fy
        r = c2w[cam]
        d = torch.stack([r[:, i, 0] * x + r[:, i, 1] * y - r[:, i, 2] for i in range(3)], dim=-1)
        o = r[:, :, 3]
        rgb, t, _, hit_id = cast_rays(scene, o, d)
        keep = (hit_id >= 0).nonzero().squeeze(1)
        d = d / torch.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])[:, None]
        p = o[keep] + t[keep, None] * d[keep]
        pts.append(p.to(torch.float32).numpy())
        cols.append(torch.floor(rgb[keep].double() * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy())
        have += int(keep.numel())
    return np.concatenate(pts)[:count], np.concatenate(cols)[:count]
