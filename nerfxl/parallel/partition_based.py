"""NeRF-XL's partition-based exchange (nerf-xl.md §4–§5): a few numbers per ray per tile.

Every process renders its tiles' segments of the *same* rays into [n_local, R, 6] blocks, the blocks
are all-gathered (only the own slot differentiable), and every process composites the K segments of
each ray in front-to-back order. Backward then reaches exactly the process's own tile parameters
and its partial share of the shared modules, with no communication.

With one process holding all K tiles this is exactly :meth:`TiledRenderer.forward`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfxl.data.rays import RayBundle
from nerfxl.parallel.distributed import DistContext, all_gather_blocks, gather_to_main
from nerfxl.parallel.tiles import tiles_of_rank
from nerfxl.renderer import RenderedRays, TileGenerators, TiledRenderer, finish_rendering


def check_ownership(renderer: TiledRenderer, ctx: DistContext) -> None:
    """The renderer must hold exactly this rank's tiles, in order (rank-major gather = tile order)."""
    expected = tiles_of_rank(renderer.n_tiles, ctx.world_size, ctx.rank)
    if list(renderer.tile_ids) != expected:
        raise RuntimeError(f"rank {ctx.rank} of {ctx.world_size} holds tiles {list(renderer.tile_ids)}, "
                           f"expected {expected}")


def render_partition_based(
    renderer: TiledRenderer,
    rays: RayBundle,
    ctx: DistContext,
    stratified: bool = False,
    generators: TileGenerators = None,
    background: Tensor | None = None,
) -> RenderedRays:
    """Render the same rays on every process; the result is identical everywhere.

    Args:
        renderer: holds this rank's tiles (:func:`nerfxl.parallel.tiles.tiles_of_rank`).
        rays: [R] rays, identical on every process.
        generators: per-tile random generators (sample jitter).
        background: [R, 3] or [3] colour behind the rays; must carry gradient on one process only
            (it is computed identically everywhere, and shared gradients are summed).

    Returns:
        RenderedRays whose ``n_samples`` counts this process's samples only.
    """
    check_ownership(renderer, ctx)
    own, n_samples = renderer.render_local_tiles(rays, stratified, generators)
    blocks = all_gather_blocks(own, ctx)  # [K, R, 6], tile k at row k
    out = renderer.composite(blocks.transpose(0, 1), rays, background)
    return finish_rendering(out, n_samples)


@torch.no_grad()
def render_to_main(renderer: TiledRenderer, rays: RayBundle, ctx: DistContext,
                   background: Tensor | None = None) -> RenderedRays | None:
    """Inference: every process renders its segments, only rank 0 gathers and composites.

    Returns:
        On rank 0 the rendered rays (``n_samples``: rank 0's own); None elsewhere.
    """
    # One process (it holds every tile, or the fetched ones), or plane/channel parallel (every process
    # renders every ray together): the renderer renders the rays whole.
    if ctx.world_size == 1 or renderer.field.joint_evaluation:
        out = renderer(rays, background=background)
        return out if ctx.is_main else None
    check_ownership(renderer, ctx)
    own, n_samples = renderer.render_local_tiles(rays)
    blocks = gather_to_main(own, ctx)
    if blocks is None:
        return None
    if background is None:
        background = renderer.background(rays)
    return finish_rendering(renderer.composite(blocks.transpose(0, 1), rays, background), n_samples)


@torch.no_grad()
def render_rays_chunked_to_main(renderer: TiledRenderer, rays: RayBundle, ctx: DistContext) -> RenderedRays | None:
    """:func:`render_to_main` over many rays in chunks of ``renderer.config.chunk_rays`` (bounded memory)."""
    parts = []
    for start in range(0, len(rays), renderer.config.chunk_rays):
        part = render_to_main(renderer, rays[start: start + renderer.config.chunk_rays], ctx)
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    return RenderedRays(
        rgb=torch.cat([p.rgb for p in parts]),
        opacity=torch.cat([p.opacity for p in parts]),
        depth=torch.cat([p.depth for p in parts]),
        distortion=torch.cat([p.distortion for p in parts]),
        n_samples=sum(p.n_samples for p in parts),
    )
