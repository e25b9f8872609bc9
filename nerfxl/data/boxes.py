"""Ray / axis-aligned-box intersection for many rays against many boxes at once.

Used for the scene bounds (one box) and for tile partitions (K boxes): every device can compute
the entry order of a ray through all tiles locally from the boxes alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def union_box(boxes: Tensor) -> Tensor:
    """[K, 2, 3] boxes → [2, 3] the smallest box holding them all (a tile plan's scene box)."""
    return torch.stack([boxes[:, 0].min(0).values, boxes[:, 1].max(0).values])


def intersect_rays_boxes(origins: Tensor, directions: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test of R rays against B boxes.

    Args:
        origins: [R, 3] ray origins.
        directions: [R, 3] ray directions (need not be unit; t is in units of ``directions``).
        boxes: [B, 2, 3] boxes as (min corner, max corner), or [2, 3] for one box.

    Returns:
        t_enter: [R, B] entry distance, clamped to ≥ 0 (a ray starting inside enters at t = 0).
        t_exit: [R, B] exit distance.
        hit: [R, B] bool, True where the ray meets the box at some t ≥ 0 with t_exit > t_enter.
        Where ``hit`` is False, t_enter and t_exit are both 0 so callers can use them without masking.

    A ray parallel to a face and lying exactly in its plane meets the box through a min face only
    (boxes are half-open, [min, max), for such rays): a ray along the face two tiles share belongs to
    one of them, never both.
    """
    if boxes.dim() == 2:
        boxes = boxes.unsqueeze(0)
    o = origins[:, None, :]  # [R, 1, 3]
    d = directions[:, None, :]
    lo, hi = boxes[None, :, 0, :], boxes[None, :, 1, :]  # [1, B, 3]
    # An axis the ray is parallel to does not bound t: the ray is in that slab everywhere (lo ≤ o < hi,
    # half-open) or nowhere. Decided by comparison rather than by dividing by a tiny stand-in for
    # zero, which misjudges slabs a tiny distance away.
    parallel = d.abs() < torch.finfo(d.dtype).tiny
    in_slab = (o >= lo) & (o < hi)
    inv = 1.0 / torch.where(parallel, torch.ones_like(d), d)
    t0 = (lo - o) * inv
    t1 = (hi - o) * inv
    inf = torch.full((), math.inf, dtype=d.dtype, device=d.device)
    near_axis = torch.where(parallel, torch.where(in_slab, -inf, inf), torch.minimum(t0, t1))
    far_axis = torch.where(parallel, torch.where(in_slab, inf, -inf), torch.maximum(t0, t1))
    t_near = near_axis.amax(dim=-1).clamp_min(0.0)
    t_far = far_axis.amin(dim=-1)
    hit = t_far > t_near
    zero = torch.zeros((), dtype=t_near.dtype, device=t_near.device)
    return torch.where(hit, t_near, zero), torch.where(hit, t_far, zero), hit


def points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """[N, 3] points against [B, 2, 3] boxes → [N, B] bool (closed boxes)."""
    if boxes.dim() == 2:
        boxes = boxes.unsqueeze(0)
    p = points[:, None, :]
    return ((p >= boxes[None, :, 0]) & (p <= boxes[None, :, 1])).all(dim=-1)
