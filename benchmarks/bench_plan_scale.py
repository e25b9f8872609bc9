"""MatrixCity scale without the images: a 258 000-frame poses-only flight, ``nerfxl info`` and
``nerfxl plan -k 64`` on it (wall time and peak RSS of each command), and the plan as K grows.

1. ``nerfxl scene matrixcity-poses OUT --frames N`` writes MatrixCity pose files (no images).
2. ``nerfxl info OUT`` and ``nerfxl plan OUT -k 64 -d 64 ...`` run as child processes; each one's wall
   time and peak RSS (``os.wait4``'s rusage of that child) are recorded.
3. In this process: the same dataset loaded poses-only, ``planning.plan_job`` for K = D in --tiles
   (one tile per process), with the marching bound and with --samples-per-ray, to show what grows
   with K: the busiest tile, the all-gather of [K, R, 6] blocks, the checkpoint.

    python benchmarks/bench_plan_scale.py [--frames 258000] [--tiles 16 32 64 128 256] [--preset hash]
        [--batch-rays 4096] [--link-gbps 100] [--samples-per-ray 24] [--scene-box ...] [--out DIR]

Prints one JSON object; progress goes to stderr. Exits non-zero when info or plan takes over --limit-s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The flight's own extent: the 5 km square widened by the altitude, ground to above the cameras.
DEFAULT_BOX = (-2700.0, -2700.0, -20.0, 2700.0, 2700.0, 240.0)


def log(msg: str) -> None:
    print(f"[bench_plan_scale] {msg}", file=sys.stderr, flush=True)


def timed_command(args: list[str]) -> dict:
    """Run ``nerfxl ARGS`` as a child: its wall seconds, peak RSS (that child's own rusage), exit code, output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "nerfxl.cli", *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"command": "nerfxl " + " ".join(args), "seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,
                "returncode": proc.returncode, "stdout": out.read(), "stderr": err.read()}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=258_000)
    p.add_argument("--out", type=Path, default=None, help="where the pose files go (default: a temporary folder)")
    p.add_argument("--tiles", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--plan-k", type=int, default=64, help="K (= D) of the timed `nerfxl plan`")
    p.add_argument("--preset", default="hash")
    p.add_argument("--batch-rays", type=int, default=4096)
    p.add_argument("--link-gbps", type=float, default=100.0)
    p.add_argument("--samples-per-ray", type=float, default=24.0,
                   help="the trained scenario (samples surviving occupancy skipping, over all tiles)")
    p.add_argument("--scene-box", type=float, nargs=6, default=DEFAULT_BOX)
    p.add_argument("--limit-s", type=float, default=60.0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="plan-scale-") as tmp:
        out = args.out if args.out is not None else Path(tmp) / "matrixcity-poses"
        return run(args, out)


def run(args, out: Path) -> int:
    box = [str(x) for x in args.scene_box]
    log(f"writing {args.frames} poses to {out}")
    generate = timed_command(["scene", "matrixcity-poses", str(out), "--frames", str(args.frames), "--overwrite"])
    if generate["returncode"]:
        raise SystemExit(generate["stderr"])
    log("nerfxl info")
    info = timed_command(["info", str(out)])
    log(f"nerfxl plan -k {args.plan_k}")
    plan = timed_command(["plan", str(out), "-k", str(args.plan_k), "-d", str(args.plan_k), "--preset", args.preset,
                          "--batch-rays", str(args.batch_rays), "--link-gbps", str(args.link_gbps),
                          "--scene-box", *box, "--print-as", "json"])
    for result in (info, plan):
        if result["returncode"]:
            raise SystemExit(f"{result['command']} failed: {result['stderr']}")
    plan_report = json.loads(plan["stdout"])

    from nerfxl.planning import calibrate_activations, load_for_planning, plan_job
    from nerfxl.presets import TRAIN_PRESETS

    base = dataclasses.replace(TRAIN_PRESETS[args.preset][1], batch_rays=args.batch_rays)
    dataset = load_for_planning(out, scene_box=tuple(args.scene_box))
    cost = calibrate_activations(base)
    sweep = []
    for k in args.tiles:
        log(f"K = D = {k}")
        cfg = dataclasses.replace(base, partitions=k, devices=k)
        bound = plan_job(dataset, cfg, args.link_gbps, calibration=cost)
        trained = plan_job(dataset, cfg, args.link_gbps, samples_per_ray=args.samples_per_ray, calibration=cost)
        sweep.append({"k": k, "bound": summary(bound), "trained": summary(trained)})
    result = {
        "benchmark": "plan_scale", "frames": args.frames, "preset": args.preset, "batch_rays": args.batch_rays,
        "link_gbps": args.link_gbps, "scene_box": args.scene_box, "samples_per_ray_trained": args.samples_per_ray,
        "generate": strip(generate), "info": strip(info), "info_output": info["stdout"], "plan": strip(plan),
        "plan_report": plan_report, "sweep": sweep, "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    slow = [r["command"] for r in (info, plan) if r["seconds"] > args.limit_s]
    if slow:
        log(f"over {args.limit_s} s: {slow}")
        return 1
    return 0


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("stdout", "stderr")}


def summary(report: dict) -> dict:
    """The figures that change with K."""
    mem, b, w, t = (report[k] for k in ("memory_per_rank_bytes", "bytes_per_step_per_rank",
                                        "wire_bytes_per_step_per_rank", "time_per_step_s"))
    return {
        "parameters_per_rank": report["parameters"]["per_rank"], "parameters_model": report["parameters"]["model"],
        "memory_per_rank_bytes": mem["total"], "activations_bytes": mem["activations"],
        "exchange_buffers_bytes": mem["exchange_buffers"],
        "samples_per_ray": report["samples"]["per_ray_used"], "tiles_crossed_per_ray": report["samples"]["tiles_crossed_per_ray"],
        "busiest_rank_samples_per_step": max(report["samples"]["per_step_per_rank"]),
        "imbalance_plan": report["imbalance"]["plan_tiles"], "imbalance_ray_work": report["imbalance"]["ray_work_tiles"],
        "partition_bytes_per_step": b["partition_exchange"], "sample_bytes_per_step": b["sample_exchange"],
        "gradient_bytes_per_step": b["gradient_all_reduce"], "exchange_wire_bytes_per_step": w["exchange"],
        "exchange_seconds": t["exchange"], "gradient_seconds": t["gradient_all_reduce"],
        "compute_seconds_this_cpu": t["compute"], "checkpoint_bytes": report["checkpoint_bytes"]["total"],
        "largest_tile_checkpoint_bytes": report["checkpoint_bytes"]["largest_tile"],
    }


if __name__ == "__main__":
    sys.exit(main())
