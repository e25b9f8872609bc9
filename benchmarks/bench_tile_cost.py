"""What a tile costs: seconds per training step and in occupancy refreshes for K = 1, 4, 16, 64 tiles.

One process, the same scene, rays and preset for every K; NeRF-XL tiles (k-d plan) and LandMark
branch blocks (a uniform √K × √K grid). For each K it reports, after ``--warmup`` steps:

- ``step_s``: median seconds of a training step without an occupancy refresh (the median: a busy
  machine's bursts do not move it);
- ``refresh_warmup_s`` / ``refresh_s``: one occupancy refresh during the occupancy warm-up (every
  cell) and after it (a quarter of the cells at random plus a quarter of the occupied ones);
- ``per_step_after_warmup_s`` = step_s + refresh_s / occupancy_update_every, what a step costs
  on average once the occupancy warm-up is over;
- ``cells``, ``parameters``, ``samples_per_step``.

``--modes`` runs each K in several configurations in one go: "before" restores the per-tile
occupancy rule this benchmark was written to remove (``occupancy_cells_over=tile``), "after" is the
default configuration, "after-sparse" adds sparse grid updates (``grid_updates=sparse``). Prints
one JSON object.

    python benchmarks/bench_tile_cost.py [--data CITY] [--ks 1 4 16 64] [--layouts tiles branch]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

import torch

MODES = {"before": {"occupancy_cells_over": "tile", "grid_updates": "dense"},
         "after": {"occupancy_cells_over": "scene", "grid_updates": "dense"},
         "after-sparse": {"occupancy_cells_over": "scene", "grid_updates": "sparse"}}


def configure(base, data: Path, k: int, layout: str, mode: str, batch_rays: int, capacity: str = "per-tile"):
    """The preset's config for K tiles in ``layout`` with the rules of ``mode``; with ``capacity``
    "total" each tile's x-y grid resolution is divided by √K, so K tiles hold about one tile's
    parameters and what remains of the step's growth with K is the per-tile cost."""
    rules = MODES[mode]
    if capacity == "total":
        grid = base.field.grid
        x, y, z = grid.base_resolution
        shrink = math.sqrt(k)
        grid = dataclasses.replace(grid, base_resolution=(max(2, round(x / shrink)), max(2, round(y / shrink)), z))
        base = dataclasses.replace(base, field=dataclasses.replace(base.field, grid=grid))
    config = dataclasses.replace(
        base, data=data, progress=False, partitions=k, batch_rays=batch_rays,
        render=dataclasses.replace(base.render, occupancy_cells_over=rules["occupancy_cells_over"]),
        optim=dataclasses.replace(base.optim, grid_updates=rules["grid_updates"]))
    if layout == "branch":
        n = math.isqrt(k)
        if n * n != k:
            raise SystemExit(f"branch blocks need a square K, got {k}")
        config = dataclasses.replace(config, strategy="branch", blocks=f"{n}x{n}")
    return config


def measure(config, run_dir: Path, warmup: int, timed: int) -> dict:
    from nerfxl.trainer import Trainer

    trainer = Trainer(config, run_dir)
    renderer = trainer.renderer
    every = config.render.occupancy_update_every
    refresh = {}

    def timed_refresh(step: int) -> float:
        t0 = time.perf_counter()
        renderer.update_occupancy(step, trainer._tile_generators(0x0CC, step))
        return time.perf_counter() - t0

    refresh["warmup"] = timed_refresh(0)  # every cell (step 0 < occupancy_warmup_steps)
    step_times, samples = [], []
    # Steps that do not refresh the occupancy (refreshes are timed on their own).
    steps = [s for s in range(1, 2 * (warmup + timed) + 2) if s % every][: warmup + timed]
    for i, step in enumerate(steps):
        t0 = time.perf_counter()
        stats = trainer.train_step(step)
        if i >= warmup:
            step_times.append(time.perf_counter() - t0)
            samples.append(stats["samples"])
    after_warmup = max(config.render.occupancy_warmup_steps, every)
    refresh["after"] = timed_refresh(after_warmup - after_warmup % every)
    step_s = statistics.median(step_times)
    return {
        "cells": sum(g.n_cells for g in renderer.occupancy),
        "parameters": sum(p.numel() for p in renderer.field.parameters()),
        "samples_per_step": sum(samples) / len(samples),
        "step_s": step_s,
        "refresh_warmup_s": refresh["warmup"],
        "refresh_s": refresh["after"],
        "per_step_after_warmup_s": step_s + refresh["after"] / every,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the small procedural city)")
    parser.add_argument("--preset", default="city")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--layouts", nargs="+", choices=["tiles", "branch"], default=["tiles", "branch"])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--before-max-k", type=int, default=16,
                        help="largest K run with the old rules (their K = 64 occupancy refresh takes minutes)")
    parser.add_argument("--capacity", choices=["per-tile", "total"], default="per-tile",
                        help="per-tile: every tile has the preset's grid (NeRF-XL: K times the parameters); "
                             "total: the grid's x-y resolution is divided by √K (about constant parameters)")
    parser.add_argument("--warmup", type=int, default=6, help="steps before timing")
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--batch-rays", type=int, default=2048)
    parser.add_argument("--output", type=Path, default=Path("/tmp/nerfxl-bench/tile-cost"))
    args = parser.parse_args()

    from nerfxl.presets import TRAIN_PRESETS
    from nerfxl.run.load import resolve_data_path

    base = dataclasses.replace(TRAIN_PRESETS[args.preset][1], data=args.data)
    data = resolve_data_path(base)
    results = []
    for layout in args.layouts:
        for k in args.ks:
            for mode in args.modes:
                if mode == "before" and k > args.before_max_k:
                    continue
                config = configure(base, data, k, layout, mode, args.batch_rays, args.capacity)
                row = {"layout": layout, "k": k, "mode": mode,
                       **measure(config, args.output / f"{layout}-{k}-{mode}", args.warmup, args.steps)}
                results.append(row)
                print(json.dumps(row), flush=True)
    ratios = {}
    for layout in args.layouts:
        for mode in args.modes:
            rows = {r["k"]: r for r in results if r["layout"] == layout and r["mode"] == mode}
            if 1 in rows:
                one = rows[1]["per_step_after_warmup_s"]
                ratios[f"{layout}/{mode}"] = {str(k): r["per_step_after_warmup_s"] / one for k, r in rows.items()}
    print(json.dumps({"benchmark": "tile_cost", "data": str(data), "preset": args.preset, "capacity": args.capacity,
                      "batch_rays": args.batch_rays, "threads": torch.get_num_threads(),
                      "results": results, "per_step_vs_k1": ratios}))


if __name__ == "__main__":
    main()
