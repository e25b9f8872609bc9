"""``nerfxl train --viewer``: rank 0 serves the model while it trains.

Rendering runs on the training thread between two steps (the parameters never change under a frame)
and takes at most ``fraction`` of the wall time: after each step the viewer renders one unit (a coarse
frame, or one band of a refined one) only while its share of the time so far is below the fraction.
With several processes every process takes part in each unit (rank 0 sends the command), so one
small broadcast per step is the viewer's whole cost to the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


from nerfxl.viewer.backends import FrameBackend
from nerfxl.viewer.server import SceneInfo, Viewer, ViewerOptions


@dataclass
class LiveOptions:
    """The ``--viewer-*`` flags of ``nerfxl train``."""

    host: str = "127.0.0.1"
    port: int = 7007
    fraction: float = 0.25
    resolution: int = 640
    refresh_s: float = 5.0


class LiveViewer:
    """The viewer of a training run (every process of the job builds one; rank 0's serves the page).

    Args:
        trainer: the :class:`nerfxl.trainer.Trainer`.
        options: where to serve and how much time rendering may take.
    """

    def __init__(self, trainer, options: LiveOptions):
        self.trainer = trainer
        self.options = options
        self.backend = FrameBackend(trainer.renderer, trainer.ctx, n_train_images=len(trainer.train_data),
                                    command_ctx=trainer.world, renders=trainer.replica_ctx.is_main)
        self.viewer: Viewer | None = None
        if trainer.world.is_main:
            self.viewer = Viewer(self.backend, training_scene(trainer),
                                 ViewerOptions(host=options.host, port=options.port, resolution=options.resolution))
            print(f"nerfxl viewer: {self.viewer.url}  (training {trainer.run_dir}; rendering takes at most "
                  f"{100 * options.fraction:.0f}% of the time)", flush=True)
        self.render_s = 0.0
        self.started = time.perf_counter()
        self.refreshed = self.started

    def between_steps(self) -> None:
        """After a training step: render one unit if the time budget allows (every process calls this)."""
        if self.viewer is None:
            self.backend.follow_once()
            return
        now = time.perf_counter()
        if now - self.refreshed >= self.options.refresh_s:
            self.viewer.model_changed()  # a resting view is re-rendered with the newer weights
            self.refreshed = now
        elapsed = now - self.started
        did = False
        if self.render_s <= self.options.fraction * elapsed:
            did = self.viewer.work()
            self.render_s += time.perf_counter() - now
        if not did:
            self.backend.idle()

    @property
    def render_fraction(self) -> float:
        """The share of wall time spent rendering so far."""
        return self.render_s / max(time.perf_counter() - self.started, 1e-9)

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.close()


def training_scene(trainer) -> SceneInfo:
    """What the page shows for a run being trained: its tiles (coloured by the process that trains them),
    its training cameras."""
    from nerfxl.viewer.camera import up_direction
    from nerfxl.viewer.overlays import tile_owners

    boxes = trainer.transform.box(trainer.plan.boxes.double()).numpy()
    cameras = trainer.train_cameras.to("cpu")
    processes = 1 if trainer.strategy.joint else trainer.ctx.world_size  # plane, channel: every process holds every tile
    return SceneInfo(run_dir=trainer.run_dir, transform=trainer.transform, scene_box=trainer.scene_box.double().cpu().numpy(),
                     tile_boxes=boxes, owners=tile_owners(len(boxes), processes), cameras=cameras,
                     up=up_direction(cameras), n_train_images=len(trainer.train_data),
                     image_size=(int(cameras.width[0]), int(cameras.height[0])),
                     label=f"nerfxl · training {trainer.run_dir.name}")



