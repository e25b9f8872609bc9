"""How --method, --strategy and --replicas spread one model over the processes: whether a job's
process count suits them, what --strategy implies for the rest of the configuration, and the field as
one process holds it.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_line import level_resolutions
from nerfxl.fields.grid_plane_window import PlaneSplit
from nerfxl.parallel.channel_parallel import ChannelParallelField, check_channel_split
from nerfxl.parallel.data_parallel import check_replicated
from nerfxl.parallel.distributed import DistContext
from nerfxl.parallel.plane_parallel import PlaneParallelField, check_plane_split
from nerfxl.parallel.tiles import check_tiles_per_process
from nerfxl.partition.uniform import grid_shape_for

from .config import TrainConfig, upsample_resolutions
from .layout import JOINT_STRATEGIES


def replicas_of(config: TrainConfig, world_size: int) -> int:
    """How many data-parallel replicas of the model the ``world_size`` processes form (--method ddp:
    one per process; otherwise --replicas, which must divide D)."""
    if config.method == "ddp":
        if config.replicas not in (1, world_size):
            raise ConfigError(f"--method ddp makes every one of the {world_size} processes a replica; "
                              f"--replicas {config.replicas} does not apply")
        return world_size
    if config.replicas < 1 or world_size % config.replicas:
        raise ConfigError(f"--replicas {config.replicas} does not split --devices {world_size} into equal "
                          f"model-parallel groups (choose a divisor of {world_size})")
    return config.replicas


def model_processes(config: TrainConfig, world_size: int) -> int:
    """M, the processes one replica of the model is spread over (D / replicas)."""
    return world_size // replicas_of(config, world_size)


def check_processes(config: TrainConfig, world_size: int) -> None:
    """--partitions, --devices and --blocks suit --method and --strategy (a one-line ConfigError
    otherwise); call it on a config that went through :func:`resolve_strategy`, with ``world_size`` the
    processes of one model replica (:func:`model_processes`)."""
    if config.strategy != "tiles" and config.method != "nerfxl":
        raise ConfigError(f"--strategy {config.strategy} spreads one jointly trained model; it needs --method nerfxl, "
                          f"not {config.method}")
    if config.method == "ddp":
        check_replicated(config.partitions, world_size)
    elif config.strategy == "branch":
        check_tiles_per_process(config.partitions, world_size, tiles=f"the {config.partitions} branch blocks")
    elif config.strategy in JOINT_STRATEGIES:
        if config.partitions != 1:
            raise ConfigError(f"--strategy {config.strategy} splits one model (--partitions 1), got --partitions "
                              f"{config.partitions}; for several blocks use --strategy branch")
        g = config.field.grid
        if g.type != "plane-line":
            raise ConfigError(f"--strategy {config.strategy} splits a plane-line grid, not a {g.type} grid")
        if config.strategy == "channel":
            check_channel_split(g.density_channels, g.appearance_channels, world_size)
        else:
            if g.mode != "ground":
                raise ConfigError("--strategy plane cuts one ground plane: use --field.grid.mode ground")
            split = PlaneSplit.parse(config.blocks)
            check_plane_split(split, world_size)
            for base in [g.base_resolution, *upsample_resolutions(config)]:
                split.check_resolutions(level_resolutions(base, g.scales, g.scale_z, g.level_scaling))
    else:
        check_tiles_per_process(config.partitions, world_size)


def resolve_strategy(config: TrainConfig, world_size: int, scene_box: Tensor | None = None) -> TrainConfig:
    """Fill in what --strategy implies: branch = --blocks uniform blocks (K = NX·NY, sample exchange);
    plane = a --blocks split with one sub-plane per process (default from D and the scene's shape)."""
    if config.strategy == "branch":
        if config.blocks is None:
            if config.partitions == 1:
                raise ConfigError("--strategy branch needs --blocks NXxNY (or --partitions K)")
            if scene_box is None:
                return config
            nx, ny, _ = grid_shape_for(config.partitions, scene_box)
            config = dataclasses.replace(config, blocks=f"{nx}x{ny}")
        split = PlaneSplit.parse(config.blocks)
        if config.partitions not in (1, split.parts):
            raise ConfigError(f"--blocks {split} makes {split.parts} blocks but --partitions is {config.partitions}")
        return dataclasses.replace(config, partitions=split.parts, partition_method="uniform", exchange="sample",
                                   blocks=str(split))
    if config.strategy == "plane" and config.blocks is None:
        if scene_box is None:
            return config
        nx, ny, _ = grid_shape_for(world_size, scene_box)
        return dataclasses.replace(config, blocks=f"{nx}x{ny}")
    if config.strategy == "plane":
        return dataclasses.replace(config, blocks=str(PlaneSplit.parse(config.blocks)))
    if config.blocks is not None:
        raise ConfigError(f"--blocks is for --strategy branch or plane, not {config.strategy}")
    return config


def split_field(field_module, config: TrainConfig, ctx: DistContext):
    """The freshly built (whole) field as this process holds it under --strategy plane / channel."""
    if config.strategy == "plane":
        return PlaneParallelField(field_module, PlaneSplit.parse(config.blocks), ctx)
    if config.strategy == "channel":
        return ChannelParallelField(field_module, ctx)
    return field_module
