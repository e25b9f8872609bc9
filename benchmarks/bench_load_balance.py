"""Load balance of NeRF-XL's k-d tile plan against a uniform grid, measured during training.

For each K in --tiles and each plan method (kd, uniform), trains all K tiles on one process (the
single-process twin of a D-process run: the same samples land in the same tiles) and counts the
samples every tile evaluates in each step after --warmup steps. A process that holds K/D
consecutive tiles does their summed work, so for every D dividing K (D > 1) the figure is

    imbalance = max over processes / mean over processes of samples per step

(1 = perfect; the slowest process sets the pace of a step: efficiency ≈ 1 / imbalance). The plan's
own prediction, from the work estimate it was balanced on (``TilePlan.weight_per_tile``), is given
alongside (``TilePlan.imbalance`` for D = K).

    python benchmarks/bench_load_balance.py [--data PATH] [--preset city] [--tiles 4 8] [--warmup 64] [--steps 8]

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
from nerfxl_warmup import build_run_config


def log(msg: str) -> None:
    print(f"[bench_load_balance] {msg}", file=sys.stderr, flush=True)


def grouped(per_tile: torch.Tensor, d: int) -> torch.Tensor:
    """[..., K] per-tile values → [..., D] per-process sums (K/D consecutive tiles each)."""
    k = per_tile.shape[-1]
    return per_tile.reshape(*per_tile.shape[:-1], d, k // d).sum(-1)


def max_over_mean(x: torch.Tensor) -> torch.Tensor:
    """max / mean over the last dimension (1 = balanced)."""
    mean = x.mean(-1)
    return torch.where(mean > 0, x.max(-1).values / mean.clamp_min(1e-12), torch.ones_like(mean))


def measure(cfg, run_dir: Path, k: int, method: str, warmup: int, steps: int) -> dict:
    from nerfxl.trainer import Trainer

    cfg = dataclasses.replace(cfg, partitions=k, partition_method=method)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, run_dir)
    setup_s = time.perf_counter() - t0
    plan = trainer.plan
    renderer = trainer.renderer
    original = renderer.query_tiles
    current = torch.zeros(k, dtype=torch.float64)

    def counted_query_tiles(tiles, rays, stratified=False, generators=None):
        results = original(tiles, rays, stratified, generators)
        for tile, (samples, _, _) in zip(tiles, results):
            current[int(tile)] += samples.n_samples
        return results

    renderer.query_tiles = counted_query_tiles
    t0 = time.perf_counter()
    for s in range(warmup):
        trainer.train_step(s)
        if (s + 1) % 16 == 0:
            log(f"K={k} {method}: warm-up step {s + 1}/{warmup}")
    rows = []
    psnr = 0.0
    for s in range(warmup, warmup + steps):
        current.zero_()
        stats = trainer.train_step(s)
        psnr += stats["psnr"] / steps
        rows.append(current.clone())
    train_s = time.perf_counter() - t0
    per_step = torch.stack(rows)  # [steps, K]
    total = per_step.sum(0)

    divisors = [d for d in range(2, k + 1) if k % d == 0]
    per_devices = {}
    weights = plan.weight_per_tile
    for d in divisors:
        per_devices[str(d)] = {
            "tiles_per_process": k // d,
            # Mean over steps of each step's max/mean (what a synchronous step waits for).
            "measured_max_over_mean": float(max_over_mean(grouped(per_step, d)).mean()),
            "measured_max_over_mean_worst_step": float(max_over_mean(grouped(per_step, d)).max()),
            "predicted_max_over_mean": float(max_over_mean(grouped(weights, d))),
        }
    result = {
        "tiles": k,
        "method": method,
        "grid_shape": None if plan.grid_shape is None else list(plan.grid_shape),
        "plan_source": plan.source.get("kind"),
        "plan_imbalance": plan.imbalance,
        "plan_shares": [round(float(x), 4) for x in plan.shares],
        "measured_shares": [round(float(x), 4) for x in (total / total.sum().clamp_min(1))],
        "samples_per_step": float(per_step.sum(1).mean()),
        "samples_per_tile_per_step": [round(float(x), 1) for x in per_step.mean(0)],
        "by_devices": per_devices,
        "train_psnr_measured_steps": psnr,
        "setup_seconds": setup_s,
        "train_seconds": train_s,
    }
    log(f"K={k} {method}: imbalance measured (D=K) {per_devices[str(k)]['measured_max_over_mean']:.3f}, "
        f"plan {plan.imbalance:.3f}")
    del trainer
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the preset's procedural city)")
    parser.add_argument("--preset", default="city")
    parser.add_argument("--city-size", default=None, help="built-in city size when no --data (default: the preset's)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[4, 8], help="values of K")
    parser.add_argument("--methods", nargs="+", default=["kd", "uniform"], choices=["kd", "uniform"])
    parser.add_argument("--batch-rays", type=int, default=None, help="rays per step (default: the preset's)")
    parser.add_argument("--warmup", type=int, default=64, help="training steps before counting (occupancy settles)")
    parser.add_argument("--steps", type=int, default=8, help="counted training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="tiny preset on the tiny city, 8 warm-up steps, 3 steps")
    parser.add_argument("--output", type=Path, default=Path("/tmp/nerfxl-bench"), help="scratch folder")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.warmup, args.steps = "tiny", min(args.warmup, 8), min(args.steps, 3)

    cfg = build_run_config(args)

    if args.threads:
        torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="load-balance-", dir=args.output))
    results = []
    try:
        for k in args.tiles:
            for method in args.methods:
                log(f"K={k} {method}: {args.warmup} warm-up + {args.steps} counted steps")
                results.append(measure(cfg, work / f"k{k}-{method}", k, method, args.warmup, args.steps))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    side_by_side = []
    for k in args.tiles:
        row = {"tiles": k}
        for d in [d for d in range(2, k + 1) if k % d == 0]:
            for r in results:
                if r["tiles"] == k:
                    entry = r["by_devices"][str(d)]
                    row[f"D{d}_{r['method']}_measured"] = round(entry["measured_max_over_mean"], 4)
                    row[f"D{d}_{r['method']}_predicted"] = round(entry["predicted_max_over_mean"], 4)
        side_by_side.append(row)

    print(json.dumps({
        "benchmark": "load_balance",
        "device": str(args.device),
        "preset": args.preset,
        "data": str(cfg.data),
        "rays_per_step": cfg.batch_rays,
        "warmup_steps": args.warmup,
        "counted_steps": args.steps,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "summary": side_by_side,
        "plans": results,
        "note": "max/mean of samples per process per step (processes hold K/D consecutive tiles), measured on the "
                "single-process twin of a D-process run; 'predicted' is the plan's work estimate grouped the same way "
                "(D = K: TilePlan.imbalance). Sample counts are deterministic in (seed, step), unlike the timings.",
    }, indent=2))


if __name__ == "__main__":
    main()
