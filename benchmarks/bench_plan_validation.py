"""``nerfxl plan``'s predictions against measured training steps on this machine.

For every K in --tiles and D in --devices (D dividing K; D = 1 trains in this process, the others in
one launch of max D processes), plus --sample-jobs with the sample exchange and --replica-jobs with
hybrid replicas, it trains --steps steps of --preset on --data and compares, per job, what
``nerfxl.planning.plan_job`` predicts with what the busiest process measured (``plan_measure.py``):
bytes per step handed to the exchange and to the gradient all-reduce (``DistContext.stats``),
parameter, Adam and occupancy bytes, saved-for-backward bytes of a step (predicted from the measured
samples), the checkpoint's tensor bytes, and samples per ray (the marching bound vs measured). Every
multi-process job's loss trace is compared with the one-process run of the same K (relative 1e-6:
K = 16 tiles on 16 real processes train the one-process model), and each rank's peak RSS is reported.

    python benchmarks/bench_plan_validation.py [--data PATH] [--preset tiny] [--tiles 4 8 16]
        [--devices 1 2 4] [--steps 2] [--batch-rays 256] [--tolerance 0.1]

Prints one JSON object (``jobs[]`` and ``worst_ratio`` per quantity); progress goes to stderr. Exits
non-zero when a bytes or memory figure misses by more than --tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from plan_measure import compare, job, run_all

CHECKED = ("exchange_bytes_per_step", "gradient_bytes_per_step", "parameter_bytes", "optimizer_bytes",
           "occupancy_bytes", "checkpoint_bytes")
"""Quantities held to --tolerance (activations and samples are reported; see docs/benchmarks.md)."""
LOSS_RTOL = 1e-6  # float32; all-gather and compositing orders differ (tests/parallel/test_nerfxl_training.py)


def log(msg: str) -> None:
    print(f"[bench_plan_validation] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="dataset (default: the tiny procedural city)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tiles", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--sample-jobs", type=str, nargs="*", default=["4x2", "8x4"],
                   help="KxD jobs with the sample exchange")
    p.add_argument("--replica-jobs", type=str, nargs="*", default=["4x4x2"],
                   help="KxDxR jobs with R hybrid replicas")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--density-shift", type=float, default=1.0,
                   help="the field's σ shift: 1.0 makes tiles visibly opaque from step 0, so that every tile's "
                        "segments weigh in the loss the traces compare (as tests/parallel/test_nerfxl_training.py)")
    p.add_argument("--batch-rays", type=int, default=256)
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def build_jobs(args, base, work: Path) -> list[dict]:
    jobs = []
    for k in args.tiles:
        for d in args.devices:
            if k % d == 0:
                cfg = dataclasses.replace(base, partitions=k, devices=d)
                jobs.append(job(f"K{k}-D{d}-partition", cfg, work, args.steps, checkpoint=(d == max(
                    x for x in args.devices if k % x == 0))))
    for spec in args.sample_jobs:
        k, d = (int(x) for x in spec.split("x"))
        jobs.append(job(f"K{k}-D{d}-sample", dataclasses.replace(base, partitions=k, devices=d, exchange="sample"),
                        work, args.steps))
    for spec in args.replica_jobs:
        k, d, r = (int(x) for x in spec.split("x"))
        jobs.append(job(f"K{k}-D{d}-R{r}-partition", dataclasses.replace(base, partitions=k, devices=d, replicas=r),
                        work, args.steps))
    return jobs


def same_trace(j: dict, jobs: list[dict], measured: dict) -> dict | None:
    """The loss of every step against the one-process run of the same K (None: no such run, or replicas,
    whose global batch differs): D processes must train the one-process model (relative 1e-6)."""
    c = j["config"]
    if c.devices == 1 or c.replicas != 1:
        return None
    reference = next((r for r in jobs if r["config"].devices == 1 and r["config"].partitions == c.partitions
                      and r["config"].replicas == 1), None)
    if reference is None:
        return None
    mine, theirs = measured[j["name"]][0]["losses"], measured[reference["name"]][0]["losses"]
    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(mine, theirs))
    return {"reference": reference["name"], "losses": mine, "reference_losses": theirs,
            "max_relative_difference": worst, "equal": worst <= LOSS_RTOL and len(mine) == len(theirs)}


def main(argv=None) -> int:
    args = parse_args(argv)
    from nerfxl.data.city import ensure_city
    from nerfxl.planning import calibrate_activations, load_for_planning, plan_job
    from nerfxl.presets import TRAIN_PRESETS

    t0 = time.perf_counter()
    data = args.data if args.data is not None else ensure_city("tiny", seed=0)
    preset = TRAIN_PRESETS[args.preset][1]
    base = dataclasses.replace(preset, data=data, batch_rays=args.batch_rays, eval_every=0, checkpoint_every=10**9,
                               field=dataclasses.replace(preset.field, density_shift=args.density_shift))
    with tempfile.TemporaryDirectory(prefix="plan-validation-") as tmp:
        jobs = build_jobs(args, base, Path(tmp))
        log(f"{len(jobs)} jobs: " + ", ".join(j["name"] for j in jobs))
        measured = run_all(jobs)
    dataset = load_for_planning(Path(data))
    cost = calibrate_activations(base)
    results = []
    for j in jobs:
        report = plan_job(dataset, j["config"], calibration=cost)
        rows = compare(report, j["config"], measured[j["name"]])
        results.append({"name": j["name"], "partitions": j["config"].partitions, "devices": j["config"].devices,
                        "replicas": j["config"].replicas, "exchange": j["config"].exchange, **rows})
    for result, j in zip(results, jobs):
        result["trace"] = same_trace(j, jobs, measured)
    worst = {q: max((abs(r[q]["ratio"] - 1) for r in results if q in r), default=0.0)
             for q in (*CHECKED, "activation_bytes")}
    out = {"benchmark": "plan_validation", "data": str(data), "preset": args.preset, "steps": args.steps,
           "density_shift": args.density_shift,
           "batch_rays": args.batch_rays, "tolerance": args.tolerance, "jobs": results,
           "worst_relative_error": worst, "activation_cost": dataclasses.asdict(cost),
           "seconds": time.perf_counter() - t0}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    failed = [q for q in CHECKED if worst[q] > args.tolerance]
    failed += [f"{r['name']} trace" for r in results if r["trace"] is not None and not r["trace"]["equal"]]
    if failed:
        log(f"off by more than {args.tolerance:.0%}: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
