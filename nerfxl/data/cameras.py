"""Batched pinhole / distorted / fisheye cameras in OpenGL axes.

Conventions (the same as nerfstudio and Blender):
- ``camera_to_worlds`` is [N, 3, 4]; camera axes are +X right, +Y up, and the camera looks down −Z.
- Pixel (u, v) has its centre at (u + 0.5, v + 0.5); v grows downwards; ``cx, cy`` are in pixels.
- ``distortion`` is [N, 6] = (k1, k2, k3, k4, p1, p2) in nerfstudio's order. Perspective cameras
  use OpenCV's radial-tangential model (k1, k2, k3, p1, p2; k4 must be 0); fisheye cameras use the
  OpenCV equidistant model (k1..k4; p1, p2 must be 0).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import IntEnum

import torch
from torch import Tensor


class CameraModel(IntEnum):
    PERSPECTIVE = 0
    FISHEYE = 1


# COLMAP / nerfstudio camera-model names → our model. Each lists the parameter names the format
# stores after the focal lengths and principal point.
CAMERA_MODEL_NAMES: dict[str, CameraModel] = {
    "PINHOLE": CameraModel.PERSPECTIVE,
    "SIMPLE_PINHOLE": CameraModel.PERSPECTIVE,
    "SIMPLE_RADIAL": CameraModel.PERSPECTIVE,
    "RADIAL": CameraModel.PERSPECTIVE,
    "OPENCV": CameraModel.PERSPECTIVE,
    "PERSPECTIVE": CameraModel.PERSPECTIVE,
    "OPENCV_FISHEYE": CameraModel.FISHEYE,
    "FISHEYE": CameraModel.FISHEYE,
    "SIMPLE_RADIAL_FISHEYE": CameraModel.FISHEYE,
    "RADIAL_FISHEYE": CameraModel.FISHEYE,
}


@dataclass
class Cameras:
    """N cameras. Every field has N as its first dimension.

    Attributes:
        camera_to_worlds: [N, 3, 4] float, OpenGL axes.
        fx, fy, cx, cy: [N] float, pixels.
        width, height: [N] int64, pixels.
        distortion: [N, 6] float, (k1, k2, k3, k4, p1, p2).
        camera_model: [N] int64, values of :class:`CameraModel`.
    """

    camera_to_worlds: Tensor
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    width: Tensor
    height: Tensor
    distortion: Tensor
    camera_model: Tensor

    @classmethod
    def create(
        cls,
        camera_to_worlds: Tensor,
        fx,
        fy,
        cx,
        cy,
        width,
        height,
        distortion: Tensor | None = None,
        camera_model: int | Tensor = CameraModel.PERSPECTIVE,
    ) -> "Cameras":
        """Build from scalars or per-camera values; scalars are broadcast to all cameras."""
        c2w = torch.as_tensor(camera_to_worlds, dtype=torch.float32)
        if c2w.dim() == 2:
            c2w = c2w[None]
        c2w = c2w[:, :3, :4].contiguous()
        n = c2w.shape[0]

        def per_camera(x, dtype):
            t = torch.as_tensor(x, dtype=dtype)
            return t.expand(n).clone() if t.dim() == 0 else t.reshape(n).clone()

        dist = torch.zeros(n, 6) if distortion is None else torch.as_tensor(distortion, dtype=torch.float32)
        if dist.dim() == 1:
            dist = dist[None].expand(n, 6)
        return cls(
            camera_to_worlds=c2w,
            fx=per_camera(fx, torch.float32),
            fy=per_camera(fy, torch.float32),
            cx=per_camera(cx, torch.float32),
            cy=per_camera(cy, torch.float32),
            width=per_camera(width, torch.int64),
            height=per_camera(height, torch.int64),
            distortion=dist.reshape(n, 6).clone(),
            camera_model=per_camera(int(camera_model) if not isinstance(camera_model, Tensor) else camera_model, torch.int64),
        )

    def __len__(self) -> int:
        return self.camera_to_worlds.shape[0]

    def __getitem__(self, index) -> "Cameras":
        """Select cameras by int, slice, index tensor or bool mask (always returns a batch)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Cameras(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device) -> "Cameras":
        return Cameras(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def device(self) -> torch.device:
        return self.camera_to_worlds.device

    @property
    def positions(self) -> Tensor:
        """[N, 3] camera centres in world coordinates."""
        return self.camera_to_worlds[:, :, 3]

    @property
    def has_distortion(self) -> Tensor:
        """[N] bool: cameras whose rays need undistortion."""
        return (self.distortion != 0).any(dim=-1) | (self.camera_model == CameraModel.FISHEYE)

    def rescale(self, factor: float) -> "Cameras":
        """Scale image size by ``factor`` (e.g. 0.5 halves it); intrinsics follow, rounding the size.

        The focal lengths and principal point are scaled by the ratio of the rounded sizes so the
        pixel grid keeps covering the same field of view.
        """
        new_w = torch.clamp((self.width.double() * factor).round(), min=1).long()
        new_h = torch.clamp((self.height.double() * factor).round(), min=1).long()
        sx = new_w.float() / self.width.float()
        sy = new_h.float() / self.height.float()
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy, width=new_w, height=new_h)

    @staticmethod
    def concat(cameras: list["Cameras"]) -> "Cameras":
        return Cameras(**{f.name: torch.cat([getattr(c, f.name) for c in cameras]) for f in fields(Cameras)})
