"""sample_plane (grid_sample forward, scatter-add backward) against plain grid_sample."""

import pytest
import torch

from nerfxl.fields import plane_sampling
from nerfxl.fields.plane_sampling import corner_nodes_and_weights, sample_plane, sample_plane_reference


@pytest.mark.parametrize("channels, height, width, n", [(5, 7, 9, 300), (3, 12, 1, 200), (2, 2, 2, 50), (4, 1, 6, 40)])
def test_values_and_plane_gradient_equal_grid_sample(channels, height, width, n, monkeypatch):
    monkeypatch.setattr(plane_sampling, "SCATTER_MIN_VALUES", 0)  # the scatter path even for small lookups
    torch.manual_seed(0)
    plane = torch.randn(1, channels, height, width, dtype=torch.float64, requires_grad=True)
    uv = torch.rand(n, 2, dtype=torch.float64) * 2.6 - 1.3  # some outside: border padding
    uv[:5] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    if width == 1:
        uv[:, 0] = 0.0  # how a line is sampled
    weights = torch.randn(channels, n, dtype=torch.float64)
    ours = sample_plane(plane, uv)
    assert ours.grad_fn.name().endswith("PlaneLookupBackward")
    theirs = sample_plane_reference(plane, uv)
    assert torch.equal(ours, theirs)  # the forward is grid_sample itself
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), plane)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), plane)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-12, atol=1e-12)


def test_corner_weights_interpolate_the_nodes():
    """The nodes and weights reproduce bilinear interpolation: a plane that is a linear function of
    its node coordinates is reproduced exactly, and the weights of a point sum to one."""
    height, width = 5, 8
    uv = torch.rand(100, 2, dtype=torch.float64) * 2 - 1
    nodes, weights = corner_nodes_and_weights(uv, height, width)
    total = sum(weights)
    torch.testing.assert_close(total, torch.ones_like(total))
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    linear = (2 * xs + 3 * ys).flatten()
    value = sum(w * linear[i] for i, w in zip(nodes, weights))
    expected = 2 * (uv[:, 0] + 1) / 2 * (width - 1) + 3 * (uv[:, 1] + 1) / 2 * (height - 1)
    torch.testing.assert_close(value, expected)


def test_coordinates_with_a_gradient_take_the_grid_sample_path():
    plane = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    uv = (torch.rand(10, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    out = sample_plane(plane, uv)
    (grad_uv,) = torch.autograd.grad(out.sum(), uv)
    assert grad_uv.abs().sum() > 0  # pose refinement reaches the coordinates
