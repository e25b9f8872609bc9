"""LandMark's plane parallel (``--strategy plane``, docs/landmark.md): one ground plane (--partitions 1)
cut into ``--blocks NXxNY`` sub-planes, one window per process (:mod:`nerfxl.parallel.plane_parallel`)."""

from __future__ import annotations

import dataclasses

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_line import level_resolutions
from nerfxl.fields.grid_plane_window import PlaneSplit, merge_grid_states
from nerfxl.parallel.plane_parallel import PlaneParallelField, check_plane_split
from nerfxl.partition.uniform import grid_shape_for

from ..config import upsample_resolutions
from .joint import JointStrategy


class Plane(JointStrategy):
    name = "plane"
    part_kind = "window"

    def resolve(self, config, world_size, scene_box=None):
        """A --blocks split with one sub-plane per process (default: from D and the scene's shape)."""
        if config.blocks is None:
            if scene_box is None:
                return config
            nx, ny, _ = grid_shape_for(world_size, scene_box)
            return dataclasses.replace(config, blocks=f"{nx}x{ny}")
        return dataclasses.replace(config, blocks=str(PlaneSplit.parse(config.blocks)))

    def checkable_before_the_scene(self, config):
        return config.blocks is not None  # the default split follows the scene's shape

    def check_split(self, config, world_size):
        g = config.field.grid
        if g.mode != "ground":
            raise ConfigError("--strategy plane cuts one ground plane: use --field.grid.mode ground")
        split = PlaneSplit.parse(config.blocks)
        check_plane_split(split, world_size)
        for base in [g.base_resolution, *upsample_resolutions(config)]:
            split.check_resolutions(level_resolutions(base, g.scales, g.scale_z, g.level_scaling))

    def split_field(self, field_module, config, ctx):
        return PlaneParallelField(field_module, PlaneSplit.parse(config.blocks), ctx)

    def merge_parts(self, parts, saved, where):
        return merge_grid_states(parts, PlaneSplit.parse(saved["blocks"]), where)

    def block_split(self, saved):
        return PlaneSplit.parse(saved["blocks"]) if saved.get("blocks") else None

    def fetch_blocks(self, saved, blocks, where):
        split = PlaneSplit.parse(saved["blocks"])
        if blocks is not None and PlaneSplit.parse(blocks) != split:
            raise ConfigError(f"{where}: the run is cut into {split} blocks, not {PlaneSplit.parse(blocks)}; "
                              f"`nerfxl merge` it first to cut it another way")
        return split, self.shard_name(0, 0), True
