"""Rendering rays through a tiled radiance field: march each tile, render its segment, composite.

This is the single-process form of NeRF-XL's partition-based rendering (nerf-xl.md §4): every tile
renders its own segment of each ray into a [n_rays, 6] block and the blocks are composited front to
back. With one tile it is ordinary volume rendering. The distributed strategies reuse
:meth:`TiledRenderer.render_tile` and only change where the blocks come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.rays import RayBundle
from nerfxl.rendering.occupancy import OccupancyGrid
from nerfxl.rendering.pruning import contributing_samples, select_samples
from nerfxl.rendering.sampling import PackedSamples, march_rays_in_box
from nerfxl.rendering.segments import CompositedRays, composite_segments, render_segments, segment_order_from_entry


@dataclass
class RenderConfig:
    """How rays are sampled and rendered."""

    samples_per_diagonal: int = 1024
    """Marching step = (scene-box diagonal) / this; the same step in every tile."""
    max_samples_per_ray: int = 512
    """Cap on samples per ray and tile (the first ones along the ray are kept)."""
    occupancy_resolution: int = 128
    """Occupancy cells along the longest axis of each tile (shorter axes get fewer, cubic cells)."""
    occupancy_update_every: int = 16
    """Training steps between occupancy-grid refreshes."""
    occupancy_alpha_threshold: float = 0.01
    """A cell is occupied when one marching step through it would reach this opacity."""
    occupancy_warmup_steps: int = 256
    """Steps during which every cell is re-evaluated at each refresh."""
    chunk_rays: int = 16384
    """Rays rendered at once when rendering whole images (bounds memory)."""
    prune_alpha_threshold: float = 1e-4
    """Samples less opaque than this are dropped after a cheap density pass (0 = keep all)."""
    prune_alpha_after: int = 256
    """Training step from which the alpha rule applies; before it densities are still near their
    tiny initial values and pruning them would leave no gradient at all."""
    prune_transmittance_threshold: float = 1e-4
    """Samples behind a stretch this opaque (transmittance below it) are dropped (0 = keep all)."""


@dataclass
class RenderedRays:
    """Composited results plus per-step statistics.

    Attributes:
        rgb: [R, 3] colour including the background.
        opacity: [R] accumulated opacity.
        depth: [R] expected distance of the visible surface (depth numerator / opacity; 0 if empty).
        distortion: [R] whole-ray distortion loss values.
        n_samples: samples evaluated over all tiles.
    """

    rgb: Tensor
    opacity: Tensor
    depth: Tensor
    distortion: Tensor
    n_samples: int


def occupancy_resolution_for(box: Tensor, longest: int) -> tuple[int, int, int]:
    """Cells per axis so cells are (nearly) cubic: ``longest`` along the longest side."""
    extent = (box[1] - box[0]).tolist()
    cell = max(extent) / longest
    return tuple(max(1, math.ceil(e / cell - 1e-6)) for e in extent)  # type: ignore[return-value]


class TiledRenderer(nn.Module):
    """A radiance field of K tiles + one occupancy grid per tile + the sampling settings.

    Args:
        field: a :class:`nerfxl.fields.model.RadianceField` whose tiles have boxes in the
            renderer's (normalised) coordinates.
        scene_box: [2, 3] box of the whole scene (the union of the tile boxes).
        config: sampling settings.
    """

    def __init__(self, field: nn.Module, scene_box: Tensor, config: RenderConfig):
        super().__init__()
        self.field = field
        self.config = config
        self.register_buffer("scene_box", scene_box.detach().clone().float())
        self.step_size = float((scene_box[1] - scene_box[0]).norm()) / config.samples_per_diagonal
        self.prune_alpha = True  # the trainer switches it off until ``prune_alpha_after``
        self.occupancy = nn.ModuleList(
            OccupancyGrid(tile.box.detach().float(), occupancy_resolution_for(tile.box, config.occupancy_resolution))
            for tile in field.tiles
        )

    @property
    def n_tiles(self) -> int:
        return len(self.field.tiles)

    def tile_boxes(self) -> Tensor:
        """[K, 2, 3] boxes of all tiles."""
        return torch.stack([tile.box for tile in self.field.tiles])

    @property
    def density_threshold(self) -> float:
        """σ at which one marching step reaches ``occupancy_alpha_threshold`` opacity."""
        return -math.log1p(-self.config.occupancy_alpha_threshold) / self.step_size

    @torch.no_grad()
    def update_occupancy(self, step: int, generator: torch.Generator | None = None, tiles: list[int] | None = None) -> None:
        """Refresh the occupancy grids of ``tiles`` (default all) from the current densities."""
        for k in range(self.n_tiles) if tiles is None else tiles:
            self.occupancy[k].update(
                step,
                lambda p, k=k: self.field.tile_density(k, p),
                occ_thre=self.density_threshold,
                n=self.config.occupancy_update_every,
                warmup_steps=self.config.occupancy_warmup_steps,
                generator=generator,
            )

    def sample_tile(self, k: int, rays: RayBundle, stratified: bool, generator: torch.Generator | None = None) -> PackedSamples:
        return march_rays_in_box(
            rays.origins,
            rays.directions,
            self.field.tiles[k].box,
            self.step_size,
            occupancy=self.occupancy[k],
            max_samples_per_ray=self.config.max_samples_per_ray,
            stratified=stratified,
            generator=generator,
        )

    def render_tile(
        self, k: int, rays: RayBundle, stratified: bool = False, generator: torch.Generator | None = None
    ) -> tuple[Tensor, int]:
        """Tile k's segment of every ray.

        Returns:
            ([R, 6] segment block — colour, opacity, depth numerator, distortion — zeros for rays
            that miss the tile), number of samples evaluated.
        """
        samples = self.sample_tile(k, rays, stratified, generator)
        c = self.config
        if samples.n_samples and (c.prune_alpha_threshold > 0 or c.prune_transmittance_threshold > 0):
            with torch.no_grad():
                sigmas = self.field.tile_density(k, sample_positions(rays, samples))
                alpha_threshold = c.prune_alpha_threshold if self.prune_alpha else 0.0
                keep = contributing_samples(samples, sigmas, len(rays), alpha_threshold, c.prune_transmittance_threshold)
            samples = select_samples(samples, keep)
        ri = samples.ray_indices
        positions = sample_positions(rays, samples)
        sigmas, rgbs = self.field.query(k, positions, rays.directions[ri], rays.image_indices[ri])
        block = render_segments(samples.t_starts, samples.t_ends, sigmas, rgbs, ri, len(rays))
        return block, samples.n_samples

    def tile_order(self, rays: RayBundle) -> Tensor:
        """[R, K] front-to-back order of the tiles along each ray (missed tiles last)."""
        t_enter, _, hit = intersect_rays_boxes(rays.origins, rays.directions, self.tile_boxes())
        return segment_order_from_entry(t_enter, hit)

    def background(self, rays: RayBundle) -> Tensor | None:
        """[R, 3] background colour behind each ray, or None for black."""
        return self.field.background_colour(rays.directions, rays.image_indices)

    def composite(self, blocks: Tensor, rays: RayBundle, background: Tensor | None) -> CompositedRays:
        order = self.tile_order(rays) if blocks.shape[1] > 1 else None
        return composite_segments(blocks, order=order, background=background)

    def forward(
        self,
        rays: RayBundle,
        stratified: bool = False,
        generator: torch.Generator | None = None,
        background: Tensor | None = None,
    ) -> RenderedRays:
        """Render rays through all tiles in this process (the single-process reference)."""
        blocks, n_samples = [], 0
        for k in range(self.n_tiles):
            block, n = self.render_tile(k, rays, stratified, generator)
            blocks.append(block)
            n_samples += n
        if background is None:
            background = self.background(rays)
        out = self.composite(torch.stack(blocks, dim=1), rays, background)
        return finish_rendering(out, n_samples)

    @torch.no_grad()
    def render_rays_chunked(self, rays: RayBundle, background: Tensor | None = None) -> RenderedRays:
        """Evaluation rendering of many rays in chunks of ``config.chunk_rays``."""
        parts = []
        n = 0
        for start in range(0, len(rays), self.config.chunk_rays):
            sl = slice(start, start + self.config.chunk_rays)
            bg = None if background is None else (background if background.dim() == 1 else background[sl])
            part = self(rays[sl], background=bg)
            parts.append(part)
            n += part.n_samples
        return RenderedRays(
            rgb=torch.cat([p.rgb for p in parts]),
            opacity=torch.cat([p.opacity for p in parts]),
            depth=torch.cat([p.depth for p in parts]),
            distortion=torch.cat([p.distortion for p in parts]),
            n_samples=n,
        )


def sample_positions(rays: RayBundle, samples: PackedSamples) -> Tensor:
    """[S, 3] interval midpoints in the coordinates of the rays."""
    ri = samples.ray_indices
    mids = 0.5 * (samples.t_starts + samples.t_ends)
    return rays.origins[ri] + rays.directions[ri] * mids[:, None]


def finish_rendering(out: CompositedRays, n_samples: int) -> RenderedRays:
    depth = torch.where(out.opacity > 1e-6, out.depth / out.opacity.clamp_min(1e-6), torch.zeros_like(out.depth))
    return RenderedRays(out.rgb, out.opacity, depth, out.distortion, n_samples)
