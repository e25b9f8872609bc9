"""Dynamic fetching renders exactly the fully loaded model, with a bounded window on the device.

Two small ground-plane runs trained a few steps on the tiny city: A with a 17-node plane (cut into 4 × 4
blocks of 5 nodes, or 8 × 8 of 3) and B with a 33-node plane (8 × 8 blocks of 5 nodes, the same block
size as A's 4 × 4). Frames along flyovers that cross many block borders are compared with the whole
model's (tolerance 1e-5: fp32 round-off of the window coordinates; seen ≤ 2e-7).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from nerfxl.data.cameras import Cameras
from nerfxl.data.rays import generate_image_rays
from nerfxl.errors import ConfigError
from nerfxl.parallel.images import render_image
from nerfxl.fetch.buffers import WindowBuffer, fill_window
from nerfxl.fetch.limits import CameraLimits, footprint, half_diagonal_fov_deg
from nerfxl.fetch.load import load_for_fetching
from nerfxl.fetch.window import Window
from nerfxl.fields.config import GridConfig
from nerfxl.merge import split_run
from nerfxl.data.camera_paths import flyover_path, look_at
from nerfxl.run.trained import load_trained
from nerfxl.train import train

TILT = 30.0
SIZE = (40, 30)  # frame width, height: small, the comparison is per pixel


def ground_run(data: Path, out: Path, nodes: int) -> Path:
    from test_landmark_strategies_config import landmark_config

    base = landmark_config(data, out, "tiles", 1)
    grid = GridConfig(mode="ground", base_resolution=(nodes, nodes, 5), scales=(1, 2), level_scaling="cells",
                      density_channels=4, appearance_channels=8)
    config = dataclasses.replace(base, steps=10, checkpoint_every=10, field=dataclasses.replace(base.field, grid=grid))
    return train(config)


@pytest.fixture(scope="module")
def runs(tiny_city, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fetch")
    return {"A": ground_run(tiny_city, out / "a", 17), "B": ground_run(tiny_city, out / "b", 33)}


@pytest.fixture(scope="module")
def full_models(runs):
    return {name: load_trained(run, device="cpu") for name, run in runs.items()}


def flyover(run, fetching, n: int, frames: int, scale: float = 0.8) -> Cameras:
    """A loop at ``scale`` × the height limit of an N × N window (with the fetcher's trigger margin)."""
    w, h = SIZE
    f = 0.9 * w
    probe = Cameras.create(torch.eye(4)[None, :3], f, f, w / 2, h / 2, w, h)
    limits = CameraLimits(n, min(fetching.layout.block_size), half_diagonal_fov_deg(probe), 0.51, 0.2)
    poses = flyover_path(run.renderer.scene_box.cpu(), frames, scale * limits.max_height(TILT), TILT)
    return Cameras.create(poses, f, f, w / 2, h / 2, w, h)


def fly_and_compare(fetching, full, cameras: Cameras) -> tuple[float, list]:
    worst, reports = 0.0, []
    for i in range(len(cameras)):
        cameras, report = fetching.fetcher.prepare(cameras, i)
        reports.append(report)
        got = render_image(fetching.trained.renderer, cameras, i)["rgb"]
        want = render_image(full.renderer, cameras, i)["rgb"]
        worst = max(worst, float((got - want).abs().max()))
    return worst, reports


@pytest.mark.parametrize("name, blocks, n, store", [
    ("A", "4x4", 3, "memory"), ("A", "8x8", 3, "memory"), ("A", "8x8", 4, "mmap"), ("B", "8x8", 3, "memory"),
])
def test_fetched_frames_equal_the_fully_loaded_model_along_a_flyover(runs, full_models, name, blocks, n, store):
    fetching = load_for_fetching(runs[name], n, blocks, device="cpu", store=store)
    try:
        # About 0.2 blocks per frame: the margin the height limit keeps for travel during a fetch.
        cameras = flyover(full_models[name], fetching, n, frames=15 * fetching.layout.split.nx)
        worst, reports = fly_and_compare(fetching, full_models[name], cameras)
    finally:
        fetching.fetcher.close()
    assert worst <= 1e-5, worst
    windows = {r.window for r in reports}
    assert len(windows) >= (4 if blocks == "4x4" else 8), windows  # the loop crosses many block borders
    assert sum(r.started is not None for r in reports) >= len(windows) - 2  # most fetches ran in the background
    # Not a vacuous comparison: the (briefly trained) model is visibly there.
    assert float(render_image(full_models[name].renderer, cameras, 0)["opacity"].mean()) > 0.1


def test_a_split_run_streams_its_own_shards(runs, full_models, tmp_path):
    split = split_run(runs["A"], "4x4", tmp_path / "split")
    fetching = load_for_fetching(split, 3, device="cpu", store="mmap")
    try:
        worst, _ = fly_and_compare(fetching, full_models["A"], flyover(full_models["A"], fetching, 3, frames=24))
    finally:
        fetching.fetcher.close()
    assert worst <= 1e-5
    with pytest.raises(ConfigError, match="cut into 4x4 blocks, not 2x2"):
        load_for_fetching(split, 2, "2x2", device="cpu")


def test_device_memory_is_two_windows_whatever_the_number_of_blocks(runs, full_models):
    """A's 4 × 4 and B's 8 × 8 blocks have the same size: the same window buffers, ≤ 2 · N² blocks."""
    sizes = {}
    for name, blocks in (("A", "4x4"), ("B", "8x8")):
        fetching = load_for_fetching(runs[name], 3, blocks, device="cpu")
        fetcher = fetching.fetcher
        block_bytes = fetching.layout.block_numel * 4
        assert fetcher.buffer_bytes <= 2 * 9 * block_bytes
        grid = fetching.trained.renderer.field.tile(0).grid
        planes = {id(p) for p in [*grid.density_planes, *grid.appearance_planes]}
        resident = sum(t.numel() * t.element_size() for t in [*fetching.trained.renderer.parameters(),
                                                              *fetching.trained.renderer.buffers()]
                       if id(t) not in planes)
        whole = sum(p.numel() * 4 for p in [*full_models[name].renderer.field.tile(0).grid.density_planes,
                                            *full_models[name].renderer.field.tile(0).grid.appearance_planes])
        sizes[name] = (fetcher.buffer_bytes, resident, whole)
        fetcher.close()
    assert sizes["A"][0] == sizes["B"][0]
    assert sizes["A"][1] == sizes["B"][1]  # heads, lines, decoder, occupancy: independent of the ground area
    assert sizes["B"][2] > 3.5 * sizes["A"][2]  # while the whole planes grow with it


def test_overlapped_and_serial_fills_give_the_same_buffer(runs):
    fetching = load_for_fetching(runs["A"], 3, "8x8", device="cpu")
    store, layout = fetching.fetcher.store, fetching.layout
    first = WindowBuffer(layout, 3, torch.device("cpu"))
    fill_window(store, None, first, Window(2, 2, 3))
    results = []
    for overlap in (True, False):
        dst = WindowBuffer(layout, 3, torch.device("cpu"))
        timing = fill_window(store, first, dst, Window(3, 2, 3), overlap=overlap)
        assert (timing.kept_blocks, timing.new_blocks) == (6, 3)
        results.append(dst.flat)
    reference = WindowBuffer(layout, 3, torch.device("cpu"))
    fill_window(store, None, reference, Window(3, 2, 3))  # every block from the host
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], reference.flat)
    fetching.fetcher.close()


def test_footprint_holds_every_point_a_frame_can_sample(full_models):
    run = full_models["A"]
    box = run.renderer.scene_box.cpu()
    w, h = SIZE
    for tilt, height in ((0.0, 0.3), (25.0, 0.2), (50.0, 0.1)):
        eye = torch.tensor([0.1, -0.2, float(box[0, 2]) + height])
        pose = look_at(eye, eye + torch.tensor([math.sin(math.radians(tilt)), 0.0, -math.cos(math.radians(tilt))]),
                       torch.tensor([0.0, 0.0, 1.0]))
        cameras = Cameras.create(pose[None], 0.9 * w, 0.9 * w, w / 2, h / 2, w, h)
        rect = footprint(cameras, 0, (float(box[0, 2]), float(box[1, 2])))
        rays = generate_image_rays(cameras, 0)
        t = (float(box[0, 2]) - rays.origins[:, 2]) / rays.directions[:, 2]  # the ground, the farthest point
        ground = rays.origins + t[:, None] * rays.directions
        assert float(ground[:, 0].min()) >= rect[0] - 1e-5 and float(ground[:, 0].max()) <= rect[1] + 1e-5
        assert float(ground[:, 1].min()) >= rect[2] - 1e-5 and float(ground[:, 1].max()) <= rect[3] + 1e-5


def test_a_camera_beyond_the_limits_errors_or_is_lowered(runs, full_models):
    full = full_models["A"]
    box = full.renderer.scene_box.cpu()
    w, h = SIZE
    eye = torch.tensor([0.0, 0.0, float(box[1, 2]) + 2.0])
    pose = look_at(eye, eye + torch.tensor([0.3, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0]))
    high = Cameras.create(pose[None], 0.9 * w, 0.9 * w, w / 2, h / 2, w, h)
    fetching = load_for_fetching(runs["A"], 3, "8x8", device="cpu")
    with pytest.raises(ConfigError, match="sees beyond a 3 × 3 window") as info:
        fetching.fetcher.prepare(high, 0)
    assert "\n" not in str(info.value)
    fetching.fetcher.close()
    clamped_run = load_for_fetching(runs["A"], 3, "8x8", device="cpu", camera_limits="clamp")
    cameras, _ = clamped_run.fetcher.prepare(high, 0)
    assert float(cameras.camera_to_worlds[0, 2, 3]) < float(eye[2])
    got = render_image(clamped_run.trained.renderer, cameras, 0)["rgb"]
    torch.testing.assert_close(got, render_image(full.renderer, cameras, 0)["rgb"], rtol=0, atol=1e-5)
    clamped_run.fetcher.close()


class SlowStore:
    """A block store whose host reads take a while (a slow disk), to watch the pipeline's timing."""

    def __init__(self, store, seconds: float):
        self.store, self.seconds, self.layout = store, seconds, store.layout

    def block(self, ix: int, iy: int):
        time.sleep(self.seconds)
        return self.store.block(ix, iy)


def test_frames_never_wait_for_a_fetch_they_do_not_need_and_long_jumps_recentre(runs, full_models):
    fetching = load_for_fetching(runs["A"], 3, "8x8", device="cpu")
    fetcher = fetching.fetcher
    fetcher.store = SlowStore(fetcher.store, 0.1)  # a 3-block fetch takes ≥ 0.3 s
    w, h = SIZE
    low = float(full_models["A"].renderer.scene_box[0, 2]) + 0.05

    def camera_at(x: float, y: float) -> Cameras:
        eye = torch.tensor([x, y, low])
        pose = look_at(eye, eye + torch.tensor([0.0, 0.0, -1.0]), torch.tensor([0.0, 1.0, 0.0]))
        return Cameras.create(pose[None], 0.9 * w, 0.9 * w, w / 2, h / 2, w, h)

    block = fetching.layout.block_size[0]
    x0 = fetching.layout.xy_min[0]
    _, first = fetcher.prepare(camera_at(x0 + 3.5 * block, x0 + 3.5 * block), 0)
    assert first.recentred and first.window == Window(2, 2, 3)
    # 0.6 blocks east of the centre: past the trigger, but the view still fits the loaded window.
    t0 = time.perf_counter()
    _, moved = fetcher.prepare(camera_at(x0 + 4.1 * block, x0 + 3.5 * block), 0)
    assert time.perf_counter() - t0 < 0.2 and moved.started == Window(3, 2, 3) and moved.window == Window(2, 2, 3)
    _, still = fetcher.prepare(camera_at(x0 + 4.15 * block, x0 + 3.5 * block), 0)
    assert still.waited_s == 0.0 and still.window in (Window(2, 2, 3), Window(3, 2, 3))
    fetcher._pending is None or fetcher._pending.result()
    _, next_frame = fetcher.prepare(camera_at(x0 + 4.2 * block, x0 + 3.5 * block), 0)
    assert next_frame.window == Window(3, 2, 3)  # swapped on the first frame after the fetch completed
    # A long jump: the frame needs a window sharing nothing with the loaded one — a direct re-centre.
    far = camera_at(x0 + 7.5 * block, x0 + 0.5 * block)
    _, jump = fetcher.prepare(far, 0)
    assert jump.recentred and jump.window == Window(5, 0, 3) and jump.waited_s > 0.25
    fetcher.store = fetcher.store.store
    got = render_image(fetching.trained.renderer, far, 0)["rgb"]
    torch.testing.assert_close(got, render_image(full_models["A"].renderer, far, 0)["rgb"], rtol=0, atol=1e-5)
    fetcher.close()


def test_bad_fetch_requests_are_one_line_errors(runs, tmp_path):
    with pytest.raises(ConfigError, match="only 4x4 blocks; a 5 × 5 window"):
        load_for_fetching(runs["A"], 5, "4x4", device="cpu")
    with pytest.raises(ConfigError, match="17 nodes along y cannot be cut into 3"):
        load_for_fetching(runs["A"], 2, "3x3", device="cpu")
    with pytest.raises(ConfigError, match="pass --blocks"):
        load_for_fetching(runs["A"], 3, None, device="cpu")
    result = run_cli("render", str(runs["A"]), "--dynamic-fetch", "--blocks", "4x4", "--neighbourhood", "9")
    assert_one_line_error(result, "--neighbourhood 9")


def test_cli_renders_a_flyover_with_dynamic_fetching(runs, tmp_path):
    video = tmp_path / "fly.mp4"
    result = run_cli("render", str(runs["A"]), "--dynamic-fetch", "--blocks", "4x4", "--path", "flyover",
                     "--frames", "12", "--video", str(video), "--output", str(tmp_path / "frames"))
    assert result.returncode == 0, result.stderr
    assert video.is_file() and video.stat().st_size > 0
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 12
    assert "dynamic fetching: 3×3 of 4x4 blocks" in result.stdout


def test_two_processes_share_each_window_and_only_rank_0_reads_the_host(runs, full_models, monkeypatch):
    import fetch_workers

    from nerfxl.parallel.launch import launch

    clear_launcher_environment(monkeypatch)
    fetching = load_for_fetching(runs["A"], 3, "8x8", device="cpu")
    cameras = flyover(full_models["A"], fetching, 3, frames=60)
    fetching.fetcher.close()
    intrinsics = (cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height)
    ranks = launch(fetch_workers.fly_on_every_rank, 2, args=(str(runs["A"]), "8x8", 3, cameras.camera_to_worlds,
                                                             intrinsics), device="cpu", timeout_s=60, max_runtime_s=300)
    assert ranks[0]["worst"] <= 1e-5
    assert ranks[0]["windows"] == ranks[1]["windows"] and len(set(ranks[0]["windows"])) >= 8
    assert ranks[0]["fetches"] == ranks[1]["fetches"] >= 8
    assert ranks[1]["host_bytes"] == 0 and ranks[0]["host_bytes"] > 0
    assert ranks[0]["broadcast_bytes"] == ranks[0]["host_bytes"]  # each new block read once, sent once


def clear_launcher_environment(monkeypatch) -> None:
    """Spawned ranks must form their own group, not join one this test process might belong to."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
