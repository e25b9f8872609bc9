"""The similarity transform from dataset (world) units to the model's normalised frame.

Models work in a frame where the scene box is centred at the origin and its longest half-side is
1, so step sizes, occupancy thresholds and learning rates mean the same for a 3-unit Blender
object and a 2-km city. The transform is saved with every run and applied to cameras, boxes,
camera paths and depths.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras


@dataclass(frozen=True)
class SceneTransform:
    """x_model = (x_world − center) · scale."""

    center: tuple[float, float, float]
    scale: float

    @classmethod
    def fit_box(cls, box: Tensor) -> "SceneTransform":
        """Centre ``box`` [2, 3] at the origin with its longest half-side 1."""
        box = box.double()
        center = 0.5 * (box[0] + box[1])
        half = 0.5 * (box[1] - box[0]).max()
        return cls(tuple(float(c) for c in center), float(1.0 / half))

    @classmethod
    def identity(cls) -> "SceneTransform":
        return cls((0.0, 0.0, 0.0), 1.0)

    def points(self, x: Tensor) -> Tensor:
        return (x - torch.tensor(self.center, dtype=x.dtype, device=x.device)) * self.scale

    def box(self, box: Tensor) -> Tensor:
        return self.points(box)

    def cameras(self, cameras: Cameras) -> Cameras:
        c2w = cameras.camera_to_worlds.clone()
        c2w[:, :, 3] = self.points(c2w[:, :, 3])
        return replace(cameras, camera_to_worlds=c2w)

    def poses(self, camera_to_worlds: Tensor) -> Tensor:
        """[..., 3, 4] or [..., 4, 4] poses → the same with translated/scaled positions."""
        out = camera_to_worlds.clone()
        out[..., :3, 3] = self.points(out[..., :3, 3])
        return out

    def to_dict(self) -> dict:
        return {"center": list(self.center), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "SceneTransform":
        return cls(tuple(float(c) for c in d["center"]), float(d["scale"]))
