"""The independent-3d (Mega-NeRF style) baseline: tile samplers, training, blended rendering, eval."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from nerfxl.baselines.contraction import ContractedGrid
from nerfxl.baselines.mega_nerf import BASELINE_FILE, tile_run_dir, train_independent_3d
from nerfxl.baselines.mega_nerf_render import (
    blended_background,
    evaluate_independent_3d,
    load_blended_models,
    render_blended,
)
from nerfxl.baselines.mega_nerf_sampler import TilePixelSampler
from nerfxl.baselines.ray_selection import pixels_hitting_boxes
from nerfxl.checkpoint import latest_checkpoint, load_checkpoint
from nerfxl.data.rays import generate_image_rays
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.run.config import TrainConfig
from nerfxl.run.load import load_split


def tiny_config(data, output, **overrides) -> TrainConfig:
    base = TRAIN_PRESETS["tiny"][1]
    cfg = dataclasses.replace(base, data=data, output=output, progress=False, downscale=2.0, batch_rays=256, steps=5)
    return dataclasses.replace(cfg, **overrides)


def halves(scene_box: torch.Tensor) -> torch.Tensor:
    """[2, 2, 3]: the scene box split in two along x."""
    box = scene_box.double()
    mid = 0.5 * (box[0, 0] + box[1, 0])
    left, right = box.clone(), box.clone()
    left[1, 0] = mid
    right[0, 0] = mid
    return torch.stack([left, right])


@pytest.fixture(scope="module")
def two_tile_run(tiny_city, tmp_path_factory):
    cfg = tiny_config(tiny_city, tmp_path_factory.mktemp("out"))
    train = load_split(cfg, "train")
    run_dir = tmp_path_factory.mktemp("mega") / "run"
    record = train_independent_3d(cfg, halves(train.scene_box), run_dir, measure_steps=2, train_data=train)
    return cfg, train, run_dir, record


def test_tile_sampler_draws_selected_pixels_with_their_targets(tiny_city, tmp_path):
    train = load_split(tiny_config(tiny_city, tmp_path), "train")
    box = halves(train.scene_box)[0].float()
    selected = pixels_hitting_boxes(train.cameras, box)[0]
    sampler = TilePixelSampler(train, selected, 64, seed=3, tile=1)
    batch = sampler.sample(7)
    assert len(batch) == 64 and batch.rgb.shape == (64, 3) and batch.alpha.shape == (64,)
    again = sampler.sample(7)
    assert torch.equal(batch.pixels, again.pixels) and torch.equal(batch.image_indices, again.image_indices)
    for row, (i, (u, v)) in enumerate(zip(batch.image_indices.tolist(), batch.pixels.tolist())):
        m = selected.image_indices.tolist().index(i)
        assert selected.image_mask(m, int(train.cameras.height[i]))[v, u]
        torch.testing.assert_close(batch.rgb[row], train.images.rgb(i)[v, u].float())
    with pytest.raises(ValueError):
        TilePixelSampler(train, pixels_hitting_boxes(train.cameras, box + 1e3)[0], 8, 0, 0)


def test_training_writes_tile_runs_and_baseline_json(two_tile_run):
    cfg, train, run_dir, record = two_tile_run
    saved = json.loads((run_dir / BASELINE_FILE).read_text())
    assert saved["method"] == "independent-3d" and saved["n_tiles"] == 2 and saved["overlap"] == 0.15
    expanded = torch.tensor(saved["expanded_boxes_world"])
    tiles = torch.tensor(saved["tile_boxes_world"])
    assert bool((expanded[:, 0] <= tiles[:, 0]).all() and (expanded[:, 1] >= tiles[:, 1]).all())
    assert bool((expanded[0, 1, 0] > tiles[0, 1, 0]))  # grown across the shared face
    for k, tile in enumerate(saved["tiles"]):
        assert tile["measured_samples"] > 0
        assert 0.0 <= tile["fraction_outside_tile"] <= 1.0
        assert 0 < tile["fraction_pixels_selected"] < 1
        ckpt = latest_checkpoint(tile_run_dir(run_dir, k))
        assert ckpt is not None and ckpt.name == "step-00000005"
        shards, _ = load_checkpoint(ckpt, shard_names=["tile-000"])
        assert "grid.x_knots" in shards["tile-000"]  # trained through the contraction
    assert math.isfinite(saved["mean_fraction_outside_tile"])


def test_blended_models_load_and_evaluate_to_finite_psnr(two_tile_run):
    cfg, train, run_dir, record = two_tile_run
    models = load_blended_models(run_dir, device="cpu")
    assert len(models.renderers) == 2
    assert all(isinstance(r.field.tile(0).grid, ContractedGrid) for r in models.renderers)
    result = evaluate_independent_3d(run_dir, limit=1, device="cpu")
    assert math.isfinite(result["psnr"]) and result["n_images"] == 1
    assert json.loads((run_dir / "eval.json").read_text())["psnr"] == result["psnr"]


def test_background_is_a_convex_blend_of_the_models(two_tile_run):
    cfg, train, run_dir, record = two_tile_run
    models = load_blended_models(run_dir, device="cpu")
    cameras = models.transform.cameras(train.cameras)
    rays = generate_image_rays(cameras, 0)
    rays.image_indices = torch.full_like(rays.image_indices, -1)
    bg = blended_background(models, rays)
    per_model = torch.stack([r.background(rays) for r in models.renderers])  # [K, R, 3]
    assert bool((bg >= per_model.amin(0) - 1e-6).all() and (bg <= per_model.amax(0) + 1e-6).all())


def test_one_tile_blend_equals_the_model_rendering_itself(tiny_city, tmp_path):
    tiny = TRAIN_PRESETS["tiny"][1]
    # No pruning: the plain renderer would drop negligible samples that the blend keeps.
    cfg = tiny_config(tiny_city, tmp_path, steps=3,
                      render=dataclasses.replace(tiny.render, prune_alpha_threshold=0.0, prune_transmittance_threshold=0.0))
    train = load_split(cfg, "train")
    train_independent_3d(cfg, train.scene_box.double()[None], tmp_path / "run", measure_steps=1, train_data=train)
    models = load_blended_models(tmp_path / "run", device="cpu")
    cameras = models.transform.cameras(train.cameras)
    rays = generate_image_rays(cameras, 1)
    rays.image_indices = torch.full_like(rays.image_indices, -1)
    blended = render_blended(models, rays)
    with torch.no_grad():
        plain = models.renderers[0](rays)
    assert blended.n_samples == plain.n_samples > 0
    torch.testing.assert_close(blended.rgb, plain.rgb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blended.depth, plain.depth, atol=1e-4, rtol=1e-4)
