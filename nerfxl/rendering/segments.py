"""Segment (partition-based) volume rendering, NeRF-XL §4.3 / App. B.

Each tile renders its own segment of every ray into six numbers per ray; compositing those
segments front to back reproduces single-pass volume rendering of all samples exactly, including
the distortion loss. A ray that misses a tile has the all-zero segment, which is the identity.

Segment columns (``SEGMENT_COLUMNS``): premultiplied colour C (3), opacity A = Σ w, depth
numerator D = Σ w t (t the absolute interval midpoint), in-segment distortion L.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from nerfxl.rendering.volume import accumulate_along_rays, distortion_loss, render_weight_from_density

SEGMENT_COLUMNS = ("r", "g", "b", "opacity", "depth", "distortion")
SEGMENT_WIDTH = len(SEGMENT_COLUMNS)


@dataclass
class CompositedRays:
    """Full-ray results of compositing segments.

    Attributes:
        rgb: [n_rays, 3] colour, background included when one was given.
        opacity: [n_rays] A = Σ w over the whole ray.
        depth: [n_rays] the depth *numerator* Σ w t (absolute midpoint distances); divide by
            ``opacity`` for the expected depth of the visible surface.
        distortion: [n_rays] Mip-NeRF 360 distortion of the whole ray.
    """

    rgb: Tensor
    opacity: Tensor
    depth: Tensor
    distortion: Tensor


def render_segments(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, rgbs: Tensor, ray_indices: Tensor, n_rays: int
) -> Tensor:
    """Render one tile's segment of every ray.

    Args:
        t_starts, t_ends: [S] interval bounds, absolute distances along each ray.
        sigmas: [S] densities.
        rgbs: [S, 3] colours.
        ray_indices: [S] int64, sorted by ray then t.
        n_rays: number of rays R.

    Returns:
        [n_rays, 6]: C (3), A, D, L as in the module docstring; zeros for rays without samples.
    """
    weights, _, _ = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    mids = 0.5 * (t_starts + t_ends)
    colour = accumulate_along_rays(weights, rgbs, ray_indices, n_rays)
    opacity_depth = accumulate_along_rays(
        weights, torch.stack([torch.ones_like(mids), mids], dim=-1), ray_indices, n_rays
    )
    distortion = distortion_loss(weights, t_starts, t_ends, ray_indices, n_rays)
    return torch.cat([colour, opacity_depth, distortion[:, None]], dim=-1)


def composite_segments(
    segments: Tensor, order: Optional[Tensor] = None, background: Optional[Tensor] = None
) -> CompositedRays:
    """Composite K segments per ray front to back (NeRF-XL §4).

    With P_k = Π_{m<k} (1 − A_m), A_<k = Σ_{m<k} P_m A_m and D_<k = Σ_{m<k} P_m D_m:
    C = Σ P_k C_k, A = Σ P_k A_k, D = Σ P_k D_k,
    L = Σ P_k² L_k + 2 Σ P_k (D_k A_<k − A_k D_<k).
    The cross term is the distortion between samples of segment k and all earlier samples; it uses
    segment k's own D_k, A_k and carries the factor 2 of the symmetric double sum.

    Args:
        segments: [n_rays, K, 6] as produced by ``render_segments`` (any slot order).
        order: optional int64 [n_rays, K]; ``segments[r, order[r, 0]]`` is the front segment of
            ray r. None means the slots are already front to back.
        background: optional [3] or [n_rays, 3] colour seen through the remaining transparency,
            added as (1 − A) · background.

    Returns:
        CompositedRays. With K = 1 the segment itself is returned unchanged.
    """
    if segments.dim() != 3 or segments.shape[-1] != SEGMENT_WIDTH:
        raise ValueError(f"segments must be [n_rays, K, {SEGMENT_WIDTH}], got {tuple(segments.shape)}")
    if order is not None:
        if order.shape != segments.shape[:2]:
            raise ValueError(f"order must be {tuple(segments.shape[:2])}, got {tuple(order.shape)}")
        segments = torch.gather(segments, 1, order[..., None].expand(-1, -1, SEGMENT_WIDTH))

    colour, opacity, depth, distortion = segments[..., :3], segments[..., 3], segments[..., 4], segments[..., 5]
    # Exclusive prefix product along the (short) K axis; torch's cumprod backward is exact at zeros.
    through = torch.cumprod(1.0 - opacity, dim=1)
    prefix = torch.cat([torch.ones_like(through[:, :1]), through[:, :-1]], dim=1)  # P_k

    seen_opacity = prefix * opacity  # P_k A_k
    seen_depth = prefix * depth  # P_k D_k
    opacity_before = _exclusive_cumsum(seen_opacity)  # A_<k
    depth_before = _exclusive_cumsum(seen_depth)  # D_<k

    total_opacity = seen_opacity.sum(dim=1)
    rgb = (prefix[..., None] * colour).sum(dim=1)
    if background is not None:
        rgb = rgb + (1.0 - total_opacity)[:, None] * background.expand_as(rgb)
    total_distortion = (prefix.square() * distortion).sum(dim=1) + 2.0 * (
        prefix * (depth * opacity_before - opacity * depth_before)
    ).sum(dim=1)
    return CompositedRays(
        rgb=rgb, opacity=total_opacity, depth=seen_depth.sum(dim=1), distortion=total_distortion
    )


def _exclusive_cumsum(x: Tensor) -> Tensor:
    # Shifted rather than cumsum − x: no cancellation, and exactly 0 in front of the first segment.
    return torch.cat([torch.zeros_like(x[:, :1]), torch.cumsum(x[:, :-1], dim=1)], dim=1)


def segment_order_from_entry(t_enter: Tensor, hit: Tensor) -> Tensor:
    """Front-to-back order of K slots per ray from the rays' entry distances into each slot's box.

    Args:
        t_enter: [n_rays, K] entry distance of each ray into each slot's box.
        hit: [n_rays, K] bool, whether the ray meets that box.

    Returns:
        [n_rays, K] int64 slot indices for ``composite_segments``: hit slots by increasing entry,
        then the slots not hit; ties keep slot order.
    """
    by_entry = torch.argsort(torch.where(hit, t_enter, torch.zeros_like(t_enter)), dim=1, stable=True)
    # Second stable sort on "missed" alone puts missed slots last whatever their t_enter says.
    missed_in_entry_order = (~hit).gather(1, by_entry).to(torch.uint8)
    return by_entry.gather(1, torch.argsort(missed_in_entry_order, dim=1, stable=True))
