"""Throughput of a training step vs the bare field on the same samples.

Prints JSON: samples/s of the full step (ray generation, marching, pruning, field, rendering,
loss, backward, optimizer) and of the bare field forward + backward on exactly the samples the
step evaluated, and the share of the step spent outside the field ("overhead").

    python benchmarks/bench_train_step.py [--data PATH] [--preset city] [--warmup 300] [--steps 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the small procedural city)")
    parser.add_argument("--preset", default="city")
    parser.add_argument("--warmup", type=int, default=300, help="steps before timing (occupancy settles)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=Path("/tmp/nerfxl-bench"))
    args = parser.parse_args()

    from nerfxl.presets import TRAIN_PRESETS
    from nerfxl.run.load import resolve_data_path
    from nerfxl.trainer import Trainer

    cfg = dataclasses.replace(TRAIN_PRESETS[args.preset][1], data=args.data, progress=False, device=args.device)
    cfg = dataclasses.replace(cfg, data=resolve_data_path(cfg))
    trainer = Trainer(cfg, args.output / "bench-train-step")
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for s in range(args.warmup):
        trainer.train_step(s)

    # Record what the field is asked in each timed step.
    recorded: list[tuple] = []
    field = trainer.renderer.field
    original_query = field.query

    def recording_query(k, positions, directions, image_indices=None):
        recorded.append((k, positions.detach(), directions.detach(), None if image_indices is None else image_indices.detach()))
        return original_query(k, positions, directions, image_indices)

    field.query = recording_query
    sync()
    t0 = time.perf_counter()
    n_samples = 0
    for s in range(args.warmup, args.warmup + args.steps):
        n_samples += trainer.train_step(s)["samples"]
    sync()
    full = time.perf_counter() - t0
    field.query = original_query

    t0 = time.perf_counter()
    for k, p, d, i in recorded:
        sigmas, rgbs = field.query(k, p, d, i)
        (sigmas.sum() + rgbs.sum()).backward()
    sync()
    bare = time.perf_counter() - t0
    field.zero_grad(set_to_none=True)

    print(json.dumps({
        "benchmark": "train_step",
        "device": str(trainer.device),
        "preset": args.preset,
        "data": str(cfg.data),
        "rays_per_step": cfg.batch_rays,
        "timed_steps": args.steps,
        "samples_per_step": n_samples / args.steps,
        "full_step_seconds": full / args.steps,
        "full_step_samples_per_s": n_samples / full,
        "full_step_rays_per_s": cfg.batch_rays * args.steps / full,
        "bare_field_fwd_bwd_seconds": bare / args.steps,
        "bare_field_samples_per_s": n_samples / bare,
        "overhead_fraction": 1.0 - bare / full,
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
