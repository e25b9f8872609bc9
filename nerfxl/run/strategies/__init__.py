"""The strategies: how one model is spread over the processes of a job, one module each, behind one
small interface (:class:`~.base.Strategy`) and one lookup (:func:`strategy_of` for a configuration,
:func:`strategy_named` for a checkpoint's ``strategy`` entry).

- :mod:`.tiles`: NeRF-XL, K tiles over D processes with the partition or sample exchange (default).
- :mod:`.branch`: LandMark's branch parallel, a uniform block grid trained as tiles.
- :mod:`.plane`, :mod:`.channel` (on :mod:`.joint`): LandMark's plane and channel parallel, every
  process holds its part of the one tile.
- :mod:`.ddp`: the data-parallel baseline (--method ddp).

Replicas (--replicas) wrap any of them: :mod:`nerfxl.parallel.data_parallel`. A new strategy is a
module here, an entry in :data:`STRATEGIES` and its name in :data:`nerfxl.run.config.Strategy`.
"""

from __future__ import annotations

from nerfxl.errors import ConfigError

from ..config import TrainConfig
from .base import Strategy
from .branch import Branch
from .channel import Channel
from .ddp import DataParallel
from .plane import Plane
from .tiles import Tiles

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Tiles(), Branch(), Plane(), Channel())}
"""Each ``--strategy`` by its name (the name config.yaml and state.json record)."""

__all__ = ["STRATEGIES", "Strategy", "strategy_named", "strategy_of"]


def strategy_named(name: str) -> Strategy:
    """The strategy of this name (``--strategy``, a checkpoint's ``strategy`` entry)."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})") from None


def strategy_of(config: TrainConfig) -> Strategy:
    """The strategy a run's configuration trains with (--method ddp: the data-parallel baseline)."""
    named = strategy_named(config.strategy)
    return DataParallel(named) if config.method == "ddp" else named
