"""Shared by the NeRF-XL benchmarks: their common options and the warm start every configuration begins from.

Imported by the benchmark scripts beside it (``python benchmarks/bench_*.py`` puts this folder on
the path).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_run_config(args, **fields):
    """The preset's config with the shared options applied (data, device, seed, city size, batch) and
    ``fields`` replaced, its dataset resolved (the built-in city is generated once)."""
    import dataclasses

    from nerfxl.presets import TRAIN_PRESETS
    from nerfxl.run.load import resolve_data_path

    cfg = dataclasses.replace(TRAIN_PRESETS[args.preset][1], data=args.data, progress=False, device=args.device,
                              seed=args.seed, **fields)
    if args.city_size:
        cfg = dataclasses.replace(cfg, city_size=args.city_size)
    if args.batch_rays:
        cfg = dataclasses.replace(cfg, batch_rays=args.batch_rays)
    return dataclasses.replace(cfg, data=resolve_data_path(cfg))


def trainer_from_checkpoint(ctx, cfg, checkpoint: str, run_dir: str, threads: int | None = None):
    """One benchmark process's Trainer, restored from the warm checkpoint (its own scratch run folder)."""
    from nerfxl.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    trainer = Trainer(cfg, Path(run_dir) / f"rank{ctx.rank}", ctx=ctx)
    trainer.load(Path(checkpoint))
    return trainer


def warm_up(cfg, work: Path, steps: int, log: Callable[[str], None]) -> tuple[Path, Path, float]:
    """Train all K tiles in this process for ``steps`` steps (the occupancy grids settle) and
    checkpoint; returns (checkpoint, tile plan file, seconds)."""
    from nerfxl.checkpoint import latest_checkpoint
    from nerfxl.trainer import Trainer

    run = work / "warmup"
    trainer = Trainer(cfg, run)
    t0 = time.perf_counter()
    for s in range(steps):
        stats = trainer.train_step(s)
        if (s + 1) % 16 == 0 or s + 1 == steps:
            log(f"warm-up step {s + 1}/{steps}: {stats['samples']:.0f} samples, psnr {stats['psnr']:.2f}")
    sync_device(trainer.device)
    seconds = time.perf_counter() - t0
    trainer.step = steps
    trainer.save()
    plan = trainer.plan.save(run / "tiles.json")
    ckpt = latest_checkpoint(run)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return ckpt, plan, seconds


def add_run_arguments(parser, devices: list[int], steps: int, quick_steps: int) -> None:
    """The options the NeRF-XL benchmarks share (scene, tiles, warm start, timing, device)."""
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the preset's procedural city)")
    parser.add_argument("--preset", default="city")
    parser.add_argument("--city-size", default=None, help="built-in city size when no --data (default: the preset's)")
    parser.add_argument("--tiles", type=int, default=4, help="K")
    parser.add_argument("--devices", type=int, nargs="+", default=devices, help="values of D (each must divide K)")
    parser.add_argument("--partition-method", default="kd", choices=["kd", "uniform"])
    parser.add_argument("--batch-rays", type=int, default=None, help="rays per step (default: the preset's)")
    parser.add_argument("--warmup", type=int, default=64, help="steps trained once on one process before measuring")
    parser.add_argument("--settle", type=int, default=1, help="untimed steps after loading, per run")
    parser.add_argument("--steps", type=int, default=steps, help="measured steps per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (rank r takes cuda:r)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (default: nerfxl's, cpu_count // D; D=1 uses all cores)")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny preset on the tiny city, 8 warm-up steps, {quick_steps} steps")
    parser.add_argument("--output", type=Path, default=Path("/tmp/nerfxl-bench"), help="scratch folder")


def apply_quick(args, quick_steps: int) -> None:
    """--quick: the tiny preset and a few steps (a smoke test, not a figure)."""
    if args.quick:
        args.preset, args.warmup, args.steps = "tiny", min(args.warmup, 8), min(args.steps, quick_steps)
