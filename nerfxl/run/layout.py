"""Where a run's pieces live and what they are called: the run folder (``OUTPUT/NAME/TIMESTAMP``),
the tile plan file, the checkpoint shard of each tile or part of a tile, and the ``strategy`` entry of
a checkpoint's ``state.json`` that says how its tiles are cut into shards.

These names are the on-disk format: checkpoints written by any earlier version use them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from nerfxl.errors import CheckpointError

from .config import Strategy, TrainConfig
from .strategies import STRATEGIES, strategy_named, strategy_of

TILE_PLAN_FILE = "tiles.json"
JOINT_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.joint)
"""("plane", "channel"): every process holds a part of every tile and renders every ray (kept for code
written against it; ask a strategy's ``joint`` instead)."""


def new_run_dir(config: TrainConfig, data_path: Path) -> Path:
    """A new run's folder, ``OUTPUT/NAME/TIMESTAMP`` (``-1``, ``-2``, ... appended while the name is taken)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    run = Path(config.output) / run_name(config, data_path) / stamp
    i = 1
    while run.exists():
        run = run.with_name(f"{stamp}-{i}")
        i += 1
    return run


def run_name(config: TrainConfig, data_path: Path) -> str:
    """The NAME of a run's folder: --name, else the dataset folder's name."""
    if config.name:
        return config.name
    p = data_path if data_path.is_dir() else data_path.parent
    return p.name or "run"


def tile_shard_name(k: int, strategy: Strategy = "tiles", rank: int = 0) -> str:
    """Checkpoint shard of tile k; with plane/channel parallel, of process ``rank``'s part of it."""
    return strategy_named(strategy).shard_name(k, rank)


def strategy_state(config: TrainConfig, world_size: int) -> dict:
    """How a checkpoint's tiles are cut into shards (state.json's ``strategy``)."""
    return {"name": config.strategy, "parts": strategy_of(config).parts(world_size), "blocks": config.blocks}


def saved_strategy(state: dict) -> dict:
    """A checkpoint's ``strategy`` entry (checkpoints from before strategies existed: NeRF-XL tiles)."""
    return state.get("strategy", {"name": "tiles", "parts": 1, "blocks": None})


def checkpoint_strategy(state: dict):
    """The :class:`~.strategies.Strategy` a checkpoint's tiles are cut by (its ``strategy`` entry's)."""
    return strategy_named(saved_strategy(state)["name"])


def expected_shards(state: dict) -> set[str]:
    """The shard names a checkpoint of ``state``'s strategy holds."""
    parts = int(saved_strategy(state)["parts"])
    return {"shared", *checkpoint_strategy(state).shard_names(int(state["n_tiles"]), parts)}


def check_same_split(state: dict, config: TrainConfig, world_size: int, path: Path) -> None:
    """Resuming needs the checkpoint's parts to be this job's (one-line CheckpointError otherwise)."""
    saved = saved_strategy(state)
    mine = strategy_state(config, world_size)
    if (saved["name"], saved["parts"], saved.get("blocks")) != (mine["name"], mine["parts"], mine["blocks"]):
        how = f"{saved['name']} parallel in {saved['parts']} parts" + (f" (--blocks {saved['blocks']})" if saved.get("blocks") else "")
        raise CheckpointError(f"{path}: saved by {how}; this job would hold {mine['parts']} part(s) "
                              f"({mine['name']}): resume it on {saved['parts']} processes, or `nerfxl merge` it first")
