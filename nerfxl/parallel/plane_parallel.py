"""LandMark's plane parallel (landmark.md §3), exact: one ground plane cut into sub-planes over processes.

Process r holds window r of an NX × NY split of the one tile's ground plane (every level;
:class:`nerfxl.fields.grid_plane_window.WindowedPlaneGrid`) and whole copies of everything else
(z lines, heads, decoder, background). Every process marches the same rays; each sample goes to the
process whose region contains its x-y; that process evaluates σ and rgb, the per-sample values are
all-gathered, and every process composites every ray (sample-based communication: 4 numbers per sample).

Gradients, exact where the original averaged by sample counts (landmark.md §8):
- the gather's backward returns each process the gradient of its own samples (nothing communicated);
- replicated parameters hold a partial gradient on every process: SUM all-reduce;
- a border row/column of nodes is held by two (four at corners) neighbouring windows: their copies'
  gradients are summed among the holders (:func:`sync_border_gradients`, a few rows per plane), so the
  copies stay equal and the windows together train exactly the full plane;
- the background is computed identically everywhere: differentiable on rank 0 only (as for tiles).

Hence D processes follow the trajectory of the same one-plane model trained in one process, and the
windows stitch back into that model (``nerfxl merge``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_line import PlaneLineGrid
from nerfxl.fields.grid_plane_window import PlaneSplit, WindowedPlaneGrid
from nerfxl.fields.model import RadianceField
from nerfxl.fields.tile import TileField
from nerfxl.parallel.distributed import DistContext, all_gather_variable, all_reduce_gradients, all_reduce_tensor


def check_plane_split(split: PlaneSplit, world_size: int) -> None:
    """One window per process (one-line ConfigError naming both numbers otherwise)."""
    if split.parts != world_size:
        raise ConfigError(f"--blocks {split} cuts the plane into {split.parts} sub-planes but there are {world_size} "
                          f"processes; plane parallel puts one sub-plane on each process (to change the cut of a "
                          f"trained run: `nerfxl merge` it, then `nerfxl split` it)")


class PlaneParallelField(RadianceField):
    """A one-tile field whose ground plane is cut over the processes of ``ctx`` (window = rank)."""

    joint_evaluation = True

    def __init__(self, field: RadianceField, split: PlaneSplit, ctx: DistContext):
        check_plane_split(split, ctx.world_size)
        grid = field.tiles[0].grid
        if field.n_tiles != 1 or not isinstance(grid, PlaneLineGrid) or grid.mode != "ground":
            raise ConfigError("plane parallel cuts one ground plane: use --partitions 1 and --field.grid.mode ground")
        tile = field.tiles[0]
        window = WindowedPlaneGrid.from_full(grid, split, ctx.rank)
        super().__init__([TileField(tile.box, window, tile.density_head, tile.feature_head)], field.decoder,
                         field.appearance, field.pose, field.background)
        self.split = split
        self.ctx = ctx

    @property
    def window(self) -> WindowedPlaneGrid:
        return self.tiles[0].grid

    def owners(self, positions: Tensor) -> Tensor:
        """[N, 3] world positions → [N] rank holding each one's region (the same on every process)."""
        return self.split.region_of_points(self.tiles[0].normalize(positions.detach())[:, :2])

    def _routed(self, positions: Tensor, evaluate: Callable[[Tensor], Tensor]) -> Tensor:
        """Evaluate this process's samples with ``evaluate(indices) -> [n, C]``; gather everyone's → [N, C]."""
        owner = self.owners(positions)
        mine = (owner == self.ctx.rank).nonzero().flatten()
        gathered = all_gather_variable(evaluate(mine), self.ctx)  # rank-major, each rank's in sample order
        # Every process knows every sample's owner, so no indices travel: sorting the owners (stably)
        # gives the sample order of the gathered rows.
        order = torch.argsort(owner, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return gathered[inverse]

    def query(self, k: int, positions: Tensor, directions: Tensor,
              image_indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        def evaluate(idx: Tensor) -> Tensor:
            ids = None if image_indices is None else image_indices[idx]
            sigmas, rgbs = RadianceField.query(self, k, positions[idx], directions[idx], ids)
            return torch.cat([sigmas[:, None], rgbs], dim=1)

        rows = self._routed(positions, evaluate)
        return rows[:, 0], rows[:, 1:]

    def tile_density(self, k: int, positions: Tensor) -> Tensor:
        return self._routed(positions, lambda idx: RadianceField.tile_density(self, k, positions[idx])[:, None])[:, 0]

    def colours_of_tiles(self, tiles, positions, directions, image_indices) -> list[Tensor]:
        (k,), (p,), (d,), (ids,) = tiles, positions, directions, image_indices  # one tile

        def evaluate(idx: Tensor) -> Tensor:
            return RadianceField.colours_of_tiles(self, [k], [p[idx]], [d[idx]], [None if ids is None else ids[idx]])[0]

        return [self._routed(p, evaluate)]

    def replicated_parameters(self) -> list[Tensor]:
        """Parameters every process holds a copy of (z lines, heads, shared modules): SUM all-reduced."""
        planes = set(map(id, self.window.plane_parameters()))
        return [p for p in self.parameters() if id(p) not in planes]

    def sync_gradients(self) -> None:
        """Sum the replicated parameters' gradients and the shared border nodes' (every process calls it)."""
        all_reduce_gradients(self.replicated_parameters(), self.ctx, op="sum")
        sync_border_gradients(self.window, self.ctx)


def sync_border_gradients(window: WindowedPlaneGrid, ctx: DistContext) -> None:
    """Give every copy of a shared border node the sum of all copies' gradients, in place.

    Each process writes its sub-planes' edge columns into per-plane buffers of NX + 1 full-height
    columns and its edge rows (corners excluded) into NY + 1 full-width rows, at their global node
    indices; one SUM all-reduce adds the neighbours' copies; each process reads its edges back. Outer
    borders are held once, so they come back unchanged. A missing gradient counts as zeros (another
    window may have one); if no process has any, the gradients stay None as in one process.
    """
    split = window.split
    ix, iy = window.region_xy
    planes = window.plane_parameters()
    pieces, layout = [], []
    for p in planes:
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        c, h, w = g.shape[1:]
        rows = iy * (h - 1) + torch.arange(h, device=g.device)
        cols = ix * (w - 1) + torch.arange(w, device=g.device)
        columns = g.new_zeros(split.nx + 1, c, (h - 1) * split.ny + 1)
        columns[ix, :, rows] = g[0, :, :, 0]
        columns[ix + 1, :, rows] = g[0, :, :, w - 1]
        lines = g.new_zeros(split.ny + 1, c, (w - 1) * split.nx + 1)
        lines[iy, :, cols[1:-1]] = g[0, :, 0, 1:-1]
        lines[iy + 1, :, cols[1:-1]] = g[0, :, h - 1, 1:-1]
        pieces += [columns.reshape(-1), lines.reshape(-1)]
        layout.append((columns.shape, lines.shape, rows, cols))
    flags = torch.tensor([float(p.grad is not None) for p in planes], dtype=planes[0].dtype, device=planes[0].device)
    summed = all_reduce_tensor(torch.cat(pieces + [flags]), ctx, "sync_border_gradients")
    offset = 0
    anyone = summed[-len(planes):] > 0
    for p, (col_shape, line_shape, rows, cols), has in zip(planes, layout, anyone.tolist()):
        n_col, n_line = col_shape.numel(), line_shape.numel()
        columns = summed[offset: offset + n_col].view(col_shape)
        lines = summed[offset + n_col: offset + n_col + n_line].view(line_shape)
        offset += n_col + n_line
        if not has:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        g = p.grad
        h, w = g.shape[2:]
        g[0, :, :, 0] = columns[ix][:, rows]
        g[0, :, :, w - 1] = columns[ix + 1][:, rows]
        g[0, :, 0, 1:-1] = lines[iy][:, cols[1:-1]]
        g[0, :, h - 1, 1:-1] = lines[iy + 1][:, cols[1:-1]]
