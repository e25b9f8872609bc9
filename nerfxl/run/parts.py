"""The parts of a plane- or channel-parallel checkpoint's one tile (one shard per sub-plane window or
channel slice) merged into the whole tile, exactly (``nerfxl merge``, and loading such a run on a
number of processes other than its parts').
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from nerfxl.checkpoint import load_checkpoint
from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_window import PlaneSplit, merge_grid_states
from nerfxl.parallel.channel_parallel import merge_channel_states

from .layout import tile_shard_name


def merge_parts(parts: list[dict[str, Tensor]], strategy: dict, where: str) -> dict[str, Tensor]:
    """The tile shards of every part (in rank order) → the one tile's shard."""
    if strategy["name"] == "plane":
        return merge_grid_states(parts, PlaneSplit.parse(strategy["blocks"]), where)
    if strategy["name"] == "channel":
        return merge_channel_states(parts, where)
    raise ConfigError(f"{where}: nothing to merge for strategy {strategy['name']!r}")


def read_merged_tile(ckpt: Path, strategy: dict) -> dict[str, Tensor]:
    """All parts of tile 0 read from ``ckpt`` and merged (hash-verified)."""
    names = [tile_shard_name(0, strategy["name"], r) for r in range(int(strategy["parts"]))]
    shards, _ = load_checkpoint(ckpt, shard_names=names)
    return merge_parts([shards[n] for n in names], strategy, str(ckpt))
