"""Training runs recorded for tests/parallel/test_nerfxl_training.py, in this process or on every rank.

Spawn pickles worker functions by name, so they live in this small module (each child imports it,
not the test module and pytest with it). A launch is expensive on two cores (a torch import and an
optimizer import per process), so :func:`run_jobs` runs a whole list of training jobs in one group
of processes: a job on fewer ranks than the group trains on a sub-group (``torch.distributed
.new_group``) holding global rank 0, wrapped in a :class:`DistContext` exactly like the world group.

Everything returned is small and picklable: floats, ints, dicts of CPU tensors.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

import nerfxl.run.strategies.tiles as tiles_strategy
import nerfxl.trainer as trainer_module
# Single-threaded kernels, as in every spawned rank (and restored afterwards in this process).
from nerfxl.data.city.generate import single_threaded as one_thread
from nerfxl.parallel.distributed import DistContext, single_process_context



def _clone_grads(named) -> dict:
    return {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in named}


def train_and_record(ctx: DistContext, config, run_dir: str, steps: int, grad_steps=()) -> dict:
    """Train ``steps`` steps of ``Trainer.train_step`` on ``ctx`` and record what the tests compare.

    Returns:
        {"rank", "world", "tile_ids", "tile_boxes": [K, 2, 3], "scene_box": [2, 3] (model units),
         "losses", "samples", "samples_max_rank": per-step stats,
         "tile_samples": {k: [samples of held tile k at each step]},
         "grads": {step: {"tiles": {k: {name: grad}}, "partial": shared grads before the all-reduce,
                          "shared": shared grads after it}} for the steps in ``grad_steps``,
         "tiles": {k: {name: parameter}}, "shared": {name: parameter} after the last step}.
    """
    with one_thread():
        trainer = trainer_module.Trainer(config, Path(run_dir), ctx=ctx)
        field = trainer.renderer.field
        out = {"rank": ctx.rank, "world": ctx.world_size, "tile_ids": list(trainer.tile_ids),
               "tile_boxes": trainer.renderer.tile_boxes().detach().cpu().clone(),
               "scene_box": trainer.scene_box.detach().cpu().clone(),
               "losses": [], "samples": [], "samples_max_rank": [],
               "tile_samples": {k: [] for k in trainer.tile_ids}, "grads": {}}

        # Samples each held tile evaluates (query_tiles serves both exchanges, once per step).
        query_tiles = trainer.renderer.query_tiles

        def counting_query_tiles(tiles, *args, **kwargs):
            results = query_tiles(tiles, *args, **kwargs)
            for k, (samples, _, _) in zip(tiles, results):
                out["tile_samples"][int(k)][-1] += samples.n_samples
            return results

        trainer.renderer.query_tiles = counting_query_tiles

        # Gradients as train_step sees them, just before and just after its all-reduce of shared ones.
        real_all_reduce = tiles_strategy.all_reduce_gradients
        step_now = [-1]

        def recording_all_reduce(params, rctx, op="sum"):
            params = list(params)
            record = step_now[0] in grad_steps
            if record:
                partial = _clone_grads(field.named_shared_parameters())
            real_all_reduce(params, rctx, op=op)
            if record:
                out["grads"][step_now[0]] = {
                    "partial": partial,
                    "shared": _clone_grads(field.named_shared_parameters()),
                    "tiles": {k: _clone_grads(field.tile(k).named_parameters()) for k in trainer.tile_ids},
                }

        tiles_strategy.all_reduce_gradients = recording_all_reduce  # Tiles.reduce_gradients calls it
        try:
            for step in range(steps):
                step_now[0] = step
                for counts in out["tile_samples"].values():
                    counts.append(0)
                stats = trainer.train_step(step)
                out["losses"].append(stats["loss"])
                out["samples"].append(stats["samples"])
                out["samples_max_rank"].append(stats["samples_max_rank"])
        finally:
            tiles_strategy.all_reduce_gradients = real_all_reduce
        out["tiles"] = {k: {n: p.detach().clone() for n, p in field.tile(k).named_parameters()}
                        for k in trainer.tile_ids}
        out["shared"] = {n: p.detach().clone() for n, p in field.named_shared_parameters()}
        return out


def train_here(job: dict) -> dict:
    """One job in this process on a single-process context (the D = 1 reference)."""
    return train_and_record(single_process_context("cpu"), job["config"], job["run_dir"], job["steps"],
                            job.get("grad_steps", ()))


def _sub_context(ctx: DistContext, ranks: list[int], group) -> DistContext:
    return DistContext(rank=ranks.index(ctx.rank), world_size=len(ranks), local_rank=ctx.local_rank,
                       device=ctx.device, backend=ctx.backend, group=group, timeout_s=ctx.timeout_s,
                       owns_group=False)


def run_jobs(ctx: DistContext, jobs: list[dict], record=None) -> dict:
    """Every rank: run ``jobs`` in order, each on the ranks it names (default: all of them).

    Args:
        jobs: dicts with "name", "config", "run_dir", "steps", optional "grad_steps" and "ranks"
            (global ranks 0..n-1 of a sub-group; rank 0 must be one, as broadcasts use src 0).
        record: ``record(sub_ctx, job) -> result`` instead of :func:`train_and_record`.
    Returns:
        {job name: :func:`train_and_record`'s result} for the jobs this rank took part in.
    """
    everyone = list(range(ctx.world_size))
    groups = {}
    for job in jobs:  # new_group is collective over the whole world: create them all up front
        ranks = list(job.get("ranks", everyone))
        assert ranks == list(range(len(ranks))), ranks
        if ranks != everyone and tuple(ranks) not in groups:
            groups[tuple(ranks)] = dist.new_group(ranks=ranks, timeout=timedelta(seconds=ctx.timeout_s))
    results = {}
    for job in jobs:
        ranks = list(job.get("ranks", everyone))
        if ctx.rank not in ranks:
            continue
        sub = ctx if ranks == everyone else _sub_context(ctx, ranks, groups[tuple(ranks)])
        if record is not None:
            results[job["name"]] = record(sub, job)
        else:
            results[job["name"]] = train_and_record(sub, job["config"], job["run_dir"], job["steps"],
                                                    job.get("grad_steps", ()))
    return results
