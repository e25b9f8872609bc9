"""Functions run on every rank by tests/parallel/test_distributed.py.

They live in their own module because spawn pickles them by name: each child imports this small file,
not the test module (and pytest with it). References are computed by the test in float64.
"""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn

from nerfxl.errors import NerfxlError
from nerfxl.parallel import distributed as D

# all_gather_blocks: N_LOCAL blocks of [R, C] per rank.
N_LOCAL, R, C = 2, 5, 6
# all_gather_variable: rows per rank (rank 1 has none), ROW features each.
ROWS = [2, 0, 3]
ROW = 4


def all_blocks(world: int) -> torch.Tensor:
    """[world * N_LOCAL, R, C] float64: every rank's blocks, rank-major (what a gather must produce)."""
    g = torch.Generator().manual_seed(123)
    return torch.randn(world * N_LOCAL, R, C, generator=g, dtype=torch.float64)


def blocks_loss(x: torch.Tensor) -> torch.Tensor:
    """A loss coupling every block, shaped like NeRF-XL's compositing: x [K, R, C] → scalar.

    Opacities a_k = sigmoid(x[k, :, 3]); prefix transmittance P_k = Π_{m<k} (1 − a_m); color
    Σ_k P_k x[k, :, :3] compared against a fixed target, plus a term in every channel.
    """
    a = torch.sigmoid(x[..., 3])                                     # [K, R]
    p = torch.cumprod(torch.cat([torch.ones_like(a[:1]), 1 - a[:-1]]), dim=0)  # [K, R]
    color = (p[..., None] * x[..., :3]).sum(0)                      # [R, 3]
    target = torch.linspace(-1, 1, color.numel(), dtype=x.dtype).view_as(color)
    return ((color - target) ** 2).sum() + 0.1 * torch.tanh(x).pow(2).sum() + (p[-1] * x[-1, :, 4]).sum()


def all_rows(world: int) -> torch.Tensor:
    """[sum(ROWS[:world]), ROW] float64: every rank's rows for the variable gather, rank order."""
    g = torch.Generator().manual_seed(7)
    return torch.randn(sum(ROWS[:world]), ROW, generator=g, dtype=torch.float64)


def rows_loss(y: torch.Tensor) -> torch.Tensor:
    """y [S, ROW] → scalar, coupling rows (softmax over all of them)."""
    w = torch.softmax(y[:, 0], dim=0)
    return (w[:, None] * y[:, 1:] ** 2).sum() + torch.logsumexp(y.sum(1), 0)


def _forbid_collectives():
    """Make every torch.distributed collective raise; returns a function that undoes it."""
    names = ["all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "all_gather_single",
             "reduce_scatter", "reduce_scatter_tensor", "barrier", "all_to_all_single"]
    saved = {n: getattr(torch.distributed, n) for n in names if hasattr(torch.distributed, n)}

    def boom(*args, **kwargs):
        raise AssertionError("a collective ran during backward")

    for n in saved:
        setattr(torch.distributed, n, boom)
    saved_single = D._all_gather_single
    D._all_gather_single = boom

    def undo():
        for n, f in saved.items():
            setattr(torch.distributed, n, f)
        D._all_gather_single = saved_single
    return undo


def everything(ctx: D.DistContext) -> dict:
    """Every collective once, results returned to the test for comparison against references."""
    out: dict = {"rank": ctx.rank, "world": ctx.world_size, "backend": ctx.backend,
                 "is_main": D.is_main_process(ctx)}
    rank, world = ctx.rank, ctx.world_size

    # -- all_gather_blocks: values and own-slot gradients, nothing communicated in backward.
    full = all_blocks(world)
    own = full[rank * N_LOCAL: (rank + 1) * N_LOCAL].float().requires_grad_(True)
    gathered = D.all_gather_blocks(own, ctx)
    out["blocks"] = gathered.detach().clone()
    stats_before = {k: dict(v) for k, v in ctx.stats.items()}
    loss = blocks_loss(gathered)
    undo = _forbid_collectives()
    try:
        loss.backward()
    finally:
        undo()
    out["blocks_loss"] = loss.item()
    out["blocks_grad"] = own.grad.clone()
    out["stats_unchanged_by_backward"] = {k: dict(v) for k, v in ctx.stats.items()} == stats_before

    # -- all_gather_variable / all_gather_tensor with a different row count per rank (rank 1: zero rows).
    rows = all_rows(world)
    start = sum(ROWS[:rank])
    mine = rows[start: start + ROWS[rank]].float().requires_grad_(True)
    gathered_rows, counts = D.all_gather_variable(mine, ctx, return_counts=True)
    out["rows"] = gathered_rows.detach().clone()
    out["row_counts"] = counts
    rows_loss(gathered_rows).backward()
    out["rows_grad"] = mine.grad.clone()
    plain = D.all_gather_tensor(mine, ctx)
    out["rows_plain"] = plain.clone()
    out["rows_plain_requires_grad"] = plain.requires_grad
    # Row shapes that disagree: every rank must get the same error (nobody left hanging).
    try:
        D.all_gather_tensor(torch.zeros(1, 2 + (rank == world - 1)), ctx)
        out["mismatch_error"] = None
    except NerfxlError as e:
        out["mismatch_error"] = str(e)

    # -- all_reduce_gradients: rank 1 has no grads at all; `never` has no grad anywhere; a float64 param
    # makes a second bucket.
    net = nn.Linear(3, 2)
    extra64 = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    never = nn.Parameter(torch.zeros(2))
    frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
    params = [*net.parameters(), extra64, never, frozen, net.weight]  # net.weight twice: counted once
    if rank != 1:
        for p in (*net.parameters(), extra64):
            p.grad = torch.full_like(p, float(rank + 1))
    calls_before = ctx.stats.get("all_reduce_gradients", {}).get("calls", 0)
    D.all_reduce_gradients(params, ctx)
    out["grad_calls"] = ctx.stats["all_reduce_gradients"]["calls"] - calls_before
    out["grads"] = {n: (None if p.grad is None else p.grad.clone())
                    for n, p in [("weight", net.weight), ("bias", net.bias), ("extra64", extra64), ("never", never),
                                 ("frozen", frozen)]}
    mean_param = nn.Parameter(torch.zeros(3))
    mean_param.grad = torch.full((3,), float(rank))
    D.all_reduce_gradients([mean_param], ctx, op="mean")
    out["mean_grad"] = mean_param.grad.clone()

    # -- broadcast_parameters: rank-dependent start, rank 0's values everywhere afterwards.
    torch.manual_seed(1000 + rank)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model.register_buffer("mask", torch.rand(5) > 0.5)
    model.register_buffer("steps", torch.tensor([rank * 10 + 1], dtype=torch.int64))
    out["state_before"] = {k: v.clone() for k, v in model.state_dict().items()}
    D.broadcast_parameters(model, ctx, src=0)
    out["state_after"] = {k: v.clone() for k, v in model.state_dict().items()}
    out["params_still_leaf"] = all(p.is_leaf and p.requires_grad for p in model.parameters())

    # -- scalars and barrier.
    out["scalar_sum"] = D.all_reduce_scalar(rank, ctx)
    out["scalar_max"] = D.all_reduce_scalar(torch.tensor(float(rank)), ctx, op="max")
    out["scalars_mean"] = D.all_reduce_scalars({"a": rank, "b": 2.0 * rank}, ctx, op="mean")
    D.barrier(ctx)

    out["stats"] = {k: dict(v) for k, v in ctx.stats.items()}
    out["bytes_sent"] = ctx.bytes_sent
    return out


# -- failures ---------------------------------------------------------------------------------------


def raise_on_rank_1(ctx: D.DistContext) -> None:
    if ctx.rank == 1:
        raise ValueError("boom from rank 1")
    D.barrier(ctx)  # rank 0 waits for a peer that will never come


def sigkill_last_rank(ctx: D.DistContext) -> None:
    D.barrier(ctx)  # group fully formed
    if ctx.rank == ctx.world_size - 1:
        os.kill(os.getpid(), signal.SIGKILL)
    D.barrier(ctx)
    D.barrier(ctx)


def rank_1_hangs(ctx: D.DistContext) -> None:
    if ctx.rank == 1:
        time.sleep(300)  # alive but never joins: only the collective timeout can end rank 0's wait
    D.barrier(ctx)


def identity(ctx: D.DistContext, value):
    return {"rank": ctx.rank, "world": ctx.world_size, "value": value}
