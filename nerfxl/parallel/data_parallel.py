"""Data parallel over replicas of a model: ``--method ddp`` (the baseline NeRF-XL is compared
against) and the data-parallel half of hybrid training (``--replicas R``).

A model (one process's whole copy with ddp; M processes' parts with hybrid) replicated R times,
PyTorch DDP semantics: a global batch of R × B rays, replica r renders rows [r·B, (r+1)·B), the
gradients of everything a process holds are averaged over the processes holding the same part
(the replica group, :func:`nerfxl.parallel.distributed.split_into_replicas`), and every replica
steps identical parameters.

Exactness: R replicas with B rays each compute what one replica computes with R·B rays (the
reference twin), up to float round-off:
- rays: every process draws the global batch of the step (a pure function of (seed, step)) and
  keeps its replica's rows (:func:`shard_of_batch`);
- random draws per ray (sample jitter, random background colours): replica r skips the draws the
  global batch spends on rows [0, r·B) (:func:`skip_draws`), so its rays get the global draws;
- occupancy refreshes: the same generator and parameters in every replica, hence the same grids;
- gradient: each replica's loss is the mean over its B rays, so the mean over replicas (the
  averaging all-reduce, :func:`average_gradients`) is the gradient of the global mean.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from nerfxl.data.sampler import RayBatch
from nerfxl.errors import ConfigError
from nerfxl.parallel.distributed import DistContext, all_gather_tensor, all_reduce_gradients, all_reduce_scalar


def check_replicated(partitions: int, world_size: int) -> None:
    """DDP replicates one model: K must be 1 (a one-line ConfigError naming the options otherwise)."""
    if partitions != 1:
        raise ConfigError(f"--method ddp replicates one model on every process, so --partitions must be 1 "
                          f"(got {partitions}); to split the scene into tiles use --method nerfxl")
    if world_size < 1:
        raise ConfigError(f"--devices must be at least 1, got {world_size}")


def shard_of_batch(batch: RayBatch, ctx: DistContext) -> RayBatch:
    """Replica r's rows [r·B, (r+1)·B) of a global batch of R·B rays (``ctx``: the replica group)."""
    n = len(batch)
    if n % ctx.world_size:
        raise ValueError(f"a global batch of {n} rays does not split over {ctx.world_size} processes")
    rows = slice(ctx.rank * n // ctx.world_size, (ctx.rank + 1) * n // ctx.world_size)
    return RayBatch(batch.image_indices[rows], batch.pixels[rows], batch.rgb[rows], batch.alpha[rows],
                    None if batch.depth is None else batch.depth[rows])


def skip_draws(generator: torch.Generator, n: int, dtype: torch.dtype) -> torch.Generator:
    """Advance ``generator`` past ``n`` uniform draws of ``dtype``, in place; returns it.

    Why this reproduces the global draws: the CPU generator (Mersenne Twister) fills ``torch.rand``
    element by element in order, each element consuming the same amount of the stream for a given
    dtype, so rand(a) followed by rand(b) yields exactly rand(a + b)[a:] (tested). Drawing and
    discarding is the only way to skip ahead (the generator has no jump API); the cost is a few
    numbers per ray of the lower ranks, negligible next to rendering. CUDA's Philox generator lays
    elements out by launch shape instead, so on GPUs the skipped stream is valid (independent of
    rank 0's) but not bit-identical to the single-process twin's.
    """
    if n > 0:
        torch.rand(n, generator=generator, dtype=dtype, device=generator.device)
    return generator


def shard_generators(generators: Callable[[int], torch.Generator], draws_before: int,
                     dtype: torch.dtype) -> Callable[[int], torch.Generator]:
    """Tile k → its generator advanced past the ``draws_before`` draws of the lower ranks' rays."""
    return lambda k: skip_draws(generators(k), draws_before, dtype)


def mean_over_global_batch(values: Tensor, ctx: DistContext) -> Tensor:
    """This rank's share of the mean of ``values`` over the global batch ([N_r] → []).

    For terms over a varying subset of rays (e.g. rays with depth): the shares of all ranks average
    (as the gradients do) to the mean over the whole batch, whatever each rank's count. Every rank
    must call it (one scalar all-reduce).
    """
    total = all_reduce_scalar(values.numel(), ctx, op="sum")
    return values.sum() * (ctx.world_size / max(total, 1.0))


def average_gradients(model: nn.Module, ctx: DistContext) -> None:
    """Average ``.grad`` of every parameter over processes (DDP): the gradient of the global mean loss."""
    all_reduce_gradients(model, ctx, op="mean")


def global_stats(stats: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Step statistics of the global batch from each rank's (same keys everywhere; one gather).

    ``samples`` is summed, ``samples_max_rank`` is the largest one's (a replica's own
    ``samples_max_rank`` when it has one), ``psnr`` is recomputed from the global mse, everything else
    (mean terms over R rays each) is averaged.
    """
    keys = [k for k in stats if k != "psnr"]
    local = torch.tensor([[float(stats[k]) for k in keys]], dtype=torch.float64, device=ctx.device)
    per_rank = all_gather_tensor(local, ctx).cpu()  # [D, len(keys)]
    out = {k: float(per_rank[:, i].mean()) for i, k in enumerate(keys)}
    out["samples"] = float(per_rank[:, keys.index("samples")].sum())
    out["samples_max_rank"] = float(per_rank[:, keys.index("samples_max_rank" if "samples_max_rank" in keys else "samples")].max())
    if "mse" in out:
        out["psnr"] = float(-10 * torch.log10(torch.tensor(out["mse"]).clamp_min(1e-10)))
    return out
