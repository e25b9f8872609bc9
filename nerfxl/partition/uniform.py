"""Uniform grids of blocks over the scene box: the layout of Mega-NeRF / Block-NeRF / LandMark.

Prior work partitions a global box into equal blocks regardless of where the content is
(nerf-xl.md §2); this is the baseline the k-d split is compared against. The default is one layer
(nz = 1): aerial and street captures are wide and flat, so blocks tile the ground plane.

Block order: x outermost, then y, then z — id = (ix · ny + iy) · nz + iz.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def grid_shape_for(k: int, box: Tensor, nz: int = 1) -> tuple[int, int, int]:
    """(nx, ny, nz) with nx · ny · nz = k whose blocks are the most square in the ground plane.

    Among all factorisations nx · ny = k / nz, picks the one minimising the blocks' x/y aspect
    ratio max(wx, wy) / min(wx, wy) with wx = size_x / nx, wy = size_y / ny (ties: fewer columns
    along x). A prime k has only k × 1 and 1 × k, so the long side of the box gets the cuts.

    Args:
        k: number of blocks, ≥ 1.
        box: [2, 3] scene box.
        nz: layers along z; must divide k.
    """
    k, nz = int(k), int(nz)
    if k < 1 or nz < 1 or k % nz:
        raise ValueError(f"need k ≥ 1 and nz ≥ 1 dividing k, got k={k}, nz={nz}")
    b = torch.as_tensor(box, dtype=torch.float64).reshape(2, 3)
    size = b[1] - b[0]
    sx, sy = float(size[0]), float(size[1])
    if not (sx > 0 and sy > 0):
        raise ValueError(f"box needs positive x and y extent, got size {size.tolist()}")
    per_layer = k // nz
    best: tuple[float, int] | None = None
    for nx in _divisors(per_layer):
        wx, wy = sx / nx, sy / (per_layer // nx)
        ratio = max(wx, wy) / min(wx, wy)
        # Relative tolerance so that float noise in the sizes cannot flip a genuine tie.
        if best is None or ratio < best[0] * (1 - 1e-12):
            best = (ratio, nx)
    assert best is not None
    nx = best[1]
    return nx, per_layer // nx, nz


def _cuts(lo: float, hi: float, n: int) -> list[float]:
    """n + 1 cut positions from lo to hi; the inner ones rounded to float32 (see kd_split's note)."""
    inner = [float(torch.tensor(lo + (hi - lo) * i / n, dtype=torch.float32)) for i in range(1, n)]
    cuts = [lo, *inner, hi]
    if any(b <= a for a, b in zip(cuts[:-1], cuts[1:])):
        raise ValueError(f"[{lo}, {hi}] is too small to cut into {n} blocks in float32")
    return cuts


def uniform_grid(box: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """[nx · ny · nz, 2, 3] float64 blocks of an nx × ny × nz grid over ``box`` [2, 3].

    Neighbouring blocks share identical face values, and the outer faces are the box's own, so the
    blocks tile the box exactly.
    """
    b = torch.as_tensor(box).detach().to(torch.float64).reshape(2, 3).cpu()
    if not bool(torch.isfinite(b).all()) or not bool((b[1] > b[0]).all()):
        raise ValueError(f"box needs finite min < max on every axis, got {b.tolist()}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or any(n < 1 for n in shape):
        raise ValueError(f"grid shape must be three positive integers, got {shape}")
    cuts = [_cuts(float(b[0, a]), float(b[1, a]), shape[a]) for a in range(3)]
    blocks = []
    for ix in range(shape[0]):
        for iy in range(shape[1]):
            for iz in range(shape[2]):
                idx = (ix, iy, iz)
                blocks.append([[cuts[a][idx[a]] for a in range(3)], [cuts[a][idx[a] + 1] for a in range(3)]])
    return torch.tensor(blocks, dtype=torch.float64)


def uniform_tiles(box: Tensor, k: int, nz: int = 1) -> tuple[Tensor, tuple[int, int, int]]:
    """(blocks [k, 2, 3], grid shape) for ``k`` blocks laid out by :func:`grid_shape_for`."""
    shape = grid_shape_for(k, box, nz)
    return uniform_grid(box, shape), shape


__all__ = ["grid_shape_for", "uniform_grid", "uniform_tiles"]
