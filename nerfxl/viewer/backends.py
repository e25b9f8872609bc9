"""How the viewer renders a band of rows of a frame: on one process, on several (rank 0 leads, the
others follow its commands), with dynamic fetching, and between training steps.

Every process of a job must take part in every collective, but only rank 0 talks to the browser.
So rank 0 sends each unit of work as one small command (a float64 vector broadcast to all
processes): "render rows r0..r1 of this camera with these settings", "nothing to do" (a heartbeat,
so an idle viewer never trips the collective timeout), or "stop". The other processes run the same
rendering code on the command they receive, so a frame is exactly what ``nerfxl render`` gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.data.rays import generate_rays, image_pixels
from nerfxl.errors import ConfigError
from nerfxl.parallel.distributed import DistContext, broadcast_tensor
from nerfxl.parallel.images import depth_as_grey, local_context, render_rays_split_by_pixels, to_uint8
from nerfxl.parallel.partition_based import render_rays_chunked_to_main
from nerfxl.renderer import TiledRenderer

Background = Literal["trained", "white", "black"]
Output = Literal["rgb", "depth", "opacity"]
BACKGROUNDS: tuple[Background, ...] = ("trained", "white", "black")
OUTPUTS: tuple[Output, ...] = ("rgb", "depth", "opacity")


@dataclass(frozen=True)
class RenderSettings:
    """The panel's rendering choices.

    Attributes:
        sampling: marching-step density relative to the run's (2 = half the step, twice the samples).
        appearance: the training image whose appearance embedding is used (−1: the zero embedding of
            novel views).
        background: "trained" (the run's own background model), "white" or "black".
        output: what the frame shows: "rgb", "depth" (grey, near = dark) or "opacity".
    """

    sampling: float = 1.0
    appearance: int = -1
    background: Background = "trained"
    output: Output = "rgb"


OP_IDLE, OP_ROWS, OP_STOP = 0.0, 1.0, 2.0
_COMMAND_SIZE = 23  # op, w, h, fx, fy, cx, cy, c2w (12), appearance, sampling, row0, row1


def encode_command(op: float, cameras: Cameras | None = None, rows: tuple[int, int] = (0, 0),
                   settings: RenderSettings | None = None) -> Tensor:
    """One unit of work as a float64 vector (every process receives the same one)."""
    cmd = torch.zeros(_COMMAND_SIZE, dtype=torch.float64)
    cmd[0] = op
    if cameras is not None:
        settings = settings or RenderSettings()
        cmd[1:7] = torch.tensor([float(cameras.width[0]), float(cameras.height[0]), float(cameras.fx[0]),
                                 float(cameras.fy[0]), float(cameras.cx[0]), float(cameras.cy[0])], dtype=torch.float64)
        cmd[7:19] = cameras.camera_to_worlds[0].double().reshape(-1).cpu()
        cmd[19:23] = torch.tensor([settings.appearance, settings.sampling, rows[0], rows[1]], dtype=torch.float64)
    return cmd


def decode_command(cmd: Tensor) -> tuple[float, Cameras | None, tuple[int, int], int, float]:
    """(op, camera, rows, appearance, sampling) of :func:`encode_command`'s vector."""
    op = float(cmd[0])
    if op != OP_ROWS:
        return op, None, (0, 0), -1, 1.0
    w, h, fx, fy, cx, cy = (float(v) for v in cmd[1:7])
    cameras = Cameras.create(cmd[7:19].reshape(3, 4).float(), fx, fy, cx, cy, int(w), int(h))
    return op, cameras, (int(cmd[21]), int(cmd[22])), int(cmd[19]), float(cmd[20])


@contextlib.contextmanager
def sampling_density(renderer: TiledRenderer, factor: float):
    """Render with ``factor`` × the run's samples per ray (a shorter marching step, a higher cap)."""
    if factor == 1.0:
        yield
        return
    step, config = renderer.step_size, renderer.config
    renderer.step_size = step / factor
    renderer.config = dataclasses.replace(config, max_samples_per_ray=max(1, round(config.max_samples_per_ray * factor)))
    try:
        yield
    finally:
        renderer.step_size, renderer.config = step, config


def rows_rays(cameras: Cameras, rows: tuple[int, int], appearance: int):
    """The rays of rows [r0, r1) of camera 0, row-major, with appearance embedding ``appearance``."""
    w = int(cameras.width[0])
    pixels = image_pixels(w, rows[1] - rows[0], device=cameras.device)  # only the band's rows: (u, v − r0)
    pixels[:, 1] += rows[0]
    rays = generate_rays(cameras, torch.zeros(len(pixels), dtype=torch.int64, device=cameras.device), pixels)
    rays.image_indices = torch.full_like(rays.image_indices, appearance)
    return rays


@dataclass
class RenderedBand:
    """Rows of a frame on rank 0: rgb [n, 3] (background as chosen), depth [n], opacity [n], on the CPU."""

    rgb: Tensor
    depth: Tensor
    opacity: Tensor


def recolour_background(rgb: Tensor, opacity: Tensor, trained: Tensor | None, background: Background) -> Tensor:
    """Swap the trained background behind the rays for a plain one: rgb = surface + (1 − opacity) · bg,
    so the surface is rgb − (1 − opacity) · trained."""
    if background == "trained":
        return rgb
    plain = 1.0 if background == "white" else 0.0
    behind = (1.0 - opacity)[:, None]
    surface = rgb - behind * (trained if trained is not None else 0.0)
    return (surface + behind * plain).clamp(0, 1)


class FrameBackend:
    """Renders bands of rows for the viewer on the processes of ``ctx``.

    Args:
        renderer: this process's renderer (all tiles, its share of them, or a fetched window).
        ctx: the processes rendering together (rank 0 leads).
        n_train_images: how many appearance embeddings the run has.
        fetcher: a :class:`nerfxl.fetch.fetcher.DynamicFetcher` when the model is streamed: each band's
            camera goes through its ``prepare`` first (the window follows the camera; with
            ``camera_limits="clamp"`` a camera that sees past it is lowered).
        pixels_split: every process holds the same model (a fetched window): each renders a share of the
            band's pixels, instead of its tiles' segments of every pixel.
        command_ctx: the processes that receive the commands (default ``ctx``; while training, the whole
            job, of which ``ctx`` is the replica that renders).
    """

    def __init__(self, renderer: TiledRenderer, ctx: DistContext | None = None, n_train_images: int = 0,
                 fetcher=None, pixels_split: bool = False, command_ctx: DistContext | None = None,
                 renders: bool = True):
        self.renderer = renderer
        self.ctx = ctx or local_context(renderer)
        self.command_ctx = command_ctx or self.ctx
        self.n_train_images = n_train_images
        self.fetcher = fetcher
        self.pixels_split = pixels_split
        self.renders = renders
        self.last_report = None
        self.refusal: str | None = None
        """Why the last band was not rendered (a camera dynamic fetching cannot serve), else None."""
        self.device = self.ctx.device

    @property
    def is_main(self) -> bool:
        return self.command_ctx.is_main

    # ------------------------------------------------------------------ rank 0
    def render_rows(self, cameras: Cameras, rows: tuple[int, int], settings: RenderSettings) -> tuple[RenderedBand, Cameras]:
        """Rank 0: rows [r0, r1) of camera 0 of ``cameras`` (every process renders its part). Returns the
        band and the camera actually rendered (a fetching run may have lowered it), or (None, None) for a
        camera no fetch window can hold (:attr:`refusal` says why)."""
        return self._execute(self._send(encode_command(OP_ROWS, cameras, rows, settings)), settings.background)

    def idle(self) -> None:
        """Rank 0 has nothing to render: tell the others (keeps their wait under the collective timeout)."""
        self._send(encode_command(OP_IDLE))

    def stop(self) -> None:
        """Rank 0 is done: the other processes leave :meth:`follow`."""
        self._send(encode_command(OP_STOP))

    # ------------------------------------------------------------------ the others
    def follow_once(self) -> bool:
        """Another process: receive rank 0's next command and take part; False once told to stop."""
        cmd = self._send(None)
        if float(cmd[0]) == OP_STOP:
            return False
        if float(cmd[0]) == OP_ROWS:
            self._execute(cmd, "trained")
        return True

    def follow(self) -> None:
        """Another process: take part in every frame until rank 0 stops."""
        while self.follow_once():
            pass

    # ------------------------------------------------------------------ everyone
    def _send(self, cmd: Tensor | None) -> Tensor:
        if self.command_ctx.world_size == 1:
            return cmd
        buf = cmd if cmd is not None else torch.zeros(_COMMAND_SIZE, dtype=torch.float64)
        buf = buf.to(self.command_ctx.device)
        broadcast_tensor(buf, self.command_ctx)
        return buf.cpu()

    @torch.no_grad()
    def _execute(self, cmd: Tensor, background: Background) -> tuple[RenderedBand | None, Cameras | None]:
        op, cameras, rows, appearance, sampling = decode_command(cmd)
        if op != OP_ROWS or not self.renders:
            return None, None
        cameras = cameras.to(self.device)
        self.refusal = None
        if self.fetcher is not None:
            try:
                cameras, self.last_report = self.fetcher.prepare(cameras, 0)
            except ConfigError as e:  # no window holds this view (it reaches the horizon): every process alike
                self.refusal = str(e)
                return None, None
        rays = rows_rays(cameras, rows, appearance)
        was_training = self.renderer.training
        self.renderer.eval()
        try:
            with sampling_density(self.renderer, sampling):
                if self.pixels_split and self.ctx.world_size > 1:
                    out = render_rays_split_by_pixels(self.renderer, rays, self.ctx)
                else:
                    out = render_rays_chunked_to_main(self.renderer, rays, self.ctx)
        finally:
            if was_training:
                self.renderer.train()
        if out is None:
            return None, cameras
        trained = self.renderer.background(rays) if background != "trained" else None
        rgb = recolour_background(out.rgb, out.opacity, trained, background)
        return RenderedBand(rgb.float().cpu(), out.depth.float().cpu(), out.opacity.float().cpu()), cameras.to("cpu")

    def close(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()


def band_image(bands: list[RenderedBand], width: int, height: int, output: Output) -> np.ndarray:
    """Bands covering rows 0..H → an [H, W, 3] uint8 image of ``output`` (depth: grey, as ``nerfxl render
    --depth`` shows it)."""
    if output == "rgb":
        image = torch.cat([b.rgb for b in bands])
    elif output == "opacity":
        image = torch.cat([b.opacity for b in bands])[:, None].expand(-1, 3)
    else:
        image = depth_as_grey(torch.cat([b.depth for b in bands]), torch.cat([b.opacity for b in bands]))
    return to_uint8(image.reshape(height, width, 3))
