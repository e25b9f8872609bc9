"""Start D processes on this machine, or run inside torchrun — one entry point for both.

``launch(fn, nprocs, args)`` calls ``fn(ctx, *args)`` on every rank, ``ctx`` being the rank's
:class:`~nerfxl.parallel.distributed.DistContext`:

- under torchrun (or any launcher that set RANK/WORLD_SIZE), this process *is* one rank: it joins the
  group from the environment and runs ``fn`` here;
- with ``nprocs == 1`` it runs ``fn`` here with a single-process context (no group, debuggable);
- otherwise it spawns ``nprocs`` processes (``torch.multiprocessing``, start method "spawn": CUDA cannot
  be forked) with the environment torchrun would give them, so ``init_distributed`` is the same code
  path in both cases.

Failure handling is the reason this is more than ``torch.multiprocessing.spawn``: when a rank raises or
dies (even by SIGKILL, which leaves no traceback) the parent notices at once through the process
sentinel, terminates the others — which may be blocked in a collective waiting for the dead one — and
raises :class:`WorkerError` naming the rank, within a few seconds, never hanging.

Ctrl-C: the first one is passed on to every rank as SIGINT and the parent keeps waiting up to
``interrupt_grace_s`` for them to finish on their own (the trainer turns it into a coordinated stop
with a checkpoint), then raises KeyboardInterrupt; a second Ctrl-C terminates the ranks at once.

Networking stays on loopback: the parent hosts the rendezvous store on a socket it bound to
127.0.0.1 (port chosen by the kernel, so no race for a "free" port), the children connect to it as
torchrun's workers connect to the agent's store, and gloo is pinned to the loopback interface.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nerfxl.errors import ConfigError, NerfxlError, WorkerError
from nerfxl.parallel.distributed import DEFAULT_TIMEOUT_S, init_distributed, resolve_device, shutdown

# After the first failure, keep listening this long so that failures it caused (peers whose collective
# broke) are reported as secondary rather than racing to be first.
_SETTLE_S = 0.5
# SIGTERM first (lets Python-level cleanup run), SIGKILL whoever is still there after this.
_TERMINATE_GRACE_S = 5.0
# After Ctrl-C, how long the ranks get to stop by themselves (finish the step, save a checkpoint).
INTERRUPT_GRACE_S = 120.0


# What a launcher (torchrun or ours) sets for each rank. A process started from inside one must not
# inherit them, or the nerfxl it starts would join that job instead of starting its own.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                      "TORCHELASTIC_USE_AGENT_STORE")


def environment_outside_launcher(python_path: Path | None = None) -> dict[str, str]:
    """This process's environment less the launcher's variables (for starting an independent nerfxl),
    with ``python_path`` put first on PYTHONPATH when given."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(python_path), env.get("PYTHONPATH", "")) if p)
    return env


def running_under_torchrun() -> bool:
    """True in a process started by torchrun (torch elastic always sets TORCHELASTIC_RUN_ID)."""
    return os.environ.get("TORCHELASTIC_RUN_ID") is not None


def launched_externally() -> bool:
    # torchrun, or another launcher (srun wrappers, mpirun scripts) that exports the same variables.
    return running_under_torchrun() or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def launch(fn: Callable[..., Any], nprocs: int | None, args: tuple = (), device: str | torch.device = "auto",
           timeout_s: float = DEFAULT_TIMEOUT_S, max_runtime_s: float | None = None) -> dict[int, Any]:
    """Run ``fn(ctx, *args)`` on ``nprocs`` ranks.

    Args:
        fn: a module-level function (spawn pickles it by name); its return value must be picklable.
        nprocs: number of processes; under torchrun None means "whatever torchrun started", and a number
            must match WORLD_SIZE.
        args: extra positional arguments for ``fn`` (picklable).
        device: "auto" | "cpu" | "cuda"; with CUDA rank r takes cuda:r.
        timeout_s: collective timeout of the process group (see ``init_distributed``).
        max_runtime_s: optional wall-clock limit for the whole run; None: no limit.
    Returns:
        ``{rank: fn's return value}`` for every rank this call ran: all of them when it spawned, just
        this process's rank under torchrun.
    Raises:
        WorkerError: a spawned rank raised or died; the others have been terminated. (In-process runs —
            nprocs 1 or under torchrun — let fn's exception through unchanged.)
        ConfigError: bad nprocs, or more processes than GPUs.
    """
    if launched_externally():
        world = int(os.environ["WORLD_SIZE"])
        if nprocs is not None and nprocs != world:
            raise ConfigError(f"launched with WORLD_SIZE={world} (torchrun --nproc-per-node × nodes) "
                              f"but nprocs={nprocs}")
        return _run_here(fn, args, device, timeout_s)
    if nprocs is None or not isinstance(nprocs, int) or nprocs < 1:
        raise ConfigError(f"nprocs must be a positive integer, got {nprocs!r}")
    # Fail in the parent, before paying for D interpreter start-ups, if there are not enough GPUs.
    resolve_device(device, local_rank=nprocs - 1, world_size=nprocs)
    if nprocs == 1:
        return _run_here(fn, args, device, timeout_s)
    return _spawn(fn, nprocs, args, device, timeout_s, max_runtime_s)


def _run_here(fn, args, device, timeout_s) -> dict[int, Any]:
    ctx = init_distributed(device, timeout_s)
    try:
        return {ctx.rank: fn(ctx, *args)}
    finally:
        shutdown(ctx)


# -- children -----------------------------------------------------------------------------------------


def _watch_parent(parent_pid: int) -> None:
    """End this rank if the launching process disappears (e.g. kill -9 of the parent): otherwise it
    would sit in a collective until the timeout, holding a GPU."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)


def _child_env(rank: int, world: int, port: int) -> dict[str, str]:
    env = {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "RANK": str(rank), "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
        "GROUP_RANK": "0", "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(world),
        # The store already runs in the parent: every rank connects as a client, as under torchrun.
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }
    return env


def _loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


def _child_main(rank: int, world: int, port: int, fn, args, device, timeout_s: float, conn,
                parent_pid: int, threads: int | None) -> None:
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    os.environ.update(_child_env(rank, world, port))
    lo = _loopback_interface()
    if lo is not None:
        # Without this gloo binds to the interface the hostname resolves to (possibly a public one).
        os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
    if threads is not None:
        # D processes × all cores each would oversubscribe the CPU (torchrun sets OMP_NUM_THREADS=1).
        torch.set_num_threads(threads)
    # tqdm's default lock is a multiprocessing semaphore registered with the parent's resource tracker;
    # the os._exit below would leak it (a warning at the parent's exit). A progress bar is per process.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    ctx = None
    try:
        ctx = init_distributed(device, timeout_s)
        try:
            result = fn(ctx, *args)
        except SystemExit as e:
            if e.code not in (None, 0):
                raise
            result = None
        payload = pickle.dumps(result)
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent, even KeyboardInterrupt
        # The traceback travels to the parent (WorkerError.traceback), which decides what to show:
        # printing it here too would bury a one-line user error under D tracebacks.
        tb = traceback.format_exc()
        try:
            conn.send(("error", type(e).__name__, str(e), tb, isinstance(e, NerfxlError)))
            conn.close()
        except Exception:  # noqa: BLE001 - the parent may be gone; exiting is all that is left
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        # os._exit: the peers may be stuck in a collective with us, and interpreter shutdown (process
        # group destructors, non-daemon threads) could block; the parent has what it needs.
        os._exit(1)
    conn.send(("ok", payload))
    conn.close()
    try:
        shutdown(ctx)
    finally:
        # The result is delivered. Skip interpreter teardown: destructors of communication threads can
        # abort a process at exit ("terminate called without an active exception") after its work
        # succeeded, which the parent would otherwise report as a failed rank.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# -- parent -------------------------------------------------------------------------------------------


@dataclass
class _Rank:
    process: Any
    reader: Any
    message: tuple | None = None
    reader_open: bool = True
    exited: bool = False


@dataclass
class _Failure:
    rank: int
    description: str
    exc_type: str | None
    traceback: str
    text: str
    user_error: bool


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "was still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def _spawn(fn, nprocs, args, device, timeout_s, max_runtime_s) -> dict[int, Any]:
    mpctx = mp.get_context("spawn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # The store takes ownership of the fd (and closes it), hence detach().
    store = dist.TCPStore("127.0.0.1", port, None, True, timedelta(seconds=float(timeout_s)),
                          wait_for_workers=False, master_listen_fd=sock.detach())
    threads = None
    if torch.device(resolve_device(device)).type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // nprocs)
    ranks: list[_Rank] = []
    try:
        for rank in range(nprocs):
            reader, writer = mpctx.Pipe(duplex=False)
            p = mpctx.Process(target=_child_main, name=f"nerfxl-rank{rank}",
                              args=(rank, nprocs, port, fn, args, device, timeout_s, writer, os.getpid(), threads))
            try:
                p.start()
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                raise ConfigError(f"launch: fn and args must be picklable (a module-level function, not a lambda "
                                  f"or local function): {e}") from e
            writer.close()  # so that the reader sees EOF when the child exits
            ranks.append(_Rank(p, reader))
        return _monitor(ranks, max_runtime_s)
    finally:
        _terminate([r.process for r in ranks])
        for r in ranks:
            r.reader.close()
        del store


def _receive(r: _Rank) -> None:
    """Read the rank's single message if one is there (never blocks for long: the child writes it whole)."""
    if not r.reader_open:
        return
    try:
        if r.reader.poll():
            r.message = r.reader.recv()
        else:
            return
    except (EOFError, OSError):
        pass
    r.reader_open = False


def _monitor(ranks: list[_Rank], max_runtime_s: float | None) -> dict[int, Any]:
    n = len(ranks)
    deadline = None if max_runtime_s is None else time.monotonic() + max_runtime_s
    failures: list[_Failure] = []
    failed: set[int] = set()
    settle_until = None
    interrupted = False

    def fail(rank: int, description: str, exc_type: str | None = None, tb: str = "", text: str = "",
             user_error: bool = False) -> None:
        nonlocal settle_until
        if rank in failed:
            return
        failed.add(rank)
        failures.append(_Failure(rank, description, exc_type, tb, text, user_error))
        if settle_until is None:
            settle_until = time.monotonic() + _SETTLE_S

    while not all(r.exited for r in ranks):
        now = time.monotonic()
        if settle_until is not None and now >= settle_until:
            break
        if deadline is not None and now >= deadline:
            if interrupted:
                raise KeyboardInterrupt
            still = [i for i, r in enumerate(ranks) if not r.exited]
            raise WorkerError(f"ranks {still} of {n} still running after max_runtime_s={max_runtime_s}; terminated",
                              rank=still[0], exitcode=None, still_running=still)
        limits = [t for t in (settle_until, deadline) if t is not None]
        timeout = max(0.0, min(limits) - now) if limits else None
        handles = {}
        for i, r in enumerate(ranks):
            if not r.exited:
                handles[r.process.sentinel] = ("exit", i)
            if r.reader_open:
                handles[r.reader] = ("msg", i)
        try:
            ready = [handles[h] for h in wait(list(handles), timeout)]
        except KeyboardInterrupt:
            if interrupted:
                raise  # second Ctrl-C: the caller's finally terminates every rank
            interrupted = True
            for r in ranks:
                if not r.exited and r.process.pid is not None:
                    try:
                        os.kill(r.process.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
            interrupt_deadline = time.monotonic() + INTERRUPT_GRACE_S
            deadline = interrupt_deadline if deadline is None else min(deadline, interrupt_deadline)
            continue
        # Exits before messages: when a rank is SIGKILLed, its peers' "connection closed" errors can arrive
        # in the same wake-up, and the death is the cause.
        for kind, i in sorted(ready, key=lambda e: e[0] != "exit"):
            r = ranks[i]
            _receive(r)
            if r.message is not None and r.message[0] == "error":
                _, exc_type, text, tb, user_error = r.message
                fail(i, f"raised {exc_type}: {text}", exc_type, tb, text, user_error)
            if kind == "exit":
                # The sentinel fires as the child's fds close, a moment before it can be reaped.
                r.process.join(5.0)
                r.exited = True
                code = r.process.exitcode
                delivered = r.message is not None and r.message[0] == "ok"
                if code != 0 and not delivered and (r.message is None or r.message[0] != "error"):
                    fail(i, _describe_exit(code))
                elif code == 0 and (r.message is None or r.message[0] != "ok"):
                    fail(i, "exited with code 0 without returning a result")

    if interrupted:
        raise KeyboardInterrupt  # whatever the ranks did with it, the user asked to stop
    if failures:
        first = failures[0]
        others = [f"rank {f.rank}: {f.description.splitlines()[0] if f.description else ''}" for f in failures[1:]]
        message = f"rank {first.rank} of {n} {first.description.strip()}"
        if others:
            # Usually consequences (a peer's collective broke); the details stay in .others.
            message += f" (then rank(s) {[f.rank for f in failures[1:]]} failed too)"
        # A rank that neither failed nor finished is often the culprit of a timeout (stuck elsewhere).
        running = [i for i, r in enumerate(ranks) if not r.exited and i not in failed]
        if running:
            message += f"; terminated rank(s) {running}, still running at that point"
        raise WorkerError(message, rank=first.rank, exitcode=ranks[first.rank].process.exitcode,
                          exc_type=first.exc_type, traceback=first.traceback, others=others, still_running=running,
                          user_error=first.user_error, error_message=first.text)
    results = {}
    for i, r in enumerate(ranks):
        try:
            results[i] = pickle.loads(r.message[1])
        except Exception as e:  # noqa: BLE001 - e.g. a class the parent cannot import
            raise NerfxlError(f"rank {i}: could not unpickle its return value: {e}") from e
    return results


def _terminate(processes: list) -> None:
    """SIGTERM every live process, SIGKILL those still alive after the grace period, reap all."""
    live = [p for p in processes if p.is_alive()]
    for p in live:
        p.terminate()
    end = time.monotonic() + _TERMINATE_GRACE_S
    for p in live:
        p.join(max(0.0, end - time.monotonic()))
    for p in live:
        if p.is_alive():
            p.kill()
            p.join()
