"""LandMark's channel parallel (landmark.md §4): every plane and line split along its channels.

Process r of D holds channels [r·C/D, (r+1)·C/D) of every plane and line (density and appearance, every
level). Every process sees the same rays and samples, samples its own channels, and the partial features
are all-gathered into the full features; the heads and the decoder are replicated and compute the same
thing everywhere, so every process computes the same loss.

Gradients: the gather's backward hands each process the gradient of its own channel slice
(:func:`nerfxl.parallel.distributed.all_gather_blocks`), and every replicated module already has the
*full* gradient (it computed the whole loss), so unlike the tile and plane strategies nothing is
all-reduced after backward — and the background stays differentiable on every process. One exception:
the sample positions feed each process's slice only, so when they carry a gradient (pose corrections)
it is summed over the processes inside backward (:func:`sum_gradient_over_processes`). The
regularisers are per channel, so each process adds its slice's share.

With D = 1 this is the plain model; tests compare D = 2 and 4 against it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_line import PlaneLineGrid
from nerfxl.fields.model import RadianceField
from nerfxl.fields.tile import TileField
from nerfxl.parallel.distributed import DistContext, all_gather_blocks, sum_gradient_over_processes


def check_channel_split(density_channels: int, appearance_channels: int, parts: int) -> None:
    """Both channel counts divide evenly over ``parts`` processes (one-line ConfigError otherwise)."""
    for what, c in (("density", density_channels), ("appearance", appearance_channels)):
        if c % parts:
            fits = [d for d in range(1, c + 1) if c % d == 0]
            raise ConfigError(f"channel parallel on {parts} processes needs the {what} channels ({c}) to be a multiple "
                              f"of {parts}; use --devices in {fits} or change --field.grid.{what}-channels")


def is_channel_tensor(name: str, t: Tensor) -> bool:
    """Whether a grid tensor (or an optimizer moment of one) is a plane or line, split by channel (an
    optimizer's step counter is not)."""
    return t.dim() == 4 and any(f"{kind}_{part}." in name for kind in ("density", "appearance")
                                for part in ("planes", "lines"))


def split_channel_state(state: dict[str, Tensor], parts: int, index: int) -> dict[str, Tensor]:
    """A grid's tensors (state dict or optimizer moments) → slice ``index`` of ``parts`` along channels."""
    out = {}
    for name, t in state.items():
        if is_channel_tensor(name, t):
            c = t.shape[1] // parts
            out[name] = t[:, index * c: (index + 1) * c].clone()
        else:
            out[name] = t.clone()
    return out


def merge_channel_states(states: Sequence[dict[str, Tensor]], where: str = "channel slices") -> dict[str, Tensor]:
    """Slices in process order → the whole grid's tensors (channels concatenated, the rest checked equal)."""
    names = list(states[0])
    for index, state in enumerate(states[1:], start=1):
        if sorted(state) != sorted(names):
            raise ConfigError(f"{where}: slice {index} holds other tensors than slice 0")
    merged = {}
    for name in names:
        pieces = [s[name] for s in states]
        if is_channel_tensor(name, pieces[0]):
            merged[name] = torch.cat(pieces, dim=1)
        else:
            for index, piece in enumerate(pieces[1:], start=1):
                if piece.shape != pieces[0].shape or not torch.equal(piece, pieces[0]):
                    raise ConfigError(f"{where}: {name} differs between slice 0 and slice {index}; "
                                      f"the slices were not trained together")
            merged[name] = pieces[0].clone()
    return merged


class ChannelShardedGrid(PlaneLineGrid):
    """This process's channel slice of a plane-line grid; its features come back full width.

    Shapes as :class:`PlaneLineGrid` (``density_dim``/``appearance_dim`` are the full widths); every
    process must evaluate the same points in the same order (one all-gather per call).
    """

    def __init__(self, full: PlaneLineGrid, ctx: DistContext):
        parts = ctx.world_size
        check_channel_split(full.density_channels, full.appearance_channels, parts)
        super().__init__(full.base_resolution, full.scales, full.density_channels // parts,
                         full.appearance_channels // parts, full.mode, full.scale_z, 0.0, full.level_scaling)
        self.ctx = ctx
        self.parts = parts
        self.load_state_dict(split_channel_state(full.state_dict(), parts, ctx.rank))

    @property
    def density_dim(self) -> int:
        return self.n_levels * self.density_channels * self.parts

    @property
    def appearance_dim(self) -> int:
        return self.n_levels * self.appearance_channels * self.parts

    def _coords(self, x: Tensor):
        # The positions feed only this slice here: their gradient (for pose corrections upstream) is
        # the sum of every slice's.
        return super()._coords(sum_gradient_over_processes(x, self.ctx))

    def _features(self, coords, planes, lines) -> Tensor:
        local = super()._features(coords, planes, lines)  # [N, levels · C/D], level-major
        n, width = local.shape
        gathered = all_gather_blocks(local.contiguous()[None], self.ctx)  # [D, N, levels · C/D]
        per_level = width // self.n_levels
        # Back to the whole grid's layout: level-major, then process r's channels at [r·C/D, (r+1)·C/D).
        return gathered.view(self.parts, n, self.n_levels, per_level).permute(1, 2, 0, 3).reshape(n, -1)

    def total_variation(self, which="all") -> Tensor:
        """This slice's share (1/D of the channels' mean terms) of the whole grid's total variation."""
        return super().total_variation(which) / self.parts

    def density_l1(self) -> Tensor:
        """This slice's share of the whole grid's density L1."""
        return super().density_l1() / self.parts

    def extra_repr(self) -> str:
        return f"channel slice {self.ctx.rank} of {self.parts}, " + super().extra_repr()


class ChannelParallelField(RadianceField):
    """A one-tile field whose grid is split by channel over the processes of ``ctx``.

    Every process holds the whole decoder, heads and background, and renders every ray.
    """

    joint_evaluation = True

    def __init__(self, field: RadianceField, ctx: DistContext):
        if field.n_tiles != 1 or not isinstance(field.tiles[0].grid, PlaneLineGrid):
            raise ConfigError("channel parallel splits one plane-line grid: use --partitions 1 and a plane-line "
                              "field (--field.grid.type plane-line)")
        tile = field.tiles[0]
        sharded = TileField(tile.box, ChannelShardedGrid(tile.grid, ctx), tile.density_head, tile.feature_head)
        super().__init__([sharded], field.decoder, field.appearance, field.pose, field.background)
        self.ctx = ctx

    def sync_gradients(self) -> None:
        """Nothing to do: each process already holds the full gradient of everything it holds."""
