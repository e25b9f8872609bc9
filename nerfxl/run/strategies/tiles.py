"""NeRF-XL's strategy (``--strategy tiles``, the default): K tiles spread whole over the D processes,
K/D each; every process renders its tiles' segments of the same rays and exchanges per-ray blocks
(:mod:`nerfxl.parallel.partition_based`) or, with ``--exchange sample``, per-sample values
(:mod:`nerfxl.parallel.sample_based`); the shared modules' gradients are SUM-all-reduced."""

from __future__ import annotations

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_window import PlaneSplit
from nerfxl.parallel.distributed import all_reduce_gradients
from nerfxl.parallel.partition_based import render_partition_based
from nerfxl.parallel.sample_based import render_sample_based
from nerfxl.parallel.tiles import check_tiles_per_process

from .base import Strategy


class Tiles(Strategy):
    name = "tiles"

    def check(self, config, world_size):
        check_tiles_per_process(config.partitions, world_size)

    def render(self, renderer, rays, ctx, config, stratified, generators, background):
        exchange = render_sample_based if config.exchange == "sample" else render_partition_based
        return exchange(renderer, rays, ctx, stratified=stratified, generators=generators, background=background)

    def reduce_gradients(self, field_module, ctx):
        all_reduce_gradients(list(field_module.shared_parameters()), ctx, op="sum")

    def fetch_blocks(self, saved, blocks, where):
        if blocks is None:
            raise ConfigError(f"{where}: pass --blocks NXxNY to cut the model into blocks for fetching")
        return PlaneSplit.parse(blocks), self.shard_name(0), False
