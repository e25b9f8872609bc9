"""Training on one device: it learns, it checkpoints, it resumes on the same curve, it fails clearly."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from nerfxl.checkpoint import latest_checkpoint, list_checkpoints
from nerfxl.errors import CheckpointError, ConfigError, NerfxlError
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.run.config import TrainConfig
from nerfxl.run.load import load_run_config
from nerfxl.train import train
from nerfxl.trainer import Trainer


def tiny_config(data: Path, output: Path, **overrides) -> TrainConfig:
    base = TRAIN_PRESETS["tiny"][1]
    cfg = dataclasses.replace(base, data=data, output=output, progress=False, downscale=2.0, batch_rays=512)
    return dataclasses.replace(cfg, **overrides)


def test_tiny_training_raises_psnr(tiny_city, tmp_path):
    cfg = tiny_config(tiny_city, tmp_path, steps=120, checkpoint_every=1000)
    trainer = Trainer(cfg, tmp_path / "run")
    first = [trainer.train_step(s)["psnr"] for s in range(5)]
    for s in range(5, 115):
        trainer.train_step(s)
    last = [trainer.train_step(s)["psnr"] for s in range(115, 120)]
    assert sum(last) / 5 > sum(first) / 5 + 3.0, (first, last)


def test_resume_continues_the_same_loss_curve(tiny_city, tmp_path):
    steps = 12
    tiny = TRAIN_PRESETS["tiny"][1]
    # density_shift 0: a visible fog from the start, so alpha pruning (from step 3) keeps samples and
    # the resumed steps train the tiles, not only the sky.
    cfg = tiny_config(tiny_city, tmp_path, steps=steps, checkpoint_every=6,
                      field=dataclasses.replace(tiny.field, density_shift=0.0),
                      render=dataclasses.replace(tiny.render, occupancy_update_every=4, occupancy_warmup_steps=4,
                                                 prune_alpha_after=3))
    straight = Trainer(cfg, tmp_path / "straight")
    losses_straight = [straight.train_step(s)["loss"] for s in range(steps)]

    first = Trainer(cfg, tmp_path / "resumed")
    losses_first = []
    for s in range(6):
        losses_first.append(first.train_step(s)["loss"])
        first.step = s + 1
    first.save()
    second = Trainer(cfg, tmp_path / "resumed")
    second.load(latest_checkpoint(tmp_path / "resumed"))
    assert second.step == 6
    stats_second = [second.train_step(s) for s in range(6, steps)]
    assert min(st["samples"] for st in stats_second) > 0
    losses_second = [st["loss"] for st in stats_second]
    torch.testing.assert_close(torch.tensor(losses_first + losses_second), torch.tensor(losses_straight), rtol=1e-5, atol=1e-6)
    for (n1, p1), (n2, p2) in zip(straight.renderer.state_dict().items(), second.renderer.state_dict().items()):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6, msg=n1)


def test_train_command_writes_run_and_resumes(tiny_city, tmp_path):
    cfg = tiny_config(tiny_city, tmp_path / "out", steps=8, checkpoint_every=4, name="t")
    run = train(cfg)
    assert (run / "config.yaml").is_file()
    assert [p.name for p in list_checkpoints(run)] == ["step-00000004", "step-00000008"]
    ckpt = latest_checkpoint(run)
    assert (ckpt / "tile-000.safetensors").is_file() and (ckpt / "shared.safetensors").is_file()
    assert load_run_config(run).steps == 8
    run2 = train(dataclasses.replace(cfg, resume=run), steps_override=10)
    assert run2 == run
    assert latest_checkpoint(run).name == "step-00000010"


def test_missing_data_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        train(tiny_config(tmp_path / "nope", tmp_path))


def test_resume_from_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match="not a nerfxl run"):
        train(TrainConfig(resume=tmp_path))


def test_config_that_does_not_match_the_checkpoint(tiny_city, tmp_path):
    cfg = tiny_config(tiny_city, tmp_path, steps=2)
    t = Trainer(cfg, tmp_path / "a")
    t.step = 2
    ckpt = t.save()
    other = dataclasses.replace(cfg, field=dataclasses.replace(
        cfg.field, grid=dataclasses.replace(cfg.field.grid, density_channels=cfg.field.grid.density_channels + 1)))
    t2 = Trainer(other, tmp_path / "b")
    with pytest.raises(CheckpointError) as e:
        t2.load(ckpt)
    message = str(e.value)
    assert "tile-000" in message and "in the checkpoint but" in message and "\n" not in message


def test_nan_loss_stops_with_last_checkpoint_intact(tiny_city, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_city, tmp_path / "out", steps=6, checkpoint_every=2, name="nan")
    import nerfxl.train as train_module

    original = train_module.Trainer.training_loss

    def poisoned(self, step):
        loss, stats = original(self, step)
        if step == 3:
            loss = loss * float("nan")
            stats["loss"] = math.nan
        return loss, stats

    monkeypatch.setattr(train_module.Trainer, "training_loss", poisoned)
    with pytest.raises(NerfxlError, match="loss became nan at step 3"):
        train(cfg)
    runs = list((tmp_path / "out" / "nan").iterdir())
    ckpt = latest_checkpoint(runs[0])
    assert ckpt.name == "step-00000002"
    from nerfxl.checkpoint import verify_checkpoint

    verify_checkpoint(ckpt)


def test_scene_box_override_and_format(tiny_city, tmp_path):
    from nerfxl.run.load import load_split

    cfg = tiny_config(tiny_city, tmp_path, scene_box=(-10.0, -10.0, 0.0, 10.0, 10.0, 5.0), data_format="nerfstudio")
    data = load_split(cfg, "train")
    torch.testing.assert_close(data.scene_box, torch.tensor([[-10.0, -10.0, 0.0], [10.0, 10.0, 5.0]]))
    with pytest.raises(ConfigError, match="scene-box"):
        load_split(dataclasses.replace(cfg, scene_box=(0.0, 0.0, 0.0, -1.0, 1.0, 1.0)), "train")


def test_a_given_tile_plan_is_used_and_a_wrong_one_leaves_nothing_behind(tiny_city, tmp_path):
    from nerfxl.data.load import load_dataset
    from nerfxl.partition.plan import TilePlan, plan_tiles

    plan = plan_tiles(load_dataset(tiny_city, "train"), 2, "uniform")
    plan.save(tmp_path / "plan.json")
    with pytest.raises(ConfigError, match="the plan has 2 tiles but --partitions is 3"):
        train(tiny_config(tiny_city, tmp_path / "bad", steps=2, partitions=3, tile_plan=tmp_path / "plan.json"))
    assert not (tmp_path / "bad").exists()
    run = train(tiny_config(tiny_city, tmp_path / "out", steps=2, partitions=2, tile_plan=tmp_path / "plan.json"))
    assert torch.equal(TilePlan.load(run / "tiles.json").boxes, plan.boxes)


def test_a_step_in_which_every_sample_is_pruned_trains_nothing_and_goes_on(tiny_city, tmp_path):
    """A tile without samples is not evaluated; with no background model either, the loss has no
    gradient at all. The step must then leave every parameter as it was, not fail."""
    config = tiny_config(tiny_city, tmp_path, steps=3)
    config = dataclasses.replace(
        config, field=dataclasses.replace(config.field, background="white"),
        render=dataclasses.replace(config.render, prune_alpha_threshold=0.999, prune_alpha_after=0))
    trainer = Trainer(config, tmp_path / "run")
    before = {n: p.detach().clone() for n, p in trainer.renderer.field.named_parameters()}
    stats = trainer.train_step(1)
    assert stats["samples"] == 0 and math.isfinite(stats["loss"])
    assert all(torch.equal(p, before[n]) for n, p in trainer.renderer.field.named_parameters())
