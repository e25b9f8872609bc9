"""Volume rendering over packed samples.

Packed layout: S samples of R rays in flat tensors, sorted by ray and then by t, with
``ray_indices`` [S] (int64) naming each sample's ray. Rays may have no samples. Every function is
differentiable, works in the inputs' dtype and on the inputs' device, and accepts S = 0.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from nerfxl.rendering.scan import (
    exclusive_prod_per_ray,
    exclusive_sum_per_ray,
    positions_in_rays,
    sum_per_ray,
)


def render_weight_from_density(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Weights of samples with densities: w_i = T_i α_i.

    α_i = 1 − exp(−σ_i δ_i) with δ_i = t_end − t_start, and T_i = exp(−Σ_{j<i} σ_j δ_j) the
    transmittance in front of sample i within its ray (exclusive: T = 1 at the first sample).

    Args:
        t_starts, t_ends: [S] interval bounds.
        sigmas: [S] densities (≥ 0).
        ray_indices: [S] int64, sorted.
        n_rays: number of rays R.

    Returns:
        weights: [S].
        transmittance: [S].
        alphas: [S].
    """
    optical_depth = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-optical_depth)
    # Sum in log space rather than multiplying (1 − α): 1 − α rounds to 1 for small σδ in fp32.
    transmittance = torch.exp(-exclusive_sum_per_ray(optical_depth, ray_indices, n_rays))
    return transmittance * alphas, transmittance, alphas


def render_weight_from_alpha(alphas: Tensor, ray_indices: Tensor, n_rays: int) -> tuple[Tensor, Tensor]:
    """Weights of samples with opacities: w_i = T_i α_i, T_i = Π_{j<i} (1 − α_j) within the ray.

    Args:
        alphas: [S] in [0, 1]; α = 1 is allowed and makes everything behind it invisible.
        ray_indices: [S] int64, sorted.
        n_rays: number of rays R.

    Returns:
        weights: [S].
        transmittance: [S].
    """
    transmittance = exclusive_prod_per_ray(1.0 - alphas, ray_indices, n_rays)
    return transmittance * alphas, transmittance


def accumulate_along_rays(
    weights: Tensor, values: Optional[Tensor], ray_indices: Tensor, n_rays: int
) -> Tensor:
    """Σ_i w_i v_i per ray.

    Args:
        weights: [S].
        values: [S, D] (or [S], read as D = 1); None accumulates the weights alone (opacity).
        ray_indices: [S] int64.
        n_rays: number of rays R.

    Returns:
        [n_rays, D] ([n_rays, 1] when ``values`` is None or 1-D). Rays without samples get 0.
    """
    if values is None:
        src = weights[:, None]
    else:
        if values.dim() == 1:
            values = values[:, None]
        src = weights[:, None] * values
    return sum_per_ray(src, ray_indices, n_rays)


def distortion_loss(
    weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int
) -> Tensor:
    """Mip-NeRF 360 distortion per ray, in O(S).

    L = Σ_{i,j} w_i w_j |m_i − m_j| + (1/3) Σ_i w_i² (t_end_i − t_start_i), m the interval
    midpoints. Because midpoints increase along a ray, the double sum is
    2 Σ_i w_i (m_i W_{<i} − (wm)_{<i}) with W_{<i}, (wm)_{<i} exclusive prefix sums in the ray.

    Args:
        weights: [S].
        t_starts, t_ends: [S] interval bounds, non-overlapping and increasing within each ray.
        ray_indices: [S] int64, sorted.
        n_rays: number of rays R.

    Returns:
        [n_rays] distortion; 0 for rays without samples.
    """
    # The loss depends only on differences of midpoints. Measuring t from each ray's first
    # t_start (exact for nearby floats) keeps the midpoints and m_i W_{<i} − (wm)_{<i} free of
    # cancellation when t is large, as in big scenes in fp32.
    layout = positions_in_rays(ray_indices, n_rays)
    first = torch.arange(t_starts.numel(), device=t_starts.device) - layout[0]
    origin = t_starts.detach()[first]
    mids = 0.5 * ((t_starts - origin) + (t_ends - origin))
    prefix = exclusive_sum_per_ray(
        torch.stack([weights, weights * mids], dim=-1), ray_indices, n_rays, layout=layout
    )
    cross = 2.0 * weights * (mids * prefix[:, 0] - prefix[:, 1])
    own = weights.square() * (t_ends - t_starts) / 3.0
    return sum_per_ray(cross + own, ray_indices, n_rays)
