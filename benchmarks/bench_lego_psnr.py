"""Test PSNR against training wall-clock time on the Blender lego scene (400×400, ../shared/data).

Trains a preset (``lego``) in one run and, at each mark, pauses the clock and scores the test views
r_0, r_8, …, r_192 (every ``--view-stride``-th view: 25 of the 200). The learning-rate schedule is laid
out for the steps the last mark will reach (measured over the first steps), so the marks are points
of one run, not separate runs. Per mark it prints one JSON line; at the end one JSON document (also
written to --json) with, per mark:

- ``steps``, ``steps_per_s`` (over the stretch since the previous mark);
- ``train_psnr``: PSNR of the mean training MSE over the last 100 steps, beside ``test_psnr`` /
  ``test_ssim`` (a gap between them is over-fitting, a train PSNR still rising is a run that has
  not converged);
- ``render_rays_per_s`` (rendering the views only, scores not timed) and ``render_samples_per_ray``.

    python benchmarks/bench_lego_psnr.py --minutes 5 10 20
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LEGO = ROOT.parent / "shared" / "data" / "nerf_synthetic_lego_400"


def score_views(trainer, indices: list[int]) -> dict:
    """Render test ``indices`` (timed) and score them against the dataset's images (not timed)."""
    import torch

    from nerfxl.evaluate import image_metrics
    from nerfxl.parallel.images import image_of, local_context, novel_view_rays
    from nerfxl.parallel.partition_based import render_rays_chunked_to_main

    renderer, cameras = trainer.renderer, trainer.test_cameras
    renderer.eval()
    seconds, rays, samples, scores = 0.0, 0, 0, []
    try:
        for i in indices:
            view_rays = novel_view_rays(cameras, i)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = render_rays_chunked_to_main(renderer, view_rays, local_context(renderer))
            seconds += time.perf_counter() - t0
            rays += len(view_rays)
            samples += out.n_samples
            image = image_of(out.rgb, out.depth, out.opacity, cameras, i)["rgb"]
            scores.append(image_metrics(image, trainer.test_data.images.rgb(i)))
    finally:
        renderer.train()
    return {"test_psnr": sum(s["psnr"] for s in scores) / len(scores),
            "test_ssim": sum(s["ssim"] for s in scores) / len(scores),
            "render_rays_per_s": rays / seconds, "render_samples_per_ray": samples / rays}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_LEGO)
    parser.add_argument("--preset", default="lego")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20])
    parser.add_argument("--view-stride", type=int, default=8, help="score test views 0, s, 2s, … (8: 25 views)")
    parser.add_argument("--views", type=int, default=None, help="score only the first this-many of those")
    parser.add_argument("--batch-rays", type=int, default=None)
    parser.add_argument("--samples-per-diagonal", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=Path("/tmp/nerfxl-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from nerfxl.presets import TRAIN_PRESETS
    from nerfxl.trainer import Trainer

    cfg = dataclasses.replace(TRAIN_PRESETS[args.preset][1], data=args.data, progress=False, device=args.device)
    if args.batch_rays:
        cfg = dataclasses.replace(cfg, batch_rays=args.batch_rays)
    if args.samples_per_diagonal:
        cfg = dataclasses.replace(cfg, render=dataclasses.replace(cfg.render, samples_per_diagonal=args.samples_per_diagonal))
    marks = sorted(args.minutes)
    trainer = Trainer(cfg, args.output / "bench-lego")
    indices = list(range(0, len(trainer.test_data), args.view_stride))[: args.views]
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    results, recent_mse = [], collections.deque(maxlen=100)
    trained, step, probe_steps = 0.0, 0, 30
    for mark in marks:
        stretch_start = (step, trained)
        while trained < mark * 60:
            t0 = time.perf_counter()
            stats = trainer.train_step(step)
            sync()
            trained += time.perf_counter() - t0
            recent_mse.append(stats["mse"])
            step += 1
            trainer.step = step
            if step == probe_steps:  # lay the schedule out for the steps the last mark will reach
                expected = int(step * marks[-1] * 60 / trained)
                trainer.config = dataclasses.replace(trainer.config, steps=max(expected, step + 1))
        row = {"minutes": mark, "steps": step,
               "steps_per_s": round((step - stretch_start[0]) / max(trained - stretch_start[1], 1e-9), 2),
               "train_psnr": round(-10 * math.log10(sum(recent_mse) / len(recent_mse)), 3)}
        row.update({k: round(v, 4 if k == "test_ssim" else 3 if "psnr" in k else 1 if "samples" in k else 0)
                    for k, v in score_views(trainer, indices).items()})
        results.append(row)
        print(json.dumps(results[-1]), flush=True)
    out = {"benchmark": "lego_psnr_vs_time", "device": str(trainer.device), "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "preset": args.preset, "batch_rays": cfg.batch_rays,
           "samples_per_diagonal": cfg.render.samples_per_diagonal, "schedule_steps": trainer.config.steps,
           "test_views": [trainer.test_data.image_names[i] for i in indices] if trainer.test_data.image_names else indices,
           "marks": results}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
