"""Poses-only aerial flights (nerfxl/data/aerial_poses.py) written in MatrixCity's format, read back by
the MatrixCity reader, loaded poses-only, and summarised by ``nerfxl info`` / ``nerfxl plan`` at a
CI-sized scale (20 000 frames; ``benchmarks/bench_plan_validation.py`` and docs/scale.md: 258 000)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nerfxl.data.aerial_poses import aerial_poses, write_matrixcity_poses
from nerfxl.data.load import load_dataset
from nerfxl.errors import ConfigError, DataError, NerfxlError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerfxl.cli", *args], capture_output=True, text=True, timeout=300)


def test_poses_are_rigid_look_down_and_cover_the_area():
    c2w = aerial_poses(1000, area_m2=4e6, altitude_m=150.0, pitch_deg=45.0, seed=3)
    r = c2w[:, :, :3]
    assert np.allclose(r.transpose(0, 2, 1) @ r, np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)
    forward = -r[:, :, 2]  # OpenGL cameras look along −z
    assert np.allclose(forward[:, 2], -math.sin(math.radians(45.0)))
    assert np.all(np.abs(c2w[:, :2, 3]) <= 1000.0) and np.all(np.abs(c2w[:, 2, 3] - 150.0) <= 7.5 + 1e-9)
    assert np.array_equal(c2w, aerial_poses(1000, area_m2=4e6, altitude_m=150.0, pitch_deg=45.0, seed=3))


def test_matrixcity_reader_reads_the_written_poses(tmp_path):
    out = write_matrixcity_poses(tmp_path / "flight", frames=500, width=320, height=180, area_m2=1e6,
                                 altitude_m=100.0, test_every=10, seed=1)
    meta = json.loads((out / "transforms_train.json").read_text())
    assert {"camera_angle_x", "fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(meta)
    data = load_dataset(out, "train", poses_only=True)
    test = load_dataset(out, "test", poses_only=True)
    assert data.format == "matrixcity" and len(data) == 450 and len(test) == 50
    assert data.metadata["poses_only"] and int(data.cameras.width[0]) == 320
    expected = aerial_poses(500, area_m2=1e6, altitude_m=100.0, seed=1)
    held = np.arange(9, 500, 10)
    train = np.setdiff1d(np.arange(500), held)
    # Positions round-trip through MatrixCity's 100 m units.
    assert torch.allclose(data.cameras.camera_to_worlds.double(), torch.from_numpy(expected[train]), atol=1e-3)
    assert torch.allclose(test.cameras.camera_to_worlds.double(), torch.from_numpy(expected[held]), atol=1e-3)


def test_poses_only_is_explicit(tmp_path):
    out = write_matrixcity_poses(tmp_path / "flight", frames=40, width=64, height=48, area_m2=1e4, altitude_m=50.0)
    with pytest.raises(DataError, match="image file is missing"):
        load_dataset(out, "train")  # without poses_only the images must exist
    data = load_dataset(out, "train", poses_only=True)
    with pytest.raises(DataError, match="poses-only"):
        data.images.get(0)


def test_generator_refuses_bad_input(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(NerfxlError, match="not empty"):
        write_matrixcity_poses(tmp_path, frames=8)
    with pytest.raises(ConfigError, match="--frames"):
        write_matrixcity_poses(tmp_path / "new", frames=0)
    with pytest.raises(ConfigError, match="--pitch-deg"):
        write_matrixcity_poses(tmp_path / "new", frames=8, pitch_deg=120)


def test_twenty_thousand_frames_load_plan_and_describe_quickly(tmp_path):
    """The CI-sized version of the 258 000-frame MatrixCity check: generate, `nerfxl info`, `nerfxl plan -k 64`."""
    result = run_cli("scene", "matrixcity-poses", str(tmp_path / "city"), "--frames", "20000")
    assert result.returncode == 0, result.stderr
    t0 = time.perf_counter()
    info = run_cli("info", str(tmp_path / "city"))
    info_seconds = time.perf_counter() - t0
    assert info.returncode == 0, info.stderr
    assert "frames:        20000 (train 19800" in info.stdout and "matrixcity" in info.stdout
    t0 = time.perf_counter()
    plan = run_cli("plan", str(tmp_path / "city"), "-k", "64", "-d", "64", "--print-as", "json")
    plan_seconds = time.perf_counter() - t0
    assert plan.returncode == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert report["job"]["partitions"] == 64 and report["dataset"]["frames"] == 19800
    assert report["dataset"]["poses_only"] and 1.0 <= report["imbalance"]["plan_tiles"] < 1.2
    # 258 000 frames take ~15 s (info) and ~30 s (plan) on 2 cores; 20 000 a fraction of that.
    assert info_seconds < 60 and plan_seconds < 60, (info_seconds, plan_seconds)
    assert report["run"]["peak_rss_bytes"] < 2 * 1024**3
