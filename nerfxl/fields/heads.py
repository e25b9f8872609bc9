"""Tile-local heads: grid features → density σ, and grid features → fixed-width decoder input.

These belong to one tile and are never synchronised between devices.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import make_mlp

DensityReduction = Literal["sum", "linear"]
DensityActivation = Literal["softplus", "trunc_exp", "relu"]
FeatureHeadKind = Literal["linear", "mlp"]

TRUNC_EXP_CLAMP = 15.0


class _TruncExp(torch.autograd.Function):
    """exp(x) whose backward uses exp(clamp(x, -15, 15)) (Instant-NGP), so large logits cannot
    produce inf/NaN gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-TRUNC_EXP_CLAMP, TRUNC_EXP_CLAMP))


def trunc_exp(x: Tensor) -> Tensor:
    """Elementwise exp with a clamped gradient (see :class:`_TruncExp`). Any shape."""
    return _TruncExp.apply(x)


def density_activation(x: Tensor, kind: DensityActivation) -> Tensor:
    """Apply one of the σ activations elementwise."""
    if kind == "softplus":
        return F.softplus(x)
    if kind == "trunc_exp":
        return trunc_exp(x)
    if kind == "relu":
        return F.relu(x)
    raise ValueError(f"unknown density activation {kind!r}")


class DensityHead(nn.Module):
    """Density features → σ = activation(reduce(features) + shift).

    Args:
        in_dim: width of the density features.
        reduction: ``"sum"`` (channel sum, TensoRF / GridNeRF) or ``"linear"`` (a learned
            linear layer to one value, with bias).
        activation: ``"softplus"``, ``"trunc_exp"`` (exp with clamped gradient) or ``"relu"``.
        shift: constant added before the activation. A negative shift makes σ start low
            (TensoRF uses -10 with softplus: σ ≈ 4.5e-5 for zero features).

    Shapes: [N, in_dim] → σ [N] (≥ 0).
    """

    def __init__(self, in_dim: int, reduction: DensityReduction = "sum", activation: DensityActivation = "softplus",
                 shift: float = -10.0):
        super().__init__()
        if reduction not in ("sum", "linear"):
            raise ValueError(f"unknown density reduction {reduction!r}")
        if activation not in ("softplus", "trunc_exp", "relu"):
            raise ValueError(f"unknown density activation {activation!r}")
        self.in_dim = in_dim
        self.reduction: DensityReduction = reduction
        self.activation: DensityActivation = activation
        self.shift = float(shift)
        self.linear = nn.Linear(in_dim, 1) if reduction == "linear" else None

    def forward(self, features: Tensor) -> Tensor:
        if self.linear is not None:
            raw = self.linear(features).squeeze(-1)
        else:
            raw = features.sum(dim=-1)
        return density_activation(raw + self.shift, self.activation)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, reduction={self.reduction!r}, activation={self.activation!r}, shift={self.shift}"


class FeatureHead(nn.Module):
    """Grid features → the fixed-width feature vector the shared colour decoder reads.

    - ``kind="linear"``: the plane-line "appearance basis" (TensoRF ``basis_mat``): one linear
      layer without bias, appearance features → ``out_dim`` (e.g. 27). No density output.
    - ``kind="mlp"``: Instant-NGP's geometry MLP on hash features: ``hidden_depth`` ReLU layers of
      ``hidden_width``, output ``1 + out_dim``; the first value is the density logit (to feed a
      :class:`DensityHead` with ``in_dim=1``), the rest are the geometric features.

    Shapes: ``forward(features [N, in_dim]) -> (features [N, out_dim], density_logit [N, 1] | None)``.
    """

    def __init__(self, in_dim: int, out_dim: int = 27, kind: FeatureHeadKind = "linear",
                 hidden_width: int = 64, hidden_depth: int = 1):
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"unknown feature head kind {kind!r}")
        self.in_dim, self.out_dim, self.kind = in_dim, out_dim, kind
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim, bias=False)
        else:
            self.net = make_mlp(in_dim, 1 + out_dim, hidden_width, hidden_depth)

    @property
    def outputs_density(self) -> bool:
        """True when :meth:`forward` also returns a density logit."""
        return self.kind == "mlp"

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.net(features)
        if self.kind == "linear":
            return out, None
        return out[..., 1:], out[..., :1]

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, in_dim={self.in_dim}, out_dim={self.out_dim}"
