"""eval and render on D processes: the same scores and frames whatever D, and a clear error when D
does not divide the run's number of tiles."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from nerfxl.errors import ConfigError
from nerfxl.evaluate import evaluate_run
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.render import render_run
from nerfxl.train import train


@pytest.fixture(scope="module")
def run_k4(tiny_city, tmp_path_factory):
    """A tiny run of K = 4 tiles trained on 2 processes."""
    config = dataclasses.replace(TRAIN_PRESETS["tiny"][1], data=tiny_city, output=tmp_path_factory.mktemp("runs"),
                                 progress=False, downscale=2.0, batch_rays=256, steps=10, eval_every=0,
                                 partitions=4, devices=2, device="cpu", name="k4")
    return train(config)


def test_eval_gives_the_same_scores_on_1_2_and_4_processes(run_k4, tmp_path):
    # D = 2 writes where the CLI does (RUN/eval.json and the side-by-side images); the others elsewhere.
    outputs = {1: tmp_path / "eval-1.json", 2: None, 4: tmp_path / "eval-4.json"}
    results = {d: evaluate_run(run_k4, out, device="cpu", limit=2, save_images=d == 2, devices=d)
               for d, out in outputs.items()}
    assert results[2]["output"] == str(run_k4 / "eval.json")
    assert len(list((run_k4 / "eval" / "step-00000010").glob("*.png"))) == 2
    for d, result in results.items():
        assert result["n_images"] == 2 and result["devices"] == d
        assert json.loads(Path(result["output"]).read_text())["psnr"] == result["psnr"]
        assert result["psnr"] == pytest.approx(results[1]["psnr"], rel=1e-5)
        assert result["ssim"] == pytest.approx(results[1]["ssim"], rel=1e-5, abs=1e-6)


def test_rendered_frames_match_on_1_and_2_processes(run_k4, tmp_path):
    folders = {}
    for d in (1, 2):
        result = render_run(run_k4, "test", tmp_path / f"d{d}", resolution_scale=0.5, device="cpu", progress=False,
                            devices=d)
        assert result["frames"] > 0 and result["step"] == 10
        folders[d] = tmp_path / f"d{d}"
    frames = sorted(p.name for p in folders[1].glob("frame_*.png"))
    assert frames == sorted(p.name for p in folders[2].glob("frame_*.png"))
    assert (folders[2] / "video.mp4").stat().st_size > 0
    for name in frames:
        a, b = (iio.imread(folders[d] / name).astype(int) for d in (1, 2))
        assert np.abs(a - b).max() <= 1, name


def test_devices_that_do_not_divide_the_tiles(run_k4):
    with pytest.raises(ConfigError, match="--devices 3 does not divide"):
        render_run(run_k4, "test", device="cpu", devices=3)
    result = subprocess.run([sys.executable, "-m", "nerfxl.cli", "eval", str(run_k4), "--devices", "3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--devices 3" in lines[0] and "4" in lines[0], result.stderr
