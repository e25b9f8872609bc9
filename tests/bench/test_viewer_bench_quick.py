"""``benchmarks/bench_viewer.py --quick`` end to end: a headless Chromium on the viewer's page, camera moves
to refined frames, and flights with and without dynamic fetching; the JSON it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_viewer.py"
CHROMIUM = Path("/usr/bin/chromium")


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing (pip install playwright)"
    return None


@pytest.mark.slow
def test_viewer_benchmark_quick(tiny_city, tmp_path):
    reason = browser_missing()
    if reason is not None:
        print(f"skipping the viewer benchmark: {reason}")
        pytest.skip(reason)
    # The benchmark trains on ensure_city("tiny"): point its cache at the session's tiny city.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "city-tiny-0").symlink_to(Path(tiny_city).resolve(), target_is_directory=True)
    # This checkout's nerfxl, whatever is installed (as tests/test_parallel_cli.py does).
    pythonpath = os.pathsep.join(p for p in (str(SCRIPT.parents[1]), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "NERFXL_CACHE": str(cache), "PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout holds the JSON document only (viser's banner goes to stderr)

    assert result["benchmark"] == "viewer" and result["config"]["quick"] is True
    assert result["config"]["viewport"] == [1280, 720] and result["config"]["tiles"] == 4
    assert result["reference"]["rays_per_second"] > 0

    # 1. Camera moves: a coarse frame, then the refined one at the --resolution long side of a 16:9 canvas.
    moves = result["camera_moves"]
    initial = moves["initial"]
    assert 0 < initial["page_load_to_first_frame_s"] <= initial["page_load_to_refined_s"]
    assert initial["refined_frame"]["width"] == 320 and initial["refined_frame"]["height"] == 180
    assert len(moves["poses"]) == 2
    for pose in moves["poses"]:
        refined = pose["refined"]
        assert (refined["level"], refined["width"], refined["height"]) == ("refined", 320, 180)
        assert refined["render_s"] > 0 and refined["latency_s"] > 0 and refined["bands"] >= 1
        assert refined["python_to_shown_s"] >= refined["latency_s"] > 0  # the set precedes the echo
        coarse = pose["coarse"]
        if coarse is not None:  # None only when the device renders the refined frame within coarse_seconds
            assert coarse["level"] == "coarse" and 48 <= coarse["width"] < 320  # 48: the smallest coarse frame
            assert 0 < coarse["render_s"] <= coarse["latency_s"] + 1e-6
            assert refined["latency_s"] >= coarse["latency_s"]
            assert refined["python_to_shown_s"] >= coarse["python_to_shown_s"]
            assert refined["version"] == coarse["version"]
    assert moves["refined_latency_s"]["median"] > 0 and moves["refined_render_s"]["median"] > 0
    if moves["coarse_latency_s"] is not None:
        assert moves["refined_latency_s"]["median"] >= moves["coarse_latency_s"]["median"]

    # 2./3. Flights: coarse frame times with and without fetching, side by side.
    flight = result["flight"]
    assert 0 < flight["camera_height"] < flight["max_height_at_tilt"]
    for name in ("whole_model", "fetching"):
        f = flight[name]
        assert f["timed_poses"] == 9
        assert f["coarse_frames"] + f["refined_instead_of_coarse"] == 9 and f["coarse_frames"] >= 1
        for key in ("render_s", "latency_s", "python_to_shown_s"):
            s = f[key]
            assert 0 < s["p50"] <= s["p99"] <= s["max"], (name, key, s)
        assert f["p99_over_p50_render"] >= 1 and f["p99_over_p50_latency"] >= 1
        assert flight["p99_over_p50_render"][name] == f["p99_over_p50_render"]
        assert f["refined_bands_started"] == 0  # the flight never rests
        assert f["frames_clamped"] == 0 and f["frames_refused"] == 0  # it flies within the camera limits
    fetching = flight["fetching"]
    # 10 poses around the tiny city cross fetch-window borders: windows are fetched, some frames wait.
    assert fetching["fetches"] >= 1 and fetching["waits"] >= 0
    assert fetching["fetch_s"]["p50"] > 0
    assert "fetches" not in flight["whole_model"]
    assert flight["ratio_fetching_to_whole"]["p50_render"] > 0
