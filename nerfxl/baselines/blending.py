"""Blend weights of independently trained models: per 3D sample (Mega-NeRF) and per image (Block-NeRF).

Both use inverse-distance weighting, w_k ∝ d_k^(−power) over the eligible models, normalised to sum
to one. Weights are computed as (d_min / d_k)^power (with a tiny floor on distances), which equals
the normalised form but cannot overflow, and sends all weight to a model whose centre coincides
with the query point (d = 0) instead of producing inf / inf.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfxl.data.boxes import points_in_boxes

# Exponents of the inverse-distance weights. Mega-NeRF blends by plain inverse distance to the tile
# centroids; Block-NeRF reports a power that makes transitions sharper. Both are study parameters.
DEFAULT_POWER_3D = 1.0
DEFAULT_POWER_2D = 4.0
DEFAULT_NEAREST_2D = 3


def blend_weights_3d(points: Tensor, expanded_boxes: Tensor, centroids: Tensor, power: float = DEFAULT_POWER_3D) -> Tensor:
    """Per-sample weights of K tile models for the ``independent-3d`` baseline.

    A model takes part only where its expanded box (closed) contains the point; among those, the
    weights are inverse distances to the tile centroids (usually the *unexpanded* tile centres).

    Args:
        points: [N, 3] sample positions.
        expanded_boxes: [K, 2, 3] the boxes each model was trained on.
        centroids: [K, 3] tile centroids.
        power: exponent of the inverse distance, > 0.
    Returns:
        [N, K] weights ≥ 0, zero outside each model's box. Rows sum to one where at least one box
        contains the point and are all zero where none does (outside the scene box when the tiles
        cover it): such samples get no model, i.e. zero density, the same as outside the scene.
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    dtype = torch.promote_types(points.dtype, centroids.dtype)
    points, centroids = points.to(dtype), centroids.to(dtype)
    inside = points_in_boxes(points, expanded_boxes.to(dtype))  # [N, K]
    dist = (points[:, None, :] - centroids[None, :, :]).norm(dim=-1)  # [N, K]
    return _inverse_distance_weights(dist, inside, power)


def blend_weights_2d(
    camera_positions: Tensor,
    cluster_centroids: Tensor,
    nearest: int = DEFAULT_NEAREST_2D,
    power: float = DEFAULT_POWER_2D,
) -> Tensor:
    """Per-image weights of K cluster models for the ``independent-2d`` baseline.

    Each model renders the whole novel view; the images are mixed with inverse distances from the
    novel camera to the cluster centroids, restricted to the ``nearest`` clusters (ties broken by
    lower cluster index, so the choice is deterministic).

    Args:
        camera_positions: [3] or [B, 3] novel camera centres.
        cluster_centroids: [K, 3].
        nearest: how many clusters take part (≥ 1; clamped to K).
        power: exponent of the inverse distance, > 0.
    Returns:
        [K] or [B, K] weights ≥ 0 summing to one, non-zero on at most ``nearest`` clusters.
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    if nearest < 1:
        raise ValueError(f"nearest must be ≥ 1, got {nearest}")
    single = camera_positions.dim() == 1
    positions = camera_positions.reshape(-1, 3)
    dtype = torch.promote_types(positions.dtype, cluster_centroids.dtype)
    positions, cluster_centroids = positions.to(dtype), cluster_centroids.to(dtype)
    k = cluster_centroids.shape[0]
    dist = (positions[:, None, :] - cluster_centroids[None, :, :]).norm(dim=-1)  # [B, K]
    # A stable sort breaks equal distances by index; topk does not promise any order among ties.
    order = torch.sort(dist, dim=-1, stable=True).indices[:, : min(nearest, k)]
    eligible = torch.zeros_like(dist, dtype=torch.bool).scatter_(1, order, True)
    weights = _inverse_distance_weights(dist, eligible, power)
    return weights[0] if single else weights


def _inverse_distance_weights(dist: Tensor, eligible: Tensor, power: float) -> Tensor:
    """[N, K] distances and eligibility → rows ∝ d^(−power) over eligible entries, summing to one
    (all-zero rows where nothing is eligible)."""
    floor = torch.finfo(dist.dtype).tiny
    d = dist.clamp_min(floor)
    big = torch.full_like(d, torch.finfo(dist.dtype).max)
    d_min = torch.where(eligible, d, big).amin(dim=-1, keepdim=True)  # [N, 1]
    ratio = torch.where(eligible, (d_min / d) ** power, torch.zeros_like(d))  # in (0, 1], 1 at the nearest
    total = ratio.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, ratio / total.clamp_min(floor), torch.zeros_like(ratio))
