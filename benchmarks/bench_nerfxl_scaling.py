"""Training throughput of one K-tile model on D = 1, 2, 4 processes (NeRF-XL, partition-based exchange).

Trains all K tiles once on one process for --warmup steps (occupancy settles) and checkpoints; then,
for each D in --devices, starts D processes (D = 1: this process) that load the checkpoint and run
the same --steps training steps (same batches, same samples: the runs compute the same thing), and
reports steps/s and rays/s side by side with the ratio to D = 1.

On a CPU machine the D processes share its cores (each gets cpu_count // D threads), so the
figures measure overhead (exchange, D copies of the shared modules) more than speed-up; with
``--device cuda`` each rank takes cuda:rank and D is capped at the number of GPUs.

    python benchmarks/bench_nerfxl_scaling.py [--data PATH] [--preset city] [--tiles 4] [--devices 1 2 4]
        [--warmup 64] [--steps 8] [--device cpu|cuda] [--quick]

Prints one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from nerfxl_warmup import add_run_arguments, apply_quick, build_run_config, sync_device, trainer_from_checkpoint, warm_up


def log(msg: str) -> None:
    print(f"[bench_nerfxl_scaling] {msg}", file=sys.stderr, flush=True)


def run_rank(ctx, cfg, checkpoint: str, run_dir: str, start: int, settle: int, steps: int,
             threads: int | None = None) -> dict:
    """One process: load the warm checkpoint, ``settle`` untimed steps, then ``steps`` timed ones."""
    from nerfxl.parallel.distributed import barrier

    trainer = trainer_from_checkpoint(ctx, cfg, checkpoint, run_dir, threads)
    step = start
    for _ in range(settle):
        trainer.train_step(step)
        step += 1
    barrier(ctx)
    sync_device(trainer.device)
    samples, samples_max, psnr = 0.0, 0.0, 0.0
    per_step = []
    t_all = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        stats = trainer.train_step(step)
        sync_device(trainer.device)
        per_step.append(time.perf_counter() - t0)
        samples += stats["samples"]
        samples_max += stats["samples_max_rank"]
        psnr += stats["psnr"] / steps
        step += 1
        if ctx.is_main:
            log(f"  D={ctx.world_size}: step {i + 1}/{steps} {per_step[-1]:.2f} s, {stats['samples']:.0f} samples")
    seconds = time.perf_counter() - t_all
    return {
        "rank": ctx.rank,
        "seconds": seconds,
        "step_seconds": per_step,
        "samples": samples,
        "samples_max_rank": samples_max,
        "psnr": psnr,
        "threads": torch.get_num_threads(),
        "device": str(trainer.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, devices=[1, 2, 4], steps=8, quick_steps=3)
    args = parser.parse_args()
    apply_quick(args, quick_steps=3)

    from nerfxl.parallel.launch import launch

    for d in args.devices:
        if args.tiles % d:
            parser.error(f"--devices {d} does not divide --tiles {args.tiles}")
    device_type = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                               ("cpu" if args.device == "auto" else args.device)).type
    skipped = []
    devices = list(args.devices)
    if device_type == "cuda":
        n_gpus = torch.cuda.device_count()
        skipped = [d for d in devices if d > n_gpus]
        devices = [d for d in devices if d <= n_gpus]
        if skipped:
            log(f"skipping D={skipped}: only {n_gpus} GPU(s)")

    cfg = build_run_config(args, partitions=args.tiles, partition_method=args.partition_method, exchange="partition")
    rays = cfg.batch_rays

    if args.threads:
        torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scaling-", dir=args.output))
    runs = []
    try:
        log(f"warm-up: {args.warmup} steps, K={args.tiles}, {rays} rays/step, data {cfg.data}")
        ckpt, plan, warm_s = warm_up(cfg, work, args.warmup, log)
        cfg = dataclasses.replace(cfg, tile_plan=plan)
        for d in devices:
            log(f"D={d}: starting {d} process(es)")
            t0 = time.perf_counter()
            results = launch(run_rank, d, args=(dataclasses.replace(cfg, devices=d), str(ckpt), str(work / f"d{d}"),
                                                args.warmup, args.settle, args.steps, args.threads), device=args.device)
            wall = time.perf_counter() - t0
            ranks = [results[r] for r in sorted(results)]
            seconds = max(r["seconds"] for r in ranks)  # the step ends for everyone with the slowest
            step_times = sorted(ranks[0]["step_seconds"])
            runs.append({
                "devices": d,
                "tiles_per_process": args.tiles // d,
                "threads_per_process": ranks[0]["threads"],
                "rank_devices": [r["device"] for r in ranks],
                "seconds_per_step": seconds / args.steps,
                "median_step_seconds": step_times[len(step_times) // 2],
                "steps_per_s": args.steps / seconds,
                "rays_per_s": rays * args.steps / seconds,
                "samples_per_step": ranks[0]["samples"] / args.steps,
                "samples_max_process_per_step": ranks[0]["samples_max_rank"] / args.steps,
                "train_psnr_timed_steps": ranks[0]["psnr"],
                "wall_seconds_incl_startup": wall,
            })
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = next((r for r in runs if r["devices"] == 1), None)
    for r in runs:
        r["ratio_to_d1"] = None if base is None else r["rays_per_s"] / base["rays_per_s"]
        # Perfect scaling with perfect balance: D times D=1; the balance bound is samples / (D · max per process).
        r["balance_bound_ratio"] = r["samples_per_step"] / r["samples_max_process_per_step"] \
            if r["samples_max_process_per_step"] else None

    print(json.dumps({
        "benchmark": "nerfxl_scaling",
        "device": device_type,
        "preset": args.preset,
        "data": str(cfg.data),
        "tiles": args.tiles,
        "exchange": "partition",
        "partition_method": args.partition_method,
        "rays_per_step": rays,
        "warmup_steps": args.warmup,
        "warmup_seconds": warm_s,
        "timed_steps": args.steps,
        "cpu_count": os.cpu_count(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "skipped_devices": skipped,
        "runs": runs,
        "note": (f"{os.cpu_count()} CPU cores are shared by all D processes (cpu_count // D threads each unless "
                 "--threads): on CPU the speed-up is bounded by the number of cores, not by D, and D above the core "
                 "count oversubscribes. One process's intra-op threads speed these small kernels up little, so D "
                 "single-threaded processes can use the cores better than one process with D threads. "
                 "balance_bound_ratio = samples / max per process is what a perfectly parallel step would reach "
                 "with this plan's load balance. Timings are noisy when other jobs share the machine.")
                if device_type == "cpu" else
                "one GPU per process; balance_bound_ratio = samples / max per process is the speed-up a "
                "perfectly parallel step would reach with this tile plan's load balance.",
    }, indent=2))


if __name__ == "__main__":
    main()
