"""Rendering rays through a tiled radiance field: march each tile, render its segment, composite.

This is the single-process form of NeRF-XL's partition-based rendering (nerf-xl.md §4): every tile
renders its own segment of each ray into a [n_rays, 6] block and the blocks are composited front to
back. With one tile it is ordinary volume rendering. A renderer may hold only some of the K tiles
(a device's share); the distributed strategies in :mod:`nerfxl.parallel` reuse
:meth:`TiledRenderer.render_local_tiles` / :meth:`TiledRenderer.query_tiles` and only change where the
other tiles' blocks or samples come from.

Random draws (sample jitter, occupancy refreshes) come from one generator *per tile*, so a tile
draws the same numbers whichever process holds it and whichever other tiles that process holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Literal, Optional

import torch
from torch import Tensor, nn

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.rays import RayBundle
from nerfxl.rendering.occupancy import OccupancyGrid
from nerfxl.rendering.pruning import contributing_samples, select_samples
from nerfxl.rendering.sampling import PackedSamples, march_rays_in_boxes
from nerfxl.rendering.segments import (
    SEGMENT_WIDTH,
    CompositedRays,
    composite_segments,
    render_segments,
    segment_order_from_entry,
)


@dataclass
class RenderConfig:
    """How rays are sampled and rendered."""

    samples_per_diagonal: int = 1024
    """Marching step = (scene-box diagonal) / this; the same step in every tile."""
    max_samples_per_ray: int = 512
    """Cap on samples per ray and tile (the first ones along the ray are kept)."""
    occupancy_resolution: int = 128
    """Occupancy cells along the longest axis of the scene (or of each tile, see
    ``occupancy_cells_over``); shorter axes get fewer cells, all (nearly) cubic."""
    occupancy_cells_over: Literal["scene", "tile"] = "scene"
    """"scene": every tile's cells are about the size of the scene's (the box's longest side over
    ``occupancy_resolution``), so K tiles hold as many cells in all as one, and a tile's refresh cost
    follows its volume. "tile": ``occupancy_resolution`` cells along each tile's own longest side
    (K tiles cost about K times one; runs saved before this option existed)."""
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

    DEFAULTS_OF_OLDER_FILES: ClassVar[dict[str, object]] = {"occupancy_cells_over": "tile"}
    """What a key missing from a saved config.yaml meant when that file was written."""


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


def tile_occupancy_resolution(tile_box: Tensor, scene_box: Tensor, config: RenderConfig) -> tuple[int, int, int]:
    """Cells per axis of one tile's occupancy grid, (nearly) cubic: ``config.occupancy_resolution``
    cells along the longest side of the scene box (``occupancy_cells_over="scene"``) or of the tile's
    own box ("tile"), rounded up per axis so the cells tile the box exactly (a tile's cells may be
    slightly smaller than the reference size)."""
    reference = scene_box if config.occupancy_cells_over == "scene" else tile_box
    cell = float((reference[1] - reference[0]).max()) / config.occupancy_resolution
    extent = (tile_box[1] - tile_box[0]).tolist()
    return tuple(max(1, math.ceil(e / cell - 1e-6)) for e in extent)  # type: ignore[return-value]


TileGenerators = Optional[Callable[[int], Optional[torch.Generator]]]
"""Tile index k → the random generator tile k draws from (None: the global generator)."""


class TiledRenderer(nn.Module):
    """A radiance field of K tiles + one occupancy grid per held tile + the sampling settings.

    Args:
        field: a :class:`nerfxl.fields.model.RadianceField` whose tiles have boxes in the
            renderer's (normalised) coordinates; it may hold only some of the K tiles.
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
        self.unheld_tiles_are_empty = False  # dynamic fetching of tiles sets it (see forward)
        self.occupancy = nn.ModuleList(
            OccupancyGrid(tile.box.detach().float(), tile_occupancy_resolution(tile.box, scene_box, config))
            for tile in field.tiles
        )

    @property
    def n_tiles(self) -> int:
        """K, the number of tiles of the whole scene (held here or not)."""
        return self.field.n_tiles

    @property
    def tile_ids(self) -> tuple[int, ...]:
        """Global indices of the tiles held by this renderer, in slot order."""
        return self.field.tile_ids

    @property
    def holds_all_tiles(self) -> bool:
        return len(self.field.tile_ids) == self.n_tiles

    def occupancy_grid(self, k: int) -> OccupancyGrid:
        """The occupancy grid of global tile k (held here)."""
        return self.occupancy[self.field.tile_ids.index(int(k))]

    def hold_tiles(self, tiles, occupancy, tile_ids) -> None:
        """Hold ``tiles`` and their ``occupancy`` grids (global indices ``tile_ids``) instead of the current
        ones: dynamic fetching swaps in the tiles around the camera."""
        self.field.hold_tiles(tiles, tile_ids)
        self.occupancy = nn.ModuleList(occupancy)

    def tile_boxes(self) -> Tensor:
        """[K, 2, 3] boxes of all K tiles (also those held elsewhere)."""
        return self.field.tile_boxes

    @property
    def density_threshold(self) -> float:
        """σ at which one marching step reaches ``occupancy_alpha_threshold`` opacity."""
        return -math.log1p(-self.config.occupancy_alpha_threshold) / self.step_size

    @torch.no_grad()
    def update_occupancy(self, step: int, generators: TileGenerators = None) -> None:
        """Refresh the occupancy grids of the held tiles from the current densities."""
        for k in self.tile_ids:
            self.occupancy_grid(k).update(
                step,
                lambda p, k=k: self.field.tile_density(k, p),
                occ_thre=self.density_threshold,
                n=self.config.occupancy_update_every,
                warmup_steps=self.config.occupancy_warmup_steps,
                generator=None if generators is None else generators(k),
            )

    def march_tiles(self, tiles: list[int], rays: RayBundle, stratified: bool = False,
                    generators: TileGenerators = None) -> list[PackedSamples]:
        """March each of ``tiles`` (all in one pass): one PackedSamples per tile, sorted by ray then t."""
        return march_rays_in_boxes(
            rays.origins, rays.directions, torch.stack([self.field.tile(k).box for k in tiles]), self.step_size,
            occupancies=[self.occupancy_grid(k) for k in tiles], max_samples_per_ray=self.config.max_samples_per_ray,
            stratified=stratified, generators=[None if generators is None else generators(k) for k in tiles])

    @property
    def prunes(self) -> bool:
        """Whether samples that cannot contribute are dropped before colours are evaluated."""
        return self.config.prune_alpha_threshold > 0 or self.config.prune_transmittance_threshold > 0

    def contributing(self, samples: PackedSamples, sigmas: Tensor, n_rays: int) -> Tensor:
        """bool [S]: the samples that can contribute, by the alpha and transmittance rules, from σ [S]
        of every marched sample."""
        c = self.config
        alpha_threshold = c.prune_alpha_threshold if self.prune_alpha else 0.0
        return contributing_samples(samples, sigmas.detach(), n_rays, alpha_threshold, c.prune_transmittance_threshold)

    def query_tile(
        self, k: int, rays: RayBundle, stratified: bool = False, generator: torch.Generator | None = None
    ) -> tuple[PackedSamples, Tensor, Tensor]:
        """March tile k, drop samples that cannot contribute, evaluate the rest.

        Returns:
            (samples sorted by ray then t, sigmas [S], rgbs [S, 3]); sigmas/rgbs are
            differentiable w.r.t. tile k's and the shared parameters.
        """
        return self.query_tiles([k], rays, stratified, lambda _: generator)[0]

    def query_tiles(
        self, tiles: list[int], rays: RayBundle, stratified: bool = False, generators: TileGenerators = None
    ) -> list[tuple[PackedSamples, Tensor, Tensor]]:
        """:meth:`query_tile` for each of ``tiles``, with one decoder call for all of them (the shared
        decoder then runs once per batch, not once per tile: see ``RadianceField.query_tiles``).

        σ decides which samples are kept, so it is evaluated for every marched sample first. Where a
        tile's σ has grid values of its own (plane-line, ``field.density_is_separate``) that evaluation
        is the one rendered, differentiable when autograd is on, and colours are evaluated for the
        kept samples only; otherwise (hash) σ is a cheap no-grad pass and the kept samples are
        evaluated whole. Both give the same values and gradients.

        A tile none of whose samples is kept costs its marching and σ only: no colour call, and its
        parameters get no gradient (None), so the optimizer skips them. Its jitter is still drawn, from
        its own generator, so the draws do not depend on which other tiles are queried with it."""
        marched = self.march_tiles(tiles, rays, stratified, generators)
        separate = self.field.density_is_separate
        kept: list[tuple[PackedSamples, Optional[Tensor]]] = []
        for k, samples in zip(tiles, marched):
            sigmas = None
            if samples.n_samples and (separate or self.prunes):
                with torch.set_grad_enabled(torch.is_grad_enabled() and separate):
                    sigmas = self.field.tile_density(k, sample_positions(rays, samples))
                if self.prunes:
                    keep = self.contributing(samples, sigmas, len(rays))
                    samples, sigmas = select_samples(samples, keep), sigmas[keep]
                if not separate or not samples.n_samples:
                    sigmas = None  # evaluated again below (hash), or nothing kept: no graph to the tile
            kept.append((samples, sigmas))
        reached = [(k, samples) for k, (samples, _) in zip(tiles, kept) if samples.n_samples]
        arguments = ([k for k, _ in reached], [sample_positions(rays, samples) for _, samples in reached],
                     [rays.directions[samples.ray_indices] for _, samples in reached],
                     [rays.image_indices[samples.ray_indices] for _, samples in reached])
        if not reached:
            evaluated = iter(())
        elif separate:
            evaluated = iter(self.field.colours_of_tiles(*arguments))
        else:
            evaluated = iter(self.field.query_tiles(*arguments))
        empty = rays.origins.new_zeros(0), rays.origins.new_zeros(0, 3)
        out = []
        for samples, sigmas in kept:
            if not samples.n_samples:
                out.append((samples, *empty))
            elif separate:
                out.append((samples, sigmas, next(evaluated)))
            else:
                out.append((samples, *next(evaluated)))
        return out

    def render_tile(
        self, k: int, rays: RayBundle, stratified: bool = False, generator: torch.Generator | None = None
    ) -> tuple[Tensor, int]:
        """Tile k's segment of every ray.

        Returns:
            ([R, 6] segment block — colour, opacity, depth numerator, distortion — zeros for rays
            that miss the tile), number of samples evaluated.
        """
        blocks, n_samples = self.render_tiles([k], rays, stratified, lambda _: generator)
        return blocks[0], n_samples

    def render_tiles(
        self, tiles: list[int], rays: RayBundle, stratified: bool = False, generators: TileGenerators = None
    ) -> tuple[Tensor, int]:
        """Segments of every ray in each of ``tiles``: ([len(tiles), R, 6] blocks, samples evaluated).

        All tiles' segments are rendered in one :func:`render_segments` call: segment (slot i, ray r)
        is packed "ray" i·R + r. The within-ray scans and sums see each segment's samples alone, so
        this gives what one call per tile gives."""
        queried = self.query_tiles(tiles, rays, stratified, generators)
        n_rays = len(rays)
        blocks = render_segments(
            torch.cat([samples.t_starts for samples, _, _ in queried]),
            torch.cat([samples.t_ends for samples, _, _ in queried]),
            torch.cat([sigmas for _, sigmas, _ in queried]),
            torch.cat([rgbs for _, _, rgbs in queried]),
            torch.cat([samples.ray_indices + slot * n_rays for slot, (samples, _, _) in enumerate(queried)]),
            len(tiles) * n_rays,
        )
        return blocks.view(len(tiles), n_rays, SEGMENT_WIDTH), sum(samples.n_samples for samples, _, _ in queried)

    def render_local_tiles(
        self, rays: RayBundle, stratified: bool = False, generators: TileGenerators = None
    ) -> tuple[Tensor, int]:
        """Segments of every ray in each held tile.

        Returns:
            ([n_held, R, 6] blocks in slot order, samples evaluated over the held tiles).
        """
        return self.render_tiles(list(self.tile_ids), rays, stratified, generators)

    def tile_order(self, rays: RayBundle) -> Tensor:
        """[R, K] front-to-back order of the tiles along each ray (missed tiles last)."""
        t_enter, _, hit = intersect_rays_boxes(rays.origins, rays.directions, self.tile_boxes())
        return segment_order_from_entry(t_enter, hit)

    def background(self, rays: RayBundle) -> Tensor | None:
        """[R, 3] background colour behind each ray, or None for black."""
        return self.field.background_colour(rays.directions, rays.image_indices)

    def composite(self, blocks: Tensor, rays: RayBundle, background: Tensor | None) -> CompositedRays:
        """Composite [R, K, 6] blocks, slot k holding global tile k, in each ray's tile order."""
        order = self.tile_order(rays) if blocks.shape[1] > 1 else None
        return composite_segments(blocks, order=order, background=background)

    def forward(
        self,
        rays: RayBundle,
        stratified: bool = False,
        generators: TileGenerators = None,
        background: Tensor | None = None,
    ) -> RenderedRays:
        """Render rays through all K tiles in this process (the single-process reference).

        With ``unheld_tiles_are_empty`` the tiles not held render as empty segments (dynamic fetching
        holds every tile a frame's samples can lie in); otherwise every tile must be held."""
        if not self.holds_all_tiles and not self.unheld_tiles_are_empty:
            raise RuntimeError(f"this renderer holds tiles {list(self.tile_ids)} of {self.n_tiles}; render "
                               f"through a strategy in nerfxl.parallel instead")
        n_samples = 0
        if self.holds_all_tiles:
            blocks, n_samples = self.render_local_tiles(rays, stratified, generators)
            order = sorted(range(len(self.tile_ids)), key=lambda slot: self.tile_ids[slot])
            if order != list(range(len(order))):
                blocks = blocks[order]
        else:
            blocks = rays.origins.new_zeros(self.n_tiles, len(rays), SEGMENT_WIDTH)
            if self.tile_ids:
                held, n_samples = self.render_local_tiles(rays, stratified, generators)
                blocks[list(self.tile_ids)] = held
        if background is None:
            background = self.background(rays)
        out = self.composite(blocks.transpose(0, 1), rays, background)
        return finish_rendering(out, n_samples)


def sample_positions(rays: RayBundle, samples: PackedSamples) -> Tensor:
    """[S, 3] interval midpoints in the coordinates of the rays."""
    ri = samples.ray_indices
    mids = 0.5 * (samples.t_starts + samples.t_ends)
    return rays.origins[ri] + rays.directions[ri] * mids[:, None]


def finish_rendering(out: CompositedRays, n_samples: int) -> RenderedRays:
    depth = torch.where(out.opacity > 1e-6, out.depth / out.opacity.clamp_min(1e-6), torch.zeros_like(out.depth))
    return RenderedRays(out.rgb, out.opacity, depth, out.distortion, n_samples)
