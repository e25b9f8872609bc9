"""``benchmarks/bench_sixteen_processes.py`` at CI size: K = D real processes through ``nerfxl train``
follow the one-process run (compare_runs.py's losses within 1e-5 relative) and every rank's peak RSS
is read from /proc.

The full 16-process figures (docs/scale.md, docs/benchmarks.md) come from the benchmark itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sixteen_processes.py"
PROCESSES, STEPS = 16, 2


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads peak RSS from /proc")
def test_sixteen_processes_through_the_cli_follow_the_one_process_run(tiny_city, tmp_path):
    pythonpath = os.pathsep.join(p for p in (str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")) if p)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tiny_city), "--processes", str(PROCESSES),
                           "--steps", str(STEPS), "--batch-rays", "128", "--work", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600, env={**env, "PYTHONPATH": pythonpath})
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    result = json.loads(proc.stdout)

    compared = result["compare_runs"]
    assert result["trajectory_agrees"] and compared["steps_compared"] == STEPS, compared
    assert compared["loss_max_relative_difference"] < 1e-5, compared
    assert compared["renders_identical"] or compared["render_psnr_between_runs"] > 60, compared
    many = result["runs"][f"d{PROCESSES}"]
    assert result["ranks_seen"] == PROCESSES and len(many["rank_peak_rss_mib"]) == PROCESSES, many
    # A rank holds an interpreter, torch and its tile: tens to hundreds of MiB, never nothing.
    assert all(50 < mib < 4096 for mib in many["rank_peak_rss_mib"]), many
    assert result["runs"]["d1"]["rank_peak_rss_mib"] == []  # one process trains in the launcher itself
    assert many["wall_s"] > 0 and result["runs"]["d1"]["launcher_peak_rss_mib"] > 50
