"""Adam whose grid groups update only the entries that received a gradient (sparse grid updates).

A feature grid is touched sparsely: one step's samples reach a few cells of each plane, and a tile
no ray enters gets no gradient at all. Plain Adam still visits every entry of every parameter with a
gradient tensor (reading and writing four full-size tensors), so a model of K tiles costs K times
one in the optimizer whatever the samples, and untouched cells drift on their decaying momentum.
Instant-NGP skips entries whose gradient is exactly zero; :class:`GridAdam` does the same for the
param groups marked ``sparse``: their moments and values change only at the grid nodes whose
gradient is nonzero (all channels of a node together), with the usual per-parameter step count for
bias correction. The other groups (MLPs) step as in
:class:`torch.optim.Adam`, and the state has Adam's keys and shapes, so checkpoints are the same.

Where every entry has a gradient, a sparse group computes exactly what Adam computes
(``tests/test_optim.py`` compares them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class GridAdam(torch.optim.Adam):
    """:class:`torch.optim.Adam` plus lazy updates for param groups with ``sparse=True``.

    Args:
        params: parameters or param-group dicts as for Adam; a group's ``sparse`` key (default False)
            selects the lazy rule for it.
        lr, betas, eps: as for Adam (``weight_decay``, ``amsgrad``, ``maximize`` are not supported in
            sparse groups).
        foreach, fused: passed to Adam for the dense groups (``fused``: one kernel per tensor for the
            whole update; on the CPU about 2.5× faster than ``foreach`` over many small tiles' tensors,
            and equal to it up to one ulp).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 foreach: bool | None = None, fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, foreach=foreach, fused=fused)
        for group in self.param_groups:
            group.setdefault("sparse", False)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("GridAdam does not take a closure")
        sparse = [g for g in self.param_groups if g["sparse"]]
        # Hide the sparse groups' gradients from Adam's own step (it skips parameters without one).
        hidden = [(p, p.grad) for g in sparse for p in g["params"] if p.grad is not None]
        for p, _ in hidden:
            p.grad = None
        try:
            super().step()
        finally:
            for p, grad in hidden:
                p.grad = grad
        for group in sparse:
            for p in group["params"]:
                if p.grad is not None:
                    self._sparse_update(p, group)
        return None

    def _sparse_update(self, p: Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise ValueError("GridAdam takes dense gradients (zeros mark the untouched entries)")
        if not p.is_contiguous():
            raise ValueError(f"GridAdam's sparse groups need contiguous parameters, got shape {tuple(p.shape)}")
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]

        dim, views = node_views(p.grad, state["exp_avg"], state["exp_avg_sq"], p.data)
        grad, m, v, value = views
        # A node counts as reached when its first channel's gradient is nonzero: one pass over 1/C of
        # the gradient instead of all of it (a reached node's channels all carry gradient in practice;
        # where one does not, Adam's rule with g = 0 applies to it).
        first_channel = grad[0] if dim == 1 else grad[:, 0]
        reached = torch.nonzero(first_channel).squeeze(1)
        if reached.numel() == 0:
            return
        g = grad.index_select(dim, reached)
        m_t = m.index_select(dim, reached).lerp_(g, 1 - beta1)
        v_t = v.index_select(dim, reached).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m.index_copy_(dim, reached, m_t)
        v.index_copy_(dim, reached, v_t)
        # Adam's own formula and order of operations (torch.optim.adam, single tensor).
        step_size = float(group["lr"]) / (1 - beta1 ** step)
        denom = (v_t.sqrt() / math.sqrt(1 - beta2 ** step)).add_(group["eps"])
        value.index_copy_(dim, reached, value.index_select(dim, reached).addcdiv_(m_t, denom, value=-step_size))


def node_views(*tensors: Tensor) -> tuple[int, list[Tensor]]:
    """2-D views of parameter-shaped tensors with one grid node per index along the returned dim:
    [1, C, H, W] planes and [1, C, L, 1] lines → [C, H·W] (dim 1); [T, F] hash tables → [T, F] (dim 0);
    a 1-D tensor → [1, N] (dim 1, one channel)."""
    shape = tensors[0].shape
    if len(shape) < 2 or shape[0] == 1:
        channels = shape[1] if len(shape) >= 2 else 1
        return 1, [t.view(channels, -1) for t in tensors]
    return 0, [t.view(shape[0], -1) for t in tensors]
