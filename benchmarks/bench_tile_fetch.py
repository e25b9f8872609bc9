"""Dynamic fetching with whole NeRF-XL tiles as the unit (nerfxl.fetch.tiles): fills with and without
overlap against the pure copy, frame times along a flythrough, and the device memory of the tile slots.

The model: a freshly built run of --tiles tiles of the k-d plan (the "city" preset's VM grids, a few
training steps) on the built-in city, saved to a temporary run folder and opened with
``load_for_fetching`` (cells as wide as the narrowest tile, N = --neighbourhood).

1. Fills (``fill_tiles``, memory store): the N × N window walks every position (along x, up one, back),
   and each move is filled --repeats times in each way, in rotating order: ``overlapped`` (tiles the
   previous window also held copied device → device on a worker thread while the new ones come
   host → device), ``serial`` (one after the other) and ``pure_copy`` (``copy_new_tiles`` of just the new
   tiles into scratch slots). A move's figure is the median over its repeats; reported: the median over
   the moves and the ratios to the pure copy. Moves that bring no new tile are skipped.
2. Flythrough: the ``render_fetching`` flyover (80 % of the height limit, 30° tilt) with fetching, each
   frame followed by the same frame from the whole model (``load_trained``); p50 / p99 frame times,
   fetches, frames that waited, the largest |fetched − whole|.
3. Memory: both buffers' bytes (2 · S slots of the largest tile) against the whole model's tiles.

    python benchmarks/bench_tile_fetch.py [--tiles 16] [--neighbourhood 3] [--frames 120] [--quick]

Prints one JSON object to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from bench_dynamic_fetch import (
    FILL_VARIANTS,
    MARGIN_BLOCKS,
    OVERLAP_GOAL,
    TAIL_GOAL,
    ratio,
    snake_windows,
    spread,
    train_and_save,
)


def log(msg: str) -> None:
    print(f"[bench_tile_fetch] {msg}", file=sys.stderr, flush=True)


def make_run(args, run_dir: Path) -> Path:
    """Build, briefly train and save a run of ``args.tiles`` tiles in ``run_dir``."""
    from nerfxl.data.city import ensure_city
    from nerfxl.presets import TRAIN_PRESETS

    base = TRAIN_PRESETS["city"][1]
    config = dataclasses.replace(base, data=ensure_city(args.city, seed=0, progress=False), device=args.device,
                                 partitions=args.tiles, progress=False, eval_every=0, downscale=args.downscale,
                                 batch_rays=256, seed=0)
    return train_and_save(config, run_dir, args.train_steps)


def time_fills(fetching, repeats: int, pool: ThreadPoolExecutor) -> dict:
    from nerfxl.fetch.tiles import copy_new_tiles, fill_tiles

    target, store = fetching.fetcher.target, fetching.fetcher.store
    windows = snake_windows(fetching.layout, target.n)
    src, dst, scratch = target.new_buffer(), target.new_buffer(), target.new_buffer()
    fill_tiles(store, None, src, windows[0], target.tiles_of(windows[0]), pool=pool)
    moves = {v: [] for v in FILL_VARIANTS}
    kept_counts, new_counts, new_bytes = [], [], []
    for window in windows[1:]:
        tiles = target.tiles_of(window)
        new = [k for k in tiles if k not in src.slot_of]
        if not new:  # nothing to fetch: the fetcher would not fill
            continue
        samples = {v: [] for v in FILL_VARIANTS}
        for r in range(repeats):
            for variant in FILL_VARIANTS[r % 3:] + FILL_VARIANTS[:r % 3]:
                if variant == "pure_copy":
                    seconds, nbytes = copy_new_tiles(store, scratch, {k: i for i, k in enumerate(new)}, new)
                else:
                    timing = fill_tiles(store, src, dst, window, tiles, overlap=variant == "overlapped", pool=pool)
                    seconds, nbytes = timing.total_s, timing.new_bytes
                samples[variant].append(seconds)
        for v in FILL_VARIANTS:
            moves[v].append(statistics.median(samples[v]))
        kept_counts.append(len(tiles) - len(new))
        new_counts.append(len(new))
        new_bytes.append(nbytes)
        src, dst = dst, src
    stats = {f"{v}_s": spread(moves[v]) for v in FILL_VARIANTS}
    pure = stats["pure_copy_s"]["median"]
    return {
        "moves_with_new_tiles": len(moves["pure_copy"]),
        "kept_tiles_per_fill": statistics.mean(kept_counts),
        "new_tiles_per_fill": statistics.mean(new_counts),
        "new_bytes_per_fill_median": statistics.median(new_bytes),
        **stats,
        "ratio_overlapped_to_pure_copy": ratio(stats["overlapped_s"]["median"], pure),
        "ratio_serial_to_pure_copy": ratio(stats["serial_s"]["median"], pure),
        "overlap_goal_met": ratio(stats["overlapped_s"]["median"], pure) <= OVERLAP_GOAL,
    }


def flythrough(args, run_dir: Path, fetching, full) -> dict:
    from nerfxl.parallel.images import render_image
    from nerfxl.fetch.limits import TRIGGER_BLOCKS, CameraLimits, half_diagonal_fov_deg
    from nerfxl.data.camera_paths import FLYOVER_TILT_DEG
    from nerfxl.render import path_cameras

    layout, fetcher, n = fetching.layout, fetching.fetcher, fetching.fetcher.n

    def flyover_height(camera) -> float:  # as render_fetching
        limits = CameraLimits(n, min(layout.block_size), half_diagonal_fov_deg(camera), TRIGGER_BLOCKS,
                              margin_blocks=MARGIN_BLOCKS)
        return 0.8 * limits.max_height(FLYOVER_TILT_DEG)

    cams, _, _ = path_cameras(full, "flyover", args.frames, 24.0, flyover_height)
    cams = cams.to(full.renderer.scene_box.device)
    fetcher.prepare(cams, 0)  # untimed: first-call costs and the initial load
    render_image(fetching.trained.renderer, cams, 0)
    render_image(full.renderer, cams, 0)
    fills_before = len(fetcher.log.fills)
    fetch_s, whole_s, held, max_diff = [], [], [], 0.0
    for i in range(len(cams)):
        t0 = time.perf_counter()
        fetcher.prepare(cams, i)
        got = render_image(fetching.trained.renderer, cams, i)["rgb"]
        t1 = time.perf_counter()
        want = render_image(full.renderer, cams, i)["rgb"]
        whole_s.append(time.perf_counter() - t1)
        fetch_s.append(t1 - t0)
        held.append(len(fetching.trained.renderer.tile_ids))
        max_diff = max(max_diff, float((got - want).abs().max()))
    fetching_stats, full_stats = spread(fetch_s), spread(whole_s)
    tail = ratio(fetching_stats["p99"], fetching_stats["median"])
    return {
        "frames": len(cams),
        "resolution": [int(cams.width[0]), int(cams.height[0])],
        "fetching": {"frame_s": fetching_stats, "p99_over_p50": tail, "tail_goal_met": tail <= TAIL_GOAL,
                     "fetches": len(fetcher.log.fills) - fills_before, "frames_waiting": fetcher.log.waits,
                     "tiles_held": {"median": float(np.median(held)), "max": max(held)}},
        "full_model": {"frame_s": full_stats, "p99_over_p50": ratio(full_stats["p99"], full_stats["median"])},
        "max_abs_diff_rgb": max_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16, help="tiles of the k-d plan")
    parser.add_argument("--neighbourhood", type=int, default=3, help="window side N in cells")
    parser.add_argument("--repeats", type=int, default=None, help="timings of each fill (default 5; --quick 2)")
    parser.add_argument("--frames", type=int, default=None, help="flythrough frames (default 120; --quick 30)")
    parser.add_argument("--train-steps", type=int, default=2, help="training steps before the checkpoint")
    parser.add_argument("--downscale", type=float, default=None, help="image downscale (default 2; --quick 4)")
    parser.add_argument("--device", default="cpu", help="rendering device (cpu or cuda)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny city, 8 tiles, 2 repeats, 30 frames")
    args = parser.parse_args()
    defaults = {"repeats": 2, "frames": 30, "downscale": 4.0} if args.quick else {"repeats": 5, "frames": 120,
                                                                                  "downscale": 2.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.tiles = min(args.tiles, 8)
    args.city = "tiny" if args.quick else "small"

    from nerfxl.fetch.load import load_for_fetching
    from nerfxl.run.trained import load_trained

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tile-fetch-bench-"))
    try:
        run_dir = make_run(args, work / "run")
        log(f"run of {args.tiles} tiles built in {time.perf_counter() - t_start:.1f} s")
        fetching = load_for_fetching(run_dir, args.neighbourhood, None, args.device, store="memory")
        target = fetching.fetcher.target
        with ThreadPoolExecutor(max_workers=1) as pool:
            fills = time_fills(fetching, args.repeats, pool)
        log(f"fills: overlapped / pure copy {fills['ratio_overlapped_to_pure_copy']:.2f}, serial / pure copy "
            f"{fills['ratio_serial_to_pure_copy']:.2f}")
        full = load_trained(run_dir, args.device)
        flight = flythrough(args, run_dir, fetching, full)
        fetching.fetcher.close()
        log(f"flythrough: p99/p50 {flight['fetching']['p99_over_p50']:.2f} (whole model "
            f"{flight['full_model']['p99_over_p50']:.2f}), max |diff| {flight['max_abs_diff_rgb']:.1e}")
        whole_tiles = sum(layout.nbytes for layout in target.layouts.values())
        memory = {"slots_per_buffer": target.n_slots, "tiles": args.tiles,
                  "buffer_bytes": fetching.fetcher.buffer_bytes, "whole_tiles_bytes": whole_tiles,
                  "ratio_buffers_to_whole": ratio(fetching.fetcher.buffer_bytes, whole_tiles)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "benchmark": "tile_fetch",
        "config": {"quick": args.quick, "city": args.city, "tiles": args.tiles, "neighbourhood": args.neighbourhood,
                   "cells": str(fetching.layout.split), "repeats": args.repeats, "device": args.device,
                   "torch": torch.__version__, "cpu_count": os.cpu_count(),
                   "wall_seconds_total": time.perf_counter() - t_start},
        "fills": fills,
        "flythrough": flight,
        "memory": memory,
        "goals": {"overlapped_over_pure_copy_max": OVERLAP_GOAL, "fetching_p99_over_p50_max": TAIL_GOAL},
    }, indent=2))


if __name__ == "__main__":
    main()
