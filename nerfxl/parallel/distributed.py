"""Every collective of nerfxl, in one place (nerf-xl.md §5–§6).

NeRF-XL's exchange: every process renders its tiles' segments of the *same* ray batch into blocks
X_k [n_rays, 6]; the blocks are all-gathered **without autograd**, the process's own blocks are put back
differentiable, every process composites and computes the same loss, and backward then reaches exactly
the process's own tile parameters with no communication. Shared modules get a partial gradient on each
process whose true value is the SUM over processes (:func:`all_reduce_gradients`), and shared parameters
start identical (:func:`broadcast_parameters`).

Rules kept by every function here:

- ``ctx.world_size == 1`` is a fast path: no process group is needed and nothing is communicated
  (gathers return their input, reductions leave values as they are).
- Every process must call the same collectives in the same order with consistently shaped inputs,
  including a process that has nothing to contribute (a tile no ray hit): it passes zeros / zero rows.
- Each collective adds the bytes this process hands to it (its payload, padding included) to
  ``ctx.bytes_sent`` and to ``ctx.stats[name]`` so benchmarks can report bytes exchanged per step,
  and the host time spent in it to ``ctx.stats[name]["seconds"]``. With gloo that is the whole
  collective, waiting for the slowest peer included; NCCL calls return once queued on the stream, so
  there it is launch time unless the caller synchronises.
  Backward passes communicate nothing (except :func:`sum_gradient_over_processes`, which counts its bytes).

We write our own autograd wrappers rather than use ``torch.distributed.nn.functional`` (deprecated in
torch 2.13) — and its ``all_gather`` would be wrong here anyway: its backward reduce-scatters (sums) the
gradients of every process, which, when every process computes the same loss, returns K times the true
gradient and communicates during backward.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nerfxl.errors import ConfigError, NerfxlError

# Bounds how long a process waits in a collective for the others (a dead or stuck peer makes the
# survivors fail after at most this long instead of hanging forever). Generous because legitimate waits
# exist: rank 0 writing a checkpoint or evaluating while the others sit at a barrier.
DEFAULT_TIMEOUT_S = 600.0

TensorsOrModule = Union[nn.Module, Iterable[Tensor]]


@dataclass(eq=False)
class DistContext:
    """Where this process stands in the group, plus communication counters.

    Attributes:
        rank: this process's index in [0, world_size).
        world_size: number of processes D.
        local_rank: index of this process on its machine (selects ``cuda:local_rank``).
        device: the device this process computes on.
        backend: "nccl" | "gloo", or None when no process group was initialised (world_size 1).
        group: the process group the collectives run on (None for world_size 1).
        timeout_s: collective timeout the group was created with.
        owns_group: whether :func:`shutdown` should destroy the default group (False when the caller
            had initialised torch.distributed itself).
        bytes_sent: total payload bytes this process handed to collectives.
        stats: per collective name, ``{"calls": int, "bytes": int, "seconds": float}``.
        counts_into: the context a sub-group was cut from (:func:`split_into_replicas`): whatever this
            one records is recorded there too, so the whole job's counters see every byte.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    group: Any = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    owns_group: bool = False
    bytes_sent: int = 0
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    counts_into: "DistContext | None" = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def record(self, name: str, nbytes: int, seconds: float = 0.0) -> None:
        """Count one call of collective ``name`` carrying ``nbytes`` of this process's payload that
        took ``seconds`` of host time."""
        entry = self.stats.setdefault(name, {"calls": 0, "bytes": 0, "seconds": 0.0})
        entry["calls"] += 1
        entry["bytes"] += int(nbytes)
        entry["seconds"] += float(seconds)
        self.bytes_sent += int(nbytes)
        if self.counts_into is not None:
            self.counts_into.record(name, nbytes, seconds)

    @contextmanager
    def counting(self, name: str, nbytes: int) -> Iterator[None]:
        """Record one call of collective ``name`` (see :meth:`record`), timing the block it wraps."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, nbytes, time.perf_counter() - t0)

    def reset_stats(self) -> dict[str, dict[str, float]]:
        """Zero the counters; returns the old per-collective stats (e.g. once per benchmark step)."""
        old = self.stats
        self.stats = {}
        self.bytes_sent = 0
        return old


# -- setup --------------------------------------------------------------------------------------------


def backend_for(device: str | torch.device) -> str:
    """The process-group backend for tensors on ``device``: "nccl" for CUDA, "gloo" for everything else."""
    dev = torch.device(device)
    # NCCL only moves CUDA tensors; where it is not built (e.g. Windows) gloo also handles CUDA tensors.
    if dev.type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_device(device: str | torch.device, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device of the process with ``local_rank``.

    "auto" means CUDA when available, else CPU. With CUDA each process takes ``cuda:local_rank``; an
    explicit index is only honoured for a single process (with several, they would all share it).
    """
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a valid torch device: {e}") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if dev.index is not None and world_size > 1 and dev.index != local_rank:
        raise ConfigError(
            f"device {device!r} names one GPU but {world_size} processes run; give 'cuda' or 'auto' so that "
            f"each process takes cuda:LOCAL_RANK"
        )
    index = local_rank if dev.index is None else dev.index
    n_gpus = torch.cuda.device_count()
    if index >= n_gpus:
        per_machine = _env_int("LOCAL_WORLD_SIZE") or world_size
        raise ConfigError(
            f"process with LOCAL_RANK {local_rank} needs cuda:{index} but this machine has only {n_gpus} "
            f"visible GPU(s) for {per_machine} process(es); start at most {n_gpus} processes per machine "
            f"or use --device cpu"
        )
    return torch.device("cuda", index)


def single_process_context(device: str | torch.device = "auto") -> DistContext:
    """A world_size 1 context: no process group, every collective is the identity."""
    return DistContext(device=resolve_device(device))


def init_distributed(device: str | torch.device = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT) and return this process's context.

    Without RANK/WORLD_SIZE (a plain ``python`` run), or with WORLD_SIZE 1, returns a single-process
    context without initialising a process group. If torch.distributed is already initialised, wraps
    the existing default group (and :func:`shutdown` leaves it alone).

    Args:
        device: "auto" | "cpu" | "cuda" | a torch.device; see :func:`resolve_device`.
        timeout_s: collective timeout in seconds; a peer that died or hangs makes the others raise
            after at most this long. (NCCL enforces it through its watchdog, which aborts the process.)

    Raises:
        ConfigError: malformed environment, more processes than GPUs, non-positive timeout.
        NerfxlError: the group could not be formed (e.g. the rendezvous timed out).
    """
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK")
        local_rank = rank if local_rank is None else local_rank
        dev = resolve_device(device, local_rank, world)
        return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev,
                           backend=str(dist.get_backend()), group=dist.group.WORLD, timeout_s=float(timeout_s),
                           owns_group=False)

    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if rank is None and world is None:
        ctx = single_process_context(device)
        ctx.timeout_s = float(timeout_s)
        return ctx
    if rank is None or world is None:
        missing = "RANK" if rank is None else "WORLD_SIZE"
        raise ConfigError(f"environment variable {missing} is missing (torchrun sets RANK and WORLD_SIZE together)")
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} WORLD_SIZE={world}: need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK")
    local_rank = rank if local_rank is None else local_rank
    dev = resolve_device(device, local_rank, world)
    if world == 1:
        return DistContext(rank=0, world_size=1, local_rank=local_rank, device=dev, timeout_s=float(timeout_s))

    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(f"environment variable {name} is missing; start the processes with torchrun "
                              f"or nerfxl's launch()")
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; cannot run several processes")
    backend = backend_for(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kwargs: dict[str, Any] = {}
    if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        # Binding the group to this process's GPU (torch >= 2.3) lets NCCL create its communicator
        # eagerly and keeps barrier() from guessing a device.
        kwargs["device_id"] = dev
    try:
        if os.environ.get("TORCHELASTIC_RESTART_COUNT") is not None:
            kwargs["store"] = _attempt_store(rank, world, timeout_s)
        else:
            kwargs["init_method"] = "env://"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=timedelta(seconds=float(timeout_s)), **kwargs)
    except Exception as e:  # store connect timeouts and refused connections come as several types
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise NerfxlError(f"rank {rank}/{world}: could not join the process group at {where} ({backend}): {e}"
                          ) from e
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend,
                       group=dist.group.WORLD, timeout_s=float(timeout_s), owns_group=True)


def _attempt_store(rank: int, world: int, timeout_s: float):
    """torchrun's store, seen through a prefix of its restart count: torchrun keeps the store across
    ``--max-restarts`` restarts, and a restarted job reading the previous attempt's keys would try to
    connect to the dead processes' addresses."""
    use_agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not use_agent_store and rank == 0, timeout=timedelta(seconds=float(timeout_s)))
    return dist.PrefixStore(f"nerfxl/attempt-{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def split_into_replicas(ctx: DistContext, replicas: int) -> tuple[DistContext, DistContext]:
    """Hybrid parallelism: the D processes of ``ctx`` as ``replicas`` data-parallel copies of one
    model spread over M = D / replicas processes.

    Process g belongs to model group r = g // M (ranks r·M … r·M + M − 1: contiguous, so that on one
    machine a model's parts sit on neighbouring devices, where the per-step exchange is heaviest) as
    part m = g % M, and to replica group m (ranks m, m + M, …: the processes holding the same part).
    With 1 < replicas < D every process of the job must call this (creating a group is collective
    over the whole job); with replicas = 1 or D no group is created and ``ctx`` itself is returned as
    the model or the replica context.

    Returns:
        (model context: rank m of M, replica context: rank r of ``replicas``). A group of one process
        is a world_size 1 context (no group, every collective the identity).
    """
    if replicas < 1 or ctx.world_size % replicas:
        raise ConfigError(f"--replicas {replicas} does not divide the {ctx.world_size} processes into equal "
                          f"model-parallel groups (choose a divisor of {ctx.world_size})")

    def context(rank: int, members: int, group) -> DistContext:
        return DistContext(rank=rank, world_size=members, local_rank=ctx.local_rank, device=ctx.device,
                           backend=ctx.backend if members > 1 else None, group=group, timeout_s=ctx.timeout_s,
                           counts_into=ctx if members > 1 else None)

    if replicas == 1:
        return ctx, context(0, 1, None)
    if replicas == ctx.world_size:
        return context(0, 1, None), ctx
    size = ctx.world_size // replicas
    groups = {"model": [[r * size + m for m in range(size)] for r in range(replicas)],
              "replica": [[r * size + m for r in range(replicas)] for m in range(size)]}
    out = {}
    for kind, members in groups.items():
        for ranks in members:
            group = dist.new_group([_global_rank(ctx, r) for r in ranks], timeout=timedelta(seconds=ctx.timeout_s))
            if ctx.rank in ranks:
                out[kind] = context(ranks.index(ctx.rank), len(ranks), group)
    return out["model"], out["replica"]


def is_lost_peer_error(error: BaseException) -> bool:
    """Whether a collective failed because another process is gone or stuck (gloo and NCCL raise plain
    RuntimeErrors: connection reset or closed, or the collective timeout)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    if not isinstance(error, RuntimeError):
        return False
    text = str(error)
    return any(mark in text for mark in ("gloo", "Connection closed", "Connection reset", "NCCL", "timed out",
                                          "Timed out"))


def shutdown(ctx: DistContext | None = None) -> None:
    """Leave the process group (if this module created it). Safe to call twice or for world_size 1."""
    if ctx is not None and not ctx.owns_group:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if ctx is not None:
        ctx.group = None
        ctx.owns_group = False


def is_main_process(ctx: DistContext | None = None) -> bool:
    """True on rank 0 (and in a single process). Without ctx, asks torch.distributed / the env."""
    if ctx is not None:
        return ctx.rank == 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return (_env_int("RANK") or 0) == 0


# -- gathers ------------------------------------------------------------------------------------------


def _global_rank(ctx: DistContext, group_rank: int) -> int:
    """torch.distributed names src/dst by *global* rank even for a sub-group; ctx ranks are group ranks."""
    if ctx.group is None or ctx.group == dist.group.WORLD:
        return group_rank
    return dist.get_global_rank(ctx.group, group_rank)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _gather_equal(t: Tensor, ctx: DistContext, name: str) -> Tensor:
    """All-gather equal-shaped tensors along dim 0, no autograd: [n, *rest] → [world*n, *rest] in rank order."""
    t = t.detach().contiguous()
    out = t.new_empty((ctx.world_size * t.shape[0], *t.shape[1:]))
    if t.numel() == 0:
        # Shapes are equal on every process, so all skip together; gloo rejects empty buffers.
        ctx.record(name, 0)
        return out
    with ctx.counting(name, _nbytes(t)):
        _all_gather_single(out, t, group=ctx.group)
    return out


# torch 2.13 deprecates all_gather_into_tensor in favour of all_gather_single (same semantics);
# pyproject allows torch >= 2.1, which only has the former.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

# Fixed codes so processes can compare dtypes in an integer tensor (−1: other, compared by nothing).
_DTYPE_CODES = {dt: i for i, dt in enumerate([
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128,
])}


def _exchange_counts(t: Tensor, ctx: DistContext, name: str) -> list[int]:
    """Rows per process for a variable gather; checks that row shape and dtype agree everywhere.

    Every process learns everything from one small gather, so on a mismatch all of them raise the same
    error together instead of some blocking in the next collective.
    """
    row_numel = math.prod(t.shape[1:])
    header = torch.tensor([t.shape[0], row_numel, t.dim(), _DTYPE_CODES.get(t.dtype, -1)],
                          dtype=torch.int64, device=t.device)
    headers = _gather_equal(header[None], ctx, name).view(ctx.world_size, 4).tolist()
    if any(h[1:] != headers[0][1:] for h in headers):
        desc = ", ".join(f"rank {r}: {h[0]} rows of {h[1]} elements, {h[2]}-d, dtype code {h[3]}"
                         for r, h in enumerate(headers))
        raise NerfxlError(f"{name}: processes disagree on row shape or dtype ({desc})")
    return [h[0] for h in headers]


def _gather_rows(t: Tensor, counts: Sequence[int], ctx: DistContext, name: str) -> Tensor:
    """Gather [counts[rank], *rest] from every process into [sum(counts), *rest] (pad, gather, unpad)."""
    t = t.detach()
    most = max(counts)
    rest = t.shape[1:]
    if most == 0:
        return t.new_empty((0, *rest))
    if all(c == most for c in counts):
        return _gather_equal(t, ctx, name)
    padded = t.new_zeros((most, *rest))
    padded[: t.shape[0]] = t
    gathered = _gather_equal(padded, ctx, name)
    return torch.cat([gathered[r * most: r * most + c] for r, c in enumerate(counts)])


class _GatherBlocks(torch.autograd.Function):
    """Forward: all-gather; backward: the own slot of the incoming gradient, nothing communicated.

    A Function rather than ``gathered.detach()`` plus scattering ``own`` back into its slot: the same
    gradients, but no clone of the gathered buffer, and the "others' blocks are constants" rule lives in
    one backward instead of relying on every caller to detach correctly.
    """

    @staticmethod
    def forward(fctx, own: Tensor, dctx: DistContext) -> Tensor:
        fctx.slot = (dctx.rank * own.shape[0], own.shape[0])
        return _gather_equal(own, dctx, "all_gather_blocks")

    @staticmethod
    def backward(fctx, grad: Tensor):
        start, n = fctx.slot
        return grad[start: start + n], None


def all_gather_blocks(own: Tensor, ctx: DistContext) -> Tensor:
    """NeRF-XL's exchange of per-tile ray blocks.

    Every process must pass the same shape (a fixed number of tiles per process, the same rays).

    Args:
        own: [n_local, R, C] this process's blocks (e.g. C = 6: color, opacity, depth, distortion),
            differentiable w.r.t. its tile parameters.
    Returns:
        [world_size * n_local, R, C], rank-major: process r's blocks at rows [r*n_local, (r+1)*n_local).
        Only this process's slot is differentiable (it carries ``own``'s values bitwise); the other
        processes' blocks are constants, so backward returns the gradient of the own slot and
        communicates nothing. That is exact when every process computes the same loss (nerf-xl.md §5).
    """
    if own.dim() < 1:
        raise NerfxlError("all_gather_blocks: expected [n_local, R, C] blocks, got a 0-d tensor")
    if ctx.world_size == 1:
        ctx.record("all_gather_blocks", 0)
        return own
    return _GatherBlocks.apply(own, ctx)


class _SumGradient(torch.autograd.Function):
    """Forward: identity; backward: SUM of the incoming gradient over processes."""

    @staticmethod
    def forward(fctx, t: Tensor, dctx: DistContext) -> Tensor:
        fctx.dctx = dctx
        return t.view_as(t)

    @staticmethod
    def backward(fctx, grad: Tensor):
        dctx = fctx.dctx
        grad = grad.contiguous().clone()
        with dctx.counting("sum_gradient_over_processes", _nbytes(grad)):
            if grad.numel():
                dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=dctx.group)
        return grad, None


def sum_gradient_over_processes(t: Tensor, ctx: DistContext) -> Tensor:
    """``t`` unchanged, but its gradient in backward is the SUM over processes of each one's.

    For a replicated tensor that each process feeds into its own *part* of a computation (channel
    parallel: the same sample positions into each process's channel slice): every process then gets
    the whole gradient of the tensor, and so does everything upstream of it (pose corrections). The only
    collective of nerfxl inside a backward pass; every process must run the same backward. A tensor
    that needs no gradient is returned as it is (nothing to exchange).
    """
    if ctx.world_size == 1 or not t.requires_grad:
        return t
    return _SumGradient.apply(t, ctx)


def all_gather_tensor(t: Tensor, ctx: DistContext, return_counts: bool = False):
    """All-gather tensors whose first dimension differs per process, without autograd.

    For per-sample data of the sample-based mode (each process has its own number of samples). Costs
    one small gather of row counts, then one gather padded to the largest count.

    Args:
        t: [n_rank, *rest]; ``rest`` and dtype equal on all processes, n_rank may be 0.
        return_counts: also return the rows of each process.
    Returns:
        [sum_r n_r, *rest] concatenated in rank order (detached); with return_counts, also list[int]
        [world_size] of n_r.
    """
    if t.dim() < 1:
        raise NerfxlError("all_gather_tensor: expected a tensor with a row dimension, got a 0-d tensor")
    if ctx.world_size == 1:
        ctx.record("all_gather_tensor", 0)
        out = t.detach()
        return (out, [t.shape[0]]) if return_counts else out
    counts = _exchange_counts(t, ctx, "all_gather_tensor")
    out = _gather_rows(t, counts, ctx, "all_gather_tensor")
    return (out, counts) if return_counts else out


class _GatherVariable(torch.autograd.Function):
    """Variable-row all-gather whose backward returns the local rows' gradient (no communication)."""

    @staticmethod
    def forward(fctx, t: Tensor, counts: tuple[int, ...], dctx: DistContext) -> Tensor:
        fctx.slot = (sum(counts[: dctx.rank]), counts[dctx.rank])
        return _gather_rows(t, counts, dctx, "all_gather_variable")

    @staticmethod
    def backward(fctx, grad: Tensor):
        start, n = fctx.slot
        return grad[start: start + n], None, None


def all_gather_variable(t: Tensor, ctx: DistContext, return_counts: bool = False):
    """Like :func:`all_gather_tensor`, differentiable w.r.t. the local rows.

    Same contract as :func:`all_gather_blocks`: other processes' rows are constants, backward returns
    the gradient of this process's rows and communicates nothing — exact when every process computes
    the same loss from the gathered tensor (sample-based mode, LandMark's plane parallel).

    Args:
        t: [n_rank, *rest] (n_rank may be 0).
    Returns:
        [sum_r n_r, *rest] in rank order; with return_counts, also list[int] [world_size].
    """
    if t.dim() < 1:
        raise NerfxlError("all_gather_variable: expected a tensor with a row dimension, got a 0-d tensor")
    if ctx.world_size == 1:
        ctx.record("all_gather_variable", 0)
        return (t, [t.shape[0]]) if return_counts else t
    counts = _exchange_counts(t, ctx, "all_gather_variable")
    out = _GatherVariable.apply(t, tuple(counts), ctx)
    return (out, counts) if return_counts else out


def gather_to_main(t: Tensor, ctx: DistContext, dst: int = 0) -> Tensor | None:
    """Gather equal-shaped tensors onto rank ``dst`` only, without autograd (inference).

    NeRF-XL rendering needs the blocks on one process only (nerf-xl.md §6), which halves nothing in
    bytes sent but spares D − 1 processes the receive buffers and the compositing.

    Args:
        t: [n, *rest], the same shape on every process.
    Returns:
        On ``dst``: [world_size * n, *rest] in rank order. Elsewhere: None.
    """
    if ctx.world_size == 1:
        ctx.record("gather_to_main", 0)
        return t.detach()
    t = t.detach().contiguous()
    if t.numel() == 0:
        ctx.record("gather_to_main", 0)
        return t.new_empty((ctx.world_size * t.shape[0], *t.shape[1:])) if ctx.rank == dst else None
    with ctx.counting("gather_to_main", _nbytes(t) if ctx.rank != dst else 0):
        if ctx.rank == dst:
            parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
            dist.gather(t, gather_list=parts, dst=_global_rank(ctx, dst), group=ctx.group)
            return torch.cat(parts)
        dist.gather(t, dst=_global_rank(ctx, dst), group=ctx.group)
    return None


def broadcast_async(t: Tensor, ctx: DistContext, src: int = 0, name: str = "broadcast_async"):
    """Start broadcasting ``t`` (contiguous, the same shape everywhere) from ``src`` into every process's
    ``t``; returns a handle whose ``wait()`` completes it (None with one process: nothing to do).

    For pipelines that keep working while the bytes travel (dynamic fetching: rank 0 copies the next
    block while the previous one is broadcast)."""
    if ctx.world_size == 1:
        ctx.record(name, 0)
        return None
    ctx.record(name, _nbytes(t) if ctx.rank == src else 0)
    return dist.broadcast(t, src=_global_rank(ctx, src), group=ctx.group, async_op=True)


def broadcast_tensor(t: Tensor, ctx: DistContext, src: int = 0, name: str = "broadcast_tensor") -> None:
    """Overwrite ``t`` (contiguous, the same shape and dtype everywhere) with ``src``'s values, in place."""
    if ctx.world_size == 1:
        ctx.record(name, 0)
        return
    with ctx.counting(name, _nbytes(t) if ctx.rank == src else 0):
        dist.broadcast(t, src=_global_rank(ctx, src), group=ctx.group)


def duplicate_context(ctx: DistContext) -> DistContext:
    """The same processes on a second process group, for collectives issued from another thread
    (collectives of one group must be issued in one order; two threads sharing it could interleave them
    differently on different processes). Every process of the job must call this, in the same order."""
    if ctx.world_size == 1:
        return DistContext(rank=0, world_size=1, local_rank=ctx.local_rank, device=ctx.device, timeout_s=ctx.timeout_s)
    ranks = [_global_rank(ctx, r) for r in range(ctx.world_size)]
    group = dist.new_group(ranks, timeout=timedelta(seconds=ctx.timeout_s))
    # Its own counters (not counted into ctx's): another thread records into them.
    return DistContext(rank=ctx.rank, world_size=ctx.world_size, local_rank=ctx.local_rank, device=ctx.device,
                       backend=ctx.backend, group=group, timeout_s=ctx.timeout_s)


def all_gather_bytes(data: bytes, ctx: DistContext) -> list[bytes]:
    """Every process's ``data`` (e.g. UTF-8 JSON), in rank order. Small control messages, no pickle."""
    if ctx.world_size == 1:
        return [bytes(data)]
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    # gloo and nccl both move uint8; NCCL needs it on the process's GPU.
    gathered, counts = all_gather_tensor(t.to(ctx.device), ctx, return_counts=True)
    out, start = [], 0
    host = gathered.cpu()
    for c in counts:
        out.append(host[start: start + c].numpy().tobytes())
        start += c
    return out


def broadcast_bytes(data: bytes | None, ctx: DistContext, src: int = 0) -> bytes:
    """``src``'s ``data`` on every process (others pass None): run folders, plans as JSON, ..."""
    if ctx.world_size == 1:
        if data is None:
            raise NerfxlError("broadcast_bytes: the source process passed no data")
        return bytes(data)
    length = torch.tensor([len(data) if ctx.rank == src and data is not None else 0], dtype=torch.int64,
                          device=ctx.device)
    with ctx.counting("broadcast_bytes", _nbytes(length)):
        dist.broadcast(length, src=_global_rank(ctx, src), group=ctx.group)
    n = int(length.item())
    if ctx.rank == src:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(ctx.device) if n else None
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=ctx.device)
    if n == 0:
        return b""
    with ctx.counting("broadcast_bytes", n):
        dist.broadcast(buf, src=_global_rank(ctx, src), group=ctx.group)
    return buf.cpu().numpy().tobytes()


# -- reductions and broadcast -------------------------------------------------------------------------


def _unique_tensors(tensors: TensorsOrModule, with_buffers: bool) -> list[Tensor]:
    """Tensors in a stable order, each once (tied weights appear twice in a module's parameter list)."""
    if isinstance(tensors, nn.Module):
        items = list(tensors.parameters())
        if with_buffers:
            items += list(tensors.buffers())
    elif isinstance(tensors, Tensor):
        items = [tensors]
    else:
        items = list(tensors)
    seen: set[int] = set()
    out = []
    for t in items:
        if not isinstance(t, Tensor):
            raise NerfxlError(f"expected tensors or an nn.Module, got {type(t).__name__}")
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _buckets(tensors: list[Tensor]) -> list[list[Tensor]]:
    """Group by (dtype, device) in order of first appearance — the same grouping on every process
    because it depends on the parameters only, never on which gradients happen to exist."""
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return list(groups.values())


_REDUCE_OPS = ("sum", "mean")


def all_reduce_gradients(params: TensorsOrModule, ctx: DistContext, op: str = "sum") -> None:
    """Sum (or average) ``.grad`` of shared parameters over all processes, in place.

    NeRF-XL needs the SUM: each process holds only its tiles' share of a shared module's gradient
    (DDP would average). A missing grad counts as zeros, so a process whose tiles got no samples still
    joins with the same buffer layout. A parameter whose grad is None on *every* process keeps None (as
    in a single process, where optimizers skip it rather than step it with zeros). Parameters with
    ``requires_grad=False`` are skipped. One flat buffer per (dtype, device) — one collective each,
    not one per tensor.

    Args:
        params: the shared parameters (or a module); the same list in the same order on every process.
        op: "sum" (default) | "mean" (sum / world_size).
    """
    if op not in _REDUCE_OPS:
        raise ConfigError(f"all_reduce_gradients: op must be one of {_REDUCE_OPS}, got {op!r}")
    tensors = [p for p in _unique_tensors(params, with_buffers=False) if p.requires_grad]
    for p in tensors:
        if p.grad is not None and p.grad.layout != torch.strided:
            raise ConfigError("all_reduce_gradients: sparse gradients are not supported "
                              f"(parameter of shape {tuple(p.shape)})")
    if ctx.world_size == 1:
        ctx.record("all_reduce_gradients", 0)
        return
    for bucket in _buckets(tensors):
        # Layout: every gradient flattened (zeros where None), then one "has a grad" flag per parameter,
        # so the reduced flags tell every process whether anybody had a gradient.
        pieces = [p.grad.detach().to(p.dtype).reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
                  for p in bucket]
        flags = torch.tensor([p.grad is not None for p in bucket], dtype=bucket[0].dtype, device=bucket[0].device)
        flat = torch.cat(pieces + [flags])
        with ctx.counting("all_reduce_gradients", _nbytes(flat)):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=ctx.group)
        if op == "mean":
            flat[: flat.numel() - len(bucket)] /= ctx.world_size
        offset = 0
        n_total = flat.numel() - len(bucket)
        has_any = (flat[n_total:] > 0).tolist()
        for p, anyone in zip(bucket, has_any):
            chunk = flat[offset: offset + p.numel()].view(p.shape)
            offset += p.numel()
            if not anyone:
                continue
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)  # keeps the grad's own storage/strides (optimizers may hold views)


@torch.no_grad()
def broadcast_parameters(params_or_buffers: TensorsOrModule, ctx: DistContext, src: int = 0) -> None:
    """Overwrite tensors on every process with ``src``'s values (shared parameters must start identical).

    Args:
        params_or_buffers: tensors, or a module (its parameters and buffers); same order everywhere.
        src: the rank whose values win.
    """
    if not 0 <= src < ctx.world_size:
        raise ConfigError(f"broadcast_parameters: src={src} is not a rank of a world of {ctx.world_size}")
    tensors = _unique_tensors(params_or_buffers, with_buffers=True)
    if ctx.world_size == 1:
        ctx.record("broadcast_parameters", 0)
        return
    for bucket in _buckets(tensors):
        # bool has no reduction semantics to worry about but not every backend moves it: send bytes.
        as_sent = [t.detach().view(torch.uint8) if t.dtype == torch.bool else t.detach() for t in bucket]
        flat = torch.cat([t.reshape(-1) for t in as_sent])
        with ctx.counting("broadcast_parameters", _nbytes(flat)):
            dist.broadcast(flat, src=_global_rank(ctx, src), group=ctx.group)
        if ctx.rank == src:
            continue
        offset = 0
        for t in as_sent:
            t.copy_(flat[offset: offset + t.numel()].view(t.shape))
            offset += t.numel()


def all_reduce_tensor(t: Tensor, ctx: DistContext, name: str = "all_reduce_tensor") -> Tensor:
    """SUM of ``t`` over processes, no autograd (a new tensor; ``t`` itself is left alone).

    For buffers every process fills in the same layout, each with its own share (e.g. the border rows of
    plane-parallel sub-planes, which several processes hold copies of).
    """
    out = t.detach().clone()
    if ctx.world_size == 1:
        ctx.record(name, 0)
        return out
    with ctx.counting(name, _nbytes(out)):
        if out.numel():
            dist.all_reduce(out, op=dist.ReduceOp.SUM, group=ctx.group)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait until every process got here (bounded by the group's timeout)."""
    if ctx.world_size == 1:
        return
    with ctx.counting("barrier", 0):
        if ctx.backend == "nccl":
            dist.barrier(group=ctx.group, device_ids=[ctx.device.index])
        else:
            dist.barrier(group=ctx.group)


_SCALAR_OPS = ("sum", "mean", "max", "min")


def all_reduce_scalars(values: Mapping[str, float], ctx: DistContext, op: str = "sum") -> dict[str, float]:
    """Reduce several scalars (metrics for logging) in one collective; same keys on every process."""
    if op not in _SCALAR_OPS:
        raise ConfigError(f"all_reduce_scalar: op must be one of {_SCALAR_OPS}, got {op!r}")
    keys = list(values)
    if ctx.world_size == 1:
        ctx.record("all_reduce_scalar", 0)
        return {k: float(values[k]) for k in keys}
    # float64 so integer counters (samples, rays) stay exact well past 2^24.
    buf = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    # gloo has no AVG; sum and divide is the same thing.
    reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM,
                 "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    with ctx.counting("all_reduce_scalar", _nbytes(buf)):
        dist.all_reduce(buf, op=reduce_op, group=ctx.group)
    if op == "mean":
        buf /= ctx.world_size
    return dict(zip(keys, buf.tolist()))


def all_reduce_scalar(x: float | int | Tensor, ctx: DistContext, op: str = "sum") -> float:
    """Reduce one number over processes ("sum" | "mean" | "max" | "min"); returns a Python float."""
    value = float(x.item()) if isinstance(x, Tensor) else float(x)
    return all_reduce_scalars({"x": value}, ctx, op)["x"]
