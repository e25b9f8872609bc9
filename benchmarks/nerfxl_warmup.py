"""Shared by the NeRF-XL benchmarks: a warm start every configuration of a benchmark begins from.

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


def warm_up(cfg, work: Path, steps: int, log: Callable[[str], None]) -> tuple[Path, Path, float]:
    """Train all K tiles in this process for ``steps`` steps (the occupancy grids settle) and
    checkpoint; returns (checkpoint, tile plan file, seconds)."""
    from nerfxl.checkpoint import latest_checkpoint
    from nerfxl.train import Trainer

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
