"""The run layer keeps the on-disk format: a config.yaml written before nerfxl.run existed loads and
writes back the same, and shard names and the checkpoint's strategy entry are spelled as always."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from nerfxl.configio import save_config_yaml
from nerfxl.run.config import TrainConfig
from nerfxl.run.layout import TILE_PLAN_FILE, expected_shards, saved_strategy, strategy_state, tile_shard_name
from nerfxl.run.load import load_run_config

OLD_CONFIG = Path(__file__).parent / "fixtures" / "config-before-run-layer.yaml"
"""config.yaml of a plane-parallel run (2 processes, --blocks 2x1) written by nerfxl when TrainConfig
lived in nerfxl/train.py (commit af2ee0f); only its paths were shortened."""


def test_a_config_written_before_the_run_layer_loads_and_writes_back_the_same(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(OLD_CONFIG, run / "config.yaml")
    config = load_run_config(run)
    assert isinstance(config, TrainConfig)
    assert (config.strategy, config.blocks, config.devices, config.steps) == ("plane", "2x1", 2, 4)
    assert config.field.grid.base_resolution == (9, 9, 5) and config.data == Path("/data/city-tiny")

    save_config_yaml(tmp_path / "again.yaml", config)
    old = yaml.safe_load(OLD_CONFIG.read_text())
    again = yaml.safe_load((tmp_path / "again.yaml").read_text())

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    old, again = flat(old), flat(again)
    # Every key keeps its name and value; fields added since may only add keys.
    assert {k: again.get(k) for k in old} == old


def test_the_train_module_still_offers_the_config_for_user_code():
    from nerfxl.train import TrainConfig as FromTrain
    from nerfxl.train import load_run_config as from_train

    assert FromTrain is TrainConfig and from_train is load_run_config


def test_shard_names_and_strategy_entry_are_the_saved_format():
    assert TILE_PLAN_FILE == "tiles.json"
    assert tile_shard_name(3) == "tile-003"
    assert tile_shard_name(0, "plane", 1) == "tile-000-window-001"
    assert tile_shard_name(0, "channel", 2) == "tile-000-channels-002"
    assert tile_shard_name(5, "branch", 1) == "tile-005"
    # Checkpoints from before strategies existed have no entry: NeRF-XL tiles.
    assert saved_strategy({"n_tiles": 2}) == {"name": "tiles", "parts": 1, "blocks": None}
    assert expected_shards({"n_tiles": 2}) == {"shared", "tile-000", "tile-001"}
    plane = strategy_state(TrainConfig(strategy="plane", blocks="2x1"), 2)
    assert plane == {"name": "plane", "parts": 2, "blocks": "2x1"}
    assert expected_shards({"n_tiles": 1, "strategy": plane}) == {"shared", "tile-000-window-000", "tile-000-window-001"}
