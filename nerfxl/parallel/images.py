"""Whole images rendered through a :class:`~nerfxl.renderer.TiledRenderer` by the processes of a
:class:`~nerfxl.parallel.distributed.DistContext` (each holding its tiles, or all the same model and a
share of the pixels), and the rendered outputs as displayable pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.data.rays import generate_image_rays
from nerfxl.parallel.distributed import DistContext, gather_to_main
from nerfxl.parallel.partition_based import render_rays_chunked_to_main
from nerfxl.renderer import RenderedRays, TiledRenderer


def local_context(renderer: TiledRenderer) -> DistContext:
    """The single-process context for a renderer that holds all tiles."""
    return DistContext(device=renderer.scene_box.device)


@torch.no_grad()
def render_image(renderer: TiledRenderer, cameras: Cameras, index: int, ctx: DistContext | None = None) -> dict[str, Tensor] | None:
    """Render camera ``index`` (model-frame cameras) as a novel view (zero appearance embedding).

    Every process of ``ctx`` must call it; the image comes back on rank 0 only.

    Returns:
        {"rgb": [H, W, 3], "depth": [H, W] ray distance in model units, "opacity": [H, W]} on CPU,
        or None on ranks other than 0.
    """
    out = render_rays_chunked_to_main(renderer, novel_view_rays(cameras, index), ctx or local_context(renderer))
    if out is None:
        return None
    return image_of(out.rgb, out.depth, out.opacity, cameras, index)


def novel_view_rays(cameras: Cameras, index: int):
    """Every pixel's ray of camera ``index`` with no training image (the zero appearance embedding)."""
    rays = generate_image_rays(cameras, index)
    rays.image_indices = torch.full_like(rays.image_indices, -1)
    return rays


def image_of(rgb: Tensor, depth: Tensor, opacity: Tensor, cameras: Cameras, index: int) -> dict[str, Tensor]:
    """Per-pixel [H·W] results → :func:`render_image`'s image dict on the CPU."""
    h, w = int(cameras.height[index]), int(cameras.width[index])
    return {"rgb": rgb.reshape(h, w, 3).clamp(0, 1).cpu(), "depth": depth.reshape(h, w).cpu(),
            "opacity": opacity.reshape(h, w).cpu()}


@torch.no_grad()
def render_image_by_rows(renderer: TiledRenderer, cameras: Cameras, index: int,
                         ctx: DistContext) -> dict[str, Tensor] | None:
    """:func:`render_image` with every process of ``ctx`` holding the same model (or the same window of
    it): process r renders the r-th contiguous share of the pixels alone and rank 0 gathers the image
    (None elsewhere). Every process must call it."""
    out = render_rays_split_by_pixels(renderer, novel_view_rays(cameras, index), ctx)
    return None if out is None else image_of(out.rgb, out.depth, out.opacity, cameras, index)


@torch.no_grad()
def render_rays_split_by_pixels(renderer: TiledRenderer, rays, ctx: DistContext) -> RenderedRays | None:
    """Rays rendered by processes that all hold the same model: process r renders the r-th contiguous
    share alone, rank 0 gathers them (None elsewhere; ``n_samples``: rank 0's own). Every process must
    call it."""
    n = len(rays)
    share = -(-n // ctx.world_size)
    mine = rays[min(ctx.rank * share, n): min((ctx.rank + 1) * share, n)]
    out = render_rays_chunked_to_main(renderer, mine, local_context(renderer)) if len(mine) else None
    if out is None:  # more processes than rays: this one has none
        out = RenderedRays(*(rays.origins.new_zeros(0, c).squeeze(1) for c in (3, 1, 1, 1)), n_samples=0)
    packed = torch.cat([out.rgb.reshape(-1, 3), out.depth[:, None], out.opacity[:, None], out.distortion[:, None]], dim=1)
    packed = torch.cat([packed, packed.new_zeros(share - len(packed), 6)])  # equal shapes for the gather
    gathered = gather_to_main(packed, ctx)
    if gathered is None:
        return None
    g = gathered[:n]
    return RenderedRays(rgb=g[:, :3], depth=g[:, 3], opacity=g[:, 4], distortion=g[:, 5], n_samples=out.n_samples)


def to_uint8(image: Tensor) -> np.ndarray:
    """An image in [0, 1] (CPU) → uint8 pixels (values outside [0, 1] clamped)."""
    return (image.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def depth_as_grey(depth: Tensor, opacity: Tensor) -> Tensor:
    """Depths [...] → grey [..., 3] in [0, 1]: near is dark, the 98th percentile of the opaque pixels'
    depths (opacity > 0.5) is white."""
    valid = opacity > 0.5
    scale = float(depth[valid].quantile(0.98)) if bool(valid.any()) else 1.0
    return (depth / max(scale, 1e-6)).clamp(0, 1)[..., None].expand(*depth.shape, 3)
