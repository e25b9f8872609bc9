"""Dynamic fetching with whole NeRF-XL tiles as the unit renders exactly the fully loaded model.

Two small tiled runs trained a few steps on the tiny city: 8 tiles of an irregular k-d plan with 3D
plane-line (VM) grids, and 4 tiles with hash grids (whose index tables are buffers a checkpoint does not
hold). Frames along flyovers that cross many windows are compared with the whole model's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_cli import run_cli
from test_dynamic_fetch import clear_launcher_environment, flyover
from test_landmark_strategies_config import landmark_config

from nerfxl.errors import ConfigError
from nerfxl.parallel.images import render_image
from nerfxl.fetch.load import load_for_fetching
from nerfxl.fetch.tiles import TileTarget, most_tiles_meeting_a_window, tiles_meeting
from nerfxl.fetch.window import Window
from nerfxl.fields.config import GridConfig
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.run.trained import load_trained
from nerfxl.train import train


def tiled_run(data: Path, out: Path, partitions: int, grid: GridConfig, **field) -> Path:
    config = landmark_config(data, out, "tiles", 1, partitions=partitions, steps=10, checkpoint_every=10)
    return train(dataclasses.replace(config, field=dataclasses.replace(config.field, grid=grid, **field)))


@pytest.fixture(scope="module")
def runs(tiny_city, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tile-fetch")
    hash_grid = GridConfig(type="hash", hash_levels=4, hash_features_per_level=2, hash_log2_size=10,
                           hash_base_resolution=8, hash_max_resolution=64)
    return {"vm": tiled_run(tiny_city, out / "vm", 8, TRAIN_PRESETS["tiny"][1].field.grid),
            "hash": tiled_run(tiny_city, out / "hash", 4, hash_grid, feature_dim=15, feature_frequencies=0)}


@pytest.fixture(scope="module")
def full_models(runs):
    return {name: load_trained(run, device="cpu") for name, run in runs.items()}


def fly(fetching, full, cameras):
    """(worst |fetched − whole| over rgb and depth, the tile sets held, the mean opacity)."""
    worst, held, opacity = 0.0, [], []
    for i in range(len(cameras)):
        cameras, _ = fetching.fetcher.prepare(cameras, i)
        held.append(tuple(fetching.trained.renderer.tile_ids))
        got = render_image(fetching.trained.renderer, cameras, i)
        want = render_image(full.renderer, cameras, i)
        worst = max(worst, float((got["rgb"] - want["rgb"]).abs().max()),
                    float((got["depth"] - want["depth"]).abs().max()))
        opacity.append(float(want["opacity"].mean()))
    return worst, held, sum(opacity) / len(opacity)


@pytest.mark.parametrize("name, n, cells, store", [
    ("vm", 2, None, "memory"), ("vm", 3, "8x8", "mmap"), ("hash", 2, "4x4", "memory"),
])
def test_fetched_tiles_render_the_fully_loaded_model_along_a_flyover(runs, full_models, name, n, cells, store):
    fetching = load_for_fetching(runs[name], n, cells, device="cpu", store=store)
    target = fetching.fetcher.target
    assert isinstance(target, TileTarget)
    k = full_models[name].renderer.n_tiles
    try:
        cameras = flyover(full_models[name], fetching, n, frames=12 * fetching.layout.split.nx)
        worst, held, opacity = fly(fetching, full_models[name], cameras)
    finally:
        fetching.fetcher.close()
    assert worst <= 1e-6, worst
    assert len(set(held)) >= 4 and set().union(*held) == set(range(k))  # the loop visits every tile
    assert max(len(h) for h in held) <= target.n_slots and min(len(h) for h in held) < k
    if k == 8:
        assert target.n_slots < k  # no window of the k-d plan overlaps every tile: never the whole model
    largest = max(layout.nbytes for layout in target.layouts.values())
    assert fetching.fetcher.buffer_bytes <= 2 * target.n_slots * largest
    assert opacity > 0.05  # not a vacuous comparison: the briefly trained model is visibly there


def test_a_window_missing_a_tile_its_frames_sample_shows(runs, full_models, monkeypatch):
    """The check above can fail: hold one tile fewer than the window overlaps and frames differ."""
    tiles_of = TileTarget.tiles_of
    monkeypatch.setattr(TileTarget, "tiles_of", lambda self, window: tiles_of(self, window)[:-1])
    fetching = load_for_fetching(runs["vm"], 2, None, device="cpu")
    try:
        worst, _, _ = fly(fetching, full_models["vm"], flyover(full_models["vm"], fetching, 2, frames=24))
    finally:
        fetching.fetcher.close()
    assert worst > 1e-3


def test_tiles_meeting_a_window_are_those_overlapping_it(full_models):
    fetching_boxes = full_models["vm"].renderer.tile_boxes()
    from nerfxl.fetch.load import default_cells
    from nerfxl.fetch.window import BlockLayout

    scene = full_models["vm"].renderer.scene_box.cpu()
    split = default_cells(fetching_boxes, scene, 2)
    layout = BlockLayout(split, (), tuple(scene[0, :2].tolist()), tuple(scene[1, :2].tolist()))
    every = set()
    for x0 in range(split.nx - 1):
        for y0 in range(split.ny - 1):
            window = Window(x0, y0, 2)
            tiles = tiles_meeting(fetching_boxes, layout, window)
            every |= set(tiles)
            # Brute force: a dense lattice of points strictly inside the window, each in some tile.
            bx, by = layout.block_size
            xs = layout.xy_min[0] + (x0 + torch.linspace(0.01, 1.99, 40)) * bx
            ys = layout.xy_min[1] + (y0 + torch.linspace(0.01, 1.99, 40)) * by
            px, py = torch.meshgrid(xs, ys, indexing="ij")
            b = fetching_boxes
            inside = ((px.reshape(-1, 1) >= b[:, 0, 0]) & (px.reshape(-1, 1) <= b[:, 1, 0])
                      & (py.reshape(-1, 1) >= b[:, 0, 1]) & (py.reshape(-1, 1) <= b[:, 1, 1]))
            assert set(inside.any(dim=0).nonzero().flatten().tolist()) == set(tiles)
    assert every == set(range(len(fetching_boxes)))
    assert most_tiles_meeting_a_window(fetching_boxes, layout, 2) < len(fetching_boxes)


def test_two_processes_share_each_tile_window_and_only_rank_0_reads_the_host(runs, full_models, monkeypatch):
    import fetch_workers

    from nerfxl.parallel.launch import launch

    clear_launcher_environment(monkeypatch)
    fetching = load_for_fetching(runs["vm"], 2, None, device="cpu")
    cameras = flyover(full_models["vm"], fetching, 2, frames=40)
    fetching.fetcher.close()
    intrinsics = (cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height)
    ranks = launch(fetch_workers.fly_on_every_rank, 2, args=(str(runs["vm"]), None, 2, cameras.camera_to_worlds,
                                                             intrinsics), device="cpu", timeout_s=60, max_runtime_s=300)
    assert ranks[0]["worst"] <= 1e-6
    assert ranks[0]["windows"] == ranks[1]["windows"] and len(set(ranks[0]["windows"])) >= 4
    assert ranks[1]["host_bytes"] == 0 and ranks[0]["host_bytes"] > 0
    assert ranks[0]["broadcast_bytes"] == ranks[0]["host_bytes"]  # each new tile read once, sent once


def test_cli_flies_over_a_tiled_run_and_rejects_a_window_too_large(runs, tmp_path):
    video = tmp_path / "fly.mp4"
    result = run_cli("render", str(runs["vm"]), "--dynamic-fetch", "--neighbourhood", "2", "--path", "flyover",
                     "--frames", "8", "--video", str(video), "--output", str(tmp_path / "frames"))
    assert result.returncode == 0, result.stderr
    assert video.is_file() and video.stat().st_size > 0
    assert "cells, up to" in result.stdout and "of 8 tiles" in result.stdout
    with pytest.raises(ConfigError, match="only 2x2 blocks; a 3 × 3 window"):
        load_for_fetching(runs["vm"], 3, "2x2", device="cpu")
