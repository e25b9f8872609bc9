import math

import pytest
import torch

from nerfxl.fields import DensityHead, FeatureHead, trunc_exp


def test_trunc_exp_value_and_clamped_gradient():
    x = torch.tensor([-20.0, 0.0, 1.0, 15.0, 20.0, 100.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    y.sum().backward()
    expected = torch.exp(x.detach().clamp(-15, 15))
    torch.testing.assert_close(x.grad, expected)
    assert x.grad[4].item() == pytest.approx(math.exp(15))
    assert torch.isfinite(x.grad).all()


def test_trunc_exp_gradient_finite_where_value_overflows():
    x = torch.tensor([200.0], requires_grad=True)  # exp overflows float32
    y = trunc_exp(x)
    assert torch.isinf(y).all()
    (y * 0 + y.clamp(max=1.0)).sum().backward()  # a loss that stays finite
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("activation", ["softplus", "trunc_exp", "relu"])
@pytest.mark.parametrize("reduction", ["sum", "linear"])
def test_density_head_shapes_and_nonnegative(activation, reduction):
    head = DensityHead(6, reduction, activation, shift=0.5)
    f = torch.randn(10, 6, requires_grad=True)
    sigma = head(f)
    assert sigma.shape == (10,) and sigma.dtype == torch.float32
    assert (sigma >= 0).all()
    sigma.sum().backward()
    assert torch.isfinite(f.grad).all()
    if reduction == "linear":
        assert head.linear.weight.grad is not None


def test_density_head_sum_values_and_low_start():
    head = DensityHead(3, "sum", "softplus", shift=-10.0)
    f = torch.tensor([[0.1, 0.2, -0.3]])
    torch.testing.assert_close(head(f), torch.nn.functional.softplus(torch.tensor([-10.0])))
    assert head(torch.zeros(1, 3)).item() < 1e-4
    relu = DensityHead(2, "sum", "relu", shift=0.0)
    torch.testing.assert_close(relu(torch.tensor([[1.0, -3.0], [1.0, 2.0]])), torch.tensor([0.0, 3.0]))
    assert list(head.parameters()) == []


def test_feature_heads():
    lin = FeatureHead(12, 27, "linear")
    f, d = lin(torch.randn(5, 12))
    assert f.shape == (5, 27) and d is None and not lin.outputs_density
    assert lin.net.bias is None
    mlp = FeatureHead(32, 15, "mlp", hidden_width=16, hidden_depth=1)
    f, d = mlp(torch.randn(5, 32))
    assert f.shape == (5, 15) and d.shape == (5, 1) and mlp.outputs_density
    with pytest.raises(ValueError):
        FeatureHead(4, 4, "conv")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DensityHead(4, "mean")  # type: ignore[arg-type]
