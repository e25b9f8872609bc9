"""How --method, --strategy and --replicas spread one model over the processes: whether a job's
process count suits them, what --strategy implies for the rest of the configuration, and the field as
one process holds it. Each strategy answers for itself (:mod:`.strategies`); these are the questions
as the commands ask them of a configuration.
"""

from __future__ import annotations

from torch import Tensor

from nerfxl.parallel.distributed import DistContext

from .config import TrainConfig
from .strategies import strategy_of


def replicas_of(config: TrainConfig, world_size: int) -> int:
    """How many data-parallel replicas of the model the ``world_size`` processes form (--method ddp:
    one per process; otherwise --replicas, which must divide D)."""
    return strategy_of(config).replicas(config, world_size)


def model_processes(config: TrainConfig, world_size: int) -> int:
    """M, the processes one replica of the model is spread over (D / replicas)."""
    return world_size // replicas_of(config, world_size)


def check_processes(config: TrainConfig, world_size: int) -> None:
    """--partitions, --devices and --blocks suit --method and --strategy (a one-line ConfigError
    otherwise); call it on a config that went through :func:`resolve_strategy`, with ``world_size`` the
    processes of one model replica (:func:`model_processes`)."""
    strategy_of(config).check(config, world_size)


def resolve_strategy(config: TrainConfig, world_size: int, scene_box: Tensor | None = None) -> TrainConfig:
    """Fill in what --strategy implies: branch = --blocks uniform blocks (K = NX·NY, sample exchange);
    plane = a --blocks split with one sub-plane per process (default from D and the scene's shape)."""
    return strategy_of(config).resolve(config, world_size, scene_box)


def split_field(field_module, config: TrainConfig, ctx: DistContext):
    """The freshly built (whole) field as this process holds it under --strategy plane / channel."""
    return strategy_of(config).split_field(field_module, config, ctx)
