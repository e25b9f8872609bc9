"""What LandMark's plane and channel parallel share: every process holds its part of the one tile's
plane-line grid, renders every ray, and the field's own collectives combine the parts; a checkpoint
holds one shard per part."""

from __future__ import annotations

from nerfxl.errors import ConfigError

from .base import Strategy, check_jointly_trained


class JointStrategy(Strategy):
    joint = True
    part_kind: str
    """How a part's shard is named: ``tile-000-<part_kind>-<rank>``."""

    def check(self, config, world_size):
        check_jointly_trained(config)
        if config.partitions != 1:
            raise ConfigError(f"--strategy {config.strategy} splits one model (--partitions 1), got --partitions "
                              f"{config.partitions}; for several blocks use --strategy branch")
        g = config.field.grid
        if g.type != "plane-line":
            raise ConfigError(f"--strategy {config.strategy} splits a plane-line grid, not a {g.type} grid")
        self.check_split(config, world_size)

    def check_split(self, config, world_size: int) -> None:
        """The grid can be cut into ``world_size`` parts (one-line error)."""
        raise NotImplementedError

    def tile_ids(self, n_tiles, world_size, rank):
        return [0]  # every process holds its part of the one tile

    def render(self, renderer, rays, ctx, config, stratified, generators, background):
        return renderer(rays, stratified, generators, background)

    def reduce_gradients(self, field_module, ctx):
        field_module.sync_gradients()

    def parts(self, world_size):
        return world_size

    def shard_name(self, k, rank=0):
        return f"tile-{int(k):03d}-{self.part_kind}-{int(rank):03d}"

    def shard_names(self, n_tiles, parts):
        return [self.shard_name(0, r) for r in range(parts)]
