"""Occupancy grid over one tile box, for skipping empty space while marching (Instant-NGP style).

The grid keeps a running estimate of the largest density in each cell and a boolean occupancy
derived from it. Updates evaluate the field at one random point per selected cell; the estimate
decays between updates so that space the field has since emptied is eventually skipped.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn


class OccupancyGrid(nn.Module):
    """Occupancy of a regular grid of cells over an axis-aligned box.

    Buffers (saved in ``state_dict``):
        box: [2, 3] min and max corner.
        density: [rx, ry, rz] float, running max-density estimate per cell (starts at 0).
        occupied: [rx, ry, rz] bool, starts all True so an untrained grid skips nothing.

    Args:
        box: [2, 3] (min corner, max corner) in world coordinates.
        resolution: cells per axis, one int or (rx, ry, rz).
    """

    def __init__(self, box: Tensor, resolution: Union[int, Sequence[int]] = 128):
        super().__init__()
        box = torch.as_tensor(box)
        if box.shape != (2, 3) or not bool((box[1] > box[0]).all()):
            raise ValueError(f"box must be [2, 3] with max > min on every axis, got {box.tolist()}")
        res = (int(resolution),) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
        if len(res) != 3 or min(res) < 1:
            raise ValueError(f"resolution must be a positive int or three of them, got {resolution}")
        self.resolution = res
        dtype = box.dtype if box.is_floating_point() else torch.get_default_dtype()
        self.register_buffer("box", box.detach().to(dtype).clone())
        self.register_buffer("density", torch.zeros(res, dtype=dtype, device=box.device))
        self.register_buffer("occupied", torch.ones(res, dtype=torch.bool, device=box.device))
        self._occupied_box_cache: Optional[tuple[tuple[int, int], Optional[Tensor]]] = None

    @property
    def n_cells(self) -> int:
        return self.resolution[0] * self.resolution[1] * self.resolution[2]

    @property
    def occupied_fraction(self) -> float:
        """Share of cells currently marked occupied, in [0, 1]."""
        return float(self.occupied.float().mean())

    def mark_all_occupied(self) -> None:
        """Mark every cell occupied (the estimate is kept; the next update recomputes occupancy)."""
        self.occupied.fill_(True)

    def occupied_box(self) -> Optional[Tensor]:
        """[2, 3] the smallest box of whole cells holding every occupied cell, or None when no cell
        is occupied. Marching limits its steps to rays' stretches through it (every step outside
        would be dropped anyway). Cached until ``occupied`` changes."""
        key = (self.occupied.data_ptr(), self.occupied._version)
        if self._occupied_box_cache is None or self._occupied_box_cache[0] != key:
            self._occupied_box_cache = (key, self._compute_occupied_box())
        return self._occupied_box_cache[1]

    def _compute_occupied_box(self) -> Optional[Tensor]:
        occupied = self.occupied
        if not bool(occupied.any()):
            return None
        lo, hi = [], []
        for axis in range(3):
            others = tuple(d for d in range(3) if d != axis)
            cells = torch.nonzero(occupied.any(dim=others[1]).any(dim=others[0])).squeeze(-1)
            lo.append(int(cells[0]))
            hi.append(int(cells[-1]) + 1)
        size = self.cell_size()
        return torch.stack([self.box[0] + torch.tensor(lo, dtype=size.dtype, device=size.device) * size,
                            self.box[0] + torch.tensor(hi, dtype=size.dtype, device=size.device) * size])

    def query(self, positions: Tensor) -> Tensor:
        """Occupancy at world positions [N, 3] → bool [N]; points outside the box are False."""
        box = self.box.to(positions.dtype)
        inside = ((positions >= box[0]) & (positions <= box[1])).all(dim=-1)
        return inside & self.occupied.reshape(-1)[self._cell_of(positions)]

    @torch.no_grad()
    def update(
        self,
        step: int,
        density_fn: Callable[[Tensor], Tensor],
        occ_thre: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        n: int = 16,
        generator: Optional[torch.Generator] = None,
        chunk_size: int = 1 << 18,
    ) -> bool:
        """Refresh the estimate; meant to be called every training step.

        Only acts when ``step % n == 0`` (returns False otherwise, True when it updated). An update:
        1. decays the estimate of every cell: density ← ema_decay · density;
        2. picks cells: all of them while ``step < warmup_steps``; afterwards n_cells // 4 cells
           uniformly at random plus n_cells // 4 of the currently occupied cells (all occupied
           cells when there are fewer), so occupied space is revisited more often than empty;
        3. evaluates ``density_fn`` at one uniformly jittered point inside each picked cell and
           takes density ← max(density, σ) there (a cell picked twice keeps the larger σ);
        4. sets occupied = density > min(mean(density), occ_thre). The mean caps the threshold so
           that a scene of uniformly low density early in training is not skipped entirely.

        Args:
            step: training step.
            density_fn: world positions [N, 3] → densities [N] (or [N, 1]); run without autograd.
            occ_thre: density above which a cell always counts as occupied.
            ema_decay: per-update decay of the estimate.
            warmup_steps: steps during which every cell is evaluated at every update.
            n: update period in steps.
            generator: random source on the grid's device, for reproducible updates.
            chunk_size: most points passed to ``density_fn`` at once.
        """
        if step % n != 0:
            return False
        device = self.density.device
        if step < warmup_steps:
            cells = torch.arange(self.n_cells, device=device)
        else:
            quarter = max(self.n_cells // 4, 1)
            uniform = torch.randint(self.n_cells, (quarter,), generator=generator, device=device)
            occupied = torch.nonzero(self.occupied.reshape(-1)).squeeze(-1)
            if occupied.numel() > quarter:
                pick = torch.randint(occupied.numel(), (quarter,), generator=generator, device=device)
                occupied = occupied[pick]
            cells = torch.cat([uniform, occupied])

        jitter = torch.rand((cells.numel(), 3), generator=generator, device=device, dtype=self.box.dtype)
        positions = self._cell_corner(cells) + jitter * self.cell_size()
        sigmas = torch.cat(
            [density_fn(chunk).reshape(-1).to(self.density.dtype) for chunk in positions.split(chunk_size)]
        )

        estimate = (self.density * ema_decay).reshape(-1)
        estimate = estimate.scatter_reduce(0, cells, sigmas, "amax", include_self=True)
        self.density.copy_(estimate.reshape(self.resolution))
        threshold = torch.clamp(self.density.mean(), max=occ_thre)
        self.occupied.copy_(self.density > threshold)
        return True

    def _res(self, like: Tensor) -> Tensor:
        return torch.tensor(self.resolution, dtype=like.dtype, device=like.device)

    def cell_size(self) -> Tensor:
        """[3] the edge lengths of one cell."""
        return (self.box[1] - self.box[0]) / self._res(self.box)

    def _cell_corner(self, cells: Tensor) -> Tensor:
        """Min corner [N, 3] of flat cell indices [N] (C order over [rx, ry, rz])."""
        _, ry, rz = self.resolution
        ijk = torch.stack([cells // (ry * rz), (cells // rz) % ry, cells % rz], dim=-1)
        return self.box[0] + ijk.to(self.box.dtype) * self.cell_size()

    def _cell_of(self, positions: Tensor) -> Tensor:
        """Flat cell index [N] of positions [N, 3], clamped into the grid."""
        box = self.box.to(positions.dtype)
        return cell_of(positions, box[0], box[1], torch.tensor(self.resolution, device=positions.device))


def cell_of(positions: Tensor, lo: Tensor, hi: Tensor, resolution: Tensor) -> Tensor:
    """Flat (C order) cell index [N] of positions [N, 3] in grids of ``resolution`` (int64 [3] or [N, 3])
    cells over boxes ``lo``..``hi`` ([3] or [N, 3], the positions' dtype), clamped into the grid."""
    res = resolution.to(positions.dtype)
    ijk = torch.floor((positions - lo) / (hi - lo) * res)
    # NaN positions become index 0 here; the callers have already ruled them outside.
    ijk = torch.nan_to_num(ijk, nan=0.0).clamp(min=torch.zeros_like(res), max=res - 1).long()
    return (ijk[..., 0] * resolution[..., 1] + ijk[..., 1]) * resolution[..., 2] + ijk[..., 2]


def query_occupancy_grids(grids: Sequence[OccupancyGrid], positions: Tensor, grid_of: Tensor) -> Tensor:
    """``grids[grid_of[i]].query(positions[i])`` for every i (bool [N]) in one lookup: the grids' cells
    packed into one flat array, each position's cell found by :func:`cell_of` as in ``query``."""
    dtype, device = positions.dtype, positions.device
    lo = torch.stack([g.box[0] for g in grids]).to(dtype)[grid_of]
    hi = torch.stack([g.box[1] for g in grids]).to(dtype)[grid_of]
    resolution = torch.tensor([g.resolution for g in grids], device=device)[grid_of]
    cells = torch.cat([g.occupied.reshape(-1) for g in grids])
    starts = torch.tensor([0] + [g.n_cells for g in grids[:-1]], device=device).cumsum(0)
    inside = ((positions >= lo) & (positions <= hi)).all(dim=-1)
    return inside & cells[starts[grid_of] + cell_of(positions, lo, hi, resolution)]
