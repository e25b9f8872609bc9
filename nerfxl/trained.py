"""Loading a trained model back from a run folder (for eval, render and resume)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from nerfxl.checkpoint import latest_checkpoint, load_checkpoint
from nerfxl.data.boxes import union_box
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import CheckpointError
from nerfxl.fields.config import build_radiance_field
from nerfxl.parallel.distributed import DistContext
from nerfxl.parallel.tiles import tiles_of_rank
from nerfxl.renderer import TiledRenderer
from nerfxl.train import (
    JOINT_STRATEGIES,
    TrainConfig,
    check_processes,
    load_field_state,
    load_run_config,
    resolve_device,
    resolve_strategy,
    saved_strategy,
    split_field,
    tile_shard_name,
)


@dataclass
class TrainedRun:
    """A run's configuration and its renderer restored from a checkpoint (in eval mode)."""

    run_dir: Path
    config: TrainConfig
    renderer: TiledRenderer
    transform: SceneTransform
    step: int
    checkpoint: Path


def run_checkpoint(run_dir: Path, checkpoint: Path | None = None) -> tuple[TrainConfig, Path, dict]:
    """A run's configuration, its checkpoint (default: the latest complete one) and that
    checkpoint's state.json, with one-line errors for a folder that is not a run or has none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    if (run_dir / "baseline.json").is_file() and not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: an independent baseline (baseline.json): `nerfxl eval` scores it; its models "
                              f"are run folders under {run_dir / 'models'}")
    config = load_run_config(run_dir)
    ckpt = checkpoint or latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir}: the run has no complete checkpoint yet")
    state = load_checkpoint(ckpt, shard_names=[], verify=False)[1]
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{Path(ckpt) / 'state.json'}: lacks {', '.join(missing)}")
    return config, Path(ckpt), state


STATE_KEYS = ("step", "n_tiles", "tile_boxes", "scene_transform", "n_train_images")
"""What every checkpoint's state.json holds (a run is loaded from them)."""


def load_trained(run_dir: Path, device: str = "auto", checkpoint: Path | None = None,
                 ctx: DistContext | None = None,
                 prepare_field: Callable[[nn.Module], None] | None = None) -> TrainedRun:
    """Restore a run's renderer: all K tiles, or with ``ctx`` this process's K/D of them (any D
    that divides K, whatever D trained the run). With ``ctx`` the renderer goes to ``ctx.device``.
    ``prepare_field`` modifies the freshly built field before the checkpoint is loaded into it (e.g.
    a baseline's grid contraction, whose tensors the checkpoint holds)."""
    config, ckpt, state = run_checkpoint(run_dir, checkpoint)
    boxes = torch.tensor(state["tile_boxes"], dtype=torch.float32)
    scene_box = union_box(boxes)
    if saved_strategy(state)["name"] in JOINT_STRATEGIES:
        renderer = _load_parts(config, ckpt, state, boxes, scene_box, ctx)
    else:
        world, rank = (1, 0) if ctx is None else (ctx.world_size, ctx.rank)
        tile_ids = tiles_of_rank(int(state["n_tiles"]), world, rank)
        shards, state = load_checkpoint(ckpt, shard_names=["shared", *[tile_shard_name(k) for k in tile_ids]])
        field_module = build_radiance_field(config.field, boxes, n_images=int(state["n_train_images"]), tile_ids=tile_ids)
        if prepare_field is not None:
            prepare_field(field_module)
        renderer = TiledRenderer(field_module, scene_box, config.render)
        load_field_state(renderer, shards, state, ckpt)
    renderer = renderer.to(resolve_device(device) if ctx is None else ctx.device).eval()
    return TrainedRun(Path(run_dir), config, renderer, SceneTransform.from_dict(state["scene_transform"]), int(state["step"]), ckpt)


def _load_parts(config: TrainConfig, ckpt: Path, state: dict, boxes: Tensor, scene_box: Tensor,
                ctx: DistContext | None) -> TiledRenderer:
    """A plane- or channel-parallel run's renderer: on as many processes as it was trained on, each
    reads its own part; on any other number, every process reads all parts, merges them (exact) and,
    with several processes, cuts the model again for this group (plane: the default layout for D)."""
    from nerfxl.merge import read_merged_tile

    world, rank = (1, 0) if ctx is None else (ctx.world_size, ctx.rank)
    strategy = saved_strategy(state)
    field_module = build_radiance_field(config.field, boxes, n_images=int(state["n_train_images"]), tile_ids=[0])
    if world == int(strategy["parts"]):
        field_module = split_field(field_module, dataclasses.replace(config, blocks=strategy.get("blocks")), ctx)
        name = tile_shard_name(0, strategy["name"], rank)
        shards, state = load_checkpoint(ckpt, shard_names=["shared", name])
        renderer = TiledRenderer(field_module, scene_box, config.render)
        load_field_state(renderer, shards, state, ckpt, {0: name})
        return renderer
    shards, state = load_checkpoint(ckpt, shard_names=["shared"])
    shards[tile_shard_name(0)] = read_merged_tile(ckpt, strategy)
    renderer = TiledRenderer(field_module, scene_box, config.render)
    load_field_state(renderer, shards, state, ckpt)
    if world > 1:
        regrouped = resolve_strategy(dataclasses.replace(config, blocks=None), world, scene_box)
        check_processes(regrouped, world)
        renderer.field = split_field(renderer.field, regrouped, ctx)
    return renderer
