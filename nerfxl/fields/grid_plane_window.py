"""A window of a ground-plane grid: the sub-plane one process (or one streamed block) holds.

An NX × NY split cuts the xy plane of a ground-mode :class:`PlaneLineGrid` (every level) into NX × NY
sub-planes. With ``align_corners`` the grid's nodes sit on the region borders when (H − 1) is a
multiple of NY and (W − 1) of NX, so a plane of H × W nodes becomes sub-planes of h × w nodes with
H = (h − 1)·NY + 1 and W = (w − 1)·NX + 1 (landmark.md §8): neighbours share their border row or
column. Bilinear interpolation inside a region then reads only that region's nodes, so a
:class:`WindowedPlaneGrid` computes exactly what the full plane computes there, and upsampling a
window is exactly upsampling the full plane and cutting it again. The z lines are whole in every window.

Regions are numbered x outermost, like uniform blocks: index = ix · NY + iy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor

from nerfxl.errors import ConfigError

from .grid_plane_line import PlaneLineGrid, _tv


@dataclass(frozen=True)
class PlaneSplit:
    """An NX × NY cut of the ground plane into equal regions."""

    nx: int
    ny: int

    def __post_init__(self) -> None:
        if self.nx < 1 or self.ny < 1:
            raise ConfigError(f"a plane split needs at least 1 × 1 regions, got {self.nx} × {self.ny}")

    @classmethod
    def parse(cls, text: str) -> "PlaneSplit":
        """'NXxNY' (e.g. '2x2') → PlaneSplit, with a one-line error for anything else."""
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
        if not m:
            raise ConfigError(f"--blocks {text!r}: expected NXxNY, e.g. 2x2")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.nx}x{self.ny}"

    @property
    def parts(self) -> int:
        return self.nx * self.ny

    def region(self, index: int) -> tuple[int, int]:
        """(ix, iy) of region ``index``."""
        if not 0 <= index < self.parts:
            raise ValueError(f"region {index} outside 0..{self.parts - 1}")
        return index // self.ny, index % self.ny

    def sub_nodes(self, nodes: int, axis: Literal["x", "y"]) -> int:
        """Nodes per sub-plane along ``axis`` for a full plane of ``nodes`` nodes (one-line error if
        the borders cannot fall on nodes)."""
        n = self.nx if axis == "x" else self.ny
        if (nodes - 1) % n:
            fit = n * max(1, round((nodes - 1) / n)) + 1
            raise ConfigError(f"a plane of {nodes} nodes along {axis} cannot be cut into {n} sub-planes that share "
                              f"their borders: {nodes} − 1 = {nodes - 1} is not a multiple of {n} (e.g. {fit} nodes is)")
        return (nodes - 1) // n + 1

    def check_resolutions(self, resolutions: Sequence[Sequence[int]]) -> None:
        """Every (x, y, z) level resolution can be cut (ConfigError naming the numbers otherwise)."""
        for res in resolutions:
            self.sub_nodes(int(res[0]), "x")
            self.sub_nodes(int(res[1]), "y")

    def region_of_points(self, uv: Tensor) -> Tensor:
        """[N, 2] plane coordinates in [-1, 1] → [N] region index (points outside go to the nearest)."""
        ix = torch.floor((uv[:, 0] + 1) * (self.nx / 2)).long().clamp(0, self.nx - 1)
        iy = torch.floor((uv[:, 1] + 1) * (self.ny / 2)).long().clamp(0, self.ny - 1)
        return ix * self.ny + iy

    def bounds(self, index: int) -> tuple[float, float, float, float]:
        """(u0, u1, v0, v1): region ``index`` in plane coordinates."""
        ix, iy = self.region(index)
        return (-1 + 2 * ix / self.nx, -1 + 2 * (ix + 1) / self.nx, -1 + 2 * iy / self.ny, -1 + 2 * (iy + 1) / self.ny)

    # ------------------------------------------------------------------ tensors
    def slice_plane(self, plane: Tensor, index: int) -> Tensor:
        """[..., H, W] full plane → [..., h, w] region ``index`` (a view)."""
        ix, iy = self.region(index)
        h, w = self.sub_nodes(plane.shape[-2], "y"), self.sub_nodes(plane.shape[-1], "x")
        return plane[..., iy * (h - 1): iy * (h - 1) + h, ix * (w - 1): ix * (w - 1) + w]

    def stitch_planes(self, planes: Sequence[Tensor], where: str = "sub-planes", atol: float = 1e-6) -> Tensor:
        """Sub-planes [..., h, w] in region order → the full [..., H, W] plane.

        Shared borders must agree (they do after exact training); a mismatch beyond ``atol`` (relative
        to the values' scale) means the pieces do not belong together: ConfigError naming ``where``.
        """
        if len(planes) != self.parts:
            raise ConfigError(f"{where}: {len(planes)} sub-planes for a {self} split of {self.parts}")
        h, w = planes[0].shape[-2:]
        if any(p.shape != planes[0].shape for p in planes):
            raise ConfigError(f"{where}: sub-planes differ in shape ({sorted({tuple(p.shape) for p in planes})})")
        full = planes[0].new_zeros((*planes[0].shape[:-2], (h - 1) * self.ny + 1, (w - 1) * self.nx + 1))
        scale = max(float(max(p.abs().max() for p in planes)), 1.0)
        for index, plane in enumerate(planes):
            target = self.slice_plane(full, index)
            ix, iy = self.region(index)
            # Borders written by an earlier neighbour (left column, lower row) must match this piece.
            written = torch.zeros(h, w, dtype=torch.bool, device=plane.device)
            if ix > 0:
                written[:, 0] = True
            if iy > 0:
                written[0, :] = True
            if bool(written.any()):
                gap = float((target[..., written] - plane[..., written]).abs().max())
                if gap > atol * scale:
                    raise ConfigError(f"{where}: region {index} disagrees with its neighbour on their shared border "
                                      f"(by {gap:.3g}); the pieces were not trained together")
            target.copy_(plane)
        return full


class WindowedPlaneGrid(PlaneLineGrid):
    """Region ``index`` of an NX × NY split of a ground-mode plane-line grid.

    Holds, per level, the region's sub-plane (density and appearance) and the whole z line. Points are
    given in the *full* grid's coordinates [-1, 1]^3; points of other regions are clamped onto this
    window's border, so callers route each point to its region's window first.

    Regularisers count each full-grid term once across the NX × NY windows, so the windows' values
    sum to the full grid's: a shared border node belongs to the region above/right of it for the
    density L1 and for total-variation pairs across the border, and the lines' terms belong to
    window 0 (the others hold identical copies).
    """

    def __init__(self, split: PlaneSplit, index: int, base_resolution: Sequence[int] = (33, 33, 16),
                 scales: Sequence[int] = (1,), density_channels: int = 16, appearance_channels: int = 48,
                 scale_z: bool = True, init_std: float = 0.1, level_scaling: Literal["nodes", "cells"] = "cells"):
        # Plain attributes read by _plane_shape during PlaneLineGrid.__init__ (nn.Module allows them early).
        self.split = split
        self.index = int(index)
        self.region_xy = split.region(index)
        super().__init__(base_resolution, scales, density_channels, appearance_channels, "ground", scale_z, init_std,
                         level_scaling)

    @classmethod
    def from_full(cls, full: PlaneLineGrid, split: PlaneSplit, index: int) -> "WindowedPlaneGrid":
        """The window of an existing full grid (values copied: the window then trains on its own)."""
        if full.mode != "ground":
            raise ConfigError(f"plane windows cut the ground plane: the grid must have mode 'ground', not {full.mode!r}")
        window = cls(split, index, full.base_resolution, full.scales, full.density_channels, full.appearance_channels,
                     full.scale_z, init_std=0.0, level_scaling=full.level_scaling)
        state = split_grid_state(full.state_dict(), split, index)
        window.load_state_dict(state)
        return window

    def _plane_shape(self, res: tuple[int, int, int], a: int, b: int) -> tuple[int, int]:
        # Called for every level while the planes are built or resized, so a resolution that cannot be
        # cut stops it with the one-line error before any tensor is allocated.
        return self.split.sub_nodes(res[1], "y"), self.split.sub_nodes(res[0], "x")

    def _coords(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        u0, u1, v0, v1 = self.split.bounds(self.index)
        (uv, line), = super()._coords(x)
        local = torch.stack([(uv[:, 0] - u0) * (2 / (u1 - u0)) - 1, (uv[:, 1] - v0) * (2 / (v1 - v0)) - 1], dim=1)
        return [(local, line)]

    def resize(self, new_base_resolution: Sequence[int]):
        if len(new_base_resolution) == 3:  # checked before anything changes (the parent validates the rest)
            self.split.check_resolutions(self.resolutions_for(new_base_resolution))
        return super().resize(new_base_resolution)

    # ------------------------------------------------------------------ regularisers
    def _core_masks(self, plane: Tensor) -> tuple[Tensor, Tensor]:
        """[h] rows and [w] columns this window owns (float 0/1): all but the far border, which the
        next region owns, unless this is the last region along that axis."""
        ix, iy = self.region_xy
        rows = plane.new_ones(plane.shape[-2])
        cols = plane.new_ones(plane.shape[-1])
        if iy < self.split.ny - 1:
            rows[-1] = 0
        if ix < self.split.nx - 1:
            cols[-1] = 0
        return rows, cols

    def _full_plane_shape(self, plane: Tensor) -> tuple[int, int]:
        """(H, W) nodes of the whole plane this [1, C, h, w] sub-plane was cut from."""
        h, w = plane.shape[-2:]
        return (h - 1) * self.split.ny + 1, (w - 1) * self.split.nx + 1

    def total_variation(self, which: Literal["density", "appearance", "all"] = "all") -> Tensor:
        """This window's share of the full grid's total variation (see the class docstring)."""
        total = self.density_planes[0].new_zeros(())
        for t, is_plane in self._tensors(which):
            if is_plane:
                H, W = self._full_plane_shape(t)
                c = t.shape[1]
                rows, cols = self._core_masks(t)
                along_x = torch.diff(t, dim=3).square() * rows[:, None]
                along_y = torch.diff(t, dim=2).square() * cols[None, :]
                total = total + along_x.sum() / (c * H * (W - 1)) + along_y.sum() / (c * (H - 1) * W)
            elif self.index == 0:
                total = total + _tv(t, (2,))
        return total

    def density_l1(self) -> Tensor:
        """This window's share of the full grid's density L1."""
        total = self.density_planes[0].new_zeros(())
        for t, is_plane in self._tensors("density"):
            if is_plane:
                H, W = self._full_plane_shape(t)
                rows, cols = self._core_masks(t)
                total = total + (t.abs() * rows[:, None] * cols[None, :]).sum() / (t.shape[1] * H * W)
            elif self.index == 0:
                total = total + t.abs().mean()
        return total

    def plane_parameters(self) -> list[Tensor]:
        """The sub-planes (the parameters that differ between windows)."""
        return [*self.density_planes, *self.appearance_planes]

    def extra_repr(self) -> str:
        return f"window {self.index} of {self.split}, " + super().extra_repr()


def is_plane_tensor(name: str, t: Tensor) -> bool:
    """Whether a grid state-dict entry (or an optimizer moment of one) is a plane [1, C, H, W] (an
    optimizer's step counter of a plane is not)."""
    return ("density_planes." in name or "appearance_planes." in name) and t.dim() == 4


def split_grid_state(state: dict[str, Tensor], split: PlaneSplit, index: int) -> dict[str, Tensor]:
    """A full ground grid's tensors (state dict, optimizer moments alike) → region ``index``'s."""
    return {name: split.slice_plane(t, index).clone() if is_plane_tensor(name, t) else t.clone()
            for name, t in state.items()}


def merge_grid_states(states: Sequence[dict[str, Tensor]], split: PlaneSplit, where: str = "windows") -> dict[str, Tensor]:
    """The windows' tensors in region order → the full grid's (planes stitched, the rest checked equal)."""
    if len(states) != split.parts:
        raise ConfigError(f"{where}: {len(states)} windows for a {split} split")
    names = list(states[0])
    for index, state in enumerate(states[1:], start=1):
        if sorted(state) != sorted(names):
            raise ConfigError(f"{where}: window {index} holds other tensors than window 0")
    merged = {}
    for name in names:
        pieces = [s[name] for s in states]
        if is_plane_tensor(name, pieces[0]):
            merged[name] = split.stitch_planes(pieces, where=f"{where} ({name})")
        else:
            for index, piece in enumerate(pieces[1:], start=1):
                if piece.shape != pieces[0].shape or not torch.allclose(piece, pieces[0], rtol=1e-6, atol=1e-7):
                    raise ConfigError(f"{where}: {name} differs between window 0 and window {index}; "
                                      f"the pieces were not trained together")
            merged[name] = pieces[0].clone()
    return merged
