"""``benchmarks/bench_soak.py`` end to end on a few steps: the JSON it prints and the loop it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_soak.py"


def test_soak_benchmark_runs_the_loop_and_reports(tiny_city, tmp_path):
    # The benchmark trains on ensure_city("tiny"): point its cache at the session's tiny city.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "city-tiny-0").symlink_to(Path(tiny_city).resolve(), target_is_directory=True)
    plot = tmp_path / "soak.png"
    args = ["--steps", "4", "--sample-every", "1", "--checkpoint-every", "2", "--eval-every", "0",
            "--batch-rays", "32", "--plot", str(plot)]
    # This checkout's nerfxl, whatever is installed (as tests/test_parallel_cli.py does).
    pythonpath = os.pathsep.join(p for p in (str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NERFXL_CACHE": str(cache), "PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)

    assert result["benchmark"] == "soak" and result["config"]["steps"] == 4
    # One sample before the first step and one after each step; the last at the last step.
    assert [row[0] for row in result["series"]] == [0, 1, 2, 3, 4]
    assert all(row[1] > 0 for row in result["series"])
    assert [row[2] for row in result["series"]] == sorted(row[2] for row in result["series"])
    assert all(len(v) == 5 for v in result["series_extra"].values())
    # Checkpoints at steps 2 and 4 (the last), as the training loop saves them.
    assert result["checkpoints_saved"] == 2 and result["checkpoints_on_disk"] == 2
    assert result["evaluations"] == 0
    assert result["warmup_step"] == 2  # the first checkpoint ends the warm-up
    assert result["rss_mb"]["end"] == pytest.approx(result["series"][-1][1], abs=0.01)  # the series is rounded
    assert result["growth_warmup_to_end_mb"] == result["rss_mb"]["end"] - result["rss_mb"]["warmup"]
    half = result["second_half"]
    assert (half["from_step"], half["to_step"], half["samples"]) == (2, 4, 3)
    assert half["rss_slope_mb_per_1000_steps"] is not None
    assert result["threshold_mb"] >= 16.0 and isinstance(result["flat"], bool)
    assert isinstance(result["live_memory_flat"], bool)  # glibc's mallinfo2 is there on this platform
    # The image cache is bounded by the preset's image_cache_mb and holds all 24 tiny-city images.
    caches = result["caches"]
    assert caches["image_cache_limit_mb"] == caches["image_cache_mb_config"] == 2048
    assert caches["images_cached"] == caches["images"] == 24
    # The census found the model's tensors (parameters, buffers, optimizer moments: hundreds).
    assert result["objects"]["tensors"]["end"] > 100 and isinstance(result["tensor_kinds_grown_since_warmup"], list)
    assert plot.stat().st_size > 1000 and result["plot"] == str(plot)
