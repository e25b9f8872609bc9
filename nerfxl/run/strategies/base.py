"""What every strategy answers: the few questions the trainer, the renderer and the run format ask about
how one model is spread over the processes of a job (:class:`Strategy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_window import PlaneSplit
from nerfxl.parallel.distributed import DistContext
from nerfxl.parallel.tiles import tiles_of_rank

from ..config import TrainConfig

if TYPE_CHECKING:
    from nerfxl.data.rays import RayBundle
    from nerfxl.renderer import RenderedRays, TiledRenderer


def check_jointly_trained(config) -> None:
    """A LandMark strategy spreads one jointly trained model: --method nerfxl (one-line error)."""
    if config.method != "nerfxl":
        raise ConfigError(f"--strategy {config.strategy} spreads one jointly trained model; it needs --method nerfxl, "
                          f"not {config.method}")


class Strategy:
    """How one model is spread over the M processes of a replica (``--method``, ``--strategy``).

    The defaults are those of a model whose tiles are spread whole over the processes (one shard per
    tile); a strategy overrides what it does differently. ``replicas`` (hybrid model × data parallel) is
    not a strategy: it wraps any of them (:mod:`nerfxl.parallel.data_parallel`).
    """

    name: ClassVar[str]
    """The strategy as ``config.yaml`` (``strategy``) and a checkpoint's ``state.json`` name it."""
    joint: ClassVar[bool] = False
    """Every process holds a part of every tile and renders every ray; the field's own collectives
    combine the parts (plane, channel). False: each process holds whole tiles (one shard per tile)."""
    background_on_every_process: ClassVar[bool] = False
    """The background colour's gradient is kept on every process of the model (channel parallel: each
    holds its own slice of the appearance), not only on its rank 0."""

    # ----------------------------------------------------------------- configuration
    def resolve(self, config: TrainConfig, world_size: int, scene_box: Tensor | None = None) -> TrainConfig:
        """``config`` with what the strategy implies filled in (for ``world_size`` model processes;
        ``scene_box``, when known, for defaults that depend on the scene's shape)."""
        if config.blocks is not None:
            raise ConfigError(f"--blocks is for --strategy branch or plane, not {config.strategy}")
        return config

    def checkable_before_the_scene(self, config: TrainConfig) -> bool:
        """Whether :meth:`check` can run on a config resolved without the scene box."""
        return True

    def check(self, config: TrainConfig, world_size: int) -> None:
        """--partitions, --devices and --blocks suit the strategy on ``world_size`` model processes (one
        replica's); a one-line ConfigError otherwise. ``config`` went through :meth:`resolve`."""
        raise NotImplementedError

    def replicas(self, config: TrainConfig, world_size: int) -> int:
        """How many data-parallel replicas of the model ``world_size`` processes form (--replicas)."""
        if config.replicas < 1 or world_size % config.replicas:
            raise ConfigError(f"--replicas {config.replicas} does not split --devices {world_size} into equal "
                              f"model-parallel groups (choose a divisor of {world_size})")
        return config.replicas

    def plan_grid_shape(self, config: TrainConfig) -> tuple[int, int, int] | None:
        """The block grid the tile plan must follow (None: the plan's own split)."""
        return None

    # ----------------------------------------------------------------- the field on a process
    def tile_ids(self, n_tiles: int, world_size: int, rank: int) -> list[int]:
        """The tiles process ``rank`` of ``world_size`` holds (whole or its part of them)."""
        return tiles_of_rank(n_tiles, world_size, rank)

    def split_field(self, field_module, config: TrainConfig, ctx: DistContext | None):
        """The freshly built field (of :meth:`tile_ids`' tiles) as this process holds it."""
        return field_module

    # ----------------------------------------------------------------- a training step
    def render(self, renderer: TiledRenderer, rays: RayBundle, ctx: DistContext, config: TrainConfig, stratified: bool,
               generators, background: Tensor | None) -> RenderedRays:
        """Render the model's rays of a training batch, identical on every process of the model."""
        raise NotImplementedError

    def reduce_gradients(self, field_module, ctx: DistContext) -> None:
        """After ``backward``: make every process's gradients those of the whole model's loss."""
        raise NotImplementedError

    # ----------------------------------------------------------------- checkpoints
    def parts(self, world_size: int) -> int:
        """Shards per tile in a checkpoint written by ``world_size`` model processes."""
        return 1

    def shard_name(self, k: int, rank: int = 0) -> str:
        """The checkpoint shard of tile k (of process ``rank``'s part of it, when tiles are cut)."""
        return f"tile-{int(k):03d}"

    def shard_names(self, n_tiles: int, parts: int) -> list[str]:
        """Every tile shard a checkpoint of ``n_tiles`` tiles in ``parts`` parts holds."""
        return [self.shard_name(k) for k in range(n_tiles)]

    def merge_parts(self, parts: list[dict[str, Tensor]], saved: dict, where: str) -> dict[str, Tensor]:
        """The shards of every part of tile 0 (in rank order) → the one tile's shard, exactly."""
        raise ConfigError(f"{where}: nothing to merge for strategy {self.name!r}")

    # ----------------------------------------------------------------- rendering a saved run
    def block_split(self, saved: dict) -> PlaneSplit | None:
        """The blocks a saved run is cut into (``saved``: its checkpoint's ``strategy`` entry), if any."""
        return None

    def fetch_blocks(self, saved: dict, blocks: str | None, where: str) -> tuple[PlaneSplit, str, bool]:
        """How a one-tile run is cut into blocks for dynamic fetching: (the split, the shard whose header
        gives the plane shapes, whether that shard is one block)."""
        raise ConfigError(f"{where}: a {self.name}-parallel run; `nerfxl merge` it first")
