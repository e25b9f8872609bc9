"""The browser's camera ↔ our cameras.

viser reports a camera as a position, an orientation quaternion ``wxyz`` in the OpenCV convention
(+X right, +Y down, +Z forward), a vertical field of view in radians and the canvas aspect. Our
cameras are OpenGL camera-to-world matrices (+X right, +Y up, −Z forward). Both live in the model
frame of the run (:class:`nerfxl.data.transform.SceneTransform`), so the overlays and the renders agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nerfxl.data.cameras import Cameras

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])
"""Flips +Y down / +Z forward (OpenCV) to +Y up / −Z forward (OpenGL), and back (its own inverse)."""


@dataclass(frozen=True)
class View:
    """One browser camera: what a frame is rendered for.

    Attributes:
        c2w: [3, 4] OpenGL camera-to-world in the model frame.
        fov_y: vertical field of view in radians.
        aspect: width / height of the canvas.
    """

    c2w: np.ndarray
    fov_y: float
    aspect: float

    def size(self, long_side: int) -> tuple[int, int]:
        """(width, height) of a frame whose longer side is ``long_side`` pixels, at this aspect."""
        long_side = max(int(long_side), 2)
        if self.aspect >= 1:
            return long_side, max(2, round(long_side / self.aspect))
        return max(2, round(long_side * self.aspect)), long_side

    def cameras(self, long_side: int) -> Cameras:
        """This view as one pinhole camera whose longer side is ``long_side`` pixels."""
        w, h = self.size(long_side)
        return cameras_for_view(self.c2w, self.fov_y, w, h)

    def same_as(self, other: "View | None", tol: float = 1e-6) -> bool:
        return (other is not None and abs(self.fov_y - other.fov_y) < tol and abs(self.aspect - other.aspect) < tol
                and bool(np.allclose(self.c2w, other.c2w, atol=tol)))


def cameras_for_view(c2w: np.ndarray, fov_y: float, width: int, height: int) -> Cameras:
    """One pinhole camera: square pixels, principal point at the centre."""
    fy = 0.5 * height / math.tan(0.5 * fov_y)
    return Cameras.create(torch.as_tensor(np.asarray(c2w, dtype=np.float64)[:3, :4], dtype=torch.float32),
                          fy, fy, width / 2, height / 2, width, height)


def quaternion_to_matrix(wxyz) -> np.ndarray:
    """[3, 3] rotation of a unit quaternion (w, x, y, z); the quaternion is normalised first."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a [3, 3] rotation, with w ≥ 0 (Shepperd's method: stable for every rotation)."""
    r = np.asarray(r, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    candidates = [trace, r[0, 0], r[1, 1], r[2, 2]]
    i = int(np.argmax(candidates))
    if i == 0:
        s = 2.0 * math.sqrt(max(1.0 + trace, 1e-12))
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif i == 1:
        s = 2.0 * math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 1e-12))
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif i == 2:
        s = 2.0 * math.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 1e-12))
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 1e-12))
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def view_from_browser(position, wxyz, fov_y: float, aspect: float) -> View:
    """A viser camera (OpenCV orientation) → a :class:`View` (OpenGL camera-to-world)."""
    rotation = quaternion_to_matrix(wxyz) @ OPENCV_TO_OPENGL
    c2w = np.concatenate([rotation, np.asarray(position, dtype=np.float64).reshape(3, 1)], axis=1)
    return View(c2w, float(fov_y), float(aspect))


def view_of(camera) -> View:
    """A viser camera handle's current view."""
    return view_from_browser(camera.position, camera.wxyz, camera.fov, camera.aspect)


def browser_pose(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An OpenGL camera-to-world [3, 4] → viser's (position, wxyz) in the OpenCV convention."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return c2w[:3, 3].copy(), matrix_to_quaternion(c2w[:3, :3] @ OPENCV_TO_OPENGL)


def up_direction(cameras: Cameras) -> np.ndarray:
    """The training cameras' mean up vector (unit): the viewer's orbit axis."""
    up = cameras.camera_to_worlds[:, :3, 1].double().mean(0).numpy()
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])
