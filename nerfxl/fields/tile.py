"""One tile of the scene: an axis-aligned box with its own grid, density head and feature head.

Everything in a :class:`TileField` is local to the device that owns the tile (NeRF-XL §3).
"""

from __future__ import annotations

from typing import Iterator, Literal

import torch
from torch import Tensor, nn

from .grid_hash import HashGrid
from .grid_plane_line import PlaneLineGrid
from .heads import DensityHead, FeatureHead

GridType = Literal["plane-line", "hash"]


class TileField(nn.Module):
    """Density and decoder features of the points inside one box.

    - plane-line grid: σ = density_head(density features); features = feature_head(appearance
      features) with a ``"linear"`` feature head (the appearance basis).
    - hash grid: h = feature_head(hash encoding) with an ``"mlp"`` feature head; σ =
      density_head(h's density logit) (``in_dim=1``), features = the rest of h.

    Args:
        box: [2, 3] (min corner, max corner) in world coordinates; stored as the buffer ``box``.
        grid: a :class:`PlaneLineGrid` or :class:`HashGrid` over the box's normalised cube.
        density_head: features → σ.
        feature_head: features → the decoder's fixed-width input.

    Shapes: ``density(positions [N, 3]) -> [N]``; ``forward(positions [N, 3]) -> ([N], [N, F])``.
    Positions are world coordinates; points outside the box are clamped onto its surface by the grid.
    """

    def __init__(self, box: Tensor, grid: PlaneLineGrid | HashGrid, density_head: DensityHead, feature_head: FeatureHead):
        super().__init__()
        box = torch.as_tensor(box).detach().to(torch.float32).reshape(2, 3).clone()
        if not bool((box[1] > box[0]).all()):
            raise ValueError(f"tile box needs min < max on every axis, got {box.tolist()}")
        if isinstance(grid, PlaneLineGrid):
            self.grid_type: GridType = "plane-line"
            if feature_head.outputs_density:
                raise ValueError("a plane-line tile needs a 'linear' feature head (density comes from the density channels)")
            if density_head.in_dim != grid.density_dim or feature_head.in_dim != grid.appearance_dim:
                raise ValueError("head input widths do not match the plane-line grid's density/appearance widths")
        elif isinstance(grid, HashGrid):
            self.grid_type = "hash"
            if not feature_head.outputs_density:
                raise ValueError("a hash tile needs an 'mlp' feature head (it outputs the density logit)")
            if density_head.in_dim != 1 or feature_head.in_dim != grid.out_dim:
                raise ValueError("hash tile: density head in_dim must be 1 and feature head in_dim the grid's out_dim")
        else:
            raise TypeError(f"unsupported grid {type(grid).__name__}")
        self.register_buffer("box", box)
        self.grid = grid
        self.density_head = density_head
        self.feature_head = feature_head

    @property
    def feature_dim(self) -> int:
        """Width of the features :meth:`forward` returns."""
        return self.feature_head.out_dim

    def normalize(self, positions: Tensor) -> Tensor:
        """World [..., 3] → the box's normalised cube [-1, 1]^3 (outside points map outside)."""
        box = self.box.to(positions.dtype)
        return (positions - box[0]) / (box[1] - box[0]) * 2.0 - 1.0

    def contains(self, positions: Tensor) -> Tensor:
        """[..., 3] → [...] bool, True for points in the closed box."""
        box = self.box.to(positions.dtype)
        return ((positions >= box[0]) & (positions <= box[1])).all(dim=-1)

    def density(self, positions: Tensor) -> Tensor:
        """σ [N] of world positions [N, 3] (for a plane-line grid only the density channels are read)."""
        x = self.normalize(positions)
        if self.grid_type == "plane-line":
            return self.density_head(self.grid.density_features(x))
        _, logit = self.feature_head(self.grid(x))
        return self.density_head(logit)

    @property
    def density_is_separate(self) -> bool:
        """True when σ reads grid values of its own (plane-line density channels), so σ and the decoder
        features can be evaluated on different sets of points at no extra cost; a hash tile's σ and
        features come out of one MLP."""
        return self.grid_type == "plane-line"

    def features(self, positions: Tensor) -> Tensor:
        """The decoder features [N, feature_dim] of world positions [N, 3] (a plane-line grid reads its
        appearance channels only)."""
        x = self.normalize(positions)
        if self.grid_type == "plane-line":
            return self.feature_head(self.grid.appearance_features(x))[0]
        return self.feature_head(self.grid(x))[0]

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """World positions [N, 3] → (σ [N], features [N, feature_dim])."""
        x = self.normalize(positions)
        if self.grid_type == "plane-line":
            dens, app = self.grid(x)
            features, _ = self.feature_head(app)
            return self.density_head(dens), features
        features, logit = self.feature_head(self.grid(x))
        return self.density_head(logit), features

    def total_variation(self) -> Tensor:
        """The plane-line grid's total variation (scalar); zero for a hash grid."""
        if self.grid_type == "plane-line":
            return self.grid.total_variation()
        return self.grid.table.new_zeros(())

    def density_l1(self) -> Tensor:
        """The plane-line grid's density L1 (scalar); zero for a hash grid."""
        if self.grid_type == "plane-line":
            return self.grid.density_l1()
        return self.grid.table.new_zeros(())

    def grid_parameters(self) -> Iterator[nn.Parameter]:
        """The feature grid's parameters (planes and lines, or the hash table)."""
        return self.grid.parameters()

    def mlp_parameters(self) -> Iterator[nn.Parameter]:
        """The density and feature heads' parameters."""
        yield from self.density_head.parameters()
        yield from self.feature_head.parameters()
