"""Long jobs: exact resume on 1 and 2 processes, a killed rank restarted automatically along the same
trajectory, damaged checkpoints skipped on resume, `nerfxl check`, and `--run-dir` for restarted commands.

"Same trajectory" is checked on the final checkpoint: every tensor (weights, occupancy grids, Adam
moments) of a run that was stopped and resumed equals the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_parallel_cli import TIMEOUT_S, TINY, _children, cli_env, error_line, nerfxl, train

from nerfxl.checkpoint import MANIFEST, latest_checkpoint, list_checkpoints, verify_checkpoint


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


def tensors_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        out.update({f"{shard.stem}/{k}": v for k, v in load_file(str(shard)).items()})
    return out


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ta, tb = tensors_of(a), tensors_of(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], rtol=1e-6, atol=1e-7, msg=name)
    assert json.loads((a / "state.json").read_text())["step"] == json.loads((b / "state.json").read_text())["step"]


def crashed_copy(run: Path, into: Path, last_step: int) -> Path:
    """``run`` as a crash right after ``last_step``'s checkpoint would have left it."""
    copy = into / run.name
    shutil.copytree(run, copy)
    for ckpt in list_checkpoints(copy):
        if json.loads((ckpt / "state.json").read_text())["step"] > last_step:
            shutil.rmtree(ckpt)
    return copy


@pytest.fixture(scope="module")
def whole_runs(tiny_city, work) -> dict[int, Path]:
    """Uninterrupted 6-step runs of 2 tiles on 1 and 2 processes, a checkpoint every 3 steps."""
    return {d: train(tiny_city, work / f"whole-{d}", "r", "--steps", "6", "--partitions", "2", "--devices", str(d),
                     "--checkpoint-every", "3") for d in (1, 2)}


@pytest.mark.parametrize("devices", [1, 2])
def test_a_resumed_run_follows_the_uninterrupted_trajectory(whole_runs, work, devices):
    whole = whole_runs[devices]
    part = crashed_copy(whole, work / f"part-{devices}", 3)
    result = nerfxl("train", "--resume", part, "--no-progress", cwd=work)
    assert result.returncode == 0, result.stderr
    assert_same_checkpoint(latest_checkpoint(whole), latest_checkpoint(part))


def damage(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the size still matches, the hash does not
    shard.write_bytes(bytes(data))


def test_check_finds_a_damaged_checkpoint_and_resume_falls_back(whole_runs, work):
    run = crashed_copy(whole_runs[1], work / "damaged", 6)
    ok = nerfxl("check", run, cwd=work)
    assert ok.returncode == 0, ok.stderr
    assert "step-00000003  ok" in ok.stdout and "step-00000006  ok" in ok.stdout
    assert "a resume starts from step-00000006" in ok.stdout

    newest = latest_checkpoint(run)
    damage(newest / "tile-001.safetensors")
    bad = nerfxl("check", run, cwd=work)
    line = error_line(bad)
    assert "1 damaged checkpoint(s); a resume starts from step-00000003" in line
    assert "Traceback" not in bad.stderr and "step-00000006  DAMAGED" in bad.stdout
    assert "tile-001.safetensors: contents do not match the manifest's SHA-256" in bad.stdout

    # Resume skips it (and says so), trains steps 3 → 6 again and replaces the damaged folder.
    resumed = nerfxl("train", "--resume", run, "--no-progress", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping step-00000006" in resumed.stderr
    verify_checkpoint(latest_checkpoint(run))
    assert_same_checkpoint(latest_checkpoint(run), latest_checkpoint(whole_runs[1]))


def test_check_finds_shards_the_config_does_not_build(tiny_city, work):
    """Another run's shard, with its manifest entry rewritten to match, still has the wrong shapes."""
    run = train(tiny_city, work / "shapes", "r", "--steps", "1", "--partitions", "2")
    other = train(tiny_city, work / "shapes-other", "r", "--steps", "1", "--partitions", "2",
                  "--field.grid.base-resolution", "12", "12", "6")
    ckpt = latest_checkpoint(run)
    shard = ckpt / "tile-000.safetensors"
    save_file(load_file(str(latest_checkpoint(other) / "tile-000.safetensors")), str(shard))
    manifest = json.loads((ckpt / MANIFEST).read_text())
    import hashlib

    manifest["files"][shard.name] = {"bytes": shard.stat().st_size,
                                     "sha256": hashlib.sha256(shard.read_bytes()).hexdigest()}
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    result = nerfxl("check", run, cwd=work)
    line = error_line(result)
    assert "1 damaged checkpoint(s); nothing to resume from" in line
    assert "tile-000.safetensors: grid." in result.stdout and "in the checkpoint but" in result.stdout


def test_check_rejects_a_folder_that_is_not_a_run(work):
    result = nerfxl("check", work, cwd=work)
    assert "not a nerfxl run folder (no config.yaml)" in error_line(result)


def test_run_dir_makes_the_same_command_continue_its_run(tiny_city, work):
    run = work / "fixed" / "run"
    command = ("train", *TINY, "--data", tiny_city, "--run-dir", run, "--checkpoint-every", "2")
    first = nerfxl(*command, "--steps", "2", cwd=work)
    assert first.returncode == 0, first.stderr
    second = nerfxl(*command, "--steps", "4", cwd=work)
    assert second.returncode == 0, second.stderr
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002", "step-00000004"]
    assert not (work / "outputs").exists()  # nothing landed in the default OUTPUT/NAME/TIMESTAMP


RESTART_STEPS = 24
RESTART_ARGS = ("--partitions", "2", "--checkpoint-every", "4")


@pytest.fixture(scope="module")
def restart_reference(tiny_city, work) -> Path:
    """The uninterrupted run the restarted ones must end on (2 tiles on 2 processes)."""
    return train(tiny_city, work / "restart-reference", "r", "--steps", str(RESTART_STEPS), "--devices", "2",
                 *RESTART_ARGS)


def kill_a_rank_and_wait(command: list[str], run: Path, work: Path, ranks_of) -> tuple[int, str, str]:
    """Start ``command``, SIGKILL rank 1 (``ranks_of(parent pid)`` → rank pids) once a checkpoint exists,
    and wait for the command to end; (exit code, stderr, the newest checkpoint at the kill)."""
    err = open(work / f"{run.parent.name}.err", "w+")
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True, cwd=work, env=cli_env())
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while latest_checkpoint(run) is None:
            assert parent.poll() is None, f"training ended before the kill: {Path(err.name).read_text()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        ranks = ranks_of(parent.pid)
        assert len(ranks) == 2, _children(parent.pid)
        os.kill(ranks[1], signal.SIGKILL)
        killed_at = latest_checkpoint(run).name
        returncode = parent.wait(timeout=TIMEOUT_S)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        err.close()
    assert killed_at != f"step-{RESTART_STEPS:08d}", "the run had finished before the kill"
    return returncode, Path(err.name).read_text(), killed_at


def assert_ends_on_the_reference(run: Path, reference: Path) -> None:
    assert_same_checkpoint(latest_checkpoint(run), latest_checkpoint(reference))
    for ckpt in list_checkpoints(run):
        verify_checkpoint(ckpt)


@pytest.mark.slow
def test_a_killed_rank_is_restarted_and_the_run_ends_on_the_uninterrupted_trajectory(tiny_city, work,
                                                                                        restart_reference):
    """Kill a real rank with SIGKILL: our launcher stops the job, restarts it from the newest
    checkpoint (--max-restarts 1), and the run ends exactly where an uninterrupted one does."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to find the rank processes")
    run = work / "restarted" / "run"
    command = [sys.executable, "-m", "nerfxl.cli", "train", *TINY, "--data", str(tiny_city), "--run-dir", str(run),
               "--steps", str(RESTART_STEPS), "--devices", "2", "--max-restarts", "1", *RESTART_ARGS]
    returncode, stderr, _ = kill_a_rank_and_wait(
        command, run, work, lambda pid: [p for _, p, cmd in _children(pid) if b"spawn_main" in cmd])
    assert returncode == 0, stderr
    assert "rank 1 of 2 was killed by SIGKILL" in stderr and "restart 1 of 1 from step-" in stderr, stderr
    assert_ends_on_the_reference(run, restart_reference)


@pytest.mark.slow
def test_torchrun_restarts_a_killed_rank_and_the_same_command_continues_its_run(tiny_city, work,
                                                                                 restart_reference):
    """Under torchrun --max-restarts the restarted command finds its --run-dir and resumes from the
    newest checkpoint, ending on the uninterrupted trajectory."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to find the rank processes")
    run = work / "torchrun-restarted" / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", "1", "-m", "nerfxl.cli", "train", *TINY, "--data", str(tiny_city),
               "--run-dir", str(run), "--steps", str(RESTART_STEPS), *RESTART_ARGS]
    returncode, stderr, killed_at = kill_a_rank_and_wait(
        command, run, work, lambda pid: [p for _, p, cmd in _children(pid) if b"nerfxl.cli" in cmd])
    assert returncode == 0, stderr
    assert f"resuming {run} from step" in stderr, stderr
    # The survivor usually notices before torchrun stops it (a race torchrun may win): then it says so.
    lost = [line for line in stderr.splitlines() if "lost contact with another process" in line]
    assert all(line.startswith("nerfxl: error: rank 0 of 2") and f"last complete checkpoint: {run}" in line
               for line in lost), lost
    assert_ends_on_the_reference(run, restart_reference)


@pytest.mark.slow
def test_without_restarts_a_killed_rank_names_the_last_checkpoint(tiny_city, work):
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to find the rank processes")
    run = work / "no-restart" / "run"
    parent = subprocess.Popen([sys.executable, "-m", "nerfxl.cli", "train", *TINY, "--data", str(tiny_city),
                               "--run-dir", str(run), "--steps", "100000", "--partitions", "2", "--devices", "2",
                               "--checkpoint-every", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=cli_env())
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while latest_checkpoint(run) is None:
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        ranks = [pid for _, pid, cmd in _children(parent.pid) if b"spawn_main" in cmd]
        os.kill(ranks[0], signal.SIGKILL)
        t0 = time.monotonic()
        stdout, stderr = parent.communicate(timeout=TIMEOUT_S)
        waited = time.monotonic() - t0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    line = error_line(subprocess.CompletedProcess(parent.args, parent.returncode, stdout, stderr))
    assert "rank 0 of 2 was killed by SIGKILL" in line and waited < 60
    assert f"last complete checkpoint: {run / 'checkpoints'}" in line and f"--resume {run}" in line
    for ckpt in list_checkpoints(run):
        verify_checkpoint(ckpt)
