"""``nerfxl eval``: rendering held-out views and scoring them (PSNR, SSIM), on one process or on D.

With D processes every process renders its tiles' segments of each image and rank 0 gathers,
composites, scores and saves (nerf-xl.md §6); the other processes return None.
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.errors import ConfigError
from nerfxl.fileio import write_json_atomic
from nerfxl.parallel.distributed import DistContext
from nerfxl.parallel.images import render_image, to_uint8
from nerfxl.parallel.tiles import check_tiles_per_process
from nerfxl.renderer import TiledRenderer
from nerfxl.run.layout import checkpoint_strategy
from nerfxl.run.load import load_split, run_checkpoint
from nerfxl.run.trained import load_trained


def image_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    """PSNR and SSIM of [H, W, 3] images in [0, 1]."""
    # Imported here: torchmetrics takes seconds to import, which every spawned rank would pay otherwise.
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p = pred.permute(2, 0, 1)[None].float()
    t = target.permute(2, 0, 1)[None].float()
    return {
        "psnr": float(peak_signal_noise_ratio(p, t, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(p, t, data_range=1.0)),
    }


def evaluate_split(renderer: TiledRenderer, cameras: Cameras, dataset, indices: list[int],
                   save_dir: Path | None = None, log_images=None, step: int = 0, ctx: DistContext | None = None) -> dict | None:
    """Render ``indices`` of a split, compare with the dataset's images, optionally save them.

    Returns the scores on rank 0, None on the other processes of ``ctx``.
    """
    import imageio.v3 as iio

    per_image = []
    t0 = time.perf_counter()
    for j, i in enumerate(indices):
        rendered = render_image(renderer, cameras, i, ctx)
        if rendered is None:
            continue
        target = dataset.images.rgb(i)
        m = image_metrics(rendered["rgb"], target)
        m["image"] = dataset.image_names[i] if dataset.image_names else str(i)
        per_image.append(m)
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            side = torch.cat([target, rendered["rgb"]], dim=1)
            iio.imwrite(save_dir / f"{j:04d}.png", to_uint8(side))
        if log_images is not None and j < 4:
            log_images.image(f"eval/view_{j}", step, torch.cat([target, rendered["rgb"]], dim=1))
    seconds = time.perf_counter() - t0
    if ctx is not None and not ctx.is_main:
        return None
    return summarise_scores(per_image, seconds, cameras, indices)


def summarise_scores(per_image: list[dict], seconds: float, cameras: Cameras, indices: list[int]) -> dict:
    """Mean PSNR/SSIM over per-image scores, with the rendering time and rays (pixels) per second of
    rendering views ``indices`` of ``cameras``; means are NaN when there are no images."""
    n_pixels = sum(int(cameras.width[i] * cameras.height[i]) for i in indices)
    return {
        "psnr": float(np.mean([m["psnr"] for m in per_image])) if per_image else float("nan"),
        "ssim": float(np.mean([m["ssim"] for m in per_image])) if per_image else float("nan"),
        "n_images": len(per_image),
        "render_seconds": seconds,
        "rays_per_second": n_pixels / max(seconds, 1e-9),
        "per_image": per_image,
    }


def spread_indices(n: int, limit: int | None) -> list[int]:
    """All of range(n), or ``limit`` indices spread evenly over it (first and last included)."""
    if limit is None or limit >= n:
        return list(range(n))
    return np.linspace(0, n - 1, limit).round().astype(int).tolist()


def evaluate_views(trainer, limit: int | None = None, log_images=None) -> dict | None:
    """Periodic evaluation during training on (up to ``limit``) evenly spread test views (every
    process calls it; scores on rank 0, None elsewhere)."""
    n = len(trainer.test_data)
    indices = spread_indices(n, limit)
    trainer.renderer.eval()
    try:
        return evaluate_split(trainer.renderer, trainer.test_cameras, trainer.test_data, indices, log_images=log_images,
                              step=trainer.step, ctx=trainer.ctx)
    finally:
        trainer.renderer.train()
        release_freed_memory()


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand the memory an evaluation freed back to the system. Rendering whole images briefly takes
    hundreds of MB; glibc keeps a varying part of it after the free (its mmap threshold adapts
    upwards), so without this the resident memory of a long run wanders upwards by tens of MB per
    evaluation with no live memory behind it (benchmarks/bench_soak.py). A no-op off glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def run_on_processes(fn: Callable[..., Any], run_dir: Path, devices: int, device: str, args: tuple = ()) -> Any:
    """Call ``fn(ctx, *args)`` on every process rendering ``run_dir``; returns rank 0's result.

    ``devices`` processes are spawned here (1: this process runs ``fn`` itself); under torchrun this
    process is one rank and the world size is D (then ranks other than 0 get None). D must divide the
    run's number of tiles, which is checked before any process starts.
    """
    from nerfxl.parallel.launch import launch, launched_externally

    external = launched_externally()
    world = int(os.environ["WORLD_SIZE"]) if external else devices
    if external and devices not in (1, world):
        raise ConfigError(f"--devices {devices} but the launcher started {world} processes (WORLD_SIZE)")
    state = run_checkpoint(run_dir)[2]
    n_tiles = int(state["n_tiles"])
    if not checkpoint_strategy(state).joint:  # plane and channel split within the tile
        check_tiles_per_process(n_tiles, world, tiles=f"the run's {n_tiles} tiles")
    return launch(fn, None if external else devices, args=args, device=device).get(0)


def evaluate_run(run_dir: Path, output: Path | None = None, device: str = "auto", limit: int | None = None,
                 save_images: bool = True, split: str = "test", devices: int = 1) -> dict | None:
    """Score a run's latest checkpoint on a split on ``devices`` processes; writes ``eval.json`` (or
    ``output``). Returns the scores (None on ranks other than 0 under torchrun)."""
    return run_on_processes(evaluate_on_process, run_dir, devices, device,
                            args=(Path(run_dir), output, limit, save_images, split))


def evaluate_on_process(ctx: DistContext, run_dir: Path, output: Path | None, limit: int | None, save_images: bool,
                        split: str) -> dict | None:
    """One process's part of :func:`evaluate_run` (module level: the spawner pickles it by name)."""
    run = load_trained(run_dir, ctx=ctx)
    data = load_split(run.config, split)
    cameras = run.transform.cameras(data.cameras).to(ctx.device)
    indices = spread_indices(len(data), limit)
    save_dir = run_dir / "eval" / f"step-{run.step:08d}" if save_images else None  # rank 0 alone saves
    result = evaluate_split(run.renderer, cameras, data, indices, save_dir=save_dir, ctx=ctx)
    if result is None:
        return None
    result.update({"run": str(run_dir), "checkpoint": str(run.checkpoint), "step": run.step, "split": split,
                   "devices": ctx.world_size})
    out = Path(output) if output else run_dir / "eval.json"
    write_json_atomic(out, result)
    result["output"] = str(out)
    return result
