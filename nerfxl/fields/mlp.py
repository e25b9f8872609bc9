"""A plain fully connected network (ReLU hidden layers), shared by heads, decoder and sky."""

from __future__ import annotations

from torch import nn


def make_mlp(in_dim: int, out_dim: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units with ReLU, then a linear output layer.

    ``depth = 0`` is a single linear layer. The output has no activation.
    Shapes: [..., in_dim] → [..., out_dim].
    """
    if depth < 0 or width < 1 or in_dim < 1 or out_dim < 1:
        raise ValueError(f"bad MLP shape: in={in_dim} out={out_dim} width={width} depth={depth}")
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU(inplace=True)]
        d = width
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)
