"""GridAdam: dense groups are Adam; sparse groups are Adam where the gradient is nonzero and frozen elsewhere."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from nerfxl.optim import GridAdam


def _params(seed: int, dtype=torch.float64) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(1, 4, 6, 5, generator=g, dtype=dtype)),
            torch.nn.Parameter(torch.randn(7, generator=g, dtype=dtype))]


def _grads(step: int, shapes, dtype=torch.float64, zero_fraction: float = 0.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    out = []
    for shape in shapes:
        grad = torch.randn(shape, generator=g, dtype=dtype)
        if zero_fraction:
            grad = grad * (torch.rand(shape, generator=g) >= zero_fraction)
        out.append(grad)
    return out


def _run(opt, params, steps: int, zero_fraction: float = 0.0, lrs=None):
    for s in range(steps):
        for p, grad in zip(params, _grads(s, [p.shape for p in params], params[0].dtype, zero_fraction)):
            p.grad = grad.clone()
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[s]
        opt.step()


def test_sparse_group_equals_adam_when_every_entry_has_a_gradient():
    ref, ours = _params(0), _params(0)
    lrs = [0.05 * 0.9**s for s in range(12)]
    _run(torch.optim.Adam(ref, lr=0.05, eps=1e-15, foreach=False), ref, 12, lrs=lrs)
    _run(GridAdam([{"params": ours, "sparse": True}], lr=0.05, eps=1e-15), ours, 12, lrs=lrs)
    for a, b in zip(ref, ours):
        assert_close(b, a, rtol=1e-13, atol=1e-13)


def test_sparse_group_freezes_entries_without_gradient():
    params = _params(1)
    opt = GridAdam([{"params": params, "sparse": True}], lr=0.1, eps=1e-15)
    _run(opt, params, 3)  # every entry has moments now
    before = [p.detach().clone() for p in params]
    moments = [(opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone()) for p in params]
    # Nodes (2, 3) and (0, 0) of the plane (every channel) and entry 4 of the vector are reached.
    mask = [torch.zeros(p.shape, dtype=torch.bool) for p in params]
    mask[0][0, :, 2, 3] = mask[0][0, :, 0, 0] = mask[1][4] = True
    for p, m in zip(params, mask):
        p.grad = torch.where(m, torch.full_like(p, 0.5), torch.zeros_like(p))
    opt.step()
    for p, b, (m1, v1), m in zip(params, before, moments, mask):
        assert torch.equal(p.detach()[~m], b[~m])
        assert torch.equal(opt.state[p]["exp_avg"][~m], m1[~m])
        assert torch.equal(opt.state[p]["exp_avg_sq"][~m], v1[~m])
        assert (p.detach()[m] != b[m]).all()
    # The touched entries follow Adam's rule with the parameter's step count (4).
    lr, (b1, b2), eps = 0.1, (0.9, 0.999), 1e-15
    m_new = 0.9 * moments[1][0][4] + 0.1 * 0.5
    v_new = 0.999 * moments[1][1][4] + 0.001 * 0.25
    expected = before[1][4] - lr / (1 - b1**4) * m_new / ((v_new.sqrt() / (1 - b2**4) ** 0.5) + eps)
    assert_close(params[1].detach()[4], expected, rtol=1e-12, atol=1e-12)


def test_a_node_is_reached_through_its_first_channel():
    plane = torch.nn.Parameter(torch.zeros(1, 3, 2, 2, dtype=torch.float64))
    table = torch.nn.Parameter(torch.zeros(4, 2, dtype=torch.float64))
    opt = GridAdam([{"params": [plane, table], "sparse": True}], lr=0.1)
    plane.grad = torch.zeros_like(plane)
    plane.grad[0, 0, 1, 0] = 1.0  # node (1, 0): channel 0 only → all its channels step (g = 0 elsewhere)
    plane.grad[0, 2, 0, 1] = 1.0  # node (0, 1): no channel-0 gradient → not reached
    table.grad = torch.zeros_like(table)
    table.grad[2] = torch.tensor([1.0, -1.0])  # hash-table rows are nodes
    opt.step()
    assert plane[0, 0, 1, 0] < 0 and plane[0, 1:, 1, 0].eq(0).all()
    assert opt.state[plane]["exp_avg_sq"][0, :, 1, 0].tolist() == [pytest.approx(1e-3), 0.0, 0.0]
    assert plane[0, :, 0, 1].eq(0).all() and opt.state[plane]["exp_avg"][0, 2, 0, 1] == 0
    assert table[2, 0] < 0 < table[2, 1] and table[[0, 1, 3]].eq(0).all()


def test_dense_groups_step_exactly_as_adam_next_to_sparse_ones():
    ref, ours = _params(2), _params(2)
    sparse_ref, sparse_ours = _params(3), _params(3)
    _run(torch.optim.Adam(ref, lr=0.01, foreach=True), ref, 5, zero_fraction=0.5)
    opt = GridAdam([{"params": ours}, {"params": sparse_ours, "sparse": True}], lr=0.01, foreach=True)
    for s in range(5):
        for p, grad in zip(ours + sparse_ours, _grads(s, [p.shape for p in ours], zero_fraction=0.5) * 2):
            p.grad = grad.clone()
        opt.step()
    for a, b in zip(ref, ours):
        assert torch.equal(a, b)
    for p, q in zip(sparse_ours, sparse_ref):
        assert not torch.equal(p, q)  # the sparse group moved
    # The gradients the dense step hid from Adam are back.
    assert all(p.grad is not None for p in sparse_ours)


def test_state_has_adams_keys_and_a_parameter_without_gradient_is_skipped():
    params = _params(4)
    opt = GridAdam([{"params": params[:1], "sparse": True}, {"params": params[1:]}], lr=0.1)
    params[0].grad = torch.ones_like(params[0])
    opt.step()  # params[1] has no gradient: no state, no change
    assert set(opt.state[params[0]]) == {"step", "exp_avg", "exp_avg_sq"}
    assert params[1] not in opt.state
    reference = torch.optim.Adam([torch.nn.Parameter(params[0].detach().clone())], lr=0.1)
    reference.param_groups[0]["params"][0].grad = torch.ones_like(params[0])
    reference.step()
    ref_state = next(iter(reference.state.values()))
    for key, value in opt.state[params[0]].items():
        assert value.shape == ref_state[key].shape and value.dtype == ref_state[key].dtype
