import math

import pytest
import torch

from nerfxl.rendering import (
    accumulate_along_rays,
    distortion_loss,
    render_weight_from_alpha,
    render_weight_from_density,
)
from nerfxl.rendering.scan import exclusive_prod_per_ray, exclusive_sum_per_ray

F64 = dict(dtype=torch.float64)


def hand_rays():
    # Ray 0: two samples with σδ = 0.5 each; ray 1: one sample σδ = 0.3; ray 2: no samples.
    t_starts = torch.tensor([0.0, 0.5, 2.0], **F64)
    t_ends = torch.tensor([0.5, 0.75, 2.1], **F64)
    sigmas = torch.tensor([1.0, 2.0, 3.0], **F64)
    ray_indices = torch.tensor([0, 0, 1])
    return t_starts, t_ends, sigmas, ray_indices


def test_weights_match_hand_computed_values():
    t_starts, t_ends, sigmas, ray_indices = hand_rays()
    weights, transmittance, alphas = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, 3)
    a = 0.3934693402873666  # 1 − e^−0.5
    torch.testing.assert_close(alphas, torch.tensor([a, a, 0.2591817793182821], **F64))
    torch.testing.assert_close(transmittance, torch.tensor([1.0, 0.6065306597126334, 1.0], **F64))
    torch.testing.assert_close(weights, torch.tensor([a, 0.2386512185411911, 0.2591817793182821], **F64))


def test_distortion_matches_hand_computed_values():
    t_starts, t_ends, sigmas, ray_indices = hand_rays()
    weights, _, _ = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, 3)
    loss = distortion_loss(weights, t_starts, t_ends, ray_indices, 3)
    # Ray 0: 2·w0·w1·|0.625 − 0.25| + (w0²·0.5 + w1²·0.25)/3; ray 1: w²·0.1/3; ray 2: nothing.
    torch.testing.assert_close(loss, torch.tensor([0.10097567377226281, 0.0022391731576863563, 0.0], **F64))


def test_accumulate_along_rays_by_hand():
    weights = torch.tensor([0.5, 0.25, 1.0], **F64)
    values = torch.tensor([[1.0, 2.0], [4.0, 8.0], [3.0, 3.0]], **F64)
    ray_indices = torch.tensor([0, 0, 2])
    torch.testing.assert_close(
        accumulate_along_rays(weights, values, ray_indices, 3),
        torch.tensor([[1.5, 3.0], [0.0, 0.0], [3.0, 3.0]], **F64),
    )
    torch.testing.assert_close(
        accumulate_along_rays(weights, None, ray_indices, 3), torch.tensor([[0.75], [0.0], [1.0]], **F64)
    )
    torch.testing.assert_close(
        accumulate_along_rays(weights, values[:, 0], ray_indices, 3), torch.tensor([[1.5], [0.0], [3.0]], **F64)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_per_ray_reference(ref, seed):
    g = torch.Generator().manual_seed(seed)
    n_rays = 40
    t_starts, t_ends, sigmas, rgbs, ray_indices = ref.random_packed_rays(n_rays, 12, g)
    expected = ref.render(t_starts, t_ends, sigmas, rgbs, ray_indices, n_rays)

    weights, transmittance, alphas = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    torch.testing.assert_close(weights, expected.weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(transmittance, expected.transmittance, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alphas, expected.alphas, rtol=1e-12, atol=1e-12)

    weights_a, transmittance_a = render_weight_from_alpha(alphas, ray_indices, n_rays)
    torch.testing.assert_close(weights_a, expected.weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(transmittance_a, expected.transmittance, rtol=1e-12, atol=1e-12)

    torch.testing.assert_close(
        accumulate_along_rays(weights, rgbs, ray_indices, n_rays), expected.rgb, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(
        accumulate_along_rays(weights, None, ray_indices, n_rays)[:, 0], expected.opacity, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(
        distortion_loss(weights, t_starts, t_ends, ray_indices, n_rays), expected.distortion, rtol=1e-12, atol=1e-12
    )


def test_alpha_of_one_hides_everything_behind_it():
    alphas = torch.tensor([0.5, 1.0, 0.7, 0.2, 0.3], **F64, requires_grad=True)
    ray_indices = torch.tensor([0, 0, 0, 1, 1])
    weights, transmittance = render_weight_from_alpha(alphas, ray_indices, 2)
    torch.testing.assert_close(transmittance, torch.tensor([1.0, 0.5, 0.0, 1.0, 0.8], **F64))
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5, 0.0, 0.2, 0.24], **F64))
    # d(w1)/d(alpha0) = −alpha1 = −1 and d(w2)/d(alpha1) = −(1 − alpha0)·alpha2: exact despite the zero.
    (g,) = torch.autograd.grad(weights[1] + weights[2], alphas)
    torch.testing.assert_close(g, torch.tensor([-1.0, 0.5 - 0.5 * 0.7, 0.0, 0.0, 0.0], **F64))


def test_infinite_density_stays_in_its_ray():
    t_starts = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0])
    t_ends = t_starts + 1.0
    sigmas = torch.tensor([0.1, float("inf"), 0.1, 0.2, 0.3])
    ray_indices = torch.tensor([0, 0, 0, 1, 1])
    weights, transmittance, _ = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, 2)
    assert torch.isfinite(weights).all() and torch.isfinite(transmittance).all()
    assert transmittance[2] == 0.0 and weights[2] == 0.0
    torch.testing.assert_close(transmittance[3:], torch.tensor([1.0, math.exp(-0.2)]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_inputs_give_zeros_of_the_right_shape(dtype):
    empty = torch.zeros(0, dtype=dtype)
    ray_indices = torch.zeros(0, dtype=torch.long)
    weights, transmittance, alphas = render_weight_from_density(empty, empty, empty, ray_indices, 4)
    assert weights.shape == transmittance.shape == alphas.shape == (0,)
    weights_a, transmittance_a = render_weight_from_alpha(empty, ray_indices, 4)
    assert weights_a.shape == transmittance_a.shape == (0,)
    rgb = accumulate_along_rays(empty, torch.zeros(0, 3, dtype=dtype), ray_indices, 4)
    opacity = accumulate_along_rays(empty, None, ray_indices, 4)
    loss = distortion_loss(empty, empty, empty, ray_indices, 4)
    assert rgb.shape == (4, 3) and opacity.shape == (4, 1) and loss.shape == (4,)
    for out in (rgb, opacity, loss):
        assert out.dtype == dtype and not out.any()


def test_distortion_is_precise_far_from_the_origin(ref):
    # Midpoints around t = 30000 in fp32: prefix sums over absolute t cancel catastrophically
    # (relative error ~5e-3); only differences of t may enter the computation.
    g = torch.Generator().manual_seed(3)
    n_rays = 30
    t_starts, t_ends, sigmas, rgbs, ray_indices = ref.random_packed_rays(n_rays, 16, g, min_samples=1)
    t_starts32, t_ends32 = (t_starts + 30000.0).float(), (t_ends + 30000.0).float()
    weights, _, _ = render_weight_from_density(t_starts32.double(), t_ends32.double(), sigmas, ray_indices, n_rays)
    expected = distortion_loss(weights, t_starts32.double(), t_ends32.double(), ray_indices, n_rays)
    loss = distortion_loss(weights.float(), t_starts32, t_ends32, ray_indices, n_rays)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-9)


def test_gradients_match_finite_differences(ref):
    g = torch.Generator().manual_seed(4)
    n_rays = 5
    t_starts, t_ends, sigmas, rgbs, ray_indices = ref.random_packed_rays(n_rays, 5, g)
    t_ends = t_ends.requires_grad_()
    sigmas = sigmas.requires_grad_()
    rgbs = rgbs.requires_grad_()
    alphas = torch.rand(sigmas.shape, generator=g, **F64).requires_grad_()

    def density(ts, te, sg):
        return render_weight_from_density(ts, te, sg, ray_indices, n_rays)

    def full(ts, te, sg, c):
        weights, _, _ = render_weight_from_density(ts, te, sg, ray_indices, n_rays)
        return (
            accumulate_along_rays(weights, c, ray_indices, n_rays),
            distortion_loss(weights, ts, te, ray_indices, n_rays),
        )

    t_starts = t_starts.requires_grad_()
    assert torch.autograd.gradcheck(density, (t_starts, t_ends, sigmas))
    assert torch.autograd.gradcheck(lambda a: render_weight_from_alpha(a, ray_indices, n_rays), (alphas,))
    assert torch.autograd.gradcheck(full, (t_starts, t_ends, sigmas, rgbs))


def test_scans_restart_at_every_ray():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], **F64)
    ray_indices = torch.tensor([0, 0, 0, 2, 2, 3])
    torch.testing.assert_close(
        exclusive_sum_per_ray(values, ray_indices, 4), torch.tensor([0.0, 1.0, 3.0, 0.0, 4.0, 0.0], **F64)
    )
    torch.testing.assert_close(
        exclusive_prod_per_ray(values, ray_indices, 4), torch.tensor([1.0, 1.0, 2.0, 1.0, 4.0, 1.0], **F64)
    )
    # Rays longer than one power of two exercise every pass of the scan.
    long_ray = torch.zeros(37, dtype=torch.long)
    torch.testing.assert_close(
        exclusive_sum_per_ray(torch.ones(37, **F64), long_ray, 1), torch.arange(37, **F64)
    )


def long_batch(n_rays, generator):
    """≥ 2M fp32 samples; optical depth per ray ≈ 5 so transmittance spans (e^−5, 1]."""
    counts = torch.randint(300, 700, (n_rays,), generator=generator)
    n = int(counts.sum())
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    deltas = 0.001 + 0.009 * torch.rand(n, generator=generator)
    t_starts = torch.rand(n, generator=generator)  # only δ matters for the weights
    sigmas = 2.0 * torch.rand(n, generator=generator)
    return t_starts, t_starts + deltas, sigmas, ray_indices, counts


def dense_float64_transmittance(optical_depth, ray_indices, counts):
    # Independent reference: a [n_rays, longest] float64 layout with cumsum along each ray.
    n_rays = counts.numel()
    first = torch.cumsum(counts, 0) - counts
    positions = torch.arange(ray_indices.numel()) - first[ray_indices]
    dense = torch.zeros(n_rays, int(counts.max()), **F64)
    dense[ray_indices, positions] = optical_depth
    before = torch.cumsum(dense, dim=1) - dense
    return torch.exp(-before[ray_indices, positions])


def test_long_fp32_batch_keeps_transmittance_precise():
    g = torch.Generator().manual_seed(5)
    n_rays = 4096
    t_starts, t_ends, sigmas, ray_indices, counts = long_batch(n_rays, g)
    assert ray_indices.numel() >= 2_000_000

    weights, transmittance, alphas = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    optical_depth = sigmas.double() * (t_ends.double() - t_starts.double())
    expected = dense_float64_transmittance(optical_depth, ray_indices, counts)
    assert (transmittance.double() - expected).abs().max() < 1e-5
    assert (weights.double() - expected * (1 - torch.exp(-optical_depth))).abs().max() < 1e-6

    weights_a, transmittance_a = render_weight_from_alpha(alphas, ray_indices, n_rays)
    assert (transmittance_a.double() - expected).abs().max() < 1e-5

    # The test can tell: one global fp32 cumsum minus each ray's start value drifts far beyond 1e-5.
    flat = sigmas * (t_ends - t_starts)
    running = torch.cumsum(flat, 0) - flat
    first = (torch.cumsum(counts, 0) - counts)[ray_indices]
    naive = torch.exp(-(running - running[first]))
    assert (naive.double() - expected).abs().max() > 1e-4
