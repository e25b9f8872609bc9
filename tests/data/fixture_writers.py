"""Small helpers the data tests share: known cameras, an independent pinhole projection, tiny images.

The projection here is written straight from the OpenGL camera definition (camera looks down −Z,
+Y up, image v grows downwards, pixel centres at +0.5) and shares no code with nerfxl, so a loader
test that projects a known point and finds it on the generated ray checks the whole convention chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """[3, 4] OpenGL camera-to-world of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(x, dtype=np.float64) for x in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`: pick any right vector
        right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    return np.concatenate([np.stack([right, cam_up, back], axis=1), eye[:, None]], axis=1)


def to4x4(c2w: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :4] = c2w[:3, :4]
    return m


def project(c2w: np.ndarray, fx, fy, cx, cy, point) -> np.ndarray:
    """Continuous pixel (u, v) of a world point seen by an undistorted OpenGL camera."""
    rotation, t = c2w[:3, :3], c2w[:3, 3]
    x, y, z = rotation.T @ (np.asarray(point, dtype=np.float64) - t)
    assert z < 0, "point is behind the camera"
    return np.array([fx * x / -z + cx, -fy * y / -z + cy])


def ray_point_distance(origin, direction, point) -> float:
    origin, direction, point = (np.asarray(a, dtype=np.float64) for a in (origin, direction, point))
    d = direction / np.linalg.norm(direction)
    offset = point - origin
    assert offset @ d > 0, "point is behind the ray"
    return float(np.linalg.norm(offset - (offset @ d) * d))


def write_image(path: Path, width: int, height: int, seed: int = 0, alpha: bool = False) -> np.ndarray:
    """A random uint8 image (RGB or RGBA) written as PNG (or JPEG by suffix); returns its pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 4 if alpha else 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


def random_cameras(n: int, seed: int = 0, radius: float = 4.0) -> list[np.ndarray]:
    """n OpenGL c2w [3, 4] around the origin, all looking at it from above the horizon."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        azimuth = rng.uniform(0, 2 * np.pi)
        elevation = rng.uniform(0.2, 1.2)
        eye = radius * np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation),
                                 np.sin(elevation)])
        out.append(look_at(eye, rng.normal(0, 0.1, 3)))
    return out
