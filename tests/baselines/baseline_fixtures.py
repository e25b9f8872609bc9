"""Small synthetic cameras and tile plans shared by the baseline tests."""

from __future__ import annotations

import torch

from nerfxl.data.cameras import Cameras
from nerfxl.partition.plan import plan_tiles

SCENE_BOX = torch.tensor([[-2.0, -1.0, -0.5], [2.0, 1.0, 0.5]], dtype=torch.float64)


def look_at(position, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """[3, 4] OpenGL camera-to-world at ``position`` looking at ``target`` (camera −Z towards it)."""
    p, t, u = (torch.tensor(v, dtype=torch.float64) for v in (position, target, up))
    z = (p - t) / (p - t).norm()
    x = torch.linalg.cross(u, z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    return torch.stack([x, y, z, p], dim=-1)


def some_cameras() -> Cameras:
    """Five small cameras around the scene box, some looking away from parts of it."""
    poses = torch.stack([
        look_at((3.0, 0.0, 1.0)),
        look_at((-3.0, 0.5, 1.5)),
        look_at((0.0, -2.5, 0.8), target=(1.5, 0.0, 0.0)),
        look_at((1.0, 2.5, 2.0), target=(-1.5, 0.5, 0.0)),
        look_at((-1.5, -0.2, 0.2), target=(-1.9, -0.2, 0.0)),  # inside the box, near a corner
    ])
    return Cameras.create(poses, fx=14.0, fy=14.0, cx=12.0, cy=8.0, width=24, height=16)


def some_plan(k: int = 4, method: str = "kd"):
    g = torch.Generator().manual_seed(0)
    lo, hi = SCENE_BOX[0].float(), SCENE_BOX[1].float()
    points = lo + torch.rand(3000, 3, generator=g) ** 2 * (hi - lo)
    return plan_tiles(points, k, method, scene_box=SCENE_BOX)
