"""Blocks of a ground plane and the N × N windows of them that dynamic fetching keeps on the device.

A ground-mode plane-line grid over a tile box is cut into NX × NY blocks (a :class:`PlaneSplit`): with
``align_corners`` a plane of H × W nodes gives blocks of h × w nodes, H = (h − 1)·NY + 1 and
W = (w − 1)·NX + 1, neighbours sharing their border row or column (landmark.md §8). A window of
N × N neighbouring blocks is itself a plane of ((h − 1)·N + 1) × ((w − 1)·N + 1) nodes, and bilinear
interpolation inside it reads only its nodes, so it computes exactly what the whole plane computes there.

Positions are measured in *block units*: (x − x_min) / block width, so block (ix, iy) covers
[ix, ix + 1] × [iy, iy + 1] and the whole plane [0, NX] × [0, NY]. Planes are [1, C, rows = y, cols = x].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Mapping

from torch import Tensor

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_window import PlaneSplit


@dataclass(frozen=True)
class Window:
    """The N × N blocks starting at block (x0, y0)."""

    x0: int
    y0: int
    n: int

    def blocks(self) -> Iterator[tuple[int, int]]:
        """(ix, iy) of every block of the window, x outermost."""
        for ix in range(self.x0, self.x0 + self.n):
            for iy in range(self.y0, self.y0 + self.n):
                yield ix, iy

    def holds(self, block: tuple[int, int]) -> bool:
        return self.x0 <= block[0] < self.x0 + self.n and self.y0 <= block[1] < self.y0 + self.n

    @property
    def centre(self) -> tuple[float, float]:
        """Centre in block units."""
        return self.x0 + self.n / 2, self.y0 + self.n / 2

    def uv_bounds(self, split: PlaneSplit) -> tuple[float, float, float, float]:
        """(u0, u1, v0, v1): the window in the whole plane's [-1, 1] coordinates."""
        return (-1 + 2 * self.x0 / split.nx, -1 + 2 * (self.x0 + self.n) / split.nx,
                -1 + 2 * self.y0 / split.ny, -1 + 2 * (self.y0 + self.n) / split.ny)


@dataclass(frozen=True)
class PlaneSpec:
    """One plane tensor of the grid (e.g. ``grid.density_planes.0``) and its block size in nodes."""

    name: str
    channels: int
    block_rows: int
    block_cols: int

    def window_shape(self, n: int) -> tuple[int, int, int, int]:
        """[1, C, rows, cols] of an N × N window of blocks."""
        return 1, self.channels, (self.block_rows - 1) * n + 1, (self.block_cols - 1) * n + 1

    @property
    def block_numel(self) -> int:
        return self.channels * self.block_rows * self.block_cols


@dataclass(frozen=True)
class BlockLayout:
    """How a ground plane is cut into blocks: the split, the plane tensors, and the x-y extent.

    Attributes:
        split: NX × NY blocks.
        planes: every plane tensor of the grid, in a fixed order (the buffers' layout).
        xy_min / xy_max: the plane's extent in model units (the tile box's x-y).
    """

    split: PlaneSplit
    planes: tuple[PlaneSpec, ...]
    xy_min: tuple[float, float]
    xy_max: tuple[float, float]

    @classmethod
    def from_plane_shapes(cls, shapes: Mapping[str, tuple[int, ...]], split: PlaneSplit, box: Tensor) -> "BlockLayout":
        """Layout from the whole planes' shapes {name: [1, C, H, W]} (a one-line error if a plane cannot
        be cut into ``split``'s blocks) and the tile box [2, 3]."""
        planes = []
        for name in sorted(shapes):
            _, c, h, w = (int(s) for s in shapes[name])
            planes.append(PlaneSpec(name, c, split.sub_nodes(h, "y"), split.sub_nodes(w, "x")))
        b = box.detach().double().cpu()
        return cls(split, tuple(planes), (float(b[0, 0]), float(b[0, 1])), (float(b[1, 0]), float(b[1, 1])))

    @property
    def block_size(self) -> tuple[float, float]:
        """(width, depth) of one block in model units."""
        return ((self.xy_max[0] - self.xy_min[0]) / self.split.nx, (self.xy_max[1] - self.xy_min[1]) / self.split.ny)

    @property
    def block_numel(self) -> int:
        """Values of one block over all planes."""
        return sum(p.block_numel for p in self.planes)

    def window_numel(self, n: int) -> int:
        """Values of an N × N window over all planes (≤ N² blocks: neighbours share borders)."""
        return sum(math.prod(p.window_shape(n)) for p in self.planes)

    def check_neighbourhood(self, n: int) -> None:
        if n < 2:
            raise ConfigError(f"--neighbourhood {n}: the window must be at least 2 × 2 blocks")
        if n > self.split.nx or n > self.split.ny:
            raise ConfigError(f"--neighbourhood {n}: the model has only {self.split} blocks; a {n} × {n} window "
                              f"needs at least {n} blocks along x and y (use a smaller --neighbourhood or more --blocks)")

    def window_around(self, position: tuple[float, float], n: int) -> Window:
        """The N × N window whose centre is nearest ``position`` (block units), kept inside the plane."""
        x0 = min(max(math.floor(position[0] - n / 2 + 0.5), 0), self.split.nx - n)
        y0 = min(max(math.floor(position[1] - n / 2 + 0.5), 0), self.split.ny - n)
        return Window(x0, y0, n)

    def covers(self, window: Window, rect: tuple[float, float, float, float] | None) -> bool:
        """Whether ``window`` holds every point of ``rect`` = (x_min, x_max, y_min, y_max) in block units
        that lies on the plane (None: nothing to hold). Outside the plane there are no samples."""
        if rect is None:
            return True
        x_min, x_max = max(rect[0], 0.0), min(rect[1], float(self.split.nx))
        y_min, y_max = max(rect[2], 0.0), min(rect[3], float(self.split.ny))
        if x_min > x_max or y_min > y_max:
            return True
        return (window.x0 <= x_min and x_max <= window.x0 + window.n
                and window.y0 <= y_min and y_max <= window.y0 + window.n)

    def block_slice(self, spec: PlaneSpec, block: tuple[int, int], origin: tuple[int, int] = (0, 0)) -> tuple[slice, slice]:
        """(rows, cols) of ``block`` in a plane whose first block is ``origin`` (the whole plane: (0, 0))."""
        dx, dy = block[0] - origin[0], block[1] - origin[1]
        r, c = spec.block_rows - 1, spec.block_cols - 1
        return slice(dy * r, dy * r + spec.block_rows), slice(dx * c, dx * c + spec.block_cols)
