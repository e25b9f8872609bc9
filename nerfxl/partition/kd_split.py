"""NeRF-XL's recursive median split of the scene box into K tiles (paper §4.4, App. A.3; nerf-xl.md §2).

At each node every axis proposes the plane where the (weighted) point CDF reaches the node's target
fraction; the axis whose two children are closest to cubic wins; the node recurses on both sides.
The paper needs K = 2^n; here a node holding K leaves splits as ⌊K/2⌋ + ⌈K/2⌉ and cuts the point
mass in that proportion (K = 3 → 1 + 2 at CDF 1/3), so any K ≥ 1 works and K = 2^n is the paper.

Conventions shared with :meth:`nerfxl.partition.plan.TilePlan.tile_of_points`:
- a point belongs to the left child iff its coordinate is < the plane (half-open boxes), except on
  the scene box's max faces, which belong to the last box along that axis;
- leaves are returned depth-first, left child before right child, so consecutive tile ids are
  spatial neighbours.

Split planes are rounded to float32 because the model stores tile boxes as float32
(``nerfxl.fields``): two adjacent tiles then share the *identical* face value in float32 as in
float64, and the float32 boxes still tile the float32 scene box with no gap or overlap.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# The plane is kept at least this fraction of the node's side away from both faces. Its only job is
# to keep a pathological cloud (everything in one corner) from producing zero-width or
# float-degenerate tiles; any real cloud's median lies far inside this margin.
MIN_SIDE_FRACTION = 1e-3


def aspect_ratio(box: Tensor) -> float:
    """Longest side / shortest side of a [2, 3] box (1 for a cube, ∞ for a flat box)."""
    size = box[1] - box[0]
    small = float(size.min())
    return math.inf if small <= 0 else float(size.max()) / small


def split_score(box: Tensor, axis: int, plane: float) -> float:
    """How far from cubic splitting ``box`` at ``plane`` along ``axis`` leaves its children.

    Defined as the worse (larger) of the two children's longest-side / shortest-side ratios, so the
    chosen axis is the one whose *both* halves stay closest to cubes. Lower is better, 1 is ideal.
    """
    left, right = box.clone(), box.clone()
    left[1, axis] = plane
    right[0, axis] = plane
    return max(aspect_ratio(left), aspect_ratio(right))


def _to_float32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


def _clamp_plane(lo: float, hi: float, plane: float) -> float | None:
    """``plane`` moved into the node's allowed band and rounded to float32; None if no room is left."""
    margin = MIN_SIDE_FRACTION * (hi - lo)
    plane = _to_float32(min(max(plane, lo + margin), hi - margin))
    return plane if lo < plane < hi else None


def cdf_plane(values: Tensor, weights: Tensor, fraction: float) -> float | None:
    """The plane where the weighted CDF of ``values`` [P] comes closest to ``fraction``.

    Only places *between two distinct values* are candidates (points on the plane itself would go to
    the right child, so a plane through a pile of equal coordinates cannot split it); the plane is
    the midpoint of the gap whose left mass is nearest ``fraction`` of the total. None when the
    values cannot be separated at all (all equal) or carry no weight.
    """
    total = float(weights.sum())
    if values.numel() < 2 or total <= 0:
        return None
    v, order = torch.sort(values)
    left_mass = torch.cumsum(weights[order], dim=0)  # left_mass[j]: mass of v[:j+1]
    target = fraction * total
    # The mass is non-decreasing in j, so the best split is next to the first j reaching the target:
    # the last allowed split before the run of equal values at that j, or the run's end.
    i = int(torch.searchsorted(left_mass, torch.tensor([target], dtype=left_mass.dtype))[0].clamp_max(len(v) - 1))
    at = v[i:i + 1]
    candidates = []
    before = int(torch.searchsorted(v, at, right=False)[0]) - 1  # last index with a smaller value
    if before >= 0:
        candidates.append(before)
    end = int(torch.searchsorted(v, at, right=True)[0]) - 1  # last index of the run equal to v[i]
    if end < len(v) - 1:
        candidates.append(end)
    if not candidates:
        return None
    best = min(candidates, key=lambda j: abs(float(left_mass[j]) - target))
    return 0.5 * (float(v[best]) + float(v[best + 1]))


def _split_node(box: Tensor, points: Tensor, weights: Tensor, k: int, out: list[Tensor]) -> None:
    if k == 1:
        out.append(box)
        return
    k_left = k // 2
    fraction = k_left / k
    lo, hi = box[0], box[1]

    best: tuple[float, int, float] | None = None  # (score, axis, plane)
    for axis in range(3):
        plane = cdf_plane(points[:, axis], weights, fraction)
        if plane is None:
            continue
        plane = _clamp_plane(float(lo[axis]), float(hi[axis]), plane)
        if plane is None:
            continue
        score = split_score(box, axis, plane)
        if best is None or score < best[0]:  # strict: ties keep the lower axis, deterministically
            best = (score, axis, plane)

    if best is None:
        # No usable point information here (no points, no weight, or all on one spot): cut the
        # longest side in the K-leaf proportion, which keeps volumes proportional to leaf counts.
        axis = int(torch.argmax(hi - lo))
        plane = _clamp_plane(float(lo[axis]), float(hi[axis]), float(lo[axis] + fraction * (hi[axis] - lo[axis])))
        if plane is None:
            raise ValueError(f"box {box.tolist()} is too small to split into {k} tiles in float32")
    else:
        _, axis, plane = best

    left_box, right_box = box.clone(), box.clone()
    left_box[1, axis] = plane
    right_box[0, axis] = plane
    go_left = points[:, axis] < plane
    _split_node(left_box, points[go_left], weights[go_left], k_left, out)
    _split_node(right_box, points[~go_left], weights[~go_left], k - k_left, out)


def kd_split(points: Tensor | None, scene_box: Tensor, k: int, weights: Tensor | None = None) -> Tensor:
    """Split ``scene_box`` into ``k`` axis-aligned tiles holding ≈ equal point mass.

    Args:
        points: [P, 3] points (SfM cloud or ray samples), world coordinates; None or empty means
            "no information" (the box is split geometrically). Points outside the scene box or
            non-finite are ignored: they fall in no tile.
        scene_box: [2, 3] (min, max) with min < max on every axis.
        k: number of tiles, ≥ 1.
        weights: optional [P] non-negative work per point (default 1 each).

    Returns:
        [k, 2, 3] float64 boxes, disjoint (shared faces only) with union exactly ``scene_box``,
        in depth-first order of the split tree.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    box = torch.as_tensor(scene_box).detach().to(torch.float64).reshape(2, 3).cpu().clone()
    if not bool(torch.isfinite(box).all()) or not bool((box[1] > box[0]).all()):
        raise ValueError(f"scene box needs finite min < max on every axis, got {box.tolist()}")
    if points is None:
        pts = torch.zeros(0, 3, dtype=torch.float64)
    else:
        pts = torch.as_tensor(points).detach().to(torch.float64).cpu().reshape(-1, 3)
    if weights is None:
        w = torch.ones(pts.shape[0], dtype=torch.float64)
    else:
        w = torch.as_tensor(weights).detach().to(torch.float64).cpu().reshape(-1)
        if w.shape[0] != pts.shape[0]:
            raise ValueError(f"weights has {w.shape[0]} entries for {pts.shape[0]} points")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights must be finite and non-negative")
    keep = torch.isfinite(pts).all(dim=-1) & ((pts >= box[0]) & (pts <= box[1])).all(dim=-1)
    out: list[Tensor] = []
    _split_node(box, pts[keep], w[keep], k, out)
    return torch.stack(out)
