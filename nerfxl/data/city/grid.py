"""A 2D uniform grid over the ground plane that lists the primitives overlapping each cell.

The city is 2.5D (everything stands on the ground), so a grid over x, y with a per-cell height
bound is enough: a ray walks the cells it crosses (see :mod:`nerfxl.data.city.raycast`), tests
only the few primitives listed in each, and skips cells whose contents all lie below the ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class CellGrid:
    """Cells of side ``cell`` covering [-H, H]²; cell (i, j) has flat index i · ny + j.

    Attributes:
        origin: x (= y) of the grid's min corner (-H).
        cell: cell side in metres.
        nx, ny: cells per axis.
        box_table: [nx · ny, Kb] int64 box indices per cell (Kb ≥ 1), padded with B: the index of
            a dummy row of ``box_data``.
        sphere_table: [nx · ny, Ks] int64 sphere indices per cell (Ks ≥ 1), padded with S.
        box_data: [B + 1, 2, 3] float64 boxes plus a dummy of NaNs, which fails every hit test
            (all comparisons with NaN are false), so padded slots need no mask.
        sphere_data: [S + 1, 4] float64 (centre, radius) plus a NaN dummy.
        cell_top: [nx · ny] float64 highest z of anything listed in the cell (-inf when empty).
        top: highest z of any primitive (0 when there are none).
    """

    origin: float
    cell: float
    nx: int
    ny: int
    box_table: Tensor
    sphere_table: Tensor
    cell_top: Tensor
    top: float
    box_data: Tensor
    sphere_data: Tensor


def _cell_ranges(lo: np.ndarray, hi: np.ndarray, origin: float, cell: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last cell index touched by intervals [lo, hi] (closed: a primitive that ends
    exactly on a cell boundary is listed in both cells, so boundary hits are never missed)."""
    first = np.floor((lo - origin) / cell - 1e-9).astype(np.int64)
    last = np.floor((hi - origin) / cell + 1e-9).astype(np.int64)
    return np.clip(first, 0, n - 1), np.clip(last, 0, n - 1)


def _table(xr: tuple[np.ndarray, np.ndarray], yr: tuple[np.ndarray, np.ndarray], tops: np.ndarray, nx: int, ny: int):
    """Per-cell index table (padded with the primitive count) and per-cell max top, for
    primitives covering rectangles of cells."""
    x0, x1 = xr
    y0, y1 = yr
    n_prim = x0.shape[0]
    table = np.full((nx * ny, 1), n_prim, dtype=np.int64)
    cell_top = np.full(nx * ny, -np.inf)
    if n_prim == 0:
        return table, cell_top
    wx, wy = x1 - x0 + 1, y1 - y0 + 1
    counts = wx * wy
    prim = np.repeat(np.arange(n_prim), counts)
    # Position of each (primitive, cell) pair within its primitive's rectangle of cells.
    k = np.arange(prim.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    ci = x0[prim] + k // wy[prim]
    cj = y0[prim] + k % wy[prim]
    flat = ci * ny + cj
    order = np.lexsort((prim, flat))  # by cell, then primitive: a deterministic layout
    flat, prim = flat[order], prim[order]
    per_cell = np.bincount(flat, minlength=nx * ny)
    slot = np.arange(flat.shape[0]) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    table = np.full((nx * ny, max(1, int(per_cell.max()))), n_prim, dtype=np.int64)
    table[flat, slot] = prim
    np.maximum.at(cell_top, flat, tops[prim])
    return table, cell_top


def build_grid(boxes: Tensor, sphere_centers: Tensor, sphere_radii: Tensor, half_extent: float,
               cell: float) -> CellGrid:
    """Bin boxes [B, 2, 3] and spheres ([S, 3], [S]) into a grid of ``cell``-metre cells."""
    origin = -float(half_extent)
    n = max(1, math.ceil(2 * half_extent / cell))
    b = boxes.detach().cpu().double().numpy().reshape(-1, 2, 3)
    c = sphere_centers.detach().cpu().double().numpy().reshape(-1, 3)
    r = sphere_radii.detach().cpu().double().numpy().reshape(-1)
    box_table, box_top = _table(
        _cell_ranges(b[:, 0, 0], b[:, 1, 0], origin, cell, n),
        _cell_ranges(b[:, 0, 1], b[:, 1, 1], origin, cell, n),
        b[:, 1, 2],
        n,
        n,
    )
    sphere_table, sphere_top = _table(
        _cell_ranges(c[:, 0] - r, c[:, 0] + r, origin, cell, n),
        _cell_ranges(c[:, 1] - r, c[:, 1] + r, origin, cell, n),
        c[:, 2] + r,
        n,
        n,
    )
    cell_top = np.maximum(box_top, sphere_top)
    nan = np.full((1, 2, 3), np.nan)
    box_data = np.concatenate([b, nan])
    sphere_data = np.concatenate([np.concatenate([c, r[:, None]], axis=1), nan.reshape(-1)[None, :4]])
    top = float(max(0.0, b[:, 1, 2].max(initial=0.0), (c[:, 2] + r).max(initial=0.0)))
    return CellGrid(
        origin=origin,
        cell=float(cell),
        nx=n,
        ny=n,
        box_table=torch.from_numpy(box_table),
        sphere_table=torch.from_numpy(sphere_table),
        cell_top=torch.from_numpy(cell_top),
        top=top,
        box_data=torch.from_numpy(box_data),
        sphere_data=torch.from_numpy(sphere_data),
    )
