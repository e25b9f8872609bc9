"""``nerfxl view RUN``: serve a trained run to the browser (viser), on one process or several, whole or
streamed around the camera (dynamic fetching)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np

from nerfxl.parallel.distributed import DistContext
from nerfxl.viewer.server import FetchGeometry, SceneInfo, Viewer, ViewerOptions


def scene_info(run, label: str, fetching=None, processes: int = 1) -> SceneInfo:
    """What the page shows for a loaded run (a TrainedRun): tiles, blocks, training cameras, and with
    ``fetching`` (a :class:`nerfxl.fetch.load.FetchingRun`) the fetch grid and window."""
    import torch

    from nerfxl.checkpoint import load_checkpoint
    from nerfxl.data.boxes import union_box
    from nerfxl.errors import NerfxlError
    from nerfxl.run.layout import checkpoint_strategy, saved_strategy
    from nerfxl.run.load import load_split
    from nerfxl.viewer.camera import up_direction
    from nerfxl.viewer.overlays import block_boxes, tile_owners

    state = load_checkpoint(run.checkpoint, shard_names=[], verify=False)[1]
    boxes = torch.tensor(state["tile_boxes"], dtype=torch.float64)
    scene_box = union_box(boxes).numpy()
    z_range = (float(scene_box[0, 2]), float(scene_box[1, 2]))
    blocks = fetch = None
    if fetching is not None:
        layout = fetching.layout
        blocks = block_boxes(layout.xy_min, layout.xy_max, layout.split.nx, layout.split.ny, z_range)
        fetch = FetchGeometry(layout.xy_min, layout.block_size, fetching.fetcher.n, z_range)
    elif (split := checkpoint_strategy(state).block_split(saved_strategy(state))) is not None:  # plane windows
        blocks = block_boxes(scene_box[0, :2], scene_box[1, :2], split.nx, split.ny, z_range)
    # The processes holding the tiles: this view's, else the ones that trained them.
    owners = tile_owners(len(boxes), processes if processes > 1 else max(1, int(run.config.devices)))
    try:
        cameras = run.transform.cameras(load_split(run.config, "train").cameras)
        image_size = (int(cameras.width[0]), int(cameras.height[0]))
        up = up_direction(cameras)
    except (NerfxlError, OSError):  # the dataset moved: the model still renders, without frustums
        cameras, image_size, up = None, (1280, 720), np.array([0.0, 0.0, 1.0])
    return SceneInfo(run_dir=Path(run.run_dir), transform=run.transform, scene_box=scene_box, tile_boxes=boxes.numpy(),
                     owners=owners, block_boxes=blocks, cameras=cameras, up=up,
                     n_train_images=int(state["n_train_images"]), image_size=image_size,
                     label=f"nerfxl · {label} · step {run.step}", fetch=fetch)


def view_run(run_dir: Path, options: ViewerOptions, devices: int = 1, device: str = "auto",
             dynamic_fetch: bool = False, neighbourhood: int = 3, blocks: str | None = None,
             store: str = "memory") -> None:
    """Serve ``run_dir`` until Ctrl-C on ``devices`` processes (rank 0 serves the page)."""
    from nerfxl.evaluate import run_on_processes

    run_on_processes(view_on_process, Path(run_dir), devices, device,
                     args=(Path(run_dir), options, dynamic_fetch, neighbourhood, blocks, store))


def view_on_process(ctx: DistContext, run_dir: Path, options: ViewerOptions, dynamic_fetch: bool, neighbourhood: int,
                    blocks: str | None, store: str) -> None:
    """One process's part of :func:`view_run` (module level: the spawner pickles it by name)."""
    from nerfxl.viewer.backends import FrameBackend

    fetching = None
    if dynamic_fetch:
        from nerfxl.fetch.load import load_for_fetching

        fetching = load_for_fetching(run_dir, neighbourhood, blocks, str(ctx.device), store,
                                     camera_limits="clamp", ctx=ctx)
        run = fetching.trained
        backend = FrameBackend(run.renderer, ctx, fetcher=fetching.fetcher, pixels_split=True)
        what = fetching.summary
    else:
        from nerfxl.run.trained import load_trained

        run = load_trained(run_dir, ctx=ctx)
        backend = FrameBackend(run.renderer, ctx)
        what = f"{run.renderer.n_tiles} tile(s)"
    if not ctx.is_main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 ends the session with a stop command
        try:
            backend.follow()
        finally:
            backend.close()
        return
    scene = scene_info(run, Path(run_dir).name, fetching, ctx.world_size)
    backend.n_train_images = scene.n_train_images
    viewer = Viewer(backend, scene, options)
    print(f"nerfxl viewer: {viewer.url}  ({run_dir}, step {run.step}, {what}, {ctx.world_size} process(es); "
          f"Ctrl-C to stop)", flush=True)
    try:
        viewer.serve_forever()
    finally:
        backend.stop()
        backend.close()
        viewer.close()
        sys.stdout.flush()
