"""Training runs recorded for tests/parallel/test_landmark_strategies.py (spawned ranks import this module).

Each job trains a few steps with ``Trainer.train_step`` and returns, from every rank, the per-step losses,
the gradients of the one tile's parameters at chosen steps (as the optimizer sees them, i.e. after the
strategy's gradient sync) and the tile's tensors at the end, all on the CPU; the test merges the ranks'
parts (sub-planes or channel slices) and compares them with the one-process model.
"""

from __future__ import annotations

from pathlib import Path

import torch

import nerfxl.parallel.plane_parallel as plane_parallel
import nerfxl.trainer as trainer_module
from nerfxl.parallel.distributed import DistContext, single_process_context
from nerfxl_workers import one_thread, run_jobs as _run_jobs_with


def _no_border_sync(window, ctx) -> None:
    """A deliberately broken plane parallel: border copies keep their own gradients."""


def train_and_record(ctx: DistContext, config, run_dir: str, steps: int, grad_steps=(), broken: str | None = None,
                     save: bool = False) -> dict:
    with one_thread():
        real_sync = plane_parallel.sync_border_gradients
        if broken == "no-border-sync":
            plane_parallel.sync_border_gradients = _no_border_sync
        try:
            trainer = trainer_module.Trainer(config, Path(run_dir), ctx=ctx)
            tile = trainer.renderer.field.tiles[0]
            out = {"rank": ctx.rank, "losses": [], "grads": {}, "replicated_equal": True}
            step_now = [0]
            real_step = trainer.optimizer.step

            def recording_step(*args, **kwargs):
                if step_now[0] in grad_steps:
                    out["grads"][step_now[0]] = {n: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone())
                                                 for n, p in tile.named_parameters()}
                return real_step(*args, **kwargs)

            trainer.optimizer.step = recording_step
            for step in range(steps):
                step_now[0] = step
                out["losses"].append(trainer.train_step(step)["loss"])
            out["tile"] = {n: t.detach().clone() for n, t in tile.state_dict().items()}
            out["tiles"] = {k: {n: t.detach().clone() for n, t in trainer.renderer.field.tile(k).state_dict().items()}
                            for k in trainer.tile_ids}
            out["shared"] = {n: p.detach().clone() for n, p in trainer.renderer.field.named_shared_parameters()}
            if save:
                trainer.step = steps
                trainer.save()
            return out
        finally:
            plane_parallel.sync_border_gradients = real_sync


def train_here(job: dict) -> dict:
    """One job in this process (the D = 1 reference)."""
    return train_and_record(single_process_context("cpu"), job["config"], job["run_dir"], job["steps"],
                            job.get("grad_steps", ()), job.get("broken"))


def run_jobs(ctx: DistContext, jobs: list[dict]) -> dict:
    """Every rank: the jobs in order, each on ranks 0..d-1 (see nerfxl_workers.run_jobs)."""
    return _run_jobs_with(ctx, jobs, record=lambda sub, job: train_and_record(
        sub, job["config"], job["run_dir"], job["steps"], job.get("grad_steps", ()), job.get("broken"),
        job.get("save", False)))
