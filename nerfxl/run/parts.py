"""The parts of a plane- or channel-parallel checkpoint's one tile (one shard per sub-plane window or
channel slice) merged into the whole tile, exactly (``nerfxl merge``, and loading such a run on a
number of processes other than its parts').
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from nerfxl.checkpoint import load_checkpoint

from .strategies import strategy_named


def merge_parts(parts: list[dict[str, Tensor]], strategy: dict, where: str) -> dict[str, Tensor]:
    """The tile shards of every part (in rank order) → the one tile's shard (``strategy``: the
    checkpoint's ``strategy`` entry)."""
    return strategy_named(strategy["name"]).merge_parts(parts, strategy, where)


def read_merged_tile(ckpt: Path, strategy: dict) -> dict[str, Tensor]:
    """All parts of tile 0 read from ``ckpt`` and merged (hash-verified)."""
    names = strategy_named(strategy["name"]).shard_names(1, int(strategy["parts"]))
    shards, _ = load_checkpoint(ckpt, shard_names=names)
    return merge_parts([shards[n] for n in names], strategy, str(ckpt))
