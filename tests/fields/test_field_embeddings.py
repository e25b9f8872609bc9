import pytest
import torch

from nerfxl.fields import AppearanceEmbedding, PoseCorrection, compose, se3_exp, skew


def _hat(xi):
    """4x4 se(3) matrix of a twist (rho, omega)."""
    m = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype)
    m[..., :3, :3] = skew(xi[..., 3:])
    m[..., :3, 3] = xi[..., :3]
    return m


def test_appearance_minus_one_and_none_give_zero():
    emb = AppearanceEmbedding(4, 3)
    out = emb(torch.tensor([0, -1, 3, -1]))
    assert out.shape == (4, 3)
    assert torch.equal(out[1], torch.zeros(3)) and torch.equal(out[3], torch.zeros(3))
    torch.testing.assert_close(out[0], emb.weight[0])
    torch.testing.assert_close(out[2], emb.weight[3])
    assert torch.equal(emb(None, n=5), torch.zeros(5, 3))
    out.sum().backward()
    assert torch.equal(emb.weight.grad[1], torch.zeros(3)) and torch.equal(emb.weight.grad[0], torch.ones(3))
    with pytest.raises(IndexError):
        emb(torch.tensor([4]))
    with pytest.raises(ValueError):
        emb(None)


def test_se3_exp_of_zero_is_identity():
    out = se3_exp(torch.zeros(2, 6))
    expected = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1).expand(2, 3, 4)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("scale", [1e-7, 1e-3, 0.3, 2.5])
def test_se3_exp_matches_matrix_exponential(scale):
    torch.manual_seed(0)
    xi = torch.randn(16, 6, dtype=torch.float64) * scale
    ours = se3_exp(xi)
    ref = torch.linalg.matrix_exp(_hat(xi))[..., :3, :]
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-10)
    rot = ours[..., :3]
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(16, 3, 3))
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(16, dtype=torch.float64))


def test_small_rotation_matches_first_order():
    w = torch.tensor([1e-4, -2e-4, 3e-4], dtype=torch.float64)
    rho = torch.tensor([1e-4, 2e-4, -1e-4], dtype=torch.float64)
    out = se3_exp(torch.cat([rho, w]))
    first_order = torch.eye(3, dtype=torch.float64) + skew(w)
    assert (out[:, :3] - first_order).abs().max() < 1e-7  # error O(|w|^2)
    assert (out[:, 3] - rho).abs().max() < 1e-7


@pytest.mark.parametrize("scale", [0.0, 1e-3, 1.0])
def test_se3_exp_gradients_finite(scale):
    xi = (torch.randn(4, 6, dtype=torch.float64) * scale).requires_grad_(True)
    se3_exp(xi).sum().backward()
    assert torch.isfinite(xi.grad).all()
    if scale == 0.0:
        assert xi.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(se3_exp, (xi.detach().clone().requires_grad_(True),))


def test_pose_correction_apply():
    torch.manual_seed(0)
    pc = PoseCorrection(3)
    c2w = se3_exp(torch.randn(4, 6) * 0.5)
    idx = torch.tensor([0, 2, -1, 1])
    torch.testing.assert_close(pc.apply(c2w, idx), c2w)  # zero init = identity
    with torch.no_grad():
        pc.twists.copy_(torch.randn(3, 6) * 0.1)
    out = pc.apply(c2w, idx)
    torch.testing.assert_close(out[2], c2w[2])  # -1: no correction
    torch.testing.assert_close(out[0], compose(c2w[0], se3_exp(pc.twists[0].detach())))
    # 4x4 input keeps its last row
    c2w44 = torch.cat([c2w, torch.tensor([0, 0, 0, 1.0]).expand(4, 1, 4)], dim=1)
    out44 = pc.apply(c2w44, idx)
    assert out44.shape == (4, 4, 4)
    torch.testing.assert_close(out44[:, :3], out)
    out.sum().backward()
    assert torch.isfinite(pc.twists.grad).all() and pc.twists.grad.abs().sum() > 0
    assert pc.penalty() > 0
    # still an nn.Module: module.apply(fn) works through a parent
    seen = []
    torch.nn.Sequential(pc).apply(lambda m: seen.append(type(m).__name__))
    assert "PoseCorrection" in seen


def test_pose_correction_gradient_only_for_used_images():
    pc = PoseCorrection(3)
    c2w = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1).expand(2, 3, 4)
    pc.apply(c2w, torch.tensor([1, -1])).square().sum().backward()
    g = pc.twists.grad
    assert torch.isfinite(g).all()
    assert g[0].abs().sum() == 0 and g[2].abs().sum() == 0
    with pytest.raises(IndexError):
        pc.apply(c2w, torch.tensor([3, 0]))
