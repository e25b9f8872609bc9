"""Fixed-step ray marching inside one tile box, with empty-space skipping.

Samples never cross the tile boundary (NeRF-XL §7): intervals are clipped to [t_enter, t_exit]
of the box, so each tile's segments of a ray are disjoint and together cover the ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Union

import torch
from torch import Tensor

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.rendering.occupancy import OccupancyGrid, query_occupancy_grids


class OccupancyQuery(Protocol):
    def query(self, positions: Tensor) -> Tensor:  # [N, 3] → bool [N]
        ...


@dataclass
class PackedSamples:
    """Samples of many rays in one flat layout, sorted by ray then t.

    Attributes:
        ray_indices: [S] int64 ray of each sample.
        t_starts: [S] interval starts (absolute distance along the ray, units of its direction).
        t_ends: [S] interval ends, > t_starts.
    """

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor

    @property
    def n_samples(self) -> int:
        return self.ray_indices.numel()


@torch.no_grad()
def march_rays_in_box(
    origins: Tensor,
    directions: Tensor,
    box: Tensor,
    step_size: float,
    occupancy: Optional[OccupancyQuery] = None,
    near: Union[float, Tensor] = 0.0,
    far: Union[float, Tensor] = math.inf,
    max_samples_per_ray: int = 1024,
    stratified: bool = False,
    generator: Optional[torch.Generator] = None,
) -> PackedSamples:
    """March R rays through one box with a fixed step, skipping empty cells.

    Interval boundaries lie on a per-ray grid anchored at ``near``: b_j = near + (j + u) · step,
    u = 0, or u ~ U[0, 1) per ray when ``stratified``. Anchoring at ``near`` rather than at the box
    entry means neighbouring tiles march on the same grid, so a tiled scene is sampled like an
    untiled one except that the interval straddling a tile face is split in two. Within
    [t0, t1] = [max(t_enter, near), min(t_exit, far)] the intervals [max(b_j, t0), min(b_j+1, t1)]
    cover the segment exactly; an interval is dropped when the occupancy at its midpoint is
    False. Of the remaining intervals the first ``max_samples_per_ray`` of each ray are kept.

    Args:
        origins: [R, 3] ray origins.
        directions: [R, 3] ray directions; t is in units of their length.
        box: [2, 3] (min corner, max corner).
        step_size: interval length in t (> 0).
        occupancy: e.g. an ``OccupancyGrid``: positions [N, 3] → bool [N]. None keeps everything.
        near, far: float or [R] limits on t.
        max_samples_per_ray: cap on the samples returned per ray.
        stratified: jitter the step grid per ray (training); False is deterministic (evaluation).
        generator: random source on the rays' device for the jitter.

    Returns:
        PackedSamples in the dtype of ``origins``; t values carry no gradient.
    """
    return march_rays_in_boxes(origins, directions, box.reshape(1, 2, 3), step_size,
                               None if occupancy is None else [occupancy], near, far, max_samples_per_ray,
                               stratified, [generator])[0]


@torch.no_grad()
def march_rays_in_boxes(
    origins: Tensor,
    directions: Tensor,
    boxes: Tensor,
    step_size: float,
    occupancies: Optional[Sequence[OccupancyQuery]] = None,
    near: Union[float, Tensor] = 0.0,
    far: Union[float, Tensor] = math.inf,
    max_samples_per_ray: int = 1024,
    stratified: bool = False,
    generators: Optional[Sequence[Optional[torch.Generator]]] = None,
) -> list[PackedSamples]:
    """:func:`march_rays_in_box` through each of B boxes at once.

    Returns what ``[march_rays_in_box(origins, directions, boxes[b], step_size, occupancies[b], ...,
    generator=generators[b]) for b in range(B)]`` returns, sample for sample and bit for bit: every
    (box, ray) pair goes through the same expressions, and box b's jitter is drawn from
    ``generators[b]`` in box order. What changes is the cost: one pass of vectorised work over all
    pairs instead of B passes of small kernels, and (for :class:`OccupancyGrid` s) one lookup in the
    B grids packed into one flat array.

    Args:
        origins, directions: [R, 3].
        boxes: [B, 2, 3] (min corner, max corner) per box.
        occupancies: one occupancy query per box, over that box, or None (keep everything).
        near, far: float or [R] limits on t, the same for every box.
        generators: per box, the random source of its jitter (None entries: the global generator).
    """
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    n_rays, dtype, device = origins.shape[0], origins.dtype, origins.device
    boxes = boxes.to(origins)
    n_boxes = boxes.shape[0]
    generators = [None] * n_boxes if generators is None else list(generators)
    t_enter, t_exit, hit = (x.t().reshape(-1) for x in intersect_rays_boxes(origins, directions, boxes))
    # Pair p = b·R + r: box-major, so each box's samples come out contiguous and sorted by ray.
    near_t = torch.as_tensor(near, dtype=dtype, device=device).expand(n_rays).repeat(n_boxes)
    far_t = torch.as_tensor(far, dtype=dtype, device=device).expand(n_rays).repeat(n_boxes)
    t0 = torch.maximum(t_enter, near_t)
    t1 = torch.minimum(t_exit, far_t)
    # A zero direction "hits" a box around its origin with an astronomically long segment.
    valid = hit & (t1 > t0) & (directions.abs().amax(dim=-1) > 0).repeat(n_boxes)
    if stratified:
        jitter = torch.cat([torch.rand(n_rays, generator=g, device=device, dtype=dtype) for g in generators])
    else:
        jitter = torch.zeros(n_boxes * n_rays, dtype=dtype, device=device)
    if not bool(valid.any()):  # after the draws: each generator advances the same whichever boxes
        empty = origins.new_zeros(0)
        none = torch.zeros(0, dtype=torch.long, device=device)
        return [PackedSamples(ray_indices=none, t_starts=empty, t_ends=empty) for _ in range(n_boxes)]
    # Grid cell indices j with b_j ≤ t0 < ... < t1 ≤ b_last.
    first = torch.floor((t0 - near_t) / step_size - jitter)
    last = torch.ceil((t1 - near_t) / step_size - jitter)
    bounds = occupied_bounds(occupancies, boxes) if occupancies is not None else None
    if bounds is not None:
        # Only steps whose midpoint can fall in an occupied cell: those overlapping the ray's stretch
        # through the box of occupied cells (grown by half a cell, far more than rounding can move a
        # midpoint). The steps themselves (j, their bounds, their clipping to [t0, t1]) are unchanged,
        # so the kept samples are exactly those of the full march.
        occupied_box, any_occupied = bounds
        o_enter, o_exit, o_hit = (x.t().reshape(-1) for x in intersect_rays_boxes(origins, directions, occupied_box))
        valid &= o_hit & any_occupied.repeat_interleave(n_rays)
        first = torch.maximum(first, torch.floor((o_enter - near_t) / step_size - jitter) - 1)
        last = torch.minimum(last, torch.ceil((o_exit - near_t) / step_size - jitter) + 1)
        valid &= last > first
    counts = torch.where(valid, last - first, torch.zeros_like(first)).long()
    first = torch.where(valid, first, torch.zeros_like(first)).long()
    if occupancies is None:
        counts = counts.clamp(max=max_samples_per_ray)

    total = int(counts.sum())
    pairs = torch.repeat_interleave(torch.arange(n_boxes * n_rays, device=device), counts, output_size=total)
    offsets = torch.cumsum(counts, 0) - counts
    step_in_ray = torch.arange(total, device=device) - offsets[pairs]
    j = first[pairs] + step_in_ray
    ray_near, ray_jitter = near_t[pairs], jitter[pairs]
    # Both ends from the same expression, so consecutive intervals share bit-identical bounds.
    t_starts = torch.maximum(ray_near + (j.to(dtype) + ray_jitter) * step_size, t0[pairs])
    t_ends = torch.minimum(ray_near + ((j + 1).to(dtype) + ray_jitter) * step_size, t1[pairs])
    box_of = torch.div(pairs, n_rays, rounding_mode="floor")
    ray_indices = pairs - box_of * n_rays

    keep = t_ends > t_starts  # rounding can leave an empty sliver at either end
    if occupancies is not None:
        mids = 0.5 * (t_starts + t_ends)
        positions = origins[ray_indices] + directions[ray_indices] * mids[:, None]
        # The midpoint is inside the box in exact arithmetic; rounding must not push it out.
        positions = torch.clamp(positions, min=boxes[box_of, 0], max=boxes[box_of, 1])
        keep &= query_occupancies(occupancies, positions, box_of)
        # Rank of each kept sample within its ray: an integer prefix sum is exact, so a global
        # cumsum minus the ray's start value is safe here (unlike with floats).
        kept_before = torch.cumsum(keep, 0) - keep.long()
        rank = kept_before - kept_before[offsets[pairs]]
        keep &= rank < max_samples_per_ray
    box_of = box_of[keep]
    sizes = torch.bincount(box_of, minlength=n_boxes).tolist()
    return [PackedSamples(ray_indices=r, t_starts=s, t_ends=e) for r, s, e in
            zip(ray_indices[keep].split(sizes), t_starts[keep].split(sizes), t_ends[keep].split(sizes))]


def occupied_bounds(occupancies: Sequence[OccupancyQuery], boxes: Tensor) -> Optional[tuple[Tensor, Tensor]]:
    """([B, 2, 3] each grid's box of occupied cells grown by half a cell, bool [B] whether any cell is
    occupied), or None when some occupancy query is not an :class:`OccupancyGrid` (no bound known)."""
    if not all(isinstance(o, OccupancyGrid) for o in occupancies):
        return None
    grown, any_occupied = [], []
    for grid, box in zip(occupancies, boxes):
        occupied_box = grid.occupied_box()
        any_occupied.append(occupied_box is not None)
        if occupied_box is None:
            grown.append(box)
        else:
            margin = 0.5 * grid.cell_size().to(box)
            grown.append(torch.stack([occupied_box[0].to(box) - margin, occupied_box[1].to(box) + margin]))
    return torch.stack(grown), torch.tensor(any_occupied, device=boxes.device)


def query_occupancies(occupancies: Sequence[OccupancyQuery], positions: Tensor, box_of: Tensor) -> Tensor:
    """bool [N]: ``occupancies[box_of[i]].query(positions[i])``, positions grouped by box (box-major)."""
    if len(occupancies) == 1:
        return occupancies[0].query(positions)
    if all(isinstance(o, OccupancyGrid) for o in occupancies):
        return query_occupancy_grids(occupancies, positions, box_of)
    sizes = torch.bincount(box_of, minlength=len(occupancies)).tolist()
    return torch.cat([o.query(p) for o, p in zip(occupancies, positions.split(sizes))])
