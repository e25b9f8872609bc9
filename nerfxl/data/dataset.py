"""The one dataset structure every format loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.data.images import DepthSource, ImageSource

Split = str  # "train" | "val" | "test" | "all"


@dataclass
class Dataset:
    """Cameras, lazily loaded images and the scene's extent, for one split.

    Attributes:
        cameras: the split's N cameras (OpenGL camera-to-world, world units of the scene).
        images: N lazily loaded images matching ``cameras`` (sizes already downscaled).
        split: the split name.
        scene_box: [2, 3] axis-aligned bounds (min, max) of the content to reconstruct.
        format: the detected format name ("nerfstudio", "blender", "colmap", "mega-nerf", "matrixcity",
            "llff").
        root: the folder the dataset was read from.
        depths: optional lazily loaded z-depth maps, same sizes as the images.
        points: optional [P, 3] float32 point cloud (e.g. SfM points), world coordinates.
        point_colors: optional [P, 3] uint8 colours of ``points``.
        image_names: N names (relative file paths) for reports and outputs.
        metadata: format-specific extras (e.g. scale factors applied), for ``nerfxl info``.
    """

    cameras: Cameras
    images: ImageSource
    split: Split
    scene_box: Tensor
    format: str
    root: Path
    depths: DepthSource | None = None
    points: Tensor | None = None
    point_colors: Tensor | None = None
    image_names: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def background(self) -> Tensor:
        return self.images.background


def scene_box_from_points(points: Tensor, margin: float = 0.05, quantile: float = 0.005) -> Tensor:
    """[2, 3] box around the bulk of a point cloud: per-axis quantiles, widened by ``margin``.

    Quantiles instead of min/max because SfM clouds carry far-away outliers that would make a
    box mostly empty.
    """
    pts = points.to(torch.float64)
    if pts.shape[0] > 1_000_000:  # quantile() refuses huge inputs; a strided subset is as good
        pts = pts[:: pts.shape[0] // 1_000_000 + 1]
    lo = torch.quantile(pts, quantile, dim=0)
    hi = torch.quantile(pts, 1.0 - quantile, dim=0)
    pad = (hi - lo).clamp_min(1e-6) * margin
    return torch.stack([lo - pad, hi + pad]).to(torch.float32)


def scene_box_from_cameras(cameras: Cameras, margin: float = 0.1) -> Tensor:
    """[2, 3] box around the camera centres, widened by ``margin`` of its size (at least 1 unit)."""
    pos = cameras.positions
    lo, hi = pos.min(dim=0).values, pos.max(dim=0).values
    pad = ((hi - lo) * margin).clamp_min(0.5)
    return torch.stack([lo - pad, hi + pad])
