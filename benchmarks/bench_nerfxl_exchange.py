"""Bytes exchanged per training step: NeRF-XL's partition-based exchange vs the sample-based one.

Trains K tiles once on one process for --warmup steps (occupancy settles), checkpoints, and then, for
each D in --devices and each exchange mode, starts D processes that load that checkpoint and run the
same --steps training steps (same seed, same batches, same jitter). Each process counts the bytes it
hands to every collective (``DistContext.stats``); the figures are per step and per process.

The prediction from the formulas: the partition-based exchange sends 6 float32 per ray per held tile
(``K/D · R · 24`` B per process); the sample-based one sends 6 float32 + 1 int32 per sample of the
held tiles (28 B per sample, padded to the busiest process's count by the gather). Their ratio is
``(28 / 24) · samples / (R · K)``, i.e. about the number of samples per ray per tile. The gradient
all-reduce of the shared modules is the same in both modes and is reported apart.

    python benchmarks/bench_nerfxl_exchange.py [--data PATH] [--preset city] [--tiles 4] [--devices 2 4]
        [--warmup 64] [--steps 4] [--quick]

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

FLOAT_BYTES = 4
BLOCK_CHANNELS = 6  # colour (3), opacity, depth numerator, distortion
SAMPLE_ROW_BYTES = 6 * FLOAT_BYTES + 4  # t_start, t_end, sigma, rgb (float32) + ray index (int32)
COLLECTIVES = ("all_gather_blocks", "all_gather_variable", "all_gather_tensor", "all_reduce_gradients")


def log(msg: str) -> None:
    print(f"[bench_nerfxl_exchange] {msg}", file=sys.stderr, flush=True)


def run_rank(ctx, cfg, checkpoint: str, run_dir: str, start: int, settle: int, steps: int,
             threads: int | None = None) -> dict:
    """One process: load the warm checkpoint, run ``settle`` untimed then ``steps`` counted steps."""
    from nerfxl.data.boxes import intersect_rays_boxes

    trainer = trainer_from_checkpoint(ctx, cfg, checkpoint, run_dir, threads)
    renderer = trainer.renderer
    original = renderer.query_tiles
    counting = {"on": False}
    per_tile = {k: {"samples": 0, "segments": 0, "hits": 0} for k in renderer.tile_ids}

    def counted_query_tiles(tiles, rays, stratified=False, generators=None):
        results = original(tiles, rays, stratified, generators)
        if counting["on"]:
            with torch.no_grad():
                for k, (samples, _, _) in zip(tiles, results):
                    box = renderer.field.tile(k).box
                    hit = intersect_rays_boxes(rays.origins.detach(), rays.directions.detach(), box)[2]
                    entry = per_tile[int(k)]
                    entry["samples"] += int(samples.n_samples)
                    entry["segments"] += int(torch.unique(samples.ray_indices).numel()) if samples.n_samples else 0
                    entry["hits"] += int(hit.sum())
        return results

    renderer.query_tiles = counted_query_tiles  # both exchanges evaluate tiles through query_tiles
    step = start
    for _ in range(settle):
        trainer.train_step(step)
        step += 1
    bytes_per_coll: dict[str, int] = {}
    calls_per_coll: dict[str, int] = {}
    seconds, samples, samples_max = 0.0, 0.0, 0.0
    counting["on"] = True
    for i in range(steps):
        ctx.reset_stats()
        sync_device(trainer.device)
        t0 = time.perf_counter()
        stats = trainer.train_step(step)
        sync_device(trainer.device)
        seconds += time.perf_counter() - t0
        for name, entry in ctx.stats.items():
            bytes_per_coll[name] = bytes_per_coll.get(name, 0) + entry["bytes"]
            calls_per_coll[name] = calls_per_coll.get(name, 0) + entry["calls"]
        samples += stats["samples"]
        samples_max += stats["samples_max_rank"]
        if ctx.is_main:
            log(f"  D={ctx.world_size} {cfg.exchange}: step {i + 1}/{steps} {time.perf_counter() - t0:.2f} s, "
                f"{stats['samples']:.0f} samples")
        step += 1
    return {
        "rank": ctx.rank,
        "tiles": list(renderer.tile_ids),
        "bytes": bytes_per_coll,
        "calls": calls_per_coll,
        "seconds": seconds,
        "samples": samples,
        "samples_max_rank": samples_max,
        "per_tile": per_tile,
        "threads": torch.get_num_threads(),
    }


def summarise(results: dict[int, dict], d: int, exchange: str, steps: int, rays: int, k: int) -> dict:
    ranks = [results[r] for r in sorted(results)]
    names = sorted({n for r in ranks for n in r["bytes"]})
    # Every process hands the same payload (equal blocks; variable gathers pad to the largest count),
    # so the busiest one is "the" per-process figure; the mean is there to show it.
    by_coll = {n: max(r["bytes"].get(n, 0) for r in ranks) / steps for n in names}
    calls = {n: max(r["calls"].get(n, 0) for r in ranks) / steps for n in names}
    total = sum(by_coll.values())
    grads = by_coll.get("all_reduce_gradients", 0.0)
    samples = ranks[0]["samples"] / steps  # identical on every rank (gathered)
    samples_max = ranks[0]["samples_max_rank"] / steps
    tiles = {t: v for r in ranks for t, v in r["per_tile"].items()}
    hits = sum(v["hits"] for v in tiles.values()) / steps
    segments = sum(v["segments"] for v in tiles.values()) / steps
    if exchange == "partition":
        predicted = (k // d) * rays * BLOCK_CHANNELS * FLOAT_BYTES
    else:
        predicted = samples_max * SAMPLE_ROW_BYTES
    return {
        "devices": d,
        "exchange": exchange,
        "tiles_per_process": k // d,
        "threads_per_process": ranks[0]["threads"],
        "bytes_per_step_per_process": {n: by_coll[n] for n in names},
        "calls_per_step": calls,
        "total_bytes_per_step_per_process": total,
        "exchange_bytes_per_step_per_process": total - grads,
        "mean_over_processes_total_bytes_per_step": sum(sum(r["bytes"].values()) for r in ranks) / len(ranks) / steps,
        "total_bytes_per_step_all_processes": sum(sum(r["bytes"].values()) for r in ranks) / steps,
        "predicted_exchange_payload_bytes_per_process": predicted,
        "samples_per_step": samples,
        "samples_max_process_per_step": samples_max,
        "samples_per_ray_per_tile": samples / (rays * k),
        "samples_per_ray_per_hit_tile": samples / hits if hits else None,
        "samples_per_nonempty_segment": samples / segments if segments else None,
        "tiles_hit_per_ray": hits / rays,
        "seconds_per_step": max(r["seconds"] for r in ranks) / steps,
    }


def compare(part: dict, samp: dict, rays: int, k: int, d: int) -> dict:
    spt = samp["samples_per_ray_per_tile"]
    measured = samp["exchange_bytes_per_step_per_process"] / part["exchange_bytes_per_step_per_process"]
    return {
        "devices": d,
        "partition_exchange_bytes_per_process": part["exchange_bytes_per_step_per_process"],
        "sample_exchange_bytes_per_process": samp["exchange_bytes_per_step_per_process"],
        "gradient_all_reduce_bytes_per_process": part["bytes_per_step_per_process"].get("all_reduce_gradients", 0.0),
        "measured_ratio_sample_over_partition": measured,
        "measured_ratio_with_gradients": samp["total_bytes_per_step_per_process"]
        / part["total_bytes_per_step_per_process"],
        "samples_per_ray_per_tile": spt,
        # Formula, no padding: 28 B × S / (24 B × R × K).
        "predicted_ratio": SAMPLE_ROW_BYTES / (BLOCK_CHANNELS * FLOAT_BYTES) * spt,
        # Formula with the gather's padding to the busiest process (what is actually handed over).
        "predicted_ratio_padded": samp["predicted_exchange_payload_bytes_per_process"]
        / part["predicted_exchange_payload_bytes_per_process"],
        "seconds_per_step_partition": part["seconds_per_step"],
        "seconds_per_step_sample": samp["seconds_per_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, devices=[2, 4], steps=4, quick_steps=2)
    args = parser.parse_args()
    apply_quick(args, quick_steps=2)

    from nerfxl.parallel.launch import launch

    cfg = build_run_config(args, partitions=args.tiles, partition_method=args.partition_method)
    for d in args.devices:
        if args.tiles % d:
            parser.error(f"--devices {d} does not divide --tiles {args.tiles}")
    skipped = []
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(auto if cfg.device == "auto" else cfg.device).type == "cuda":
        n_gpus = torch.cuda.device_count()
        skipped = [d for d in args.devices if d > n_gpus]
        args.devices = [d for d in args.devices if d <= n_gpus]
        if skipped:
            log(f"skipping D={skipped}: only {n_gpus} GPU(s)")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="exchange-", dir=args.output))
    try:
        log(f"warm-up: {args.warmup} steps, K={args.tiles}, {cfg.batch_rays} rays/step, data {cfg.data}")
        ckpt, plan, warm_s = warm_up(cfg, work, args.warmup, log)
        cfg = dataclasses.replace(cfg, tile_plan=plan)
        runs, comparisons = [], []
        for d in args.devices:
            by_mode = {}
            for mode in ("partition", "sample"):
                log(f"D={d}, exchange {mode}: starting {d} processes")
                run_cfg = dataclasses.replace(cfg, exchange=mode, devices=d)
                t0 = time.perf_counter()
                results = launch(run_rank, d, args=(run_cfg, str(ckpt), str(work / f"d{d}-{mode}"), args.warmup,
                                                    args.settle, args.steps, args.threads), device=args.device)
                summary = summarise(results, d, mode, args.steps, cfg.batch_rays, args.tiles)
                summary["wall_seconds_incl_startup"] = time.perf_counter() - t0
                by_mode[mode] = summary
                runs.append(summary)
            comparisons.append(compare(by_mode["partition"], by_mode["sample"], cfg.batch_rays, args.tiles, d))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps({
        "benchmark": "nerfxl_exchange",
        "device": args.device,
        "preset": args.preset,
        "data": str(cfg.data),
        "tiles": args.tiles,
        "partition_method": args.partition_method,
        "rays_per_step": cfg.batch_rays,
        "warmup_steps": args.warmup,
        "warmup_seconds": warm_s,
        "counted_steps": args.steps,
        "cpu_count": os.cpu_count(),
        "skipped_devices": skipped,
        "bytes_formula": {
            "partition_per_process": "K/D · R · 6 · 4 B (all_gather_blocks)",
            "sample_per_process": "max_r S_r · (6 · 4 + 4) B (all_gather_variable + ray ids in all_gather_tensor), "
                                  "plus two 32 B row-count headers",
            "predicted_ratio": "(28/24) · samples / (R · K)",
        },
        "comparison": comparisons,
        "runs": runs,
        "note": "bytes are exact counts of the payload each process hands to collectives (backward sends nothing); "
                "all_gather_tensor also carries the trainer's 16 B per-step stats gather in both modes. "
                "seconds_per_step on CPU is noisy and bounded by the cores shared by all D processes: compare bytes, "
                "not times, here.",
    }, indent=2))


if __name__ == "__main__":
    main()
