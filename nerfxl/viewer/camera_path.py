"""The camera-path editor's maths: keyframes → a smooth path → a nerfstudio ``camera_path.json``.

Positions follow a Catmull-Rom spline through the keyframes, orientations a spherical interpolation
between neighbouring keyframes, and the field of view a linear one. Keyframes are in the model frame;
the file is written in the dataset's (world) frame, as nerfstudio writes it and as
``nerfxl render --path`` reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfxl.data.transform import SceneTransform
from nerfxl.errors import ConfigError
from nerfxl.fileio import write_json_atomic
from nerfxl.viewer.camera import matrix_to_quaternion, quaternion_to_matrix


@dataclass(frozen=True)
class Keyframe:
    """A saved view: an OpenGL camera-to-world [3, 4] in the model frame and a vertical fov in degrees."""

    c2w: np.ndarray
    fov_deg: float


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Unit quaternion between ``q0`` (t = 0) and ``q1`` (t = 1) along the shorter arc."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: the linear blend is exact to rounding and avoids 0 / 0
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / math.sin(theta)


def catmull_rom(p0, p1, p2, p3, t: float) -> np.ndarray:
    """The uniform Catmull-Rom spline between ``p1`` (t = 0) and ``p2`` (t = 1)."""
    t2, t3 = t * t, t * t * t
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)


def interpolate_path(keyframes: list[Keyframe], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_frames`` evenly timed cameras through the keyframes (the first and last frames are the first and
    last keyframes). Returns (camera-to-worlds [n, 3, 4], vertical fovs [n] in degrees)."""
    if len(keyframes) < 2:
        raise ConfigError(f"a camera path needs at least 2 keyframes, got {len(keyframes)}")
    if n_frames < 2:
        raise ConfigError(f"a camera path needs at least 2 frames, got {n_frames}")
    positions = np.stack([np.asarray(k.c2w, dtype=np.float64)[:3, 3] for k in keyframes])
    quats = [matrix_to_quaternion(np.asarray(k.c2w, dtype=np.float64)[:3, :3]) for k in keyframes]
    fovs = np.array([k.fov_deg for k in keyframes], dtype=np.float64)
    # The ends are extended by reflection so the spline starts and ends at the end keyframes.
    padded = np.concatenate([2 * positions[:1] - positions[1:2], positions, 2 * positions[-1:] - positions[-2:-1]])
    segments = len(keyframes) - 1
    poses, out_fovs = [], []
    for i in range(n_frames):
        u = i / (n_frames - 1) * segments
        s = min(int(u), segments - 1)
        t = u - s
        p = catmull_rom(padded[s], padded[s + 1], padded[s + 2], padded[s + 3], t)
        r = quaternion_to_matrix(slerp(quats[s], quats[s + 1], t))
        poses.append(np.concatenate([r, p[:, None]], axis=1))
        out_fovs.append((1 - t) * fovs[s] + t * fovs[s + 1])
    return np.stack(poses), np.array(out_fovs)


def to_world(c2w: np.ndarray, transform: SceneTransform) -> np.ndarray:
    """Model-frame camera-to-worlds [..., 3, 4] → the dataset's frame (x_world = x_model / scale + centre)."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, 3] = out[..., :3, 3] / transform.scale + np.asarray(transform.center)
    return out


def camera_path_json(keyframes: list[Keyframe], transform: SceneTransform, seconds: float, fps: float,
                     width: int, height: int) -> dict:
    """The nerfstudio camera-path document for ``keyframes`` flown in ``seconds`` at ``fps``."""
    if seconds <= 0 or fps <= 0:
        raise ConfigError(f"a camera path needs positive seconds and fps, got {seconds} s at {fps} fps")
    n = max(2, round(seconds * fps))
    poses, fovs = interpolate_path(keyframes, n)
    world = to_world(poses, transform)

    def matrix(c2w: np.ndarray) -> list[float]:
        return np.concatenate([c2w, [[0.0, 0.0, 0.0, 1.0]]]).reshape(-1).tolist()

    return {
        "camera_type": "perspective",
        "render_width": int(width),
        "render_height": int(height),
        "fps": float(fps),
        "seconds": float(seconds),
        "is_cycle": False,
        "smoothness_value": 0.5,
        "crop": None,
        "keyframes": [{"camera_to_world": matrix(to_world(k.c2w, transform)), "fov": float(k.fov_deg),
                       "aspect": width / height} for k in keyframes],
        "camera_path": [{"camera_to_world": matrix(c), "fov": float(f), "aspect": width / height}
                        for c, f in zip(world, fovs)],
    }


def safe_path_name(name: str) -> str:
    """A file name typed in the browser → a plain name (letters, digits, - and _), so a save can only
    ever land in the run's ``camera_paths`` folder."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip().removesuffix(".json"))
    stem = stem.strip("_")[:64]
    return stem or "camera_path"


def save_camera_path(run_dir: Path, name: str, document: dict) -> Path:
    """Write ``document`` to RUN/camera_paths/NAME.json atomically; returns the path."""
    path = Path(run_dir) / "camera_paths" / f"{safe_path_name(name)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)
    return path


def read_keyframes(path: Path, transform: SceneTransform) -> list[Keyframe]:
    """The keyframes of a camera path this editor saved (back in the model frame), to edit it further."""
    doc = json.loads(Path(path).read_text())
    out = []
    for k in doc.get("keyframes", []):
        m = np.asarray(k["camera_to_world"], dtype=np.float64).reshape(4, 4)[:3, :4].copy()
        m[:, 3] = (m[:, 3] - np.asarray(transform.center)) * transform.scale
        out.append(Keyframe(m, float(k["fov"])))
    return out
