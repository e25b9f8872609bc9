"""Real multi-process figures for the scaling study: NeRF-XL and DDP rays/s on D = K processes, and the
bytes and seconds each process spends in collectives per step, partition- vs sample-based exchange.

Each measurement starts D processes (D = 1: this process) that build the trainer, load a checkpoint of
the study when there is one (so occupancy, hence samples per ray, are those of a trained model), run
one untimed step and then ``steps`` timed ones. NeRF-XL loads the study's single-process K-tile run;
DDP, whose D processes each hold the K = 1 model and draw ``batch_rays`` rays, loads the K = 1 run.
On a CPU the D processes share the machine's cores, so rays/s there shows overhead more than speed-up.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

GRADIENTS = "all_reduce_gradients"  # the shared modules' all-reduce: the same in both exchange modes


def process_limit(device: str) -> int:
    """How many processes fit: one per GPU, else one per CPU core."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def measure_throughput(config, tiles: tuple[int, ...], runs: dict[int, Path], steps: int, work: Path) -> dict:
    """NeRF-XL at K = D and DDP on D processes for every K in ``tiles`` that fits, and both NeRF-XL
    exchanges at the largest K ≥ 2.

    Args:
        config: the study's NeRF-XL TrainConfig (method/partitions/devices/tile_plan are set here per K).
        runs: K → the study's single-process NeRF-XL run folder, whose checkpoint is loaded.
        steps: timed steps per measurement.
        work: scratch folder for the per-rank trainers (nothing is saved there).
    Returns:
        ``{"throughput": [NeRF-XL per D], "throughput_ddp": [DDP per D], "exchange": {...} or None,
        "throughput_skipped": [K that do not fit]}``.
    """
    limit = process_limit(config.device)
    fits = sorted(k for k in set(tiles) if k <= limit)
    timed, timed_ddp = [], []
    for d in fits:
        print(f"[bench scaling] throughput: nerfxl K=D={d} on {d} process(es)", flush=True)
        timed.append(measure(config, d, "partition", runs.get(d), steps, work))
        print(f"[bench scaling] throughput: ddp on {d} process(es)", flush=True)
        timed_ddp.append(measure(config, d, "partition", runs.get(1), steps, work, method="ddp"))
    exchange = None
    if fits and fits[-1] >= 2:
        d = fits[-1]
        print(f"[bench scaling] exchange: sample-based at K=D={d}", flush=True)
        sample = measure(config, d, "sample", runs.get(d), steps, work)
        partition = timed[-1]
        exchange = {
            "devices": d,
            "partition_bytes_per_step": partition["exchange_bytes_per_step"],
            "sample_bytes_per_step": sample["exchange_bytes_per_step"],
            "gradient_bytes_per_step": partition["gradient_bytes_per_step"],
            "ratio_sample_over_partition": sample["exchange_bytes_per_step"] / max(partition["exchange_bytes_per_step"], 1),
            "partition_seconds_per_step": partition["seconds_per_step"],
            "sample_seconds_per_step": sample["seconds_per_step"],
            "partition_exchange_seconds_per_step": partition["exchange_seconds_per_step"],
            "sample_exchange_seconds_per_step": sample["exchange_seconds_per_step"],
            "gradient_seconds_per_step": partition["gradient_seconds_per_step"],
            "note": "bytes per step and per process handed to collectives (busiest process), gradient all-reduce "
                    "apart; *_exchange_seconds: host time in those collectives (slowest process), waiting for "
                    "peers included",
        }
    return {"throughput": timed, "throughput_ddp": timed_ddp, "exchange": exchange,
            "throughput_skipped": sorted(set(tiles) - set(fits))}


def measure(config, d: int, exchange: str, run_dir: Path | None, steps: int, work: Path,
            method: str = "nerfxl") -> dict:
    """Time ``steps`` steps on D processes (NeRF-XL: K = D tiles; DDP: D replicas of the K = 1 model);
    the figures of the slowest/busiest process."""
    from nerfxl.checkpoint import latest_checkpoint
    from nerfxl.parallel.launch import launch

    tiles = 1 if method == "ddp" else d
    plan = None if run_dir is None or tiles == 1 else Path(run_dir) / "tiles.json"
    checkpoint = None if run_dir is None else latest_checkpoint(Path(run_dir))
    cfg = dataclasses.replace(config, method=method, partitions=tiles, devices=d, exchange=exchange,
                              tile_plan=plan if plan is not None and plan.is_file() else None)
    t0 = time.perf_counter()
    results = launch(time_rank, d, args=(cfg, None if checkpoint is None else str(checkpoint),
                                         str(work / f"d{d}-{method}-{exchange}"), steps), device=cfg.device)
    ranks = list(results.values())
    seconds = max(r["seconds"] for r in ranks)  # a step ends for everyone with the slowest process

    def busiest_per_step(key: str, gradients: bool) -> float:
        """Max over processes of ``key`` summed over the gradient all-reduce or over every other collective."""
        return max(sum(entry[key] for name, entry in r["stats"].items() if (name == GRADIENTS) == gradients)
                   for r in ranks) / steps

    rays_per_step = cfg.batch_rays * (d if method == "ddp" else 1)  # DDP: every replica draws its own batch
    return {
        "method": method,
        "devices": d,
        "exchange": exchange,
        "rays_per_step": rays_per_step,
        "steps": steps,
        "seconds_per_step": seconds / steps,
        "rays_per_s": rays_per_step * steps / seconds,
        "exchange_bytes_per_step": busiest_per_step("bytes", gradients=False),
        "gradient_bytes_per_step": busiest_per_step("bytes", gradients=True),
        "exchange_seconds_per_step": busiest_per_step("seconds", gradients=False),
        "gradient_seconds_per_step": busiest_per_step("seconds", gradients=True),
        "threads_per_process": ranks[0]["threads"],
        "from_checkpoint": checkpoint is not None,
        "wall_seconds_incl_startup": time.perf_counter() - t0,
    }


def time_rank(ctx, cfg, checkpoint: str | None, run_dir: str, steps: int) -> dict:
    """One process (module level: spawn pickles it by name): settle one step, time ``steps`` more."""
    from nerfxl.parallel.distributed import barrier
    from nerfxl.trainer import Trainer

    trainer = Trainer(cfg, Path(run_dir) / f"rank{ctx.rank}", ctx=ctx)
    if checkpoint is not None:
        trainer.load(Path(checkpoint), with_optimizer=False)
    step = trainer.step
    trainer.train_step(step)  # first step: allocator warm-up, lazy initialisations
    barrier(ctx)
    ctx.reset_stats()
    sync(trainer.device)
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        trainer.train_step(step + i)
    sync(trainer.device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "stats": {name: dict(entry) for name, entry in ctx.stats.items()},
            "threads": torch.get_num_threads()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
