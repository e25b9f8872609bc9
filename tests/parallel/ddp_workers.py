"""Data-parallel training runs recorded for tests/parallel/test_data_parallel.py, here or on every rank.

Spawn pickles worker functions by name, so they live in this small module (see nerfxl_workers.py).
Everything returned is small and picklable: floats, lists and dicts of CPU tensors.
"""

from __future__ import annotations

from pathlib import Path

import nerfxl_workers

import nerfxl.trainer as trainer_module
from nerfxl.parallel.distributed import DistContext, single_process_context


def _grads(named) -> dict:
    return {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in named}


def train_and_record(ctx: DistContext, config, run_dir: str, steps: int, grad_steps=()) -> dict:
    """Train ``steps`` steps of ``Trainer.train_step`` on ``ctx`` and record what the tests compare.

    Returns:
        {"rank", "world", "losses", "psnr", "samples", "mse": per-step global stats,
         "rays": {"image_indices": [R], "pixels": [R, 2]} this process rendered at step 0,
         "grads": {step: {"partial": this process's gradients before averaging,
                          "averaged": after it (what the optimizer stepped with)}},
         "params": {name: parameter} after the last step}.
    """
    with nerfxl_workers.one_thread():
        trainer = trainer_module.Trainer(config, Path(run_dir), ctx=ctx)
        field = trainer.renderer.field
        out = {"rank": ctx.rank, "world": ctx.world_size, "losses": [], "psnr": [], "samples": [], "mse": [],
               "grads": {}}
        rays_for = trainer.rays_for

        def recording_rays_for(batch):
            out.setdefault("rays", {"image_indices": batch.image_indices.clone(), "pixels": batch.pixels.clone()})
            return rays_for(batch)

        trainer.rays_for = recording_rays_for
        real_average = trainer_module.average_gradients
        step_now = [-1]

        def recording_average(model, rctx):
            partial = _grads(field.named_parameters()) if step_now[0] in grad_steps else None
            real_average(model, rctx)
            if partial is not None:
                out["grads"][step_now[0]] = {"partial": partial, "averaged": _grads(field.named_parameters())}

        trainer_module.average_gradients = recording_average
        try:
            for step in range(steps):
                step_now[0] = step
                stats = trainer.train_step(step)
                for key in ("loss", "psnr", "samples", "mse"):
                    out["losses" if key == "loss" else key].append(stats[key])
        finally:
            trainer_module.average_gradients = real_average
        out["params"] = {n: p.detach().clone() for n, p in field.named_parameters()}
        return out


def train_here(job: dict) -> dict:
    """One job in this process on a single-process context (the D = 1 reference)."""
    return train_and_record(single_process_context("cpu"), job["config"], job["run_dir"], job["steps"],
                            job.get("grad_steps", ()))


def run_jobs(ctx: DistContext, jobs: list[dict]) -> dict:
    """Every rank: run ``jobs`` (on all ranks) in order; {job name: :func:`train_and_record`'s result}."""
    return {job["name"]: train_and_record(ctx, job["config"], job["run_dir"], job["steps"], job.get("grad_steps", ()))
            for job in jobs}
