"""``benchmarks/compare_runs.py``: the check a user runs that D processes trained the one-process model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_runs.py"


def _train(data: Path, run_dir: Path, devices: int, seed: int = 0) -> None:
    result = subprocess.run([sys.executable, "-m", "nerfxl.cli", "train", "tiny", "--data", str(data),
                             "--partitions", "2", "--devices", str(devices), "--steps", "6", "--log-every", "1",
                             "--batch-rays", "128", "--seed", str(seed), "--no-progress", "--run-dir", str(run_dir),
                             "--field.density-shift", "1.0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def _compare(a: Path, b: Path) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True, timeout=300)
    return result.returncode, json.loads(result.stdout)


def test_one_and_two_processes_agree_and_another_seed_does_not(tiny_city, tmp_path):
    _train(tiny_city, tmp_path / "d1", devices=1)
    _train(tiny_city, tmp_path / "d2", devices=2)
    code, same = _compare(tmp_path / "d1", tmp_path / "d2")
    assert code == 0, same
    assert same["steps_compared"] == 6 and same["loss_max_relative_difference"] < 1e-5
    assert same["renders_identical"] or same["render_psnr_between_runs"] > 60
    # The negative control: another seed is another model, and the check says so.
    _train(tiny_city, tmp_path / "seed1", devices=1, seed=1)
    code, other = _compare(tmp_path / "d1", tmp_path / "seed1")
    assert code == 1 and other["loss_max_relative_difference"] > 1e-3
    assert not other["renders_identical"] and other["render_psnr_between_runs"] < 60
