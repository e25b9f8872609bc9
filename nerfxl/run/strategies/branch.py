"""LandMark's branch parallel (``--strategy branch``, docs/landmark.md): a uniform ``--blocks NXxNY``
grid of ground blocks, each its own tile, trained like NeRF-XL's tiles (K/D blocks per process) with
the sample exchange."""

from __future__ import annotations

import dataclasses

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_window import PlaneSplit
from nerfxl.parallel.tiles import check_tiles_per_process
from nerfxl.partition.uniform import grid_shape_for

from .base import Strategy, check_jointly_trained
from .tiles import Tiles


class Branch(Tiles):
    name = "branch"

    def resolve(self, config, world_size, scene_box=None):
        """--blocks NXxNY uniform blocks: K = NX·NY, a uniform plan, the sample exchange."""
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

    def check(self, config, world_size):
        check_jointly_trained(config)
        check_tiles_per_process(config.partitions, world_size, tiles=f"the {config.partitions} branch blocks")

    def plan_grid_shape(self, config):
        split = PlaneSplit.parse(config.blocks)
        return (split.nx, split.ny, 1)

    fetch_blocks = Strategy.fetch_blocks  # a one-block branch run is not cut again
