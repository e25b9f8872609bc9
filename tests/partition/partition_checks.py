"""Checks the partition tests share, written independently of nerfxl's own tiling check."""

from __future__ import annotations

import torch
from torch import Tensor


def assert_tiles_box(boxes: Tensor, box: Tensor, n_random: int = 20_000, seed: int = 0) -> None:
    """``boxes`` [K, 2, 3] tile ``box`` [2, 3]: inside it, volumes sum to it, interiors disjoint,
    and every random point of the box lies in exactly one (closed) tile."""
    boxes, box = boxes.double(), box.double()
    assert boxes.dim() == 3 and boxes.shape[1:] == (2, 3)
    assert bool((boxes[:, 1] > boxes[:, 0]).all()), "a tile has no volume"
    assert bool((boxes[:, 0] >= box[0]).all() and (boxes[:, 1] <= box[1]).all()), "a tile leaves the box"

    volumes = (boxes[:, 1] - boxes[:, 0]).prod(dim=-1)
    total = float((box[1] - box[0]).prod())
    assert abs(float(volumes.sum()) - total) <= 1e-9 * total, (float(volumes.sum()), total)

    k = boxes.shape[0]
    for i in range(k):
        for j in range(i + 1, k):
            lo = torch.maximum(boxes[i, 0], boxes[j, 0])
            hi = torch.minimum(boxes[i, 1], boxes[j, 1])
            assert float((hi - lo).clamp_min(0).prod()) == 0.0, f"tiles {i} and {j} overlap"

    g = torch.Generator().manual_seed(seed)
    pts = box[0] + torch.rand(n_random, 3, generator=g, dtype=torch.float64) * (box[1] - box[0])
    inside = ((pts[:, None] >= boxes[None, :, 0]) & (pts[:, None] <= boxes[None, :, 1])).all(dim=-1)
    counts = inside.sum(dim=1)
    assert bool((counts == 1).all()), f"{int((counts != 1).sum())} random points are in 0 or 2+ tiles"


def counts_in(boxes: Tensor, points: Tensor) -> Tensor:
    """[K] points strictly inside or on the min faces of each tile (half-open), for balance checks."""
    p = points.double()[:, None]
    inside = ((p >= boxes[None, :, 0]) & (p < boxes[None, :, 1])).all(dim=-1)
    return inside.sum(dim=0)
