"""Random packed rays and a deliberately naive per-ray reference renderer for the rendering tests."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch


def random_packed_rays(n_rays, max_samples, generator, dtype=torch.float64, min_samples=0, t_offset=0.0):
    """Random sorted, non-overlapping intervals (sometimes touching, sometimes with gaps).

    Returns t_starts, t_ends, sigmas, rgbs, ray_indices; counts per ray in [min_samples, max_samples].
    """
    counts = torch.randint(min_samples, max_samples + 1, (n_rays,), generator=generator)
    starts, ends = [], []
    for count in counts.tolist():
        t = t_offset + float(torch.rand((), generator=generator, dtype=torch.float64))
        for _ in range(count):
            if float(torch.rand((), generator=generator)) < 0.5:
                t += 0.2 * float(torch.rand((), generator=generator, dtype=torch.float64))
            delta = 0.01 + 0.3 * float(torch.rand((), generator=generator, dtype=torch.float64))
            starts.append(t)
            ends.append(t + delta)
            t += delta
    n = len(starts)
    t_starts = torch.tensor(starts, dtype=dtype)
    t_ends = torch.tensor(ends, dtype=dtype)
    # Mixture of near-empty and very dense samples so that weights spread over whole rays.
    sigmas = (torch.rand(n, generator=generator, dtype=torch.float64) ** 3 * 8.0).to(dtype)
    rgbs = torch.rand(n, 3, generator=generator, dtype=torch.float64).to(dtype)
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    return t_starts, t_ends, sigmas, rgbs, ray_indices


def reference_render(t_starts, t_ends, sigmas, rgbs, ray_indices, n_rays):
    """Per-ray Python loops in float64, straight from the textbook formulas.

    Returns a namespace with per-sample weights/transmittance/alphas and per-ray rgb [R, 3]
    (premultiplied, no background), opacity, depth numerator and distortion ([R] each).
    """
    ts, te = t_starts.double().tolist(), t_ends.double().tolist()
    sg, rgb = sigmas.double().tolist(), rgbs.double().tolist()
    ri = ray_indices.tolist()
    weights, trans, alphas = [0.0] * len(ts), [0.0] * len(ts), [0.0] * len(ts)
    out_rgb = [[0.0, 0.0, 0.0] for _ in range(n_rays)]
    out_a, out_d, out_l = [0.0] * n_rays, [0.0] * n_rays, [0.0] * n_rays
    for r in range(n_rays):
        idx = [i for i in range(len(ts)) if ri[i] == r]
        transmittance = 1.0
        for i in idx:
            alpha = 1.0 - math.exp(-sg[i] * (te[i] - ts[i]))
            trans[i], alphas[i] = transmittance, alpha
            weights[i] = transmittance * alpha
            transmittance *= 1.0 - alpha
        for i in idx:
            mid = 0.5 * (ts[i] + te[i])
            for c in range(3):
                out_rgb[r][c] += weights[i] * rgb[i][c]
            out_a[r] += weights[i]
            out_d[r] += weights[i] * mid
            out_l[r] += weights[i] ** 2 * (te[i] - ts[i]) / 3.0
            for j in idx:
                out_l[r] += weights[i] * weights[j] * abs(mid - 0.5 * (ts[j] + te[j]))
    f = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return SimpleNamespace(
        weights=f(weights), transmittance=f(trans), alphas=f(alphas),
        rgb=f(out_rgb).reshape(n_rays, 3), opacity=f(out_a), depth=f(out_d), distortion=f(out_l),
    )


@pytest.fixture
def ref():
    return SimpleNamespace(random_packed_rays=random_packed_rays, render=reference_render)
