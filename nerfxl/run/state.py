"""Checkpoint tensors into modules, strictly: every name and shape must be what the configuration
builds, and a mismatch is one line naming the shard and the first difference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from nerfxl.checkpoint import without_optimizer_state
from nerfxl.errors import CheckpointError
from nerfxl.renderer import TiledRenderer

from .layout import tile_shard_name


def describe_state_mismatch(expected: dict[str, Tensor], found: dict[str, Tensor]) -> str | None:
    """One line naming what differs between a module's state and a checkpoint's, or None."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        return f"checkpoint lacks {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "") + " that the config builds"
    if extra:
        return f"checkpoint has {extra[0]}" + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else "") + " that the config does not build"
    for name, t in expected.items():
        if tuple(found[name].shape) != tuple(t.shape):
            return f"{name} is {list(found[name].shape)} in the checkpoint but {list(t.shape)} in the config"
    return None


def load_strict(module: torch.nn.Module, tensors: dict[str, Tensor], where: str) -> None:
    """Load ``tensors`` into ``module``, which must hold exactly those names and shapes (one-line error)."""
    mismatch = describe_state_mismatch(module.state_dict(), tensors)
    if mismatch:
        raise CheckpointError(f"{where}: {mismatch}")
    module.load_state_dict(tensors)


def load_shared_state(field_module, tensors: dict[str, Tensor], where) -> None:
    """Load a checkpoint's shared shard (optimizer moments skipped) into the field's shared modules,
    explaining any mismatch in one line."""
    shared = without_optimizer_state(tensors)
    shared_module_state = {k: v for k, v in field_module.state_dict().items() if not k.startswith("tiles.")}
    mismatch = describe_state_mismatch(shared_module_state, shared)
    if mismatch:
        raise CheckpointError(f"{where}: {mismatch}")
    field_module.load_state_dict({**field_module.state_dict(), **shared})


def load_field_state(renderer: TiledRenderer, shards: dict, state: dict, path: Path,
                     shard_names: dict[int, str] | None = None) -> None:
    """Load the held tiles' shards and the shared shard into ``renderer``, explaining any mismatch in one
    line. ``shard_names``: held tile k → its shard (default ``tile-k``)."""
    field_module = renderer.field
    for k in renderer.tile_ids:
        name = tile_shard_name(k) if shard_names is None else shard_names[k]
        if name not in shards:
            raise CheckpointError(f"{path}: no {name}.safetensors")
        tile = field_module.tile(k)
        res = state.get("tiles", {}).get(str(k), {}).get("grid_resolution", [])
        if res and hasattr(tile.grid, "resize") and list(tile.grid.base_resolution) != list(res):
            tile.grid.resize(tuple(res))
        tensors = without_optimizer_state(shards[name])
        tile_part = {n: v for n, v in tensors.items() if not n.startswith("occupancy.")}
        occ_part = {n[len("occupancy."):]: v for n, v in tensors.items() if n.startswith("occupancy.")}
        load_strict(tile, tile_part, f"{path}/{name}.safetensors")
        load_strict(renderer.occupancy_grid(k), occ_part, f"{path}/{name}.safetensors (occupancy)")
    load_shared_state(field_module, shards["shared"], f"{path}/shared.safetensors")


def check_tile_plan(renderer: TiledRenderer, state: dict, path: Path) -> None:
    """The checkpoint must have been trained on the same tiles as the renderer's (one-line error)."""
    if state["n_tiles"] != renderer.n_tiles:
        raise CheckpointError(f"{path}: checkpoint has {state['n_tiles']} tiles, the config builds {renderer.n_tiles} "
                              f"(--partitions)")
    saved = torch.tensor(state["tile_boxes"], dtype=torch.float32)
    mine = renderer.tile_boxes().detach().cpu().float()
    if saved.shape != mine.shape or not torch.allclose(saved, mine, atol=1e-5):
        bad = int(((saved - mine).abs().reshape(saved.shape[0], -1).amax(dim=1) > 1e-5).nonzero()[0])
        raise CheckpointError(f"{path}: checkpoint was trained on another tile plan (tile {bad}: "
                              f"{saved[bad].tolist()} there, {mine[bad].tolist()} here)")
