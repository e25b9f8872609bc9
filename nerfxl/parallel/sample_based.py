"""The sample-based exchange (nerf-xl.md §6, paper §4.2), kept for comparison.

Every process evaluates the samples of its tiles and all-gathers them — interval bounds, density,
colour and ray index per *sample* — then every process sorts all samples of each ray by distance and
volume-renders the whole ray in one pass. Same result as the partition-based exchange (up to float
round-off: one pass instead of per-segment products), far more bytes: the ratio is about the number
of samples per ray per tile.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfxl.data.rays import RayBundle
from nerfxl.parallel.distributed import DistContext, all_gather_tensor, all_gather_variable
from nerfxl.parallel.partition_based import check_ownership
from nerfxl.renderer import RenderedRays, TileGenerators, TiledRenderer, finish_rendering
from nerfxl.rendering.segments import composite_segments, render_segments


def render_sample_based(
    renderer: TiledRenderer,
    rays: RayBundle,
    ctx: DistContext,
    stratified: bool = False,
    generators: TileGenerators = None,
    background: Tensor | None = None,
) -> RenderedRays:
    """Same contract as :func:`nerfxl.parallel.partition_based.render_partition_based`."""
    check_ownership(renderer, ctx)
    rows, ray_ids, n_samples = [], [], 0
    for samples, sigmas, rgbs in renderer.query_tiles(list(renderer.tile_ids), rays, stratified, generators):
        rows.append(torch.cat([samples.t_starts[:, None], samples.t_ends[:, None], sigmas[:, None], rgbs], dim=-1))
        ray_ids.append(samples.ray_indices)
        n_samples += samples.n_samples
    local_rows = torch.cat(rows)  # [S, 6]: t_start, t_end, σ, r, g, b
    # int32 on the wire: a batch has far fewer than 2^31 rays.
    local_rays = torch.cat(ray_ids).to(torch.int32)
    all_rows = all_gather_variable(local_rows, ctx)  # own rows differentiable
    all_rays = all_gather_tensor(local_rays, ctx).long()

    # Tiles are disjoint, so sorting by (ray, t_start) puts every ray's samples front to back.
    by_t = torch.argsort(all_rows[:, 0].detach(), stable=True)
    order = by_t[torch.argsort(all_rays[by_t], stable=True)]
    merged, ray_indices = all_rows[order], all_rays[order]
    t_starts, t_ends, sigmas, rgbs = merged[:, 0].detach(), merged[:, 1].detach(), merged[:, 2], merged[:, 3:]
    whole_ray = render_segments(t_starts, t_ends, sigmas, rgbs, ray_indices, len(rays))
    out = composite_segments(whole_ray[:, None], background=background)
    return finish_rendering(out, n_samples)
