"""Dropping samples that cannot contribute before the expensive, differentiable field query.

A cheap density-only pass (no autograd) gives every sample its alpha and its transmittance along
the ray; samples that are nearly transparent or lie behind an almost opaque stretch are dropped,
the Instant-NGP / nerfacc "alpha threshold" and "early stop" rules. With several tiles the
transmittance is local to the tile's segment, which can only be higher than the true one, so a
tile never drops a sample the single model would have kept for being occluded.
"""

from __future__ import annotations

from torch import Tensor

from nerfxl.rendering.sampling import PackedSamples
from nerfxl.rendering.volume import render_weight_from_density


def contributing_samples(
    samples: PackedSamples, sigmas: Tensor, n_rays: int, alpha_threshold: float, transmittance_threshold: float
) -> Tensor:
    """bool [S]: samples with alpha ≥ ``alpha_threshold`` and transmittance ≥ ``transmittance_threshold``.

    Args:
        samples: packed samples sorted by ray then t.
        sigmas: [S] densities of the samples (no gradient needed).
        n_rays: number of rays.
        alpha_threshold: smallest opacity a kept sample may have (0 keeps all).
        transmittance_threshold: smallest transmittance in front of a kept sample (0 keeps all).
    """
    _, transmittance, alphas = render_weight_from_density(
        samples.t_starts, samples.t_ends, sigmas.detach(), samples.ray_indices, n_rays
    )
    return (alphas >= alpha_threshold) & (transmittance >= transmittance_threshold)


def select_samples(samples: PackedSamples, keep: Tensor) -> PackedSamples:
    """The samples where ``keep`` is True (order, hence sorting, preserved)."""
    return PackedSamples(samples.ray_indices[keep], samples.t_starts[keep], samples.t_ends[keep])
