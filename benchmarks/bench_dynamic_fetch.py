"""Dynamic fetching (nerfxl.fetch): fill times with and without overlap against the pure copy, frame
times along a flythrough, and the device memory of the window buffers.

The model: a freshly built ground-plane run on the built-in city (a few training steps, so the occupancy
grid and the weights are not the initial ones), saved to a temporary run folder. Its xy planes have
--resolution nodes per side at the coarse level and (R − 1)·2 + 1 at the fine one, with 16 density + 48
appearance channels per level, and are cut into --blocks blocks (one block is a few MB by default).

1. Fills (``fill_window``). For each store ("memory": all blocks in host memory; "mmap": each block read
   from the memory-mapped checkpoint on demand) and each N in --neighbourhoods, the N × N window walks
   the whole plane one block at a time (along x, one block along y, back along x, ...), so every fill
   keeps N·(N − 1) blocks and fetches N new ones. At each move three ways of filling are timed,
   --repeats times each in rotating order, and the median over the repeats is that move's figure:
   ``overlapped`` (``fill_window(overlap=True)``: kept blocks device → device on a worker thread while
   the new ones come host → device), ``serial`` (``overlap=False``: one after the other), and
   ``pure_copy`` (``copy_new_blocks`` of just the new blocks into a scratch buffer: the least any fill
   must take). Reported: the median (and p90, max) over the moves, and the ratios of the medians
   overlapped / pure copy (the goal: ≤ 1.2) and serial / pure copy.

2. Flythrough. For each N, the flyover path of ``render_fetching`` (a loop over the city at 80 % of the
   height limit of ``CameraLimits`` with a 0.2-block margin, tilted 30°) is flown --passes times; each
   frame is rendered with dynamic fetching (``load_for_fetching``, memory store, opened afresh for each
   pass; the time includes ``fetcher.prepare``), then with the whole model (``load_trained``).
   Interleaving them lets a slow spell of the machine hit both alike (whole passes of one, then of the
   other, differed by up to 20 % here); a fill still running when its frame is done would slow the
   whole-model frame instead, so compare fill_s with frame_s. A frame's time is its median over the
   passes. Each renderer first renders frame 0 untimed (first-call costs and, for fetching, the initial
   load of the window, reported apart). Reported: p50 / p99 / max frame time, p99 / p50 (the goal for
   fetching: ≤ 1.5), fetches, frames that waited, the camera's largest step per frame in blocks (a frame
   waits when the camera outruns the fetch), and the largest |fetched − whole| over every pixel of every
   frame (the window computes exactly what the whole plane does: ~1e-7). Frame times also vary with
   what the camera sees (the whole model's p99 / p50 shows how much), so each frame's time over the same
   frame's whole-model time is reported too, apart for the frames whose ``prepare`` started a fetch (it
   copies on a background thread while the frame renders).

3. Memory: both window buffers' bytes (``fetcher.buffer_bytes``) against the bound 2 · N² · one block
   (neighbours share their border nodes, so a window holds a little less than N² blocks), the whole
   planes' bytes, and the resident (non-plane) modules' bytes of both renderers.

    python benchmarks/bench_dynamic_fetch.py [--resolution 513] [--blocks 8x8] [--neighbourhoods 3 4]
        [--repeats 5] [--frames 120] [--passes 3] [--device cpu] [--quick]

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

FILL_VARIANTS = ("overlapped", "serial", "pure_copy")
PLANE_KEYS = (".grid.density_planes.", ".grid.appearance_planes.")
MARGIN_BLOCKS = 0.2  # as render_fetching
OVERLAP_GOAL = 1.2  # overlapped fill / pure copy
TAIL_GOAL = 1.5  # p99 / p50 frame time with fetching


def log(msg: str) -> None:
    print(f"[bench_dynamic_fetch] {msg}", file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict:
    """Median, p90, p99 and max of ``values`` (seconds)."""
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


# ---------------------------------------------------------------------------------------------- the run
def make_run(args, run_dir: Path) -> Path:
    """Build, briefly train and save a ground-plane run in ``run_dir`` (as ``nerfxl train`` would lay it out)."""
    from nerfxl.data.city import ensure_city
    from nerfxl.fields.config import GridConfig
    from nerfxl.presets import TRAIN_PRESETS

    base = TRAIN_PRESETS["city"][1]
    r = args.resolution
    grid = GridConfig(mode="ground", base_resolution=(r, r, 17), scales=(1, 2), level_scaling="cells",
                      density_channels=16, appearance_channels=48, scale_z=False)
    config = dataclasses.replace(base, field=dataclasses.replace(base.field, grid=grid),
                                 data=ensure_city(args.city, seed=0, progress=False), device=args.device,
                                 progress=False, eval_every=0, downscale=args.downscale, batch_rays=256, seed=0)
    return train_and_save(config, run_dir, args.train_steps)


def train_and_save(config, run_dir: Path, steps: int) -> Path:
    """Train ``steps`` steps of ``config`` and save the run in ``run_dir`` as ``nerfxl train`` lays it out."""
    from nerfxl.configio import save_config_yaml
    from nerfxl.trainer import Trainer

    trainer = Trainer(config, run_dir)
    for step in range(steps):
        trainer.train_step(step)
    trainer.step = steps
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config_yaml(run_dir / "config.yaml", trainer.config)
    trainer.save()
    return run_dir


def plane_bytes(renderer) -> int:
    return sum(t.numel() * t.element_size() for n, t in renderer.named_parameters() if any(k in n for k in PLANE_KEYS))


def resident_bytes(renderer) -> int:
    """Bytes of every parameter and buffer of ``renderer`` except the grid's planes."""
    tensors = [*renderer.named_parameters(), *renderer.named_buffers()]
    return sum(t.numel() * t.element_size() for n, t in tensors if not any(k in n for k in PLANE_KEYS))


# ---------------------------------------------------------------------------------------------- fills
def snake_windows(layout, n: int) -> list:
    """Every N × N window of the plane, each one block from the previous: along x, up one, back along x, ..."""
    from nerfxl.fetch.window import Window

    xs = list(range(layout.split.nx - n + 1))
    return [Window(x0, y0, n) for y0 in range(layout.split.ny - n + 1) for x0 in (xs if y0 % 2 == 0 else xs[::-1])]


def time_fills(store, layout, n: int, repeats: int, device: torch.device, pool: ThreadPoolExecutor) -> dict:
    """Each move of :func:`snake_windows` filled ``repeats`` times by each of FILL_VARIANTS."""
    from nerfxl.fetch.buffers import WindowBuffer, copy_new_blocks, fill_window

    windows = snake_windows(layout, n)
    # Ping-pong as the fetcher does: ``src`` holds the previous window, ``dst`` receives the next one.
    src, dst = WindowBuffer(layout, n, device), WindowBuffer(layout, n, device)
    scratch = WindowBuffer(layout, n, device)
    fill_window(store, None, src, windows[0], pool=pool)
    moves = {v: [] for v in FILL_VARIANTS}
    parts = {"device_copy_s": [], "host_copy_s": []}  # of the overlapped fills
    new_bytes = 0
    for previous, window in zip(windows, windows[1:]):
        new = [b for b in window.blocks() if not previous.holds(b)]
        samples = {v: [] for v in FILL_VARIANTS}
        for r in range(repeats):
            # Rotate the order so that no variant always runs first (e.g. on caches the previous one warmed).
            for variant in FILL_VARIANTS[r % 3:] + FILL_VARIANTS[:r % 3]:
                if variant == "pure_copy":
                    seconds, nbytes = copy_new_blocks(store, scratch, window, new)
                else:
                    timing = fill_window(store, src, dst, window, overlap=variant == "overlapped", pool=pool)
                    seconds, nbytes = timing.total_s, timing.new_bytes
                    if variant == "overlapped":
                        parts["device_copy_s"].append(timing.device_copy_s)
                        parts["host_copy_s"].append(timing.host_copy_s)
                samples[variant].append(seconds)
                new_bytes = max(new_bytes, nbytes)
        for v in FILL_VARIANTS:
            moves[v].append(statistics.median(samples[v]))
        src, dst = dst, src
    stats = {f"{v}_s": spread(moves[v]) for v in FILL_VARIANTS}
    pure = stats["pure_copy_s"]["median"]
    return {
        "moves": len(windows) - 1,
        "kept_blocks_per_fill": n * (n - 1),
        "new_blocks_per_fill": n,
        "new_bytes_per_fill": new_bytes,
        **stats,
        "overlapped_parts_median_s": {k: statistics.median(v) for k, v in parts.items()},
        "pure_copy_gb_per_s": new_bytes / pure / 1e9 if pure else None,
        "ratio_overlapped_to_pure_copy": ratio(stats["overlapped_s"]["median"], pure),
        "ratio_serial_to_pure_copy": ratio(stats["serial_s"]["median"], pure),
        "ratio_overlapped_to_serial": ratio(stats["overlapped_s"]["median"], stats["serial_s"]["median"]),
        "overlap_goal_met": ratio(stats["overlapped_s"]["median"], pure) <= OVERLAP_GOAL,
    }


def fill_benchmark(args, layout, checkpoint: Path, device: torch.device) -> dict:
    """:func:`time_fills` for each store and N ({"STORE/N=n": figures})."""
    from nerfxl.fetch.store import BlockSource, MappedBlockStore, MemoryBlockStore

    source = BlockSource(checkpoint, layout, per_block_shards=False)
    stores = {"memory": MemoryBlockStore(source, pin=device.type == "cuda"), "mmap": MappedBlockStore(source)}
    out = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name, store in stores.items():
            for n in args.neighbourhoods:
                t0 = time.perf_counter()
                result = time_fills(store, layout, n, args.repeats, device, pool)
                out[f"{name}/N={n}"] = result
                ms = {v: result[f"{v}_s"]["median"] * 1e3 for v in FILL_VARIANTS}
                log(f"fills {name} N={n}: {result['moves']} moves in {time.perf_counter() - t0:.1f} s; median "
                    f"overlapped {ms['overlapped']:.2f} ms, serial {ms['serial']:.2f} ms, pure copy "
                    f"{ms['pure_copy']:.2f} ms (overlapped / pure {result['ratio_overlapped_to_pure_copy']:.2f})")
    return out


# ---------------------------------------------------------------------------------------------- flythrough
def flythrough_pass(args, run_dir: Path, n: int, cams, full) -> dict:
    """One flight along the path with a freshly opened N × N window (so that every pass starts alike).
    Each frame is rendered with fetching, then with the whole model ``full`` (a TrainedRun): interleaved,
    so that a slow spell of the machine hits both alike."""
    from nerfxl.parallel.images import render_image
    from nerfxl.fetch.load import load_for_fetching

    fetching = load_for_fetching(run_dir, n, args.blocks, args.device, store="memory")
    renderer, fetcher = fetching.trained.renderer, fetching.fetcher
    fetch_s, whole_s, started, max_diff = [], [], [], 0.0
    try:
        # Untimed frame 0: first-call costs and the initial load of the window (all N² blocks new).
        fetcher.prepare(cams, 0)
        render_image(renderer, cams, 0)
        initial_load_s = fetcher.log.fills[0].total_s
        fills_before, waits_before = len(fetcher.log.fills), fetcher.log.waits
        for i in range(len(cams)):
            t0 = time.perf_counter()
            # camera_limits="error": prepare never moves a camera, so both renderers see the same views.
            _, report = fetcher.prepare(cams, i)
            fetched = render_image(renderer, cams, i)["rgb"]
            t1 = time.perf_counter()
            whole = render_image(full.renderer, cams, i)["rgb"]
            whole_s.append(time.perf_counter() - t1)
            fetch_s.append(t1 - t0)
            started.append(report.started is not None)
            max_diff = max(max_diff, float((fetched - whole).abs().max()))
    finally:
        fetcher.close()
    return {"fetch_s": fetch_s, "whole_s": whole_s, "started": started, "max_diff": max_diff,
            "initial_load_s": initial_load_s, "fills": fetcher.log.fills[fills_before:],
            "waits": fetcher.log.waits - waits_before, "buffer_bytes": fetcher.buffer_bytes,
            "resident_bytes": resident_bytes(renderer)}


def flythrough(args, run_dir: Path, layout, n: int, full) -> dict:
    """--passes of :func:`flythrough_pass` along the flyover; a frame's time is its median over the passes."""
    from nerfxl.parallel.images import render_image
    from nerfxl.fetch.limits import TRIGGER_BLOCKS, CameraLimits, camera_position_in_blocks, half_diagonal_fov_deg
    from nerfxl.fetch.store import block_device_bytes
    from nerfxl.data.camera_paths import FLYOVER_TILT_DEG
    from nerfxl.render import path_cameras

    max_height = 0.0

    def flyover_height(camera) -> float:  # as render_fetching
        nonlocal max_height
        limits = CameraLimits(n, min(layout.block_size), half_diagonal_fov_deg(camera), TRIGGER_BLOCKS,
                              margin_blocks=MARGIN_BLOCKS)
        max_height = limits.max_height(FLYOVER_TILT_DEG)
        return 0.8 * max_height

    cams, _, _ = path_cameras(full, "flyover", args.frames, 24.0, flyover_height)
    cams = cams.to(full.renderer.scene_box.device)
    positions = np.array([camera_position_in_blocks(layout, cams, i) for i in range(len(cams))])
    steps = np.abs(np.diff(positions, axis=0)).max(axis=1)

    render_image(full.renderer, cams, 0)  # untimed: first-call costs
    passes = [flythrough_pass(args, run_dir, n, cams, full) for _ in range(args.passes)]
    fetch_s = np.median([p["fetch_s"] for p in passes], axis=0)
    whole_s = np.median([p["whole_s"] for p in passes], axis=0)
    fetching_stats, full_stats = spread(fetch_s), spread(whole_s)
    tail = ratio(fetching_stats["p99"], fetching_stats["median"])
    # Frame times vary with what the camera sees; the same frame's whole-model time takes that out. A fetch
    # started by a frame's prepare copies on a background thread while that frame renders.
    excess = {"fetch_started": [], "no_fetch_started": []}
    for f, w, s in zip(fetch_s, whole_s, passes[0]["started"]):
        excess["fetch_started" if s else "no_fetch_started"].append(f - w)
    fills = [f.total_s for p in passes for f in p["fills"]]
    block = block_device_bytes(layout)
    buffer_bytes = passes[0]["buffer_bytes"]
    result = {
        "frames": len(cams),
        "passes": args.passes,
        "resolution": [int(cams.width[0]), int(cams.height[0])],
        "camera_height": float(cams.camera_to_worlds[0, 2, 3] - full.renderer.scene_box[0, 2]),
        "max_height_at_tilt": max_height,
        "camera_step_blocks": {"median": float(np.median(steps)), "max": float(steps.max()),
                               "margin_blocks": MARGIN_BLOCKS},
        "fetching": {
            "frame_s": fetching_stats,
            "p99_over_p50": tail,
            "tail_goal_met": tail <= TAIL_GOAL,
            "fetches_per_pass": [len(p["fills"]) for p in passes],
            "frames_waiting_per_pass": [p["waits"] for p in passes],
            "fill_s": spread(fills) if fills else None,
            "initial_load_s": statistics.median(p["initial_load_s"] for p in passes),
        },
        "full_model": {"frame_s": full_stats, "p99_over_p50": ratio(full_stats["p99"], full_stats["median"])},
        "ratio_fetching_to_full_p50": ratio(fetching_stats["median"], full_stats["median"]),
        "excess_over_full_same_frame_s": {k: spread(v) if v else None for k, v in excess.items()},
        "max_abs_diff_rgb": max(p["max_diff"] for p in passes),
        "memory": {
            "buffer_bytes": buffer_bytes,
            "bound_bytes": 2 * n * n * block,
            "within_bound": buffer_bytes <= 2 * n * n * block,
            "resident_module_bytes": passes[0]["resident_bytes"],
        },
    }
    log(f"flythrough N={n}: fetching p50 {fetching_stats['median'] * 1e3:.0f} ms, p99 "
        f"{fetching_stats['p99'] * 1e3:.0f} ms (p99/p50 {tail:.2f}), {len(passes[0]['fills'])} fetches, "
        f"{passes[0]['waits']} waited; whole model p50 {full_stats['median'] * 1e3:.0f} ms, p99 "
        f"{full_stats['p99'] * 1e3:.0f} ms; max |diff| {result['max_abs_diff_rgb']:.2e}")
    return result


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=None,
                        help="plane nodes per side at the coarse level (default 513; --quick 65); R − 1 must "
                             "divide by the block counts")
    parser.add_argument("--blocks", default="8x8", help="NXxNY blocks the planes are cut into")
    parser.add_argument("--neighbourhoods", type=int, nargs="+", default=[3, 4], help="window sizes N")
    parser.add_argument("--repeats", type=int, default=None, help="timings of each fill (default 5; --quick 2)")
    parser.add_argument("--frames", type=int, default=None, help="flythrough frames (default 120; --quick 30)")
    parser.add_argument("--passes", type=int, default=None,
                        help="flights along the path, each frame rendered by both renderers; a frame's time "
                             "is its median over them (default 3; --quick 1)")
    parser.add_argument("--train-steps", type=int, default=2, help="training steps before the checkpoint")
    parser.add_argument("--downscale", type=float, default=None,
                        help="image downscale, sets the frame size (default 2; --quick 4)")
    parser.add_argument("--device", default="cpu", help="rendering device (cpu or cuda)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny city, 65-node planes, 2 repeats, 30 frames, 1 pass")
    args = parser.parse_args()
    defaults = ({"resolution": 65, "repeats": 2, "frames": 30, "passes": 1, "downscale": 4.0} if args.quick
                else {"resolution": 513, "repeats": 5, "frames": 120, "passes": 3, "downscale": 2.0})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.passes < 1 or args.frames < 2:
        parser.error("--repeats and --passes must be >= 1 and --frames >= 2")
    args.city = "tiny" if args.quick else "small"

    from nerfxl.fetch.load import load_for_fetching
    from nerfxl.fetch.store import block_device_bytes
    from nerfxl.run.trained import load_trained

    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="fetch-bench-"))
    try:
        t0 = time.perf_counter()
        run_dir = make_run(args, work / "run")
        build_s = time.perf_counter() - t0
        log(f"run built and saved in {build_s:.1f} s ({args.city} city, {args.resolution}-node planes, "
            f"{args.blocks} blocks)")
        # Opened only for the block layout (the mmap store reads nothing up front).
        fetching = load_for_fetching(run_dir, min(args.neighbourhoods), args.blocks, args.device, store="mmap")
        fetching.fetcher.close()
        layout = fetching.layout
        fills = fill_benchmark(args, layout, fetching.trained.checkpoint, device)
        full = load_trained(run_dir, args.device)
        flights = {f"N={n}": flythrough(args, run_dir, layout, n, full) for n in args.neighbourhoods}
        checkpoint_bytes = sum(p.stat().st_size for p in full.checkpoint.glob("*.safetensors"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps({
        "benchmark": "dynamic_fetch",
        "config": {
            "quick": args.quick,
            "city": args.city,
            "downscale": args.downscale,
            "plane_nodes_per_level": [args.resolution, (args.resolution - 1) * 2 + 1],
            "channels_per_level": {"density": 16, "appearance": 48},
            "blocks": args.blocks,
            "neighbourhoods": args.neighbourhoods,
            "repeats": args.repeats,
            "frames": args.frames,
            "flythrough_passes": args.passes,
            "train_steps": args.train_steps,
            "flythrough_store": "memory",
            "device": args.device,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "checkpoint_bytes_incl_optimizer": checkpoint_bytes,
            "build_seconds": build_s,
            "wall_seconds_total": time.perf_counter() - t_start,
            # Other processes on the machine slow the copies and, badly, torch's intra-op threads.
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        },
        "fills": fills,
        "flythrough": flights,
        "memory": {
            "block_bytes": block_device_bytes(layout),
            "full_plane_bytes": plane_bytes(full.renderer),
            "resident_module_bytes_full_model": resident_bytes(full.renderer),
            "per_neighbourhood": {k: f["memory"] for k, f in flights.items()},
        },
        "goals": {"overlapped_over_pure_copy_max": OVERLAP_GOAL, "fetching_p99_over_p50_max": TAIL_GOAL},
        "note": "On CPU the 'device' is host memory: a host → device copy is a memory copy within RAM, as is "
                "the device → device copy of the kept blocks, and the copy threads share the few cores and one "
                "memory bus with each other and with rendering. So overlapping cannot hide the N·(N − 1) kept "
                "blocks' copy (twice the new blocks' bytes or more) behind the N new ones' as it does on a GPU, "
                "where kept blocks move at device-memory bandwidth on their own stream while the new ones cross "
                "PCIe: the GPU figures (streams, pinned memory, PCIe) are what the design targets. Likewise a "
                "background fill takes cores from the frame it overlaps (excess_over_full_same_frame_s."
                "fetch_started). Fill times are medians over --repeats per move, then over the moves; frame "
                "times medians over --passes per frame, then p50 / p99 over the frames.",
    }, indent=2))


if __name__ == "__main__":
    main()
