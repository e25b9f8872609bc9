"""The independent-2d (Block-NeRF-style) baseline: dataset subsets, per-cluster training, 2D blending."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from nerfxl.baselines.block_nerf import (
    cluster_run_dir,
    evaluate_independent_2d,
    load_independent_2d,
    plan_clusters,
    render_blended_2d,
    train_independent_2d,
)
from nerfxl.baselines.subset import subset_dataset
from nerfxl.checkpoint import latest_checkpoint
from nerfxl.errors import ConfigError
from nerfxl.parallel.images import render_image
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.run.load import load_split, run_checkpoint
from nerfxl.run.trained import load_trained
from nerfxl.trainer import Trainer


def small_config(data, output, **overrides):
    """The tiny preset at the end-to-end test's size: downscale 2, 256 rays per step."""
    base = TRAIN_PRESETS["tiny"][1]
    cfg = dataclasses.replace(base, data=data, output=output, progress=False, downscale=2.0, batch_rays=256)
    return dataclasses.replace(cfg, **overrides)


@pytest.fixture(scope="module")
def train_split(tiny_city, tmp_path_factory):
    return load_split(small_config(tiny_city, tmp_path_factory.mktemp("out")), "train")


@pytest.fixture(scope="module")
def baseline_k2(tiny_city, tmp_path_factory):
    """A k=2 baseline trained for 5 steps per model."""
    out = tmp_path_factory.mktemp("block2")
    cfg = small_config(tiny_city, out, steps=100, checkpoint_every=3)
    return train_independent_2d(cfg, 2, out / "run", steps=5, log=None)


def test_subset_maps_images_cameras_depths_and_names(train_split):
    full = train_split
    picked = [5, 0, 17]
    sub = subset_dataset(full, picked)
    assert len(sub) == 3 and len(sub.images) == 3 and len(sub.depths) == 3
    for i, j in enumerate(picked):
        assert torch.equal(sub.images.get(i), full.images.get(j))
        assert torch.equal(sub.images.rgb(i), full.images.rgb(j))
        assert torch.equal(sub.depths.get(i), full.depths.get(j))
        assert sub.image_names[i] == full.image_names[j]
        assert sub.images.paths[i] == full.images.paths[j]
    torch.testing.assert_close(sub.cameras.camera_to_worlds, full.cameras.camera_to_worlds[picked], rtol=0, atol=0)
    assert torch.equal(sub.cameras.width, full.cameras.width[picked])
    assert torch.equal(sub.scene_box, full.scene_box)  # every cluster model covers the whole scene
    assert torch.equal(sub.background, full.background)
    assert sub.images.cache is full.images.cache  # no second copy of decoded images
    assert sub.metadata["subset_of"] == picked
    mask = torch.zeros(len(full), dtype=torch.bool)
    mask[picked] = True
    assert subset_dataset(full, mask).image_names == [full.image_names[i] for i in sorted(picked)]


@pytest.mark.parametrize("bad", [[], [0, 0], [-1], [10_000]])
def test_subset_rejects_bad_indices(train_split, bad):
    with pytest.raises(ValueError):
        subset_dataset(train_split, bad)


def test_clusters_cover_every_image_and_models_sample_only_their_cluster(train_split, tmp_path):
    centroids, members = plan_clusters(train_split, 3, overlap=0.5, seed=0)
    assert centroids.shape == (3, 3)
    assert sorted(set().union(*members)) == list(range(len(train_split)))
    assert all(members) and sum(map(len, members)) >= len(train_split)
    cfg = small_config(train_split.root, tmp_path)
    for j, indices in enumerate(members):
        sub = subset_dataset(train_split, indices)
        trainer = Trainer(cfg, tmp_path / f"c{j}", train_data=sub, test_data=None)
        drawn = set()
        for step in range(4):
            batch = trainer.sampler.sample(step)
            parent = torch.tensor(sub.images.indices)[batch.image_indices]
            drawn |= set(parent.tolist())
            # The targets are the parent dataset's pixels of those images.
            expected = torch.stack([train_split.images.rgb(int(p))[int(v), int(u)]
                                    for p, (u, v) in zip(parent, batch.pixels)])
            torch.testing.assert_close(batch.rgb, expected)
        assert drawn <= set(indices), (j, drawn - set(indices))


def test_baseline_writes_its_clusters_and_model_runs(baseline_k2, train_split):
    info = json.loads((baseline_k2 / "baseline.json").read_text())
    assert info["method"] == "independent-2d" and info["k"] == 2 and info["overlap"] == 0.5
    assert info["steps_per_model"] == 5 and info["rays_per_model"] == 5 * 256
    assert len(info["centroids"]) == 2
    covered = set()
    for j, c in enumerate(info["clusters"]):
        assert c["n_images"] == len(c["image_indices"]) > 0
        covered |= set(c["image_indices"])
        run = load_trained(cluster_run_dir(baseline_k2, j), device="cpu")
        assert run.step == 5 and run.config.steps == 5
        # The model was trained on its cluster's images alone (one appearance slot per image).
        assert run_checkpoint(cluster_run_dir(baseline_k2, j))[2]["n_train_images"] == c["n_images"]
    assert covered == set(range(len(train_split)))
    # The world-unit centroids are the means of the clusters' nearest cameras: inside the cameras' span.
    pos = train_split.cameras.positions.double()
    cent = torch.tensor(info["centroids"])
    assert bool(((cent >= pos.min(0).values - 1e-9) & (cent <= pos.max(0).values + 1e-9)).all())


def test_blend_weights_sum_to_one_and_skip_far_models(baseline_k2, tiny_city):
    baseline = load_independent_2d(baseline_k2, device="cpu")
    test = load_split(baseline.model(0).config, "test")
    out = render_blended_2d(baseline, test.cameras, 0, nearest=1)
    assert math.isclose(float(out["weights"].sum()), 1.0, rel_tol=1e-12)
    assert int((out["weights"] > 0).sum()) == 1
    both = render_blended_2d(baseline, test.cameras, 0, nearest=2)
    assert math.isclose(float(both["weights"].sum()), 1.0, rel_tol=1e-12)
    h, w = int(test.cameras.height[0]), int(test.cameras.width[0])
    assert both["rgb"].shape == (h, w, 3) and both["depth"].shape == (h, w)
    assert bool(torch.isfinite(both["rgb"]).all()) and float(both["rgb"].min()) >= 0 and float(both["rgb"].max()) <= 1


def test_single_cluster_renders_exactly_like_its_model(tiny_city, tmp_path):
    cfg = small_config(tiny_city, tmp_path, steps=2)
    run_dir = train_independent_2d(cfg, 1, tmp_path / "run", log=None)
    baseline = load_independent_2d(run_dir, device="cpu")
    model = load_trained(cluster_run_dir(run_dir, 0), device="cpu")
    test = load_split(cfg, "test")
    blended = render_blended_2d(baseline, test.cameras, 1)
    single = render_image(model.renderer, model.transform.cameras(test.cameras), 1)
    assert blended["weights"].tolist() == [1.0]
    assert torch.equal(blended["rgb"], single["rgb"])
    assert torch.equal(blended["opacity"], single["opacity"])
    torch.testing.assert_close(blended["depth"], single["depth"] / model.transform.scale)


def test_end_to_end_evaluates_to_a_finite_psnr(baseline_k2):
    assert len(list((baseline_k2 / "models").iterdir())) == 2
    assert all(latest_checkpoint(cluster_run_dir(baseline_k2, j)) is not None for j in range(2))
    result = evaluate_independent_2d(baseline_k2, limit=2, device="cpu")
    assert result["n_images"] == 2 and math.isfinite(result["psnr"]) and math.isfinite(result["ssim"])
    assert 1.0 <= result["models_per_view"] <= 2.0
    saved = json.loads((baseline_k2 / "eval.json").read_text())
    assert saved["psnr"] == result["psnr"] and saved["method"] == "independent-2d"


def test_refuses_a_folder_that_already_holds_a_baseline(baseline_k2, tiny_city, tmp_path):
    cfg = small_config(tiny_city, tmp_path, steps=1)
    with pytest.raises(ConfigError, match="already holds"):
        train_independent_2d(cfg, 2, baseline_k2, log=None)
    with pytest.raises(ConfigError, match="devices"):
        train_independent_2d(dataclasses.replace(cfg, devices=2), 2, tmp_path / "new", log=None)
