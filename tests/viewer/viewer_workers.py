"""The viewer on several processes, for tests/viewer/test_viewer_render.py (spawn imports this module)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch

from nerfxl.data.cameras import Cameras
from nerfxl.parallel.distributed import DistContext
from nerfxl.viewer.backends import FrameBackend, RenderSettings
from nerfxl.viewer.camera import browser_pose


class FakeCamera:
    """What the server reads of a browser's camera, and what it sets (camera limits, path previews)."""

    def __init__(self, c2w, fov: float, aspect: float):
        self.position, self.wxyz = browser_pose(c2w)
        self.fov, self.aspect = fov, aspect
        self._callbacks = []

    def on_update(self, callback) -> None:
        self._callbacks.append(callback)

    def move(self, c2w) -> None:
        self.position, self.wxyz = browser_pose(c2w)
        for callback in self._callbacks:
            callback(self)


class FakeScene:
    def __init__(self):
        self.images = []

    def set_background_image(self, image, format: str = "jpeg", jpeg_quality: int | None = None) -> None:
        self.images.append(image.copy())


class FakeClient:
    """A browser tab as the server sees it (the real page is driven in test_browser.py)."""

    client_id = 1

    def __init__(self, c2w, fov: float = 0.9, aspect: float = 1.5):
        self.camera = FakeCamera(c2w, fov, aspect)
        self.scene = FakeScene()

    def atomic(self):
        return contextlib.nullcontext()


def render_rows_on_every_rank(ctx: DistContext, run_dir: str, poses: torch.Tensor, intrinsics: tuple,
                              rows: tuple[int, int], fetch: bool) -> dict:
    """Rank 0 renders rows of a frame through the viewer's backend, the others follow its commands."""
    torch.set_num_threads(1)
    cameras = Cameras.create(poses, *intrinsics)
    if fetch:
        from nerfxl.fetch.load import load_for_fetching

        fetching = load_for_fetching(Path(run_dir), 2, None, device="cpu", camera_limits="clamp", ctx=ctx)
        backend = FrameBackend(fetching.trained.renderer, ctx, fetcher=fetching.fetcher, pixels_split=True)
    else:
        from nerfxl.run.trained import load_trained

        backend = FrameBackend(load_trained(Path(run_dir), ctx=ctx).renderer, ctx)
    try:
        if not ctx.is_main:
            backend.follow()
            return {"rank": ctx.rank}
        backend.idle()  # a heartbeat in between changes nothing
        band, rendered = backend.render_rows(cameras, rows, RenderSettings())
        backend.stop()
        return {"rank": 0, "rgb": band.rgb, "depth": band.depth, "c2w": rendered.camera_to_worlds}
    finally:
        backend.close()


def train_with_viewer_on_every_rank(ctx: DistContext, config, run_dir: str, steps: int, with_viewer: bool) -> dict:
    """``steps`` training steps with (or without) a live viewer that a fake browser watches on rank 0."""
    from nerfxl.trainer import Trainer
    from nerfxl.viewer.live import LiveOptions, LiveViewer

    torch.set_num_threads(1)
    trainer = Trainer(dataclasses.replace(config, progress=False), Path(run_dir), ctx=ctx)
    live = None
    if with_viewer:
        # fraction close to 1: a frame between almost every step, so every step exercises the protocol.
        live = LiveViewer(trainer, LiveOptions(port=0, fraction=0.9, resolution=24, refresh_s=0.0))
        if live.viewer is not None:
            live.viewer.options.rest_seconds = 0.0
            live.viewer._on_connect(FakeClient(trainer.train_cameras.camera_to_worlds[0].cpu().double().numpy()))
    try:
        while trainer.step < steps:
            trainer.train_step(trainer.step)
            trainer.step += 1
            if live is not None:
                live.between_steps()
    finally:
        if live is not None:
            live.close()
    params = torch.cat([p.detach().reshape(-1) for p in trainer.renderer.parameters()])
    shown = live.viewer.frames_shown if live is not None and live.viewer is not None else 0
    return {"rank": ctx.rank, "params": params, "frames": shown}
