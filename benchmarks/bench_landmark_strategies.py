"""Bytes and seconds per training step of four ways to spread one model over D processes, side by side.

The strategies (``TrainConfig.strategy``), on the same scene, the same ray batch and the same ground-plane
grid (one xy plane × one z line per level), for each D in --devices:

- ``nerfxl``:  ``--strategy tiles --partitions 4 --exchange partition``. NeRF-XL: K = 4 tiles over D
  processes; every process renders its tiles' segments of every ray and the processes all-gather
  6 float32 per ray per held tile (colour, opacity, depth numerator, distortion), i.e. K/D · R · 24 B
  per process (``all_gather_blocks``), whatever the number of samples.
- ``branch``:  ``--strategy branch --blocks 2x2``. LandMark's branch parallel: uniform 2×2 ground blocks,
  each its own grid, K/D blocks per process, with the sample-based exchange: every sample's t-interval,
  σ and rgb (6 float32) plus its ray index (int32), padded to the busiest process
  (``all_gather_variable`` + ``all_gather_tensor``), plus the small row-count headers.
- ``plane``:   ``--strategy plane --blocks 1x1 | 2x1 | 2x2`` (one sub-plane per process). LandMark's plane
  parallel: one ground plane cut into D windows; every process marches every ray, each sample is
  evaluated by the window owning its x-y and σ+rgb (4 float32 per sample) are all-gathered
  (``all_gather_variable``, padded to the busiest window), plus the sample counts (row headers). The
  occupancy refresh routes its density queries the same way.
- ``channel``: ``--strategy channel``. LandMark's channel parallel: every plane and line split along its
  channels; every process evaluates every sample on its channel slice and the partial features are
  all-gathered: (density + appearance channels) × levels float32 per sample in total, 1/D of it
  handed over by each process (``all_gather_blocks``). Here (8 + 24) × 2 levels = 64 floats per sample.
- ``hybrid`` (D ≥ 2): ``--strategy plane --replicas 2``: two data-parallel replicas of plane parallel over
  D/2 processes (1x1 at D = 2, i.e. plain data parallel; 2x1 at D = 4), each replica rendering half of
  the same global batch; the held parameters' gradients are then averaged over the replicas
  (``all_reduce_gradients``: the replica average and plane's replicated-parameter sum together).

Plane and channel parallel also gather during the renderer's pruning pass, which evaluates σ alone at
every marched sample before the kept ones are queried: + 1 float per sample (plane) and + 8 × 2 / D
density floats per sample (channel), so expect about 20 / D floats (plane, 4 + 1 over D windows, padded
to the busiest) and 80 / D floats (channel) per kept sample and process. Branch and NeRF-XL prune
locally (only the kept samples' values, or the per-ray blocks, travel).

So the sample-based strategies' traffic grows with the samples per ray, NeRF-XL's only with the rays.

Besides the exchange, the replicated parameters' gradients are summed after backward and reported apart
under their collective's name: ``all_reduce_gradients`` (shared modules of tiles/branch; replicated
z lines, heads and decoder of plane), ``sync_border_gradients`` (plane: the sub-planes' shared border
rows and columns), ``sum_gradient_over_processes`` (channel: the sample positions' gradient, only when
they carry one, i.e. with pose corrections). Channel parallel needs no gradient all-reduce: every process
computes the whole loss. ``all_gather_tensor`` also carries the trainer's 16 B per-step stats gather.

What is timed: each (strategy, D) builds a fresh Trainer (same seed, so the same batches and jitter),
trains --warmup untimed steps (the occupancy grid and pruning settle a little), zeroes the collective
counters (``ctx.reset_stats()``) and times --steps steps with ``time.perf_counter``. Bytes are exact
counts of the payload each process hands to collectives, per step and per process (the max over
processes; every process hands about the same, padded gathers make it equal). Seconds are the mean
per step on rank 0 and the slowest rank. Every process runs --threads torch threads (default 1), so
on a machine with fewer cores than D processes the times include the sharing of cores: compare bytes
across D, and times only within one D. With D = 1 nothing is exchanged (every collective counts 0 B).

Not the same model capacity: tiles and branch hold 4 grids (one per tile or block), plane and channel
one grid of the same resolution over the whole scene; ``params_per_process`` shows what each process
holds.

    python benchmarks/bench_landmark_strategies.py [--data PATH] [--devices 1 2 4] [--rays 1024]
        [--warmup 8] [--steps 4] [--downscale 2] [--threads 1] [--quick]

Prints one JSON object to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

STRATEGIES = ("nerfxl", "branch", "plane", "channel", "hybrid")
TILES = 4  # K of nerfxl and branch (2x2 blocks)
GRADIENT_COLLECTIVES = ("all_reduce_gradients", "sync_border_gradients", "sum_gradient_over_processes")
PLANE_BLOCKS = {1: "1x1", 2: "2x1", 4: "2x2"}


def log(msg: str) -> None:
    print(f"[bench_landmark_strategies] {msg}", file=sys.stderr, flush=True)


def base_config(args):
    """The city preset with a ground-plane grid that every strategy can split, for this run."""
    from nerfxl.fields.config import GridConfig
    from nerfxl.presets import TRAIN_PRESETS

    cfg = TRAIN_PRESETS["city"][1]
    grid = GridConfig(mode="ground", base_resolution=(33, 33, 17), scales=(1, 2), level_scaling="cells",
                      density_channels=8, appearance_channels=24, scale_z=False)
    return dataclasses.replace(cfg, field=dataclasses.replace(cfg.field, grid=grid), data=args.data,
                               batch_rays=args.rays, device="cpu", progress=False, eval_every=0,
                               downscale=args.downscale, seed=args.seed, output=args.work)


def strategy_config(base, strategy: str, d: int):
    """The TrainConfig of one (strategy, D); None where the strategy does not apply to D."""
    if strategy == "nerfxl":
        return dataclasses.replace(base, strategy="tiles", partitions=TILES, exchange="partition", devices=d)
    if strategy == "branch":
        return dataclasses.replace(base, strategy="branch", blocks="2x2", devices=d)
    if strategy == "plane":
        return dataclasses.replace(base, strategy="plane", partitions=1, blocks=PLANE_BLOCKS[d], devices=d)
    if strategy == "channel":
        return dataclasses.replace(base, strategy="channel", partitions=1, devices=d)
    if strategy == "hybrid":
        if d < 2:
            return None
        return dataclasses.replace(base, strategy="plane", partitions=1, blocks=PLANE_BLOCKS[d // 2], devices=d,
                                   replicas=2, batch_rays=base.batch_rays // 2)
    raise ValueError(strategy)


def measure_one(ctx, cfg, run_dir: Path, train_data, warmup: int, steps: int, label: str) -> dict:
    """This process's part of one (strategy, D): warm up, then count bytes and time ``steps`` steps."""
    from nerfxl.trainer import Trainer

    trainer = Trainer(cfg, run_dir, train_data=train_data, ctx=ctx)  # never saved: run_dir stays unmade
    params = sum(p.numel() for p in trainer.renderer.field.parameters())
    t0 = time.perf_counter()
    for step in range(warmup):
        trainer.train_step(step)
    warm_s = time.perf_counter() - t0
    ctx.reset_stats()
    seconds, samples, samples_max, losses = [], [], [], []
    for step in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        stats = trainer.train_step(step)
        seconds.append(time.perf_counter() - t0)
        samples.append(stats["samples"])
        samples_max.append(stats["samples_max_rank"])
        losses.append(stats["loss"])
    counted = ctx.reset_stats()
    if ctx.is_main:
        log(f"  {label}: warm-up {warm_s:.1f} s, {sum(seconds) / steps:.3f} s/step, "
            f"{sum(samples) / steps:.0f} samples/step")
    result = {
        "rank": ctx.rank,
        "bytes": {name: entry["bytes"] for name, entry in counted.items()},
        "calls": {name: entry["calls"] for name, entry in counted.items()},
        "seconds": seconds,
        "samples": samples,
        "samples_max_rank": samples_max,
        "loss": losses,
        "params": params,
        "tiles_held": list(trainer.tile_ids),
        "blocks": trainer.config.blocks,
        "warmup_seconds": warm_s,
    }
    del trainer
    gc.collect()
    return result


def run_jobs(ctx, jobs: list[tuple[str, object]], run_root: str, warmup: int, steps: int, threads: int) -> dict:
    """Every process of one D: each strategy in turn on the same process group (one start-up per D).

    Module level so that the spawner pickles it by name. Returns {strategy: this process's measures}.
    """
    from nerfxl.run.load import load_split

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # Every strategy reads the same images the same way: load them once per process.
        train_data = load_split(jobs[0][1], "train")
        out = {}
        for name, cfg in jobs:
            run_dir = Path(run_root) / f"{name}-d{ctx.world_size}" / f"rank{ctx.rank}"
            out[name] = measure_one(ctx, cfg, run_dir, train_data, warmup, steps, f"D={ctx.world_size} {name}")
        return out
    finally:
        torch.set_num_threads(before)


def summarise(strategy: str, d: int, ranks: list[dict], steps: int, rays: int) -> dict:
    """Per step and per process figures of one (strategy, D) from every rank's measures."""
    names = sorted({n for r in ranks for n in r["bytes"]})
    by_coll = {n: max(r["bytes"].get(n, 0) for r in ranks) / steps for n in names}
    calls = {n: max(r["calls"].get(n, 0) for r in ranks) / steps for n in names}
    total = sum(by_coll.values())
    grads = float(sum(v for n, v in by_coll.items() if n in GRADIENT_COLLECTIVES))
    exchange = total - grads
    rank0 = ranks[0]
    samples = sum(rank0["samples"]) / steps  # gathered: the same on every rank
    per_rank_seconds = [sum(r["seconds"]) / steps for r in ranks]
    return {
        "strategy": strategy,
        "devices": d,
        "blocks": rank0["blocks"],
        "tiles_per_process": len(rank0["tiles_held"]),
        "bytes_per_step": by_coll,
        "calls_per_step": calls,
        "total_bytes_per_step": total,
        "exchange_bytes_per_step": exchange,
        "gradient_bytes_per_step": grads,
        "total_bytes_per_step_per_rank": [sum(r["bytes"].values()) / steps for r in ranks],
        "seconds_per_step": per_rank_seconds[0],
        "seconds_per_step_max_rank": max(per_rank_seconds),
        "seconds_per_step_per_rank": per_rank_seconds,
        "seconds_each_step_rank0": rank0["seconds"],
        "samples_per_step": samples,
        "samples_max_rank_per_step": sum(rank0["samples_max_rank"]) / steps,
        "samples_per_ray": samples / rays,
        "exchange_bytes_per_sample": exchange / samples if samples else None,
        "exchange_bytes_per_ray": exchange / rays,
        "params_per_process": rank0["params"],
        "params_per_rank": [r["params"] for r in ranks],
        "loss_last": rank0["loss"][-1],
        "warmup_seconds_rank0": rank0["warmup_seconds"],
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def ratios_vs_nerfxl(results: list[dict]) -> dict:
    """{"D=d": {strategy: {bytes, exchange_bytes, seconds, seconds_max_rank}}} relative to nerfxl at the same D."""
    out = {}
    for d in sorted({r["devices"] for r in results}):
        at_d = {r["strategy"]: r for r in results if r["devices"] == d}
        ref = at_d.get("nerfxl")
        if ref is None:
            continue
        out[f"D={d}"] = {
            s: {
                "total_bytes": ratio(r["total_bytes_per_step"], ref["total_bytes_per_step"]),
                "exchange_bytes": ratio(r["exchange_bytes_per_step"], ref["exchange_bytes_per_step"]),
                "seconds": ratio(r["seconds_per_step"], ref["seconds_per_step"]),
                "seconds_max_rank": ratio(r["seconds_per_step_max_rank"], ref["seconds_per_step_max_rank"]),
            }
            for s, r in at_d.items() if s != "nerfxl"
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the built-in small city)")
    parser.add_argument("--devices", type=int, nargs="+", default=None, help="values of D (1, 2 or 4; default 1 2 4)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--rays", type=int, default=None, help="rays per step (default 1024; --quick 256)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 8; --quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 4; --quick 1)")
    parser.add_argument("--downscale", type=float, default=2.0, help="train on images downscaled by this")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="collective timeout (s)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny city, 256 rays, D in (1, 2), 2 warm-up steps, 1 timed step")
    args = parser.parse_args()
    if args.quick:
        defaults = {"devices": [1, 2], "rays": 256, "warmup": 2, "steps": 1}
    else:
        defaults = {"devices": [1, 2, 4], "rays": 1024, "warmup": 8, "steps": 4}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad = [d for d in args.devices if d not in PLANE_BLOCKS]
    if bad:
        parser.error(f"--devices {bad}: each D must be 1, 2 or 4 (a divisor of the 4 tiles and of the channels)")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")

    from nerfxl.data.city import ensure_city
    from nerfxl.parallel.distributed import single_process_context
    from nerfxl.parallel.launch import launch

    t_start = time.perf_counter()
    if args.data is None:
        args.data = ensure_city("tiny" if args.quick else "small", seed=0)
    work = Path(tempfile.mkdtemp(prefix="landmark-bench-"))
    args.work = work
    base = base_config(args)
    strategies = [s for s in STRATEGIES if s in args.strategies]
    log(f"data {args.data}, {args.rays} rays/step, downscale {args.downscale}, warm-up {args.warmup}, "
        f"timed {args.steps}, D in {args.devices}, {args.threads} thread(s)/process, {os.cpu_count()} cores")
    results, launches = [], {}
    try:
        for d in args.devices:
            jobs = [(s, cfg) for s in strategies if (cfg := strategy_config(base, s, d)) is not None]
            log(f"D={d}: {', '.join(name for name, _ in jobs)}")
            t0 = time.perf_counter()
            call = (jobs, str(work / "runs"), args.warmup, args.steps, args.threads)
            if d == 1:
                per_rank = {0: run_jobs(single_process_context("cpu"), *call)}
            else:
                per_rank = launch(run_jobs, d, args=call, device="cpu", timeout_s=args.timeout,
                                  max_runtime_s=3600.0)
            launches[f"D={d}"] = time.perf_counter() - t0
            for s, _ in jobs:
                ranks = [per_rank[r][s] for r in sorted(per_rank)]
                results.append(summarise(s, d, ranks, args.steps, args.rays))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    occupancy_every = base.render.occupancy_update_every
    timed = range(args.warmup, args.warmup + args.steps)
    print(json.dumps({
        "benchmark": "landmark_strategies",
        "config": {
            "data": str(args.data),
            "quick": args.quick,
            "rays_per_step": args.rays,
            "downscale": args.downscale,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "devices": args.devices,
            "threads_per_process": args.threads,
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "seed": args.seed,
            "grid": dataclasses.asdict(base.field.grid),
            "render": {"samples_per_diagonal": base.render.samples_per_diagonal,
                       "occupancy_resolution": base.render.occupancy_resolution,
                       "occupancy_update_every": occupancy_every,
                       "prune_alpha_after": base.render.prune_alpha_after},
            "timed_steps_include_occupancy_update": any(s % occupancy_every == 0 for s in timed),
            "strategies": {
                "nerfxl": "strategy=tiles, partitions=4 (kd), exchange=partition",
                "branch": "strategy=branch, blocks=2x2 (uniform blocks, sample exchange)",
                "plane": "strategy=plane, partitions=1, blocks=" + "/".join(f"{PLANE_BLOCKS[d]} (D={d})"
                                                                            for d in args.devices),
                "channel": "strategy=channel, partitions=1",
                "hybrid": "strategy=plane, replicas=2, blocks=" + "/".join(
                    f"{PLANE_BLOCKS[d // 2]} (D={d})" for d in args.devices if d > 1) + ", rays/2 per replica",
            },
            "expected_exchange": {
                "nerfxl": "K/D · R · 6 · 4 B per process (all_gather_blocks)",
                "branch": "max_r S_r · (6 · 4 + 4) B per process over the held blocks' samples, + count headers",
                "plane": "max_r S_r · 4 · 4 B per process (σ + rgb of its window's samples) + max_r M_r · 4 B "
                         "(σ of its marched samples in the pruning pass), + count headers",
                "channel": "(S · (8 + 24) + M · 8) · 2 levels / D · 4 B per process (all_gather_blocks); "
                           "M = marched samples (pruning pass, σ only), S = kept samples",
                "hybrid": "plane's exchange over D/2 windows for each replica's half of the rays, + every held "
                          "parameter's gradient averaged over the 2 replicas (all_reduce_gradients)",
            },
            "gradient_collectives": list(GRADIENT_COLLECTIVES),
            "wall_seconds_per_D_incl_startup": launches,
            "wall_seconds_total": time.perf_counter() - t_start,
        },
        "results": results,
        "ratios": {"vs_nerfxl_same_D": ratios_vs_nerfxl(results)},
        "note": "bytes: per step and per process (max over processes), exact payload counts; the gradient "
                "collectives are included in total_bytes_per_step and split out as gradient_bytes_per_step. "
                "seconds: mean per step on rank 0 (and the slowest rank); with D processes on fewer cores "
                "than D × threads the times include core sharing. Ratios with a zero reference (D=1) are null.",
    }, indent=2))


if __name__ == "__main__":
    main()
