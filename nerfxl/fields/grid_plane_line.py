"""Plane × line factorised feature grid (TensoRF VM and the GridNeRF/LandMark ground plane).

A level holds, for every *component*, a 2D plane and a 1D line over the remaining axis:

- ``mode="vm"`` (TensoRF): planes xy, xz, yz with lines z, y, x — three components.
- ``mode="ground"`` (GridNeRF / LandMark): one xy plane with one z line — one component.

The feature of a point at one level, per channel ``c``, is

    f_c(x) = Σ_components  plane_c(x_a, x_b) · line_c(x_rest)

(bilinear / linear interpolation with ``align_corners=True``, so the first and last grid nodes sit
exactly on -1 and +1). Summing the components keeps the output width the same for both modes,
so the heads do not depend on ``mode``. The levels (resolution multiples of a base resolution)
are concatenated: level 0's channels first. Density and appearance channels are separate
tensors (different counts, different regularisers).
"""

from __future__ import annotations

from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .plane_sampling import sample_plane

PlaneLineMode = Literal["vm", "ground"]

# (plane axis along width, plane axis along height, line axis) per component; axes 0=x 1=y 2=z.
_COMPONENTS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "vm": ((0, 1, 2), (0, 2, 1), (1, 2, 0)),
    "ground": ((0, 1, 2),),
}


def level_resolutions(base_resolution: Sequence[int], scales: Sequence[int], scale_z: bool = True,
                      level_scaling: Literal["nodes", "cells"] = "nodes") -> list[tuple[int, int, int]]:
    """Grid nodes (x, y, z) of every level (see :class:`PlaneLineGrid`'s ``level_scaling``)."""
    def scaled(r: int, s: int) -> int:
        return r * s if level_scaling == "nodes" else (r - 1) * s + 1

    rx, ry, rz = (int(r) for r in base_resolution)
    return [(scaled(rx, s), scaled(ry, s), scaled(rz, s) if scale_z else rz) for s in scales]


def _tv(t: Tensor, dims: Sequence[int]) -> Tensor:
    """Mean squared difference of neighbouring entries along each of ``dims`` (summed)."""
    total = t.new_zeros(())
    for d in dims:
        if t.shape[d] > 1:
            total = total + torch.diff(t, dim=d).square().mean()
    return total


class PlaneLineGrid(nn.Module):
    """Multi-level plane+line feature grid over the normalised cube [-1, 1]^3.

    Args:
        base_resolution: (rx, ry, rz) grid nodes per axis at level 0 (z separate: city scenes are flat).
        scales: resolution multiple of each level (e.g. (1, 2, 4)).
        density_channels: density channels per level (Cd).
        appearance_channels: appearance channels per level (Ca).
        mode: ``"vm"`` (three plane/line pairs) or ``"ground"`` (xy plane × z line).
        scale_z: if False the z resolution stays ``rz`` at every level.
        init_std: std of the normal initialisation of every plane and line.
        level_scaling: ``"nodes"``: level ``s`` has R·s nodes per axis; ``"cells"``: it has (R − 1)·s + 1,
            i.e. s times the cells, so every coarser node is also a finer node. Only "cells" keeps every
            level cuttable into sub-planes that share borders (plane parallel).

    Parameters: ``density_planes`` / ``density_lines`` / ``appearance_planes`` / ``appearance_lines``,
    each an ``nn.ParameterList`` indexed ``level * n_components + component``; planes are
    [1, C, R_height, R_width], lines are [1, C, R_line, 1]. The products of two N(0, init_std²)
    values are ~init_std², so features start small and the density head's shift makes σ start low.
    """

    def __init__(
        self,
        base_resolution: Sequence[int] = (32, 32, 32),
        scales: Sequence[int] = (1, 2, 4),
        density_channels: int = 16,
        appearance_channels: int = 48,
        mode: PlaneLineMode = "vm",
        scale_z: bool = True,
        init_std: float = 0.1,
        level_scaling: Literal["nodes", "cells"] = "nodes",
    ):
        super().__init__()
        if level_scaling not in ("nodes", "cells"):
            raise ValueError(f"level_scaling must be 'nodes' or 'cells', got {level_scaling!r}")
        self.level_scaling = level_scaling
        if mode not in _COMPONENTS:
            raise ValueError(f"unknown plane-line mode {mode!r}; expected 'vm' or 'ground'")
        if len(base_resolution) != 3 or min(base_resolution) < 2:
            raise ValueError(f"base_resolution must be three values ≥ 2, got {tuple(base_resolution)}")
        if not scales or min(scales) < 1:
            raise ValueError(f"scales must be positive, got {tuple(scales)}")
        if density_channels < 1 or appearance_channels < 1:
            raise ValueError("density_channels and appearance_channels must be ≥ 1")
        self.mode: PlaneLineMode = mode
        self.scales = tuple(int(s) for s in scales)
        self.scale_z = scale_z
        self.density_channels = int(density_channels)
        self.appearance_channels = int(appearance_channels)
        self.base_resolution = tuple(int(r) for r in base_resolution)
        self.components = _COMPONENTS[mode]
        # Saved with the weights so a checkpoint taken after `resize` loads into a freshly built grid.
        self.register_buffer("resolution", torch.tensor(self.base_resolution, dtype=torch.int64))

        def make(channels: int, shape: tuple[int, int]) -> nn.Parameter:
            return nn.Parameter(init_std * torch.randn(1, channels, *shape))

        self.density_planes = nn.ParameterList()
        self.density_lines = nn.ParameterList()
        self.appearance_planes = nn.ParameterList()
        self.appearance_lines = nn.ParameterList()
        for res in self.level_resolutions:
            for a, b, c in self.components:
                self.density_planes.append(make(self.density_channels, self._plane_shape(res, a, b)))
                self.density_lines.append(make(self.density_channels, (res[c], 1)))
                self.appearance_planes.append(make(self.appearance_channels, self._plane_shape(res, a, b)))
                self.appearance_lines.append(make(self.appearance_channels, (res[c], 1)))

    def _plane_shape(self, res: tuple[int, int, int], a: int, b: int) -> tuple[int, int]:
        """(height, width) nodes of the plane over axes (a, b) at level resolution ``res``."""
        return res[b], res[a]

    # ------------------------------------------------------------------ sizes
    @property
    def n_levels(self) -> int:
        return len(self.scales)

    @property
    def level_resolutions(self) -> list[tuple[int, int, int]]:
        """Grid nodes (x, y, z) of every level."""
        return self.resolutions_for(self.base_resolution)

    def resolutions_for(self, base_resolution: Sequence[int]) -> list[tuple[int, int, int]]:
        """Grid nodes (x, y, z) of every level for a given base resolution."""
        return level_resolutions(base_resolution, self.scales, self.scale_z, self.level_scaling)

    @property
    def density_dim(self) -> int:
        """Width of the density features: n_levels * density_channels."""
        return self.n_levels * self.density_channels

    @property
    def appearance_dim(self) -> int:
        """Width of the appearance features: n_levels * appearance_channels."""
        return self.n_levels * self.appearance_channels

    # ------------------------------------------------------------------ sampling
    def _coords(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per component: plane coordinates [N, 2] and line coordinates [N, 2]."""
        zeros = torch.zeros_like(x[:, :1])
        return [(x[:, [a, b]], torch.cat([zeros, x[:, c : c + 1]], dim=1)) for a, b, c in self.components]

    def _features(self, coords: list[tuple[Tensor, Tensor]], planes: nn.ParameterList, lines: nn.ParameterList) -> Tensor:
        n_comp = len(self.components)
        levels = []
        for level in range(self.n_levels):
            acc = None
            for j, (uv, wl) in enumerate(coords):
                i = level * n_comp + j
                term = sample_plane(planes[i], uv) * sample_plane(lines[i], wl)
                acc = term if acc is None else acc + term
            levels.append(acc)
        return torch.cat(levels, dim=0).t()  # [N, n_levels * C] (a transposed view)

    def density_features(self, x: Tensor) -> Tensor:
        """x [..., 3] in [-1, 1] → [..., density_dim] (appearance channels are not sampled)."""
        flat = x.reshape(-1, 3)
        out = self._features(self._coords(flat), self.density_planes, self.density_lines)
        return out.view(*x.shape[:-1], self.density_dim)

    def appearance_features(self, x: Tensor) -> Tensor:
        """x [..., 3] in [-1, 1] → [..., appearance_dim]."""
        flat = x.reshape(-1, 3)
        out = self._features(self._coords(flat), self.appearance_planes, self.appearance_lines)
        return out.view(*x.shape[:-1], self.appearance_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Sample the grid.

        Args:
            x: [N, 3] (or [..., 3]) points in [-1, 1]; points outside are clamped to the border.

        Returns:
            density_features [N, n_levels*Cd] and appearance_features [N, n_levels*Ca].
        """
        flat = x.reshape(-1, 3)
        coords = self._coords(flat)
        dens = self._features(coords, self.density_planes, self.density_lines)
        app = self._features(coords, self.appearance_planes, self.appearance_lines)
        lead = x.shape[:-1]
        return dens.view(*lead, self.density_dim), app.view(*lead, self.appearance_dim)

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def resize(self, new_base_resolution: Sequence[int]) -> list[nn.Parameter]:
        """Upsample (or downsample) every plane and line to a new base resolution.

        Planes use bilinear and lines linear interpolation with ``align_corners=True``, so the
        grid function is preserved exactly at the old nodes and everywhere for content that is
        linear along each axis. The parameters are **replaced by new ``nn.Parameter`` objects**:
        an optimiser holding the old ones must be rebuilt (Adam state is lost, as in TensoRF).

        Returns:
            The new grid parameters (the same as ``list(self.parameters())``).
        """
        if len(new_base_resolution) != 3 or min(new_base_resolution) < 2:
            raise ValueError(f"new_base_resolution must be three values ≥ 2, got {tuple(new_base_resolution)}")
        self.base_resolution = tuple(int(r) for r in new_base_resolution)
        self.resolution.copy_(torch.tensor(self.base_resolution))
        n_comp = len(self.components)
        for level, res in enumerate(self.level_resolutions):
            for j, (a, b, c) in enumerate(self.components):
                i = level * n_comp + j
                for plist in (self.density_planes, self.appearance_planes):
                    old = plist[i]
                    new = F.interpolate(old.data, size=self._plane_shape(res, a, b), mode="bilinear", align_corners=True)
                    plist[i] = nn.Parameter(new.contiguous(), requires_grad=old.requires_grad)
                for llist in (self.density_lines, self.appearance_lines):
                    old = llist[i]
                    new = F.interpolate(old.data[..., 0], size=res[c], mode="linear", align_corners=True)
                    llist[i] = nn.Parameter(new[..., None].contiguous(), requires_grad=old.requires_grad)
        return list(self.parameters())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Resize first when the checkpoint was saved at another resolution (the children load after).
        saved = state_dict.get(prefix + "resolution")
        if saved is not None and tuple(int(r) for r in saved.tolist()) != self.base_resolution:
            self.resize(tuple(int(r) for r in saved.tolist()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _tensors(self, which: Literal["density", "appearance", "all"]) -> Iterator[tuple[Tensor, bool]]:
        if which not in ("density", "appearance", "all"):
            raise ValueError(f"which must be 'density', 'appearance' or 'all', got {which!r}")
        if which in ("density", "all"):
            yield from ((p, True) for p in self.density_planes)
            yield from ((p, False) for p in self.density_lines)
        if which in ("appearance", "all"):
            yield from ((p, True) for p in self.appearance_planes)
            yield from ((p, False) for p in self.appearance_lines)

    def total_variation(self, which: Literal["density", "appearance", "all"] = "all") -> Tensor:
        """Sum over planes and lines of the mean squared difference between neighbouring nodes.

        Planes are smoothed along both spatial axes, lines along their one axis. Scalar tensor.
        """
        total = self.density_planes[0].new_zeros(())
        for t, is_plane in self._tensors(which):
            total = total + _tv(t, (2, 3) if is_plane else (2,))
        return total

    def density_l1(self) -> Tensor:
        """Sparsity prior: sum over density planes and lines of their mean absolute value. Scalar."""
        total = self.density_planes[0].new_zeros(())
        for t, _ in self._tensors("density"):
            total = total + t.abs().mean()
        return total

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, base_resolution={self.base_resolution}, scales={self.scales}, "
            f"scale_z={self.scale_z}, level_scaling={self.level_scaling!r}, density_channels={self.density_channels}, "
            f"appearance_channels={self.appearance_channels}"
        )
