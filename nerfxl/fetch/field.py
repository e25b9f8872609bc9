"""The rendering side of dynamic fetching: a grid that reads a window buffer, and σ masked outside it.

:class:`FetchWindowGrid` is the ground-plane grid of the whole model with its planes replaced by the
compute buffer's views; :meth:`FetchWindowGrid.show` points it at another buffer (a swap costs nothing:
no copy, only new views). Points keep the whole grid's coordinates and are mapped into the window, so
the heads, lines and decoder see exactly what they see in the fully loaded model.

:class:`WindowedTile` is the tile around it: σ is zero for samples whose x-y lies outside the loaded
window (camera limits keep every sample of a frame inside; the mask is what makes a stray one harmless).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from nerfxl.fields.grid_plane_line import PlaneLineGrid
from nerfxl.fields.tile import TileField

from .buffers import FillTiming, WindowBuffer, fill_window
from .window import BlockLayout, Window


class FetchWindowGrid(PlaneLineGrid):
    """A ground-mode plane-line grid whose planes hold an N × N window of blocks.

    Built like the whole grid (same base resolution, levels and channels) but allocating only window-sized
    planes; the z lines are whole. Until :meth:`show` is called the planes are zeros.
    """

    def __init__(self, layout: BlockLayout, n: int, base_resolution, scales, density_channels: int,
                 appearance_channels: int, scale_z: bool, level_scaling: str):
        self.layout = layout  # read by _plane_shape during PlaneLineGrid.__init__
        self.n = int(n)
        super().__init__(base_resolution, scales, density_channels, appearance_channels, "ground", scale_z,
                         init_std=0.0, level_scaling=level_scaling)
        self.window: Window | None = None
        self._uv = (-1.0, 1.0, -1.0, 1.0)
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def like(cls, grid: PlaneLineGrid, layout: BlockLayout, n: int) -> "FetchWindowGrid":
        """The window grid of a whole grid's configuration (the whole grid's values are not read)."""
        return cls(layout, n, grid.base_resolution, grid.scales, grid.density_channels, grid.appearance_channels,
                   grid.scale_z, grid.level_scaling)

    def _plane_shape(self, res: tuple[int, int, int], a: int, b: int) -> tuple[int, int]:
        split = self.layout.split
        return (split.sub_nodes(res[1], "y") - 1) * self.n + 1, (split.sub_nodes(res[0], "x") - 1) * self.n + 1

    def plane_names(self) -> list[str]:
        """Names of the plane parameters (as in the tile's state dict, ``grid.`` prefix included)."""
        return [f"grid.{kind}.{i}" for kind in ("density_planes", "appearance_planes")
                for i in range(len(getattr(self, kind)))]

    @torch.no_grad()
    def show(self, planes: Mapping[str, Tensor], window: Window) -> None:
        """Read ``window`` from ``planes`` ({plane name: [1, C, rows, cols]} views of a window buffer)."""
        for name in self.plane_names():
            kind, index = name.split(".")[1:]
            param = getattr(self, kind)[int(index)]
            view = planes[name]
            if view.shape != param.shape:
                raise ValueError(f"{name}: buffer view {tuple(view.shape)} does not fit the grid's {tuple(param.shape)}")
            param.data = view
        self.window = window
        self._uv = window.uv_bounds(self.layout.split)

    def _coords(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        u0, u1, v0, v1 = self._uv
        (uv, line), = super()._coords(x)
        local = torch.stack([(uv[:, 0] - u0) * (2 / (u1 - u0)) - 1, (uv[:, 1] - v0) * (2 / (v1 - v0)) - 1], dim=1)
        return [(local, line)]

    def inside(self, x: Tensor) -> Tensor:
        """[N, 3] whole-grid coordinates → [N] bool, True where the x-y lies in the loaded window."""
        u0, u1, v0, v1 = self._uv
        eps = 1e-6
        return ((x[:, 0] >= u0 - eps) & (x[:, 0] <= u1 + eps) & (x[:, 1] >= v0 - eps) & (x[:, 1] <= v1 + eps))


class WindowedTile(TileField):
    """A ground-plane tile whose grid is a :class:`FetchWindowGrid`: σ = 0 outside the window."""

    def __init__(self, tile: TileField, grid: FetchWindowGrid):
        super().__init__(tile.box, grid, tile.density_head, tile.feature_head)

    def density(self, positions: Tensor) -> Tensor:
        sigma = super().density(positions)
        return torch.where(self.grid.inside(self.normalize(positions).reshape(-1, 3)).view(sigma.shape), sigma,
                           torch.zeros_like(sigma))

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        sigma, features = super().forward(positions)
        inside = self.grid.inside(self.normalize(positions).reshape(-1, 3)).view(sigma.shape)
        return torch.where(inside, sigma, torch.zeros_like(sigma)), features


class BlockTarget:
    """Blocks of one ground plane as the fetch unit: buffers are :class:`.buffers.WindowBuffer` s and the
    renderer's :class:`FetchWindowGrid` reads the compute one (see :class:`.fetcher.FetchTarget`)."""

    def __init__(self, grid: FetchWindowGrid):
        self.grid = grid
        self.layout = grid.layout
        self.n = grid.n

    def new_buffer(self) -> WindowBuffer:
        line = self.grid.density_lines[0]
        return WindowBuffer(self.layout, self.n, line.device, line.dtype)

    def fill(self, store, src: WindowBuffer | None, dst: WindowBuffer, window: Window, overlap: bool, pool,
             ctx) -> FillTiming:
        return fill_window(store, src, dst, window, overlap=overlap, pool=pool, ctx=ctx)

    def show(self, buffer: WindowBuffer) -> None:
        self.grid.show(buffer.planes, buffer.window)
