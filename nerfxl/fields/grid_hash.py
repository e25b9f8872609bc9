"""Instant-NGP multiresolution hash encoding in pure PyTorch.

Level ``l`` (0 = coarsest) has ``R_l = floor(base_resolution * b**l)`` cells per axis, with the
growth factor ``b = exp((ln max_resolution - ln base_resolution) / (n_levels - 1))``, so its
lattice has ``V_l = R_l + 1`` vertices per axis over [-1, 1]. A level whose ``V_l**3`` vertices fit
in the table (``2**log2_hashmap_size`` entries) is indexed densely (``i + V j + V² k``, one table
entry per vertex, table sized ``V_l**3``); finer levels use the spatial hash
``(i·1) xor (j·2654435761) xor (k·805459861)  mod T``. Features of the 8 surrounding vertices
are blended trilinearly, which is differentiable w.r.t. the table (and the positions).

All levels live in one flat parameter ``table`` [Σ_l size_l, F]; level ``l`` occupies rows
``offsets[l] : offsets[l] + size_l``. The lookup is vectorised over levels (one gather per
cube corner), which keeps it reasonably fast on a CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_PRIMES = (1, 2654435761, 805459861)


class HashGrid(nn.Module):
    """Multiresolution hash grid over the normalised cube [-1, 1]^3.

    Args:
        n_levels: number of resolution levels L.
        features_per_level: features F stored per table entry.
        log2_hashmap_size: log2 of the maximum table size T per level.
        base_resolution: cells per axis at the coarsest level.
        max_resolution: cells per axis at the finest level.
        init_scale: entries start uniform in [-init_scale, init_scale] (Instant-NGP: 1e-4).

    Shapes: ``forward(x [N, 3]) -> [N, L * F]`` (level 0's F features first).
    """

    def __init__(
        self,
        n_levels: int = 16,
        features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        init_scale: float = 1e-4,
    ):
        super().__init__()
        if n_levels < 1 or features_per_level < 1:
            raise ValueError("n_levels and features_per_level must be ≥ 1")
        if base_resolution < 1 or max_resolution < base_resolution:
            raise ValueError(f"need 1 ≤ base_resolution ≤ max_resolution, got {base_resolution}, {max_resolution}")
        if not 4 <= log2_hashmap_size <= 30:
            raise ValueError(f"log2_hashmap_size must be in [4, 30], got {log2_hashmap_size}")
        self.n_levels = int(n_levels)
        self.features_per_level = int(features_per_level)
        self.log2_hashmap_size = int(log2_hashmap_size)
        self.base_resolution = int(base_resolution)
        self.max_resolution = int(max_resolution)
        table_size = 2**self.log2_hashmap_size
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1)) if n_levels > 1 else 1.0
        self.growth_factor = growth
        self.resolutions = [int(math.floor(base_resolution * growth**level + 1e-6)) for level in range(n_levels)]
        vertices = [r + 1 for r in self.resolutions]
        dense = [v**3 <= table_size for v in vertices]
        # Resolutions grow with the level, so the dense levels are a prefix.
        self.n_dense_levels = sum(dense)
        assert all(dense[: self.n_dense_levels]) and not any(dense[self.n_dense_levels :])
        self.level_sizes = [v**3 if d else table_size for v, d in zip(vertices, dense)]
        offsets = [0]
        for size in self.level_sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.table = nn.Parameter(torch.empty(sum(self.level_sizes), self.features_per_level).uniform_(-init_scale, init_scale))
        # Lookup constants; not saved (they follow from the arguments) but moved with .to(device).
        self.register_buffer("_res", torch.tensor(self.resolutions, dtype=torch.float32), persistent=False)
        self.register_buffer("_max_cell", torch.tensor(self.resolutions, dtype=torch.int64) - 1, persistent=False)
        self.register_buffer("_vertices", torch.tensor(vertices, dtype=torch.int64), persistent=False)
        self.register_buffer("_offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        # Per-axis index multipliers [L, 3]: (1, V, V²) for dense levels, the hash primes otherwise.
        mult = torch.tensor([[1, v, v * v] if d else list(_PRIMES) for v, d in zip(vertices, dense)], dtype=torch.int64)
        self.register_buffer("_mult", mult, persistent=False)

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.features_per_level

    def corner_indices_and_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Table rows and trilinear weights of the 8 lattice corners around each point, per level.

        Args:
            x: [N, 3] points in [-1, 1] (clamped).

        Returns:
            indices [N, L, 8] int64 rows of ``table`` (offsets included) and weights [N, L, 8]
            (sum to 1 over the corners; differentiable w.r.t. ``x``). Corner ``b`` has offset
            (b & 1, b >> 1 & 1, b >> 2 & 1) along (x, y, z).
        """
        u = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
        pos = u[:, None, :] * self._res.to(u.dtype)[None, :, None]  # [N, L, 3]
        cell = torch.minimum(pos.detach().floor().long(), self._max_cell[None, :, None])
        frac = pos - cell.to(pos.dtype)  # [N, L, 3] in [0, 1]
        lo, hi = cell * self._mult, (cell + 1) * self._mult  # per-axis index terms, [N, L, 3]
        lo_w, hi_w = (1.0 - frac).unbind(-1), frac.unbind(-1)
        nd, mask = self.n_dense_levels, 2**self.log2_hashmap_size - 1
        indices, weights = [], []
        for b in range(8):
            pick = [(b >> axis) & 1 for axis in range(3)]
            t = [(hi if pick[a] else lo)[..., a] for a in range(3)]  # 3 × [N, L]
            dense = t[0][:, :nd] + t[1][:, :nd] + t[2][:, :nd]
            hashed = (t[0][:, nd:] ^ t[1][:, nd:] ^ t[2][:, nd:]) & mask
            indices.append(torch.cat([dense, hashed], dim=1))
            w = [(hi_w if pick[a] else lo_w)[a] for a in range(3)]
            weights.append(w[0] * w[1] * w[2])
        idx = torch.stack(indices, dim=-1) + self._offsets[None, :, None]
        return idx, torch.stack(weights, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Encode points.

        Args:
            x: [N, 3] (or [..., 3]) points in [-1, 1]; points outside are clamped to the cube.

        Returns:
            [N, n_levels * features_per_level] (or [..., L*F]).
        """
        lead = x.shape[:-1]
        idx, w = self.corner_indices_and_weights(x.reshape(-1, 3))
        feat = (self.table[idx] * w.to(self.table.dtype)[..., None]).sum(dim=2)  # [N, L, F]
        return feat.reshape(*lead, self.out_dim)

    def extra_repr(self) -> str:
        return (
            f"n_levels={self.n_levels}, features_per_level={self.features_per_level}, "
            f"log2_hashmap_size={self.log2_hashmap_size}, resolutions={self.resolutions[0]}..{self.resolutions[-1]}, "
            f"dense_levels={self.n_dense_levels}, table={tuple(self.table.shape)}"
        )
