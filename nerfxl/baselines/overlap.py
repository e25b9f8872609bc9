"""Tile boxes grown by an overlap margin, as Mega-NeRF trains each tile on a slightly larger region.

Convention: ``overlap`` is the fraction by which each box's *size* grows per axis, split evenly
between its two ends — a box of size s becomes s · (1 + overlap), each face moving out by
overlap / 2 · s — and the result is clamped to the scene box (nothing is reconstructed outside it).
Boxes on the scene boundary therefore grow only inward there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_OVERLAP = 0.15  # Mega-NeRF's 15% margin (nerf-xl.md §8)


def expand_boxes(boxes: Tensor, overlap: float = DEFAULT_OVERLAP, scene_box: Tensor | None = None) -> Tensor:
    """Grow every box by ``overlap`` of its size per axis and clamp it to ``scene_box``.

    Args:
        boxes: [K, 2, 3] (min corner, max corner) per tile, or [2, 3] for one box.
        overlap: ≥ 0; 0 returns the boxes unchanged (up to the clamp).
        scene_box: optional [2, 3] box to clamp to; None leaves the grown boxes unclamped.
    Returns:
        [K, 2, 3] (or [2, 3]) in the dtype of ``boxes`` (float64 stays float64).
    """
    if not math.isfinite(overlap) or overlap < 0:
        raise ValueError(f"overlap must be a finite number ≥ 0, got {overlap}")
    single = boxes.dim() == 2
    if single:
        boxes = boxes.unsqueeze(0)
    if boxes.dim() != 3 or boxes.shape[1:] != (2, 3):
        raise ValueError(f"boxes must be [K, 2, 3], got {list(boxes.shape)}")
    lo, hi = boxes[:, 0], boxes[:, 1]
    pad = 0.5 * overlap * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if scene_box is not None:
        scene_box = scene_box.to(boxes.dtype)
        lo = torch.maximum(lo, scene_box[0])
        hi = torch.minimum(hi, scene_box[1])
    out = torch.stack([lo, hi], dim=1)
    return out[0] if single else out


def box_centres(boxes: Tensor) -> Tensor:
    """[K, 2, 3] boxes → [K, 3] centres (the tile centroids Mega-NeRF blends by)."""
    return 0.5 * (boxes[..., 0, :] + boxes[..., 1, :])
