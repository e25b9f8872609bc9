"""`nerfxl train --devices D` end to end through the command line, as a user runs it.

Every case runs the real entry point in a subprocess: D divides K or a one-line error, no GPU no
CUDA, checkpoints named by tile whatever D (and a run continues on another D), a checkpoint from
another tile plan is refused without touching it, a rank killed mid-run stops the whole run quickly
without leaving a checkpoint that looks complete but is not, and torchrun drives the same command.

Slow tests spawn 2-4 interpreters each; shared runs are module fixtures, copied before any change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nerfxl.checkpoint import OPTIMIZER_PREFIX, verify_checkpoint
from nerfxl.parallel.launch import environment_outside_launcher

ROOT = Path(__file__).resolve().parents[1]
# Generous: other jobs may share the 2 cores. A healthy case finishes in seconds.
TIMEOUT_S = 600
# How long a run may take to stop after one of its ranks is killed (the launcher needs ~1-6 s).
KILL_EXIT_BOUND_S = 60.0
TINY = ("tiny", "--downscale", "2", "--batch-rays", "256", "--no-progress")


def cli_env() -> dict[str, str]:
    """A child CLI's environment: outside any launcher this test runs under, with this checkout first."""
    return environment_outside_launcher(ROOT)


def nerfxl(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerfxl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=cli_env(), timeout=TIMEOUT_S)


def train(city: Path, out: Path, name: str, *args) -> Path:
    """Train a new tiny run; returns its run folder (the only one under OUT/NAME)."""
    result = nerfxl("train", *TINY, "--data", city, "--output", out, "--name", name, *args, cwd=out.parent)
    assert result.returncode == 0, result.stderr
    runs = sorted((out / name).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def error_line(result: subprocess.CompletedProcess) -> str:
    """The `nerfxl: error:` line of a failed command (exit 2), wherever it is on stderr."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("nerfxl: error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_only_that_line(result: subprocess.CompletedProcess) -> None:
    """stderr is that one line: no traceback from a rank, no warnings after it."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nerfxl: error: "), result.stderr


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: files by size, mtime and SHA-256; folders by name."""
    entries = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_dir():
            entries[rel] = ("dir",)
        else:
            st = p.stat()
            entries[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return entries


def checkpoints(run: Path) -> list[Path]:
    """Folders that look like checkpoints (named step-*), oldest first."""
    return sorted((run / "checkpoints").glob("step-*"))


def file_names(ckpt: Path) -> set[str]:
    return {p.name for p in ckpt.iterdir()}


def state_of(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


def shard_files(k: int) -> set[str]:
    return {"shared.safetensors", "state.json", "manifest.json", *(f"tile-{i:03d}.safetensors" for i in range(k))}


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)
    return dest


# -- shared runs (read-only: tests copy them before resuming or editing) ----------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parallel_cli")


@pytest.fixture(scope="module")
def k4_on_1(tiny_city, work) -> Path:
    """K = 4 tiles trained 4 steps on one process, checkpoints at steps 2 and 4."""
    return train(tiny_city, work / "out-d1", "k4", "--partitions", "4", "--devices", "1", "--steps", "4",
                 "--checkpoint-every", "2")


@pytest.fixture(scope="module")
def k4_on_2(tiny_city, work) -> Path:
    """The same run on two processes (2 tiles each)."""
    return train(tiny_city, work / "out-d2", "k4", "--partitions", "4", "--devices", "2", "--steps", "4",
                 "--checkpoint-every", "2")


# -- 1, 2: option errors before anything starts ---------------------------------------------------


def test_devices_must_divide_partitions(tiny_city, tmp_path):
    out = tmp_path / "out"
    result = nerfxl("train", *TINY, "--data", tiny_city, "--output", out, "--partitions", "4", "--devices", "3",
                    "--steps", "2", cwd=tmp_path)
    line = error_line(result)
    assert_only_that_line(result)
    assert "--devices 3" in line and "--partitions 4" in line, line
    assert not out.exists()


@pytest.mark.parametrize("options, names", [
    (["--devices", "4", "--replicas", "3"], ["--replicas 3", "--devices 4"]),
    (["--replicas", "2"], ["--replicas 2", "--devices 1"]),
    (["--devices", "4", "--replicas", "2", "--method", "ddp"], ["--method ddp", "--replicas 2"]),
])
def test_replicas_that_do_not_fit_are_refused(tiny_city, tmp_path, options, names):
    out = tmp_path / "out"
    result = nerfxl("train", *TINY, "--data", tiny_city, "--output", out, *options, "--steps", "2", cwd=tmp_path)
    line = error_line(result)
    assert_only_that_line(result)
    assert all(name in line for name in names), line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("devices", [1, 2])
def test_cuda_without_a_gpu(tiny_city, tmp_path, devices):
    out = tmp_path / "out"
    result = nerfxl("train", *TINY, "--data", tiny_city, "--output", out, "--partitions", "2", "--devices", devices,
                    "--device", "cuda", "--steps", "2", cwd=tmp_path)
    line = error_line(result)
    assert_only_that_line(result)
    assert "CUDA" in line and "cuda" in line, line
    assert not out.exists()


def test_resume_on_devices_that_do_not_divide_k(k4_on_1, tmp_path):
    run = copy_run(k4_on_1, tmp_path / "run")
    before = snapshot(run)
    result = nerfxl("train", "--resume", run, "--devices", "3", "--steps", "6", "--no-progress", cwd=tmp_path)
    line = error_line(result)
    assert_only_that_line(result)
    # K comes from the run here, so the message may name it otherwise than "--partitions 4".
    assert "--devices 3" in line and re.search(r"\b4\b", line.replace("--devices 3", "")), line
    assert snapshot(run) == before


# -- 3: checkpoints are named by tile, so any D that divides K continues a run -----------------------


@pytest.mark.slow
def test_same_checkpoint_files_on_one_and_two_processes(k4_on_1, k4_on_2):
    assert [c.name for c in checkpoints(k4_on_1)] == [c.name for c in checkpoints(k4_on_2)] \
        == ["step-00000002", "step-00000004"]
    assert (k4_on_1 / "tiles.json").read_text() == (k4_on_2 / "tiles.json").read_text()
    for one, two in zip(checkpoints(k4_on_1), checkpoints(k4_on_2)):
        assert file_names(one) == file_names(two) == shard_files(4)
        verify_checkpoint(one)
        verify_checkpoint(two)
        s1, s2 = state_of(one), state_of(two)
        assert (s1.pop("trained_on_processes"), s2.pop("trained_on_processes")) == (1, 2)
        assert s1 == s2
    # D = 1 is the reference twin of D = 2: the same weights up to float summation order.
    last_one, last_two = checkpoints(k4_on_1)[-1], checkpoints(k4_on_2)[-1]
    for shard in sorted(last_one.glob("*.safetensors")):
        a, b = load_file(str(shard)), load_file(str(last_two / shard.name))
        assert a.keys() == b.keys(), shard.name
        for name in a:
            if not name.startswith(OPTIMIZER_PREFIX):
                torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4, msg=f"{shard.name}: {name}")


@pytest.mark.slow
def test_resume_on_one_then_four_processes(k4_on_2, tmp_path):
    run = copy_run(k4_on_2, tmp_path / "run")
    for devices, steps in ((1, 6), (4, 8)):
        result = nerfxl("train", "--resume", run, "--devices", devices, "--steps", steps, "--no-progress", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"run folder: {run}" in result.stdout
        last = checkpoints(run)[-1]
        assert last.name == f"step-{steps:08d}"
        state = state_of(last)
        assert state["step"] == steps and state["trained_on_processes"] == devices and state["n_tiles"] == 4
        assert sorted(state["tiles"]) == ["0", "1", "2", "3"]
        for ckpt in checkpoints(run):
            assert file_names(ckpt) == shard_files(4), ckpt
            verify_checkpoint(ckpt)
    # Nothing but checkpoints came out of resuming: no second run folder.
    assert [p.name for p in (tmp_path).iterdir()] == ["run"]


# -- 4: a checkpoint from another tile plan is refused, and left as it was ---------------------------


def _edit_partitions_in_config(run: Path) -> None:
    config = run / "config.yaml"
    text, n = re.subn(r"(?m)^partitions: 4$", "partitions: 2", config.read_text())
    assert n == 1
    config.write_text(text)


def _move_a_split_in_tiles_json(run: Path) -> None:
    """Shift the first split plane by 5 dataset units: same K, other boxes."""
    path = run / "tiles.json"
    plan = json.loads(path.read_text())
    x = plan["boxes"][0][1][0]
    moved = 0
    for box in plan["boxes"]:
        for corner in box:
            if corner[0] == x:
                corner[0] = x + 5.0
                moved += 1
    assert moved >= 2
    path.write_text(json.dumps(plan))


def _replan_uniform(run: Path) -> None:
    """Drop the saved plan and switch the method: the run would plan other tiles."""
    (run / "tiles.json").unlink()
    config = run / "config.yaml"
    text, n = re.subn(r"(?m)^partition_method: kd$", "partition_method: uniform", config.read_text())
    assert n == 1
    config.write_text(text)


# On one process; the moved split is the two-process case below (same check, fewer runs).
PLAN_EDITS = {
    "partitions-in-config": (_edit_partitions_in_config, ("tiles.json", "4 tiles", "--partitions is 2")),
    "replanned-uniform": (_replan_uniform, ("step-00000004", "another tile plan")),
}


@pytest.mark.parametrize("edit", sorted(PLAN_EDITS))
def test_checkpoint_from_another_tile_plan_is_refused(k4_on_1, tmp_path, edit):
    change, fragments = PLAN_EDITS[edit]
    run = copy_run(k4_on_1, tmp_path / "run")
    change(run)
    before = snapshot(run)
    result = nerfxl("train", "--resume", run, "--devices", "1", "--steps", "6", "--no-progress", cwd=tmp_path)
    line = error_line(result)
    assert_only_that_line(result)
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(run) == before


@pytest.fixture(scope="module")
def plan_mismatch_on_2(k4_on_2, work):
    """A K = 4 run whose tiles.json was edited, resumed on two processes: (result, before, run)."""
    run = copy_run(k4_on_2, work / "moved-split-d2")
    _move_a_split_in_tiles_json(run)
    before = snapshot(run)
    result = nerfxl("train", "--resume", run, "--devices", "2", "--steps", "6", "--no-progress", cwd=work)
    return result, before, run


@pytest.mark.slow
def test_other_tile_plan_on_two_processes_is_refused(plan_mismatch_on_2):
    result, before, run = plan_mismatch_on_2
    line = error_line(result)
    assert "another tile plan" in line and "step-00000004" in line and "tile 0" in line, line
    assert snapshot(run) == before


@pytest.mark.slow
def test_other_tile_plan_on_two_processes_is_one_line(plan_mismatch_on_2):
    result, _, _ = plan_mismatch_on_2
    assert_only_that_line(result)


def test_resume_refuses_another_partitions_option(k4_on_1, tmp_path):
    run = copy_run(k4_on_1, tmp_path / "run")
    before = snapshot(run)
    # No --steps: the run is complete, so nothing would train even if the option were ignored.
    result = nerfxl("train", "--resume", run, "--partitions", "2", "--no-progress", cwd=tmp_path)
    line = error_line(result)
    assert_only_that_line(result)
    assert "--partitions" in line, line
    assert snapshot(run) == before


# -- 5: a rank killed mid-run ----------------------------------------------------------------------


def _children(pid: int) -> list[tuple[int, int, bytes]]:
    """(start time, pid, command line) of the processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid:
            found.append((int(fields[19]), int(entry.name), cmdline))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


KILLED_RANK = 1


@pytest.fixture(scope="module")
def killed_run(tiny_city, work):
    """Train K = 2 on D = 2 with a checkpoint every step; SIGKILL rank 1 once a checkpoint exists."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to find the rank processes")
    out = work / "out-killed"
    out.mkdir()
    stdout, stderr = open(work / "killed.out", "w+"), open(work / "killed.err", "w+")
    parent = subprocess.Popen([sys.executable, "-m", "nerfxl.cli", "train", *TINY, "--data", str(tiny_city),
                               "--output", str(out), "--name", "k", "--partitions", "2", "--devices", "2",
                               "--steps", "100000", "--checkpoint-every", "1", "--keep-checkpoints", "2"],
                              stdout=stdout, stderr=stderr, text=True, cwd=work, env=cli_env())
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not list(out.glob("k/*/checkpoints/step-*/manifest.json")):
            assert parent.poll() is None, f"training ended before the kill: {Path(stderr.name).read_text()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        # Spawned ranks (not the resource tracker), in start order = rank order.
        ranks = [pid for _, pid, cmd in _children(parent.pid) if b"spawn_main" in cmd]
        assert len(ranks) == 2, _children(parent.pid)
        os.kill(ranks[KILLED_RANK], signal.SIGKILL)
        t0 = time.monotonic()
        try:
            returncode = parent.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = None
        waited = time.monotonic() - t0
    finally:
        if parent.poll() is None:
            for pid in [parent.pid, *ranks]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            parent.wait()
        stdout.close()
        stderr.close()
    runs = sorted((out / "k").iterdir())
    assert len(runs) == 1, runs
    result = subprocess.CompletedProcess(parent.args, returncode, Path(stdout.name).read_text(),
                                         Path(stderr.name).read_text())
    return {"result": result, "waited": waited, "ranks": ranks, "run": runs[0]}


@pytest.mark.slow
def test_killed_rank_stops_the_run(killed_run, tmp_path):
    result, waited, run = killed_run["result"], killed_run["waited"], killed_run["run"]
    assert result.returncode is not None, f"still running {TIMEOUT_S} s after the kill"
    assert waited < KILL_EXIT_BOUND_S, waited
    line = error_line(result)
    assert re.search(rf"\brank {KILLED_RANK} of 2 was killed by SIGKILL\b", line), line
    # No rank outlives the run (the survivor was waiting for the dead one in a collective).
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in killed_run["ranks"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in killed_run["ranks"])
    # Whatever the kill interrupted, every folder that looks like a checkpoint is complete and intact.
    found = checkpoints(run)
    assert found
    for ckpt in found:
        verify_checkpoint(ckpt)
        assert file_names(ckpt) == shard_files(2), ckpt
    # And the run continues from its latest one (here on one process).
    step = state_of(found[-1])["step"]
    result = nerfxl("train", "--resume", run, "--devices", "1", "--steps", step + 1, "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert checkpoints(run)[-1].name == f"step-{step + 1:08d}"


@pytest.mark.slow
def test_killed_rank_error_is_one_line(killed_run):
    assert_only_that_line(killed_run["result"])


# -- 6: torchrun runs the same command -------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_processes(tiny_city, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "nerfxl.cli", "train", *TINY, "--data", str(tiny_city), "--output", str(out),
                             "--name", "tr", "--partitions", "2", "--steps", "4", "--checkpoint-every", "2"],
                            capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    runs = sorted((out / "tr").iterdir())
    assert len(runs) == 1, runs  # rank 0 named it, rank 1 wrote its tile into the same folder
    run = runs[0]
    assert f"run folder: {run}" in result.stdout
    assert (run / "config.yaml").is_file() and (run / "tiles.json").is_file()
    assert [c.name for c in checkpoints(run)] == ["step-00000002", "step-00000004"]
    for ckpt in checkpoints(run):
        assert file_names(ckpt) == shard_files(2), ckpt
        verify_checkpoint(ckpt)
        state = state_of(ckpt)
        assert state["trained_on_processes"] == 2 and sorted(state["tiles"]) == ["0", "1"]
