"""The data-parallel baseline (``--method ddp``, PyTorch DDP semantics): one model (--partitions 1) on
every process, each a replica rendering its own rays; the gradients are averaged over the replicas
(:mod:`nerfxl.parallel.data_parallel`). Its checkpoints are those of a one-tile ``tiles`` run."""

from __future__ import annotations

from nerfxl.errors import ConfigError
from nerfxl.parallel.data_parallel import check_replicated

from .base import check_jointly_trained
from .tiles import Tiles


class DataParallel(Tiles):
    def __init__(self, of):
        self.of = of  # the --strategy given with --method ddp (only tiles suits it; check says so)

    @property
    def name(self):  # what config.yaml and state.json record: "tiles", a one-tile run
        return self.of.name

    def resolve(self, config, world_size, scene_box=None):
        return self.of.resolve(config, world_size, scene_box)

    def checkable_before_the_scene(self, config):
        return self.of.checkable_before_the_scene(config)

    def check(self, config, world_size):
        if type(self.of) is not Tiles:  # ddp replicates one model: --strategy tiles only
            check_jointly_trained(config)
        check_replicated(config.partitions, world_size)

    def replicas(self, config, world_size):
        """Every process is a replica (one-process model)."""
        if config.replicas not in (1, world_size):
            raise ConfigError(f"--method ddp makes every one of the {world_size} processes a replica; "
                              f"--replicas {config.replicas} does not apply")
        return world_size

    def parts(self, world_size):
        return self.of.parts(world_size)

    def shard_name(self, k, rank=0):
        return self.of.shard_name(k, rank)

    def render(self, renderer, rays, ctx, config, stratified, generators, background):
        return renderer(rays, stratified, generators, background)  # its own rays through the whole model
