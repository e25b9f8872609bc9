"""A saved run restored into a renderer, whole or as one process's share of it (for eval, render, view,
the baselines and fetching)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from nerfxl.checkpoint import load_checkpoint
from nerfxl.data.boxes import union_box
from nerfxl.data.transform import SceneTransform
from nerfxl.fields.config import build_radiance_field
from nerfxl.parallel.distributed import DistContext, resolve_device
from nerfxl.renderer import TiledRenderer

from .config import TrainConfig
from .layout import checkpoint_strategy, saved_strategy, tile_shard_name
from .load import run_checkpoint
from .parts import read_merged_tile
from .state import load_field_state
from .strategy import check_processes, resolve_strategy, split_field


@dataclass
class TrainedRun:
    """A run's configuration and its renderer restored from a checkpoint (in eval mode)."""

    run_dir: Path
    config: TrainConfig
    renderer: TiledRenderer
    transform: SceneTransform
    step: int
    checkpoint: Path


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
    strategy = checkpoint_strategy(state)
    if strategy.joint:
        renderer = _load_parts(config, ckpt, state, boxes, scene_box, ctx)
    else:
        world, rank = (1, 0) if ctx is None else (ctx.world_size, ctx.rank)
        tile_ids = strategy.tile_ids(int(state["n_tiles"]), world, rank)
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
    world, rank = (1, 0) if ctx is None else (ctx.world_size, ctx.rank)
    strategy = saved_strategy(state)
    field_module = build_radiance_field(config.field, boxes, n_images=int(state["n_train_images"]), tile_ids=[0])
    if world == int(strategy["parts"]):
        field_module = split_field(field_module, dataclasses.replace(config, blocks=strategy.get("blocks")), ctx)
        name = checkpoint_strategy(state).shard_name(0, rank)
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
