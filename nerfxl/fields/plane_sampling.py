"""Bilinear lookups in a feature plane, with a backward pass that is fast on the CPU.

``sample_plane`` is ``F.grid_sample(mode="bilinear", padding_mode="border", align_corners=True)`` on
one plane. Its forward *is* grid_sample; its backward scatters the output gradient into the plane's
four corner nodes of every point with ``scatter_add_`` (one call per corner), instead of ATen's CPU
``grid_sampler_2d_backward``, which loops over the batch dimension only: with our batch of one it
runs on a single thread, and it dominated the training step. The two backward passes add the same
terms in another order, so gradients agree up to float round-off (``tests/fields`` compares them).

When the coordinates need a gradient (pose refinement), or a lookup is small (fewer than
``SCATTER_MIN_VALUES`` looked-up values: there the dozen small operations of the scatter cost more than
the serial kernel), the plain grid_sample path is taken. Measured on the 2-core CPU, backward plus
forward, two threads: 0.51-0.82x grid_sample's time from 10 k points up (16-32 channels, planes of
8 x 8 to 192 x 192 nodes and lines), 1.1-1.8x at 1 k points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_plane_reference(plane: Tensor, uv: Tensor) -> Tensor:
    """plane [1, C, H, W], uv [N, 2] in [-1, 1] (u along W, v along H) → [C, N]; the plain twin."""
    out = F.grid_sample(plane, uv.view(1, -1, 1, 2), mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(plane.shape[1], -1)


SCATTER_MIN_VALUES = 65536  # points × channels of one lookup


def sample_plane(plane: Tensor, uv: Tensor) -> Tensor:
    """As :func:`sample_plane_reference`, with the scatter-add backward for the plane."""
    if (uv.requires_grad or not plane.requires_grad or not torch.is_grad_enabled()
            or uv.shape[0] * plane.shape[1] < SCATTER_MIN_VALUES):
        return sample_plane_reference(plane, uv)
    return _PlaneLookup.apply(plane, uv)


def corner_nodes_and_weights(uv: Tensor, height: int, width: int) -> tuple[list[Tensor], list[Tensor]]:
    """The nodes (flat indices into H × W) around each point and their bilinear weights, as
    grid_sample computes them with ``align_corners=True`` and border padding: [N] each, ordered
    (x0, y0), (x1, y0), (x0, y1), (x1, y1). At the last node of an axis the upper neighbour is the
    node itself with weight 0. A plane one node wide (a line) has two: y0 and y1."""
    y = ((uv[:, 1] + 1) / 2 * (height - 1)).clamp(0, height - 1)
    if width == 1:
        y0 = y.floor()
        ty = y - y0
        y0 = y0.long()
        return [y0, (y0 + 1).clamp(max=height - 1)], [1 - ty, ty]
    x = ((uv[:, 0] + 1) / 2 * (width - 1)).clamp(0, width - 1)
    x0, y0 = x.floor(), y.floor()
    tx, ty = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    nodes = [y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1]
    weights = [(1 - tx) * (1 - ty), tx * (1 - ty), (1 - tx) * ty, tx * ty]
    return nodes, weights


class _PlaneLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plane: Tensor, uv: Tensor) -> Tensor:
        ctx.save_for_backward(uv)
        ctx.plane_shape = plane.shape
        return sample_plane_reference(plane, uv)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (uv,) = ctx.saved_tensors
        _, channels, height, width = ctx.plane_shape
        grad = grad.contiguous()
        nodes, weights = corner_nodes_and_weights(uv, height, width)
        plane_grad = grad.new_zeros(channels, height * width)
        for node, weight in zip(nodes, weights):
            # Rows are channels: each scatter stays within one channel's H × W row at a time.
            plane_grad.scatter_add_(1, node.expand(channels, -1), grad * weight.to(grad.dtype))
        return plane_grad.view(1, channels, height, width), None
