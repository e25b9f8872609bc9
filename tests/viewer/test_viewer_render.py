"""The viewer renders exactly what `nerfxl render` renders: on one process, on two (rank 0 leads), with
dynamic fetching (and its camera limits pushed back to the browser), and between training steps
without changing the training. A fake browser tab stands in for viser's client here; the real page is
driven by Chromium in test_browser.py."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from viewer_workers import FakeClient  # noqa: E402

import nerfxl.renderer as renderer_module  # noqa: E402
from nerfxl.parallel.launch import launch  # noqa: E402
from nerfxl.presets import TRAIN_PRESETS  # noqa: E402
from nerfxl.data.camera_paths import look_at  # noqa: E402
from nerfxl.parallel.images import render_image, to_uint8  # noqa: E402
from nerfxl.render import read_camera_path  # noqa: E402
from nerfxl.run.trained import load_trained  # noqa: E402
from nerfxl.train import train  # noqa: E402
from nerfxl.viewer.backends import FrameBackend, RenderSettings  # noqa: E402
from nerfxl.viewer.camera import cameras_for_view, view_from_browser  # noqa: E402
from nerfxl.viewer.server import Viewer, ViewerOptions  # noqa: E402


def tiny_config(data: Path, out: Path, **overrides):
    base = TRAIN_PRESETS["tiny"][1]
    config = dataclasses.replace(base, data=data, output=out, progress=False, device="cpu", downscale=2.0,
                                 batch_rays=256, steps=12, checkpoint_every=12, eval_every=0)
    return dataclasses.replace(config, **overrides)


@pytest.fixture(scope="module")
def run4(tiny_city, tmp_path_factory) -> Path:
    """A 4-tile NeRF-XL run trained a few steps."""
    return train(tiny_config(tiny_city, tmp_path_factory.mktemp("viewer"), partitions=4))


@pytest.fixture(scope="module")
def model4(run4):
    return load_trained(run4, device="cpu")


def aerial_pose(height: float = 0.35, tilt: float = 0.5) -> np.ndarray:
    eye = torch.tensor([0.1, -0.3, height])
    return look_at(eye, eye + torch.tensor([0.0, tilt, -1.0]), torch.tensor([0.0, 0.0, 1.0])).double().numpy()


def make_viewer(backend, run, resolution: int = 96, rest: float = 0.0, coarse_seconds: float = 0.002) -> Viewer:
    from nerfxl.view import scene_info

    options = ViewerOptions(port=0, resolution=resolution, rest_seconds=rest, coarse_seconds=coarse_seconds)
    return Viewer(backend, scene_info(run, "test"), options)


def work_until(viewer: Viewer, done, limit: int = 500) -> None:
    for _ in range(limit):
        if done():
            return
        viewer.work()
    raise AssertionError(f"not done after {limit} units: {viewer.records}")


def test_viewer_frames_equal_render_image_and_a_moving_camera_drops_the_refined_frame(model4):
    backend = FrameBackend(model4.renderer)
    viewer = make_viewer(backend, model4)
    try:
        tab = FakeClient(aerial_pose())
        viewer._on_connect(tab)
        work_until(viewer, lambda: any(r.level == "refined" for r in viewer.records))
        assert viewer.records[0].level == "coarse" and viewer.records[0].width < 96
        view = view_from_browser(tab.camera.position, tab.camera.wxyz, tab.camera.fov, tab.camera.aspect)
        want = to_uint8(render_image(model4.renderer, view.cameras(96), 0)["rgb"])
        assert tab.scene.images[-1].shape == want.shape == (64, 96, 3)
        assert np.abs(tab.scene.images[-1].astype(int) - want.astype(int)).max() <= 1
        assert "refined 96×64" in viewer.frame_text.value

        # Move during a refined frame (rendered in several bands): it is dropped for a coarse frame.
        tab.camera.move(aerial_pose(0.4))
        viewer.work()  # the coarse frame of the new view
        viewer.work()  # the first band of its refined frame
        session = next(iter(viewer._sessions.values()))
        assert session.job is not None and session.job.level == "refined" and 0 < session.next_row < 64
        dropped = session.job.version
        tab.camera.move(aerial_pose(0.45))
        viewer.work()
        assert viewer.records[-1].level == "coarse" and viewer.records[-1].version > dropped
        work_until(viewer, lambda: viewer.records[-1].level == "refined")
        assert not any(r.version == dropped and r.level == "refined" for r in viewer.records)
    finally:
        viewer.close()


def test_background_and_output_choices(model4):
    backend = FrameBackend(model4.renderer)
    cameras = cameras_for_view(aerial_pose(0.6, 2.0), 0.9, 30, 20)  # sees the horizon
    rows = (0, int(cameras.height[0]))
    white, _ = backend.render_rows(cameras, rows, RenderSettings(background="white"))
    black, _ = backend.render_rows(cameras, rows, RenderSettings(background="black"))
    trained, _ = backend.render_rows(cameras, rows, RenderSettings())
    torch.testing.assert_close(white.rgb - black.rgb, (1 - white.opacity)[:, None].expand(-1, 3), atol=1e-5, rtol=0)
    assert float((1 - white.opacity).max()) > 0.05  # the view does see past the scene
    want = render_image(model4.renderer, cameras, 0)
    torch.testing.assert_close(trained.rgb, want["rgb"].reshape(-1, 3), atol=1e-6, rtol=0)
    counted = []
    march = renderer_module.march_rays_in_boxes

    def counting(*args, **kwargs):  # the samples marched, before pruning
        marched = march(*args, **kwargs)
        counted.extend(s.n_samples for s in marched)
        return marched

    renderer_module.march_rays_in_boxes = counting
    try:
        backend.render_rows(cameras, rows, RenderSettings())
        base, counted[:] = sum(counted), []
        backend.render_rows(cameras, rows, RenderSettings(sampling=4.0))
    finally:
        renderer_module.march_rays_in_boxes = march
    assert sum(counted) > 3 * base > 0  # four times the samples per ray (the cap grows with them)
    diagonal = float((model4.renderer.scene_box[1] - model4.renderer.scene_box[0]).norm())
    assert model4.renderer.step_size == pytest.approx(diagonal / model4.renderer.config.samples_per_diagonal)


def intrinsics(width: int = 36, height: int = 24, fov: float = 0.9) -> tuple:
    fy = 0.5 * height / math.tan(fov / 2)
    return (fy, fy, width / 2, height / 2, width, height)


@pytest.mark.parametrize("fetch", [False, True])
def test_two_processes_render_what_one_does(run4, model4, fetch):
    import viewer_workers

    poses = torch.as_tensor(aerial_pose(0.3), dtype=torch.float32)[None]
    ranks = launch(viewer_workers.render_rows_on_every_rank, 2, args=(str(run4), poses, intrinsics(), (3, 20), fetch),
                   device="cpu")
    got = ranks[0]
    from nerfxl.data.cameras import Cameras

    cameras = Cameras.create(got["c2w"], *intrinsics())
    want = render_image(model4.renderer, cameras, 0)
    torch.testing.assert_close(got["rgb"], want["rgb"][3:20].reshape(-1, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(got["depth"], want["depth"][3:20].reshape(-1), atol=1e-5, rtol=0)


def test_dynamic_fetching_keeps_the_browser_camera_within_the_window(run4, model4):
    from nerfxl.fetch.load import load_for_fetching

    fetching = load_for_fetching(run4, 2, "8x8", device="cpu", camera_limits="clamp")
    backend = FrameBackend(fetching.trained.renderer, fetcher=fetching.fetcher, pixels_split=True)
    from nerfxl.view import scene_info

    viewer = Viewer(backend, scene_info(fetching.trained, "test", fetching),
                    ViewerOptions(port=0, resolution=32, rest_seconds=0.0))
    try:
        high = aerial_pose(3.0, 0.3)  # sees far past any 2 × 2 window
        tab = FakeClient(high)
        viewer._on_connect(tab)
        work_until(viewer, lambda: any(r.level == "refined" for r in viewer.records))
        assert tab.camera.position[2] < 3.0 - 1e-3  # lowered in the browser too
        view = view_from_browser(tab.camera.position, tab.camera.wxyz, tab.camera.fov, tab.camera.aspect)
        want = to_uint8(render_image(model4.renderer, view.cameras(32), 0)["rgb"])
        assert np.abs(tab.scene.images[-1].astype(int) - want.astype(int)).max() <= 1
        assert viewer.window_overlay is not None and viewer.block_overlay is not None

        # A view along the ground reaches the horizon: no window holds it, so it is refused and the
        # browser goes back to the last rendered camera (the viewer keeps serving).
        shown = tab.camera.position.copy()
        eye = torch.tensor([0.0, 0.0, 0.2])
        tab.camera.move(look_at(eye, eye + torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])).double().numpy())
        frames = viewer.frames_shown
        viewer.work()
        assert viewer.frame_text.value.startswith("camera refused:") and "horizon" in viewer.frame_text.value
        np.testing.assert_allclose(tab.camera.position, shown)
        assert viewer.frames_shown == frames
        tab.camera.move(aerial_pose(0.2, 0.3))
        work_until(viewer, lambda: viewer.frames_shown > frames)
    finally:
        viewer.close()
        backend.close()


def test_camera_path_editor_saves_a_path_that_nerfxl_render_renders(run4, model4, tmp_path):
    from test_cli import run_cli

    viewer = make_viewer(FrameBackend(model4.renderer), model4)
    try:
        tab = FakeClient(aerial_pose(0.5))
        viewer._on_connect(tab)
        for height in (0.5, 0.45, 0.4):
            tab.camera.move(aerial_pose(height))
            viewer._add_keyframe(SimpleNamespace(client=tab))
        viewer.path_seconds.value, viewer.path_fps.value, viewer.path_name.value = 1.0, 6.0, "fly by"
        saved = viewer._save_path()
    finally:
        viewer.close()
    assert saved == run4 / "camera_paths" / "fly_by.json"
    poses, *_ = read_camera_path(saved)
    model_frame = model4.transform.poses(poses.double())
    np.testing.assert_allclose(model_frame[0].numpy(), aerial_pose(0.5), atol=1e-5)
    result = run_cli("render", str(run4), "--path", str(saved), "--resolution-scale", "0.1", "--output",
                     str(tmp_path / "frames"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 6


def parameters_after(config, run_dir: Path, steps: int, with_viewer: bool, processes: int) -> dict:
    import viewer_workers

    return launch(viewer_workers.train_with_viewer_on_every_rank, processes,
                  args=(config, str(run_dir), steps, with_viewer), device="cpu")


@pytest.mark.parametrize("processes", [1, 2])
def test_training_with_a_watched_viewer_trains_exactly_the_same_model(tiny_city, tmp_path, processes):
    config = tiny_config(tiny_city, tmp_path, partitions=2, devices=processes)
    plain = parameters_after(config, tmp_path / "plain", 6, False, processes)
    watched = parameters_after(config, tmp_path / "watched", 6, True, processes)
    assert watched[0]["frames"] >= 2  # frames were rendered between the steps
    for rank in plain:
        torch.testing.assert_close(watched[rank]["params"], plain[rank]["params"], atol=0, rtol=0)


def test_train_viewer_flag_serves_and_closes(tiny_city, tmp_path, monkeypatch, capsys):
    """`nerfxl train --viewer` through train(): the page is served while training and gone afterwards."""
    import nerfxl.train as train_module

    started = []
    original = train_module.start_live_viewer

    def start_and_watch(trainer):
        live = original(trainer)
        live.viewer.options.rest_seconds = 0.0
        live.options.refresh_s = 0.0  # re-render the resting view as often as the budget allows
        live.viewer._on_connect(FakeClient(trainer.train_cameras.camera_to_worlds[0].cpu().double().numpy()))
        started.append(live)
        return live

    monkeypatch.setattr(train_module, "start_live_viewer", start_and_watch)
    config = tiny_config(tiny_city, tmp_path, viewer=True, viewer_port=0, viewer_resolution=24, viewer_fraction=0.5,
                         steps=40, checkpoint_every=40)
    train(config)
    live = started[0]
    assert live.viewer.frames_shown >= 2
    import socket

    with pytest.raises(OSError):  # the page went with the run
        socket.create_connection(("127.0.0.1", live.viewer.port), timeout=2).close()
    assert "nerfxl viewer: http://127.0.0.1:" in capsys.readouterr().out
    assert live.render_fraction < 0.5 + 0.2  # one unit past the budget at most
