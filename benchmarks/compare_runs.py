"""Check that two runs trained the same model: their loss traces, parameters and a rendered view.

NeRF-XL on D processes computes what one process computes, up to float32 round-off (docs/nerfxl.md,
"What exact means"). Train the same config twice with ``--log-every 1`` on different ``--devices``
and compare:

    nerfxl train --partitions 4 --devices 1 --steps 50 --log-every 1 --run-dir runs/d1
    nerfxl train --partitions 4 --devices 2 --steps 50 --log-every 1 --run-dir runs/d2
    python benchmarks/compare_runs.py runs/d1 runs/d2

Prints JSON: the largest relative difference of the per-step loss, the largest parameter difference
relative to each tensor's scale (the median is also given: Adam with eps = 1e-15 turns round-off in
near-zero grid gradients into visible differences in a few entries), and the PSNR between the two
runs' renders of the first test view (none when they are identical). Exit status 1 when the losses differ by more than --loss-rtol.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def loss_trace(run_dir: Path) -> dict[int, float]:
    """step → train/loss from the run's TensorBoard logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    if "train/loss" not in events.Tags()["scalars"]:
        raise SystemExit(f"{run_dir}: no train/loss in its TensorBoard logs")
    return {e.step: e.value for e in events.Scalars("train/loss")}


def compare(run_a: Path, run_b: Path) -> dict:
    import torch

    from nerfxl.parallel.images import render_image
    from nerfxl.run.load import load_split
    from nerfxl.run.trained import load_trained

    trace_a, trace_b = loss_trace(run_a), loss_trace(run_b)
    steps = sorted(set(trace_a) & set(trace_b))
    if not steps:
        raise SystemExit(f"{run_a} and {run_b} logged no common step")
    loss_rel = [abs(trace_a[s] - trace_b[s]) / max(abs(trace_a[s]), 1e-12) for s in steps]

    a, b = load_trained(run_a, device="cpu"), load_trained(run_b, device="cpu")
    state_a, state_b = a.renderer.state_dict(), b.renderer.state_dict()
    if state_a.keys() != state_b.keys():
        raise SystemExit(f"{run_a} and {run_b} hold different models (parameter names differ)")
    param_rel = {}
    for name, x in state_a.items():
        if x.is_floating_point():
            scale = float(x.abs().max()) or 1.0
            param_rel[name] = float((x - state_b[name]).abs().max()) / scale

    data = load_split(a.config, "test")
    cameras = a.transform.cameras(data.cameras)
    image_a = render_image(a.renderer, cameras, 0)["rgb"]
    image_b = render_image(b.renderer, cameras, 0)["rgb"]
    mse = float(torch.mean((image_a - image_b) ** 2))
    return {
        "runs": [str(run_a), str(run_b)],
        "steps_compared": len(steps),
        "loss_max_relative_difference": max(loss_rel),
        "loss_relative_difference_at_last_step": loss_rel[-1],
        "parameter_max_relative_difference": max(param_rel.values()),
        "parameter_median_relative_difference": statistics.median(param_rel.values()),
        "worst_parameter": max(param_rel, key=param_rel.get),
        "renders_identical": mse == 0,
        "render_psnr_between_runs": None if mse == 0 else -10 * torch.log10(torch.tensor(mse)).item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--loss-rtol", type=float, default=1e-4, help="largest accepted relative loss difference")
    args = parser.parse_args()
    result = compare(args.run_a, args.run_b)
    result["loss_rtol"] = args.loss_rtol
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["loss_max_relative_difference"] <= args.loss_rtol else 1)


if __name__ == "__main__":
    main()
