"""Stopping a training run: Ctrl-C saves a checkpoint; kill -9 never leaves a corrupt latest one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from child_process import default_sigint

from nerfxl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint


def start_training(data: Path, out: Path, checkpoint_every: int, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "nerfxl.cli", "train", "tiny", "--data", str(data), "--output", str(out),
            "--steps", "100000", "--downscale", "2", "--batch-rays", "256", "--no-progress", "--name", "run",
            "--checkpoint-every", str(checkpoint_every), *extra]
    # Own session: a terminal's Ctrl-C reaches the whole process group, which the test mimics with killpg.
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def the_run(out: Path) -> Path | None:
    runs = list((out / "run").glob("*")) if (out / "run").is_dir() else []
    return runs[0] if runs else None


def test_ctrl_c_saves_a_final_checkpoint(tiny_city, tmp_path):
    proc = start_training(tiny_city, tmp_path, checkpoint_every=10**6)
    try:
        wait_for(lambda: the_run(tmp_path) is not None and (the_run(tmp_path) / "tensorboard").is_dir())
        time.sleep(3.0)  # let a few steps run
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "interrupted" in stderr
    ckpt = latest_checkpoint(the_run(tmp_path))
    assert ckpt is not None
    _, state = load_checkpoint(ckpt)
    assert state["step"] >= 1


def test_ctrl_c_stops_all_processes_after_the_same_step_with_one_checkpoint(tiny_city, tmp_path):
    proc = start_training(tiny_city, tmp_path, 10**6, "--partitions", "4", "--devices", "2")
    try:
        wait_for(lambda: the_run(tmp_path) is not None and (the_run(tmp_path) / "tensorboard").is_dir())
        time.sleep(3.0)
        os.killpg(proc.pid, signal.SIGINT)  # parent and both ranks get it, as from a terminal
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "interrupted" in stderr
    ckpt = latest_checkpoint(the_run(tmp_path))
    assert ckpt is not None and f"checkpoint saved to {ckpt}" in stdout
    shards, state = load_checkpoint(ckpt)  # every rank's shards, verified against the manifest
    assert sorted(shards) == ["shared", "tile-000", "tile-001", "tile-002", "tile-003"]
    assert state["step"] >= 1


def test_kill_9_during_checkpointing_keeps_the_latest_complete(tiny_city, tmp_path):
    proc = start_training(tiny_city, tmp_path, checkpoint_every=1)  # writing checkpoints all the time
    try:
        wait_for(lambda: the_run(tmp_path) is not None and len(list_checkpoints(the_run(tmp_path))) >= 2)
        time.sleep(0.37)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    run = the_run(tmp_path)
    ckpt = latest_checkpoint(run)
    shards, state = load_checkpoint(ckpt)  # verifies sizes and hashes of every file
    assert "tile-000" in shards and state["step"] >= 1
