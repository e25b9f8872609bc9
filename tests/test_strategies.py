"""The strategies as objects (nerfxl/run/strategies/): one per --strategy, looked up by name, with the
shard names and process rules the run format and the trainer rely on (tests/test_run_layout.py pins
the names on disk; the parallel tests pin what each strategy computes)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from nerfxl.errors import ConfigError
from nerfxl.run.config import Strategy as StrategyName
from nerfxl.run.config import TrainConfig
from nerfxl.run.layout import JOINT_STRATEGIES, expected_shards, strategy_state
from nerfxl.run.strategies import STRATEGIES, strategy_named, strategy_of
from nerfxl.run.strategies.ddp import DataParallel


def test_every_strategy_name_has_its_object():
    assert list(STRATEGIES) == list(typing.get_args(StrategyName)) == ["tiles", "branch", "plane", "channel"]
    assert all(strategy_named(name).name == name for name in STRATEGIES)
    assert JOINT_STRATEGIES == ("plane", "channel")
    with pytest.raises(ConfigError, match="unknown strategy 'rows'"):
        strategy_named("rows")


def test_shard_names_per_strategy():
    assert [strategy_named("tiles").shard_name(k) for k in (0, 12)] == ["tile-000", "tile-012"]
    assert strategy_named("branch").shard_name(3) == "tile-003"
    assert strategy_named("plane").shard_name(0, 2) == "tile-000-window-002"
    assert strategy_named("channel").shard_name(0, 1) == "tile-000-channels-001"
    state = {"n_tiles": 1, "strategy": {"name": "channel", "parts": 2, "blocks": None}}
    assert expected_shards(state) == {"shared", "tile-000-channels-000", "tile-000-channels-001"}


def test_tiles_a_rank_holds():
    assert strategy_named("tiles").tile_ids(4, 2, 1) == [2, 3]
    assert strategy_named("plane").tile_ids(1, 4, 3) == [0]  # its part of the one tile


def test_ddp_is_the_data_parallel_baseline_over_a_one_tile_run():
    config = dataclasses.replace(TrainConfig(), method="ddp")
    s = strategy_of(config)
    assert isinstance(s, DataParallel) and s.name == "tiles" and not s.joint
    assert s.replicas(config, 4) == 4
    assert strategy_state(config, 4) == {"name": "tiles", "parts": 1, "blocks": None}
    with pytest.raises(ConfigError, match="--partitions must be 1"):
        s.check(dataclasses.replace(config, partitions=2), 1)
    with pytest.raises(ConfigError, match="needs --method nerfxl, not ddp"):
        strategy_of(dataclasses.replace(config, strategy="branch", partitions=2)).check(
            dataclasses.replace(config, strategy="branch", partitions=2), 1)
