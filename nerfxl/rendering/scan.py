"""Scans and reductions within rays over packed samples.

Packed layout: S samples in one flat tensor, sorted by ray, with ``ray_indices`` [S] (int64)
naming each sample's ray. Every scan here restarts at the first sample of each ray.

Why not one global ``cumsum`` minus each ray's starting value: across millions of samples the
global running total grows large, and in fp32 the subtraction then loses the small per-ray
differences (transmittance late in a batch drifts by 1e-3 and more). One ``inf`` would also turn
every later ray into NaN. Instead the scans below are Hillis–Steele scans restricted to each ray:
ceil(log2(longest ray)) vectorised passes, each combining a sample with the one ``2^p`` places
earlier when both belong to the same ray. Every output is then a balanced tree over its own ray's
samples only, in the inputs' dtype, on any device, with no host loop over rays.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor


def positions_in_rays(ray_indices: Tensor, n_rays: int) -> tuple[Tensor, int]:
    """Index of each sample within its ray, and the length of the longest ray.

    Args:
        ray_indices: [S] int64, sorted.
        n_rays: number of rays R.

    Returns:
        positions: [S] int64, 0 for the first sample of each ray.
        max_len: the largest number of samples in one ray (0 when S = 0).
    """
    if ray_indices.numel() == 0:
        return torch.zeros_like(ray_indices), 0
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts
    positions = torch.arange(ray_indices.numel(), device=ray_indices.device) - first[ray_indices]
    return positions, int(counts.max())


Layout = tuple[Tensor, int]  # (positions [S], max_len) from ``positions_in_rays``


def _scan_within_rays(
    values: Tensor,
    layout: Layout,
    combine: Callable[[Tensor, Tensor], Tensor],
    identity: float,
) -> Tensor:
    """Exclusive segmented Hillis–Steele scan; ``values`` is [S, ...]."""
    positions, max_len = layout
    if values.shape[0] == 0:
        return values.clone()
    # int32 halves the memory traffic of the per-pass comparisons.
    pos = positions.to(torch.int32 if values.shape[0] < 2**31 else torch.int64)
    pos = pos.reshape(pos.shape + (1,) * (values.dim() - 1))
    # Exclusive: each sample starts from its predecessor's value (the identity at a ray's start).
    # torch.where, not a multiply by the mask, so that an inf in one ray cannot leak as NaN.
    head = values.new_full((1,) + values.shape[1:], identity)
    out = torch.where(pos >= 1, torch.cat([head, values[:-1]]), identity)
    shift = 1
    while shift < max_len:
        partner = torch.where(pos[shift:] >= shift, out[:-shift], identity)
        out = torch.cat([out[:shift], combine(out[shift:], partner)])
        shift *= 2
    return out


def exclusive_sum_per_ray(
    values: Tensor, ray_indices: Tensor, n_rays: int, layout: Optional[Layout] = None
) -> Tensor:
    """Sum over the earlier samples of the same ray: out_i = Σ_{j<i, same ray} values_j.

    Args:
        values: [S] or [S, D].
        ray_indices: [S] int64, sorted.
        n_rays: number of rays.
        layout: ``positions_in_rays(ray_indices, n_rays)`` when the caller already has it.

    Returns:
        Same shape as ``values``; 0 at the first sample of each ray.
    """
    layout = positions_in_rays(ray_indices, n_rays) if layout is None else layout
    return _scan_within_rays(values, layout, torch.add, 0.0)


def exclusive_prod_per_ray(
    values: Tensor, ray_indices: Tensor, n_rays: int, layout: Optional[Layout] = None
) -> Tensor:
    """Product over the earlier samples of the same ray: out_i = Π_{j<i, same ray} values_j.

    A tree of multiplications (not exp of a sum of logs) so that exact zeros, e.g. 1 − α with
    α = 1, give exactly zero afterwards and still have correct gradients.

    Args:
        values: [S] or [S, D].
        ray_indices: [S] int64, sorted.
        n_rays: number of rays.
        layout: ``positions_in_rays(ray_indices, n_rays)`` when the caller already has it.

    Returns:
        Same shape as ``values``; 1 at the first sample of each ray.
    """
    layout = positions_in_rays(ray_indices, n_rays) if layout is None else layout
    return _scan_within_rays(values, layout, torch.mul, 1.0)


def sum_per_ray(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Σ of ``values`` ([S] or [S, D]) over each ray's samples → [n_rays] or [n_rays, D]."""
    out = values.new_zeros((n_rays,) + values.shape[1:])
    return out.index_add(0, ray_indices, values)
