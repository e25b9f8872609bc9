"""Measured NeRF-XL training steps next to ``nerfxl plan``'s predictions (nerfxl/planning.py).

Used by ``benchmarks/bench_plan_validation.py`` and ``tests/test_planning.py``. One launch of D processes
runs a whole list of jobs one after another (a job on fewer processes runs on a sub-group holding
rank 0, as ``tests/parallel/nerfxl_workers.py`` does): process start-up dominates on a small machine.

Each job builds the Trainer, runs one step (Adam's state exists from then on), then ``steps`` measured
steps, and records on every rank:

- the bytes it handed to each collective (``DistContext.stats``) per step;
- its parameters', Adam state's and occupancy grids' bytes (tensor sizes);
- the bytes autograd saved for backward in the last measured step's loss (``planning.SavedBytes``,
  parameters and buffers excluded) and the samples its tiles evaluated in that step;
- the loss of every step (the training trace; identical on every process);
- optionally the checkpoint's tensor bytes (every process saves; rank 0 sums the files).

:func:`compare` turns measured ranks and ``planning.plan_job``'s report into predicted vs measured rows.
"""

from __future__ import annotations

import dataclasses
import resource
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from nerfxl.parallel.distributed import DistContext, single_process_context

GRADIENTS = "all_reduce_gradients"
REPLICA_STATS = "global_stats"


def measure_job(ctx: DistContext, job: dict) -> dict:
    """Run one job's steps on ``ctx`` and record what :func:`compare` needs (see the module docstring)."""
    import nerfxl.trainer as trainer_module
    from nerfxl.data.city.generate import single_threaded
    from nerfxl.parallel.distributed import barrier
    from nerfxl.planning import SavedBytes

    with single_threaded():
        trainer = trainer_module.Trainer(job["config"], Path(job["run_dir"]), ctx=ctx)
        renderer = trainer.renderer
        samples = [0]
        query_tiles = renderer.query_tiles

        def counting_query_tiles(tiles, *args, **kwargs):
            results = query_tiles(tiles, *args, **kwargs)
            samples[0] += sum(queried[0].n_samples for queried in results)
            return results

        renderer.query_tiles = counting_query_tiles
        training_loss = trainer.training_loss
        saved = {}

        def measured_loss(step):
            exclude = [*renderer.parameters(), *renderer.buffers()]
            with SavedBytes(exclude) as counter:
                out = training_loss(step)
            saved["bytes"] = counter.nbytes
            return out

        losses = [trainer.train_step(0)["loss"]]
        barrier(ctx)
        ctx.reset_stats()
        trainer.training_loss = measured_loss
        samples_max = []
        for step in range(1, job["steps"] + 1):
            samples[0] = 0
            stats = trainer.train_step(step)
            samples_max.append(stats["samples_max_rank"])
            losses.append(stats["loss"])
        trainer.training_loss = training_loss
        steps = job["steps"]
        field = renderer.field
        occupancy = sum(b.numel() * b.element_size() for grid in renderer.occupancy
                        for name, b in grid.named_buffers() if name in ("density", "occupied"))
        out = {
            "rank": ctx.rank, "world": ctx.world_size,
            "bytes_per_step": {name: entry["bytes"] / steps for name, entry in ctx.stats.items()},
            "parameter_bytes": sum(p.numel() * p.element_size() for p in field.parameters()),
            "optimizer_bytes": sum(t.numel() * t.element_size() for state in trainer.optimizer.state.values()
                                   for t in state.values() if torch.is_tensor(t)),
            "occupancy_bytes": occupancy,
            "saved_bytes": saved["bytes"], "samples_last_step": samples[0],
            "samples_max_rank_per_step": samples_max, "losses": losses,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        if job.get("checkpoint"):
            trainer.step = steps + 1
            path = trainer.save()
            if ctx.is_main:
                out["checkpoint_bytes"] = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
        return out


def _sub_context(ctx: DistContext, ranks: list[int], group) -> DistContext:
    return DistContext(rank=ranks.index(ctx.rank), world_size=len(ranks), local_rank=ctx.local_rank,
                       device=ctx.device, backend=ctx.backend, group=group, timeout_s=ctx.timeout_s, owns_group=False)


def run_jobs(ctx: DistContext, jobs: list[dict]) -> dict:
    """Every rank: run ``jobs`` in order, each on its first ``job["devices"]`` ranks (a sub-group)."""
    groups = {}
    for job in jobs:  # new_group is collective over the whole world: create them all first
        d = job["config"].devices
        if 1 < d < ctx.world_size and d not in groups:
            groups[d] = dist.new_group(ranks=list(range(d)), timeout=timedelta(seconds=ctx.timeout_s))
    results = {}
    for job in jobs:
        d = job["config"].devices
        if ctx.rank >= d:
            continue
        if d == 1:
            sub = single_process_context("cpu")
        else:
            sub = ctx if d == ctx.world_size else _sub_context(ctx, list(range(d)), groups[d])
        results[job["name"]] = measure_job(sub, job)
    return results


def run_all(jobs: list[dict]) -> dict[str, list[dict]]:
    """All jobs: the one-process ones here, the others in one launch of max D processes, except that
    jobs with replicas get a launch of exactly their D (the trainer cuts the replicas' groups out of the
    whole job, which every process of the launch must then take part in).

    Returns:
        job name → measured ranks, in rank order.
    """
    from nerfxl.parallel.launch import launch

    here = [j for j in jobs if j["config"].devices == 1]
    shared = max((j["config"].devices for j in jobs if j["config"].replicas == 1), default=1)
    launches: dict[int, list[dict]] = {}
    for j in jobs:
        d = j["config"].devices
        if d > 1:
            launches.setdefault(shared if j["config"].replicas == 1 else d, []).append(j)
    results: dict[str, list[dict]] = {j["name"]: [measure_job(single_process_context("cpu"), j)] for j in here}
    for group in launches.values():
        world = max(j["config"].devices for j in group)
        per_rank = launch(run_jobs, world, args=(group,), device="cpu")
        for job in group:
            results[job["name"]] = [per_rank[r][job["name"]] for r in range(job["config"].devices)]
    return results


def job(name: str, config, run_dir: Path, steps: int, checkpoint: bool = False) -> dict:
    """A job for :func:`run_all` (``config``: a TrainConfig with partitions, devices, exchange, replicas set)."""
    return {"name": name, "config": dataclasses.replace(config, progress=False, device="cpu"),
            "run_dir": str(run_dir / name), "steps": steps, "checkpoint": checkpoint}


def compare(report: dict, config, ranks: list[dict]) -> dict:
    """Predicted (``report``: ``planning.plan_job`` for ``config``) vs measured (``ranks``) for one job:
    ``{quantity: {"predicted", "measured", "ratio"}}``.

    Bytes are the busiest process's per step; with replicas the averaging all-reduce counts with the
    gradients and its stats gather with the exchange, as ``DistContext`` names them. The sample
    exchange's prediction takes the measured busiest sample count of each step (the padding rule is
    the model's; the count is an input). Memory is the busiest process's. Activations: each process's
    prediction from its own measured samples, the largest against the largest measured.
    """
    from nerfxl.planning import GATHER_HEADER_BYTES, SAMPLE_ROW_BYTES, STATS_BYTES, ActivationCost, activation_bytes, job_layout

    b = report["bytes_per_step_per_rank"]
    mem = report["memory_per_rank_bytes"]
    layout = job_layout(config)

    def busiest(pick) -> float:
        return max(pick(r) for r in ranks)

    def exchange(r) -> float:
        return sum(v for name, v in r["bytes_per_step"].items() if name != GRADIENTS)

    predicted_exchange = b["exchange"] + b["replica_stats"]
    if config.exchange == "sample" and layout.model_processes > 1:
        counts = ranks[0]["samples_max_rank_per_step"]
        predicted_exchange = b["replica_stats"] + sum(2 * GATHER_HEADER_BYTES + c * SAMPLE_ROW_BYTES + STATS_BYTES
                                                      for c in counts) / len(counts)
    rows = {
        "exchange_bytes_per_step": (predicted_exchange, busiest(exchange)),
        "gradient_bytes_per_step": (b["gradient_all_reduce"] + b["replica_average"],
                                    busiest(lambda r: r["bytes_per_step"].get(GRADIENTS, 0.0))),
        "parameter_bytes": (mem["parameters"], busiest(lambda r: r["parameter_bytes"])),
        "optimizer_bytes": (mem["optimizer"], busiest(lambda r: r["optimizer_bytes"])),
        "occupancy_bytes": (mem["occupancy"], busiest(lambda r: r["occupancy_bytes"])),
    }
    cost = ActivationCost(**report["activation_cost"])
    # Every process of one model copy (the first M ranks) renders the same rays.
    copy = ranks[:layout.model_processes]
    copy_samples = sum(r["samples_last_step"] for r in copy)
    rows["activation_bytes"] = (
        max(activation_bytes(cost, config, layout, r["samples_last_step"], copy_samples, main=r["rank"] == 0)
            for r in copy), max(r["saved_bytes"] for r in copy))
    if any("checkpoint_bytes" in r for r in ranks):
        rows["checkpoint_bytes"] = (report["checkpoint_bytes"]["total"],
                                    next(r["checkpoint_bytes"] for r in ranks if "checkpoint_bytes" in r))
    out = {name: {"predicted": p, "measured": m, "ratio": (p / m if m else (1.0 if p == 0 else float("inf")))}
           for name, (p, m) in rows.items()}
    out["samples_per_ray"] = {"marched_bound": report["samples"]["marched_bound_per_ray"],
                              "measured": copy_samples / config.batch_rays}
    out["peak_rss_bytes_per_rank"] = [r["peak_rss_bytes"] for r in ranks]
    return out
