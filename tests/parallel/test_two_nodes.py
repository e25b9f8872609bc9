"""A two-"node" job: two torchrun launchers on loopback train one run together, two more resume it.

Each launcher is one "node" (``--nnodes 2 --nproc-per-node 1``); they meet through a c10d rendezvous
on 127.0.0.1 (launcher 0 hosts the store, ``--local-addr 127.0.0.1`` keeps the workers' master
address and gloo (``GLOO_SOCKET_IFNAME=lo``) on loopback too). Both run the same
``nerfxl.cli train --steps N --run-dir RUN``; once its first checkpoint exists each worker gets SIGINT
(Ctrl-C on both nodes), they agree on a step and save it, and a second pair of launchers continues
with ``--resume RUN``. The resumed run must end on the uninterrupted trajectory: compared with a
one-process run of N steps by ``benchmarks/compare_runs.py``'s ``compare`` (every logged loss within
1e-5 relative, the rendered test view near identical), as a user would check it.

Why interrupt rather than train to N/2 and resume with ``--steps N``: the learning-rate schedule
spans ``--steps``, so a run extended to more steps is, by design, not the run planned for N (its
first N/2 steps decayed the rate faster).

Every subprocess has a timeout; a launcher still running when the test gives up is stopped with its
workers (torchrun starts each worker in a session of its own, so they are found through /proc).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_parallel_cli import cli_env

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# Generous: other jobs may share the two cores. A healthy launch pair finishes in well under a minute.
TIMEOUT_S = 300
# After one launcher failed, how long the other gets to notice and exit by itself.
PEER_GRACE_S = 30
# Enough steps that the Ctrl-C lands well before the end (a tiny step takes a few tens of ms).
STEPS = 16
TRAIN = ("tiny", "--downscale", "2", "--batch-rays", "256", "--partitions", "2", "--log-every", "1",
         "--checkpoint-every", "2", "--field.density-shift", "1.0", "--no-progress")

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file() or not hasattr(socket, "if_nameindex")
                                or "lo" not in [n for _, n in socket.if_nameindex()],
                                reason="needs /proc and a loopback interface named lo")


def env() -> dict[str, str]:
    out = cli_env()
    out["GLOO_SOCKET_IFNAME"] = "lo"  # else gloo binds to the address the host name resolves to
    out["OMP_NUM_THREADS"] = "1"  # two ranks on two cores
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, frontier = [], [pid]
    while frontier:
        below = [p for p, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def stop(launcher: subprocess.Popen) -> None:
    """SIGTERM the launcher (torchrun then stops its worker), SIGKILL whatever of it is left after 10 s."""
    pids = descendants(launcher.pid)
    launcher.terminate()
    try:
        launcher.wait(timeout=10)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def workers_of(launcher: subprocess.Popen) -> list[int]:
    """The launcher's rank process(es): its descendants running nerfxl.cli."""
    found = []
    for pid in descendants(launcher.pid):
        try:
            if b"nerfxl.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def two_launchers(args: list[str], work: Path, tag: str, interrupt_when=None) -> tuple[list[int], list[str]]:
    """Run ``nerfxl.cli train ARGS`` under two torchrun launchers (one process each) meeting on loopback;
    their exit codes and outputs (stdout and stderr of the launcher and its worker). With
    ``interrupt_when`` (a callable), both workers get SIGINT, a Ctrl-C on each node, once it is true."""
    port = free_port()
    procs, logs = [], []
    try:
        for node in (0, 1):
            log = open(work / f"{tag}-node{node}.log", "w")
            logs.append(log)
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                       "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{LOOPBACK}:{port}", "--rdzv-id", f"{tag}-{port}",
                       "--rdzv-conf", f"is_host={1 if node == 0 else 0},join_timeout=120",
                       "--local-addr", LOOPBACK, "--max-restarts", "0",
                       "-m", "nerfxl.cli", "train", *args]
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env()))
        deadline = time.monotonic() + TIMEOUT_S
        while any(p.poll() is None for p in procs):
            if interrupt_when is not None and interrupt_when():
                for pid in [pid for p in procs for pid in workers_of(p)]:
                    os.kill(pid, signal.SIGINT)
                interrupt_when = None
            if any(p.returncode not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + PEER_GRACE_S)
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
        for log in logs:
            log.close()
    return [p.returncode for p in procs], [Path(log.name).read_text() for log in logs]


def explain(codes: list[int], outputs: list[str]) -> str:
    return "\n".join(f"--- node {i} (exit {c}):\n{o[-3000:]}" for i, (c, o) in enumerate(zip(codes, outputs)))


def compare_runs():
    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "benchmarks" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare


def step_of(ckpt: Path) -> int:
    return json.loads((ckpt / "state.json").read_text())["step"]


@pytest.mark.slow
def test_two_launchers_on_loopback_train_and_resume_along_the_one_process_trajectory(tiny_city, tmp_path):
    from nerfxl.checkpoint import list_checkpoints, verify_checkpoint

    run = tmp_path / "two-nodes"
    # Ctrl-C on both nodes once the first checkpoint is there: they agree on a step, save it and stop.
    codes, first = two_launchers([*TRAIN, "--data", str(tiny_city), "--steps", str(STEPS), "--run-dir", str(run)],
                                 tmp_path, "first", interrupt_when=lambda: bool(list_checkpoints(run)))
    interrupted = [int(m) for out in first for m in re.findall(r"interrupted at step (\d+); checkpoint saved", out)]
    assert len(interrupted) == 1 and interrupted[0] < STEPS, explain(codes, first)  # said once, by rank 0
    assert codes != [0, 0], explain(codes, first)  # torchrun reports the interrupted workers as failed
    stopped_at = interrupted[0]
    assert step_of(list_checkpoints(run)[-1]) == stopped_at

    codes, resumed = two_launchers(["--resume", str(run), "--no-progress"], tmp_path, "resumed")
    assert codes == [0, 0], explain(codes, resumed)
    assert any(f"resuming {run} from step {stopped_at}" in out for out in resumed), explain(codes, resumed)
    ckpts = list_checkpoints(run)
    assert step_of(ckpts[-1]) == STEPS
    for ckpt in ckpts:
        verify_checkpoint(ckpt)
        state = json.loads((ckpt / "state.json").read_text())
        assert state["trained_on_processes"] == 2 and sorted(state["tiles"]) == ["0", "1"], state

    reference = tmp_path / "one-process"
    result = subprocess.run([sys.executable, "-m", "nerfxl.cli", "train", *TRAIN, "--data", str(tiny_city),
                             "--steps", str(STEPS), "--devices", "1", "--run-dir", str(reference)],
                            capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]

    same = compare_runs()(reference, run)
    # The trace spans both launches: every step but the one the stop came after (logged by neither).
    assert same["steps_compared"] == STEPS - 1, same
    assert same["loss_max_relative_difference"] < 1e-5, same
    assert same["renders_identical"] or same["render_psnr_between_runs"] > 60, same
    assert same["parameter_median_relative_difference"] < 1e-5, same
