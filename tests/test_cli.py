"""The command line: help, one-line errors without tracebacks, scene generation guards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerfxl.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "render", "demo", "info", "scene"):
        assert command in result.stdout


def test_train_help_shows_documented_options():
    result = run_cli("train", "city", "--help")
    assert result.returncode == 0
    assert "--steps" in result.stdout and "--data" in result.stdout
    assert "Rays per step" in result.stdout


def test_info_on_tiny_city(tiny_city):
    result = run_cli("info", str(tiny_city))
    assert result.returncode == 0, result.stderr
    assert "nerfstudio" in result.stdout and "96x72" in result.stdout


@pytest.mark.parametrize("args, fragments", [
    (("info", "/definitely/not/here"), ("/definitely/not/here",)),
    (("train", "tiny", "--data", "/definitely/not/here", "--steps", "1"), ("--data", "no such file")),
    (("eval", "/definitely/not/here"), ("/definitely/not/here",)),
    (("render", "/definitely/not/here"), ("/definitely/not/here",)),
])
def test_bad_paths_give_one_line(args, fragments):
    assert_one_line_error(run_cli(*args), *fragments)


def test_eval_on_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(run_cli("eval", str(tmp_path)), "not a nerfxl run")


def test_malformed_transforms_json(tmp_path):
    (tmp_path / "transforms.json").write_text("{ not json")
    assert_one_line_error(run_cli("info", str(tmp_path)), "transforms.json")


def test_scene_city_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    assert_one_line_error(run_cli("scene", "city", str(tmp_path), "--size", "tiny"), str(tmp_path))
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_train_eval_render_end_to_end(tiny_city, tmp_path):
    out = tmp_path / "outputs"
    result = run_cli("train", "tiny", "--data", str(tiny_city), "--output", str(out), "--steps", "6",
                     "--downscale", "2", "--batch-rays", "256", "--no-progress", "--name", "e2e")
    assert result.returncode == 0, result.stderr
    runs = list((out / "e2e").iterdir())
    assert len(runs) == 1
    run = runs[0]

    result = run_cli("eval", str(run), "--limit", "2")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["n_images"] == 2 and metrics["step"] == 6 and 0 < metrics["psnr"] < 100
    assert len(list((run / "eval" / "step-00000006").glob("*.png"))) == 2

    result = run_cli("render", str(run), "--path", "orbit", "--frames", "3", "--resolution-scale", "0.5")
    assert result.returncode == 0, result.stderr
    video = run / "renders" / "orbit" / "video.mp4"
    assert video.is_file() and video.stat().st_size > 0
    assert len(list((run / "renders" / "orbit").glob("frame_*.png"))) == 3

    # A nerfstudio camera path renders too; a broken one is one clear line.
    path = tmp_path / "camera_path.json"
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 80], [0, 0, 0, 1]]
    path.write_text(json.dumps({"render_width": 32, "render_height": 24, "fps": 10,
                                "camera_path": [{"camera_to_world": sum(c2w, []), "fov": 60}] * 2}))
    result = run_cli("render", str(run), "--path", str(path), "--output", str(tmp_path / "cp"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "cp").glob("frame_*.png"))) == 2
    path.write_text(json.dumps({"render_width": 32}))
    assert_one_line_error(run_cli("render", str(run), "--path", str(path)), "camera_path.json")
