"""Camera limits for dynamic fetching: what a camera can see, and how high and tilted it may fly.

Every sample of a frame lies on a camera ray inside the scene box. With every image corner's ray
pointing down, the frustum between the box's top and bottom is the convex hull of the camera (or the
corner rays' hits on the top) and the corner rays' hits on the bottom, so the x-y rectangle around
those points holds every sample a frame can have: its *footprint*. A frame is rendered exactly from a
window that holds its footprint (the rest of the plane is never read).

The limit for a window of N × N blocks of width b: a camera at height h above the ground (the box
bottom), tilted θ from looking straight down, with half diagonal field of view φ, reaches at most
h · tan(θ + φ) from its x-y. Re-centring keeps the camera within ``trigger`` blocks of the window
centre (0.51, landmark.md §8), so the footprint stays inside when

    h · tan(θ + φ) ≤ (N / 2 − trigger − margin) · b

(``margin``: the blocks the camera may travel while a fetch is in flight). :func:`max_height` is that
bound; :func:`check_camera` enforces the exact per-frame condition (error, or lower the camera).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.data.rays import camera_space_directions
from nerfxl.errors import ConfigError

from .window import BlockLayout

TRIGGER_BLOCKS = 0.51
"""A fetch starts when the camera is this many blocks from the window centre (LandMark's 0.51)."""


@dataclass(frozen=True)
class CameraLimits:
    """The derived limits of one configuration (model units and degrees)."""

    neighbourhood: int
    block_size: float
    half_diagonal_fov_deg: float
    trigger_blocks: float
    margin_blocks: float

    @property
    def reach(self) -> float:
        """How far (model units) from its x-y a camera may see."""
        return max(self.neighbourhood / 2 - self.trigger_blocks - self.margin_blocks, 0.0) * self.block_size

    def max_height(self, tilt_deg: float) -> float:
        """Highest camera (above the ground) at ``tilt_deg`` from nadir; 0 if the view reaches the horizon."""
        angle = math.radians(tilt_deg + self.half_diagonal_fov_deg)
        if angle >= math.pi / 2:
            return 0.0
        return self.reach / max(math.tan(angle), 1e-9)


def corner_directions(cameras: Cameras, index: int) -> Tensor:
    """[4, 3] world directions of the rays through camera ``index``'s image corners."""
    w, h = float(cameras.width[index]), float(cameras.height[index])
    pixels = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], dtype=torch.float32, device=cameras.device)
    dirs = camera_space_directions(cameras, torch.full((4,), index, dtype=torch.long, device=cameras.device), pixels)
    rotation = cameras.camera_to_worlds[index, :3, :3]
    return dirs.to(rotation.dtype) @ rotation.T


def half_diagonal_fov_deg(cameras: Cameras, index: int = 0) -> float:
    """Half the angle between opposite corner rays of camera ``index``."""
    d = corner_directions(cameras, index).double()
    d = d / d.norm(dim=-1, keepdim=True)
    return math.degrees(math.acos(float((d[0] * d[3]).sum().clamp(-1, 1)))) / 2


def footprint(cameras: Cameras, index: int, z_range: tuple[float, float]) -> tuple[float, float, float, float] | None:
    """(x_min, x_max, y_min, y_max) in model units holding every point a frame can sample between the
    box's bottom and top ``z_range``; None if no ray reaches the box's height range; infinite sides when a
    corner ray does not point down (the view reaches the horizon)."""
    z_bottom, z_top = z_range
    eye = cameras.camera_to_worlds[index, :3, 3].double()
    dirs = corner_directions(cameras, index).double()
    if float(eye[2]) < z_bottom:
        return None if bool((dirs[:, 2] <= 0).all()) else (-math.inf, math.inf, -math.inf, math.inf)
    if bool((dirs[:, 2] >= 0).any()):
        return (-math.inf, math.inf, -math.inf, math.inf)
    points = [eye[None, :2]] if float(eye[2]) <= z_top else []
    for z in ([z_top] if float(eye[2]) > z_top else []) + [z_bottom]:
        t = (z - eye[2]) / dirs[:, 2]
        points.append(eye[None, :2] + t[:, None] * dirs[:, :2])
    xy = torch.cat(points)
    return float(xy[:, 0].min()), float(xy[:, 0].max()), float(xy[:, 1].min()), float(xy[:, 1].max())


def footprint_in_blocks(layout: BlockLayout, rect) -> tuple[float, float, float, float] | None:
    if rect is None:
        return None
    (x0, y0), (w, d) = layout.xy_min, layout.block_size
    return (rect[0] - x0) / w, (rect[1] - x0) / w, (rect[2] - y0) / d, (rect[3] - y0) / d


def camera_position_in_blocks(layout: BlockLayout, cameras: Cameras, index: int) -> tuple[float, float]:
    eye = cameras.camera_to_worlds[index, :3, 3].double()
    (x0, y0), (w, d) = layout.xy_min, layout.block_size
    return (float(eye[0]) - x0) / w, (float(eye[1]) - y0) / d


def fits(layout: BlockLayout, cameras: Cameras, index: int, n: int, z_range: tuple[float, float]) -> bool:
    """Whether the N × N window around camera ``index`` holds its footprint."""
    rect = footprint_in_blocks(layout, footprint(cameras, index, z_range))
    return layout.covers(layout.window_around(camera_position_in_blocks(layout, cameras, index), n), rect)


def check_camera(layout: BlockLayout, cameras: Cameras, index: int, n: int, z_range: tuple[float, float],
                 mode: str = "error") -> Cameras:
    """Camera ``index`` if the window around it holds its view; otherwise a one-line ConfigError
    (``mode="error"``) or, with ``mode="clamp"``, the same view lowered towards the ground until it
    fits (the cameras with that one replaced)."""
    if fits(layout, cameras, index, n, z_range):
        return cameras
    c2w = cameras.camera_to_worlds[index]
    height = float(c2w[2, 3]) - z_range[0]
    if mode != "clamp":
        tilt = math.degrees(math.acos(min(max(float(c2w[2, 2]), -1.0), 1.0)))  # view (−z axis) against straight down
        raise ConfigError(f"camera {index} (height {height:.3g} above the ground, tilted {tilt:.0f}° from straight "
                          f"down) sees beyond a {n} × {n} window of {layout.block_size[0]:.3g}-wide blocks; fly lower, "
                          f"look further down, or use a larger --neighbourhood (or --camera-limits clamp)")
    low, high = 0.0, max(height, 0.0)
    poses = cameras.camera_to_worlds.clone()
    for _ in range(40):  # bisection on the height above the ground
        mid = 0.5 * (low + high)
        poses[index, 2, 3] = z_range[0] + mid
        trial = dataclasses.replace(cameras, camera_to_worlds=poses.clone())
        if fits(layout, trial, index, n, z_range):
            low = mid
        else:
            high = mid
    poses[index, 2, 3] = z_range[0] + low
    clamped = dataclasses.replace(cameras, camera_to_worlds=poses)
    if not fits(layout, clamped, index, n, z_range):
        raise ConfigError(f"camera {index} cannot be lowered into a {n} × {n} window: its view reaches the horizon; "
                          f"tilt it further down")
    return clamped
