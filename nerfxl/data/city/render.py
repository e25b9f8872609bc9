"""Supersampled images and z-depth maps of the city from pinhole cameras."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.city.flights import Intrinsics
from nerfxl.data.city.raycast import cast_rays
from nerfxl.data.city.scene import CityScene


def pixel_rays(c2w: np.ndarray | Tensor, intr: Intrinsics, offsets_u: Tensor,
               offsets_v: Tensor) -> tuple[Tensor, Tensor]:
    """World rays through points (u + offset_u, v + offset_v) of every pixel, float64.

    Same convention as :mod:`nerfxl.data.rays` (pixel (u, v) spans [u, u + 1) × [v, v + 1), OpenGL
    camera axes), so ``offsets`` of 0.5 give the pixel-centre rays.

    Args:
        c2w: [4, 4] or [3, 4] camera-to-world.
        offsets_u, offsets_v: [S] sub-pixel offsets in [0, 1).
    Returns:
        origins [S · H · W, 3] and unit directions [S · H · W, 3], ordered (sample, row, column).
    """
    m = torch.as_tensor(np.asarray(c2w), dtype=torch.float64)[:3]
    v, u = torch.meshgrid(torch.arange(intr.height, dtype=torch.float64),
                          torch.arange(intr.width, dtype=torch.float64), indexing="ij")
    pu = u.reshape(1, -1) + offsets_u.double().reshape(-1, 1)
    pv = v.reshape(1, -1) + offsets_v.double().reshape(-1, 1)
    x = ((pu - intr.cx) / intr.fx).reshape(-1)
    y = (-(pv - intr.cy) / intr.fy).reshape(-1)
    # R · (x, y, -1) written out, so results never depend on a matmul kernel's summation order.
    d = torch.stack([m[i, 0] * x + m[i, 1] * y - m[i, 2] for i in range(3)], dim=-1)
    d = d / torch.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])[:, None]
    return m[:, 3].expand_as(d), d


def subpixel_offsets(n: int) -> tuple[Tensor, Tensor]:
    """Regular n × n sub-pixel grid: offsets (k + 0.5) / n; for odd n the middle one is 0.5."""
    k = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ov, ou = torch.meshgrid(k, k, indexing="ij")
    return ou.reshape(-1), ov.reshape(-1)


def render_view(scene: CityScene, c2w: np.ndarray, intr: Intrinsics,
                supersample: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Render one view.

    The colour of a pixel is the mean radiance of ``supersample``² regularly placed rays inside it
    (a box filter: no aliasing of window grids and road markings). Depth comes from the
    pixel-centre ray alone and is the z-depth along the camera's viewing axis.

    Returns:
        rgb: [H, W, 3] uint8; depth: [H, W] float32 metres, 0 where the centre ray sees sky.
    """
    h, w = intr.height, intr.width
    ou, ov = subpixel_offsets(supersample)
    centre_index = None
    if supersample % 2 == 1:
        centre_index = (supersample * supersample) // 2
    else:  # add the pixel centre as one more (unweighted) sample
        half = torch.tensor([0.5], dtype=torch.float64)
        ou, ov = torch.cat([ou, half]), torch.cat([ov, half])
    origins, dirs = pixel_rays(c2w, intr, ou, ov)
    rgb, t, _, _ = cast_rays(scene, origins, dirs)
    n = supersample * supersample
    per_sample = rgb.double().reshape(-1, h * w, 3)
    acc = per_sample[0].clone()
    for k in range(1, n):  # sequential adds: a fixed summation order
        acc = acc + per_sample[k]
    mean = acc / n
    image = torch.floor(mean.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).reshape(h, w, 3).numpy()

    k = centre_index if centre_index is not None else n
    t_c = t.reshape(-1, h * w)[k]
    d_c = dirs.reshape(-1, h * w, 3)[k]
    axis = -torch.as_tensor(np.asarray(c2w), dtype=torch.float64)[:3, 2]  # the camera looks down -Z
    cos = d_c[:, 0] * axis[0] + d_c[:, 1] * axis[1] + d_c[:, 2] * axis[2]
    depth = torch.where(torch.isinf(t_c), torch.zeros_like(t_c), t_c * cos)
    return image, depth.to(torch.float32).reshape(h, w).numpy()
