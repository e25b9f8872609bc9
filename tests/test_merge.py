"""`nerfxl merge` / `nerfxl split`: a plane-parallel run ⇄ one model, exactly, as new run folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from nerfxl.checkpoint import latest_checkpoint, load_checkpoint
from nerfxl.errors import CheckpointError, ConfigError
from nerfxl.parallel.images import render_image
from nerfxl.merge import merge_run, split_run
from nerfxl.run.load import load_split
from nerfxl.run.trained import load_trained
from nerfxl.train import train

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RUN_ID")


@pytest.fixture(scope="module")
def plane_run(tiny_city, tmp_path_factory) -> Path:
    """A plane-parallel run trained on 2 processes (2x1 sub-planes)."""
    from test_landmark_strategies_config import landmark_config

    out = tmp_path_factory.mktemp("merge")
    config = dataclasses.replace(landmark_config(tiny_city, out, "plane", 2, "2x1"), steps=6, checkpoint_every=6)
    with pytest.MonkeyPatch.context() as mp:
        for name in LAUNCHER_ENV:
            mp.delenv(name, raising=False)
        return train(config)


def image(run_dir: Path) -> torch.Tensor:
    run = load_trained(run_dir, device="cpu")
    cams = run.transform.cameras(load_split(run.config, "test").cameras)
    return render_image(run.renderer, cams, 0)["rgb"]


def test_merged_run_renders_the_parts_image_and_split_merge_is_the_identity(plane_run, tmp_path):
    merged = merge_run(plane_run, tmp_path / "merged")
    # Loading the 2-part run on one process merges in memory: the same model as the merged folder.
    torch.testing.assert_close(image(merged), image(plane_run), rtol=0, atol=1e-6)
    resplit = split_run(merged, "2x1", tmp_path / "resplit")
    original, _ = load_checkpoint(latest_checkpoint(plane_run))
    again, state = load_checkpoint(latest_checkpoint(resplit))
    assert state["strategy"] == {"name": "plane", "parts": 2, "blocks": "2x1"}
    assert sorted(original) == sorted(again)
    for shard, tensors in original.items():
        assert sorted(tensors) == sorted(again[shard]), shard
        for name, t in tensors.items():  # moments included: training can continue exactly
            assert torch.equal(again[shard][name], t), f"{shard}/{name}"


def test_merge_and_split_refuse_bad_input_in_one_line(plane_run, tmp_path):
    merged = merge_run(plane_run, tmp_path / "merged")
    with pytest.raises(ConfigError, match="no parts to merge"):
        merge_run(merged)
    with pytest.raises(ConfigError, match="already exists"):
        merge_run(plane_run, merged)
    with pytest.raises(ConfigError, match=r"9 nodes along x cannot be cut into 3"):
        split_run(merged, "3x1", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="split cuts a single model"):
        split_run(plane_run, "2x1", tmp_path / "bad")
    result = run_cli("split", str(merged), "--blocks", "2by1")
    assert_one_line_error(result, "expected NXxNY")
    result = run_cli("merge", str(merged))
    assert_one_line_error(result, "no parts to merge")


def test_resuming_a_plane_run_on_another_process_count_is_refused(plane_run):
    from nerfxl.run.config import TrainConfig

    with pytest.raises((ConfigError, CheckpointError), match="`nerfxl merge`"):
        train(TrainConfig(resume=plane_run, progress=False), steps_override=8, devices_override=1)
