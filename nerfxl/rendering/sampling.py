"""Fixed-step ray marching inside one tile box, with empty-space skipping.

Samples never cross the tile boundary (NeRF-XL §7): intervals are clipped to [t_enter, t_exit]
of the box, so each tile's segments of a ray are disjoint and together cover the ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol, Union

import torch
from torch import Tensor

from nerfxl.data.boxes import intersect_rays_boxes


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
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    n_rays, dtype, device = origins.shape[0], origins.dtype, origins.device
    ray_ids = torch.arange(n_rays, device=device)

    t_enter, t_exit, hit = (x[:, 0] for x in intersect_rays_boxes(origins, directions, box.to(origins)))
    near_t = torch.as_tensor(near, dtype=dtype, device=device).expand(n_rays)
    far_t = torch.as_tensor(far, dtype=dtype, device=device).expand(n_rays)
    t0 = torch.maximum(t_enter, near_t)
    t1 = torch.minimum(t_exit, far_t)
    # A zero direction "hits" a box around its origin with an astronomically long segment.
    valid = hit & (t1 > t0) & (directions.abs().amax(dim=-1) > 0)

    if stratified:
        jitter = torch.rand(n_rays, generator=generator, device=device, dtype=dtype)
    else:
        jitter = torch.zeros(n_rays, dtype=dtype, device=device)
    if not bool(valid.any()):  # after the draw: the generator advances the same whichever box
        empty = origins.new_zeros(0)
        return PackedSamples(ray_indices=ray_ids[:0], t_starts=empty, t_ends=empty)
    # Grid cell indices j with b_j ≤ t0 < ... < t1 ≤ b_last.
    first = torch.floor((t0 - near_t) / step_size - jitter)
    last = torch.ceil((t1 - near_t) / step_size - jitter)
    counts = torch.where(valid, last - first, torch.zeros_like(first)).long()
    first = torch.where(valid, first, torch.zeros_like(first)).long()
    if occupancy is None:
        counts = counts.clamp(max=max_samples_per_ray)

    total = int(counts.sum())
    ray_indices = torch.repeat_interleave(ray_ids, counts, output_size=total)
    offsets = torch.cumsum(counts, 0) - counts
    step_in_ray = torch.arange(total, device=device) - offsets[ray_indices]
    j = first[ray_indices] + step_in_ray
    ray_near, ray_jitter = near_t[ray_indices], jitter[ray_indices]
    # Both ends from the same expression, so consecutive intervals share bit-identical bounds.
    t_starts = torch.maximum(ray_near + (j.to(dtype) + ray_jitter) * step_size, t0[ray_indices])
    t_ends = torch.minimum(ray_near + ((j + 1).to(dtype) + ray_jitter) * step_size, t1[ray_indices])

    keep = t_ends > t_starts  # rounding can leave an empty sliver at either end
    if occupancy is not None:
        mids = 0.5 * (t_starts + t_ends)
        positions = origins[ray_indices] + directions[ray_indices] * mids[:, None]
        # The midpoint is inside the box in exact arithmetic; rounding must not push it out.
        box_t = box.to(positions)
        positions = torch.clamp(positions, min=box_t[0], max=box_t[1])
        keep &= occupancy.query(positions)
        # Rank of each kept sample within its ray: an integer prefix sum is exact, so a global
        # cumsum minus the ray's start value is safe here (unlike with floats).
        kept_before = torch.cumsum(keep, 0) - keep.long()
        rank = kept_before - kept_before[offsets[ray_indices]]
        keep &= rank < max_samples_per_ray
    return PackedSamples(ray_indices=ray_indices[keep], t_starts=t_starts[keep], t_ends=t_ends[keep])
