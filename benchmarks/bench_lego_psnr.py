"""Test PSNR against training wall-clock time on the Blender lego scene (400×400, ../shared/data).

Trains the ``lego`` preset and, at each checkpoint time, pauses the clock and scores evenly spread
test views. Prints one JSON document (also written to --json).

    python benchmarks/bench_lego_psnr.py --minutes 5 10 20 --views 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LEGO = ROOT.parent / "shared" / "data" / "nerf_synthetic_lego_400"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_LEGO)
    parser.add_argument("--preset", default="lego")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20])
    parser.add_argument("--views", type=int, default=10, help="test views scored at each mark")
    parser.add_argument("--batch-rays", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=Path("/tmp/nerfxl-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from nerfxl.evaluate import evaluate_views
    from nerfxl.presets import TRAIN_PRESETS
    from nerfxl.trainer import Trainer

    cfg = dataclasses.replace(TRAIN_PRESETS[args.preset][1], data=args.data, progress=False, device=args.device)
    if args.batch_rays:
        cfg = dataclasses.replace(cfg, batch_rays=args.batch_rays)
    marks = sorted(args.minutes)
    # The schedule (learning-rate decay) is laid out for a step count we expect to reach by the
    # last mark; measure the speed over the first steps and fix it then.
    trainer = Trainer(cfg, args.output / "bench-lego")
    sync = (lambda: __import__("torch").cuda.synchronize()) if trainer.device.type == "cuda" else (lambda: None)
    results = []
    trained = 0.0
    step = 0
    probe_steps = 30
    for mark in marks:
        while trained < mark * 60:
            t0 = time.perf_counter()
            stats = trainer.train_step(step)
            sync()
            trained += time.perf_counter() - t0
            step += 1
            trainer.step = step
            if step == probe_steps:
                expected = int(step * marks[-1] * 60 / trained)
                trainer.config = dataclasses.replace(trainer.config, steps=max(expected, step + 1))
        metrics = evaluate_views(trainer, limit=args.views)
        results.append({"minutes": mark, "steps": step, "test_psnr": round(metrics["psnr"], 3),
                        "test_ssim": round(metrics["ssim"], 4), "train_psnr_last_batch": round(stats["psnr"], 3),
                        "render_rays_per_s": round(metrics["rays_per_second"])})
        print(json.dumps(results[-1]), flush=True)
    out = {"benchmark": "lego_psnr_vs_time", "device": str(trainer.device), "preset": args.preset,
           "batch_rays": cfg.batch_rays, "test_views": args.views, "marks": results}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
