"""``nerfxl bench scaling``: one small study end to end, the CLI's help and its one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from nerfxl.bench.scaling import METHODS, Scaling


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerfxl.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def study(tiny_city, tmp_path_factory):
    """A K = 1, 2 study of all four methods, a few steps each (throughput off: single process)."""
    out = tmp_path_factory.mktemp("scaling") / "study"
    Scaling(data=tiny_city, tiles=(1, 2), methods=METHODS, steps=3, batch_rays=128, preset="tiny", output=out,
            eval_views=1, throughput=False).main()
    return out, json.loads((out / "scaling.json").read_text())


def test_every_k_and_method_is_scored(study):
    _, results = study
    runs = {(r["k"], r["method"]): r for r in results["runs"]}
    assert set(runs) == {(k, m) for k in (1, 2) for m in METHODS}
    for r in runs.values():
        assert math.isfinite(r["psnr"]) and r["train_seconds"] > 0 and r["rays_per_s"] > 0
    assert 0.0 <= runs[2, "independent-3d"]["fraction_outside_tile"] <= 1.0
    assert runs[2, "nerfxl"]["fraction_outside_tile"] is None


def test_equal_rays_per_iteration_except_ddp(study):
    _, results = study
    runs = {(r["k"], r["method"]): r for r in results["runs"]}
    for m in ("nerfxl", "independent-3d", "independent-2d"):
        assert runs[2, m]["rays_per_iteration"] == 128
    assert runs[2, "independent-3d"]["rays_per_model_per_iteration"] == 64
    assert runs[2, "ddp"]["rays_per_iteration"] == 256  # K × batch_rays on one model


def test_parameters_grow_with_k_for_nerfxl_not_ddp(study):
    _, results = study
    runs = {(r["k"], r["method"]): r for r in results["runs"]}
    assert runs[2, "nerfxl"]["parameters"] > runs[1, "nerfxl"]["parameters"]
    assert runs[2, "ddp"]["parameters"] == runs[1, "ddp"]["parameters"] == runs[1, "nerfxl"]["parameters"]
    assert runs[2, "independent-3d"]["parameters"] > runs[1, "independent-3d"]["parameters"]


def test_plots_are_written(study):
    out, results = study
    for name in ("psnr_vs_k.png", "rays_per_s_vs_k.png", "parameters_vs_k.png", "fraction_outside_vs_k.png"):
        assert (out / name).stat().st_size > 1000
        assert str(out / name) in results["plots"]
    assert not (out / "exchange_bytes.png").exists()  # throughput was off: nothing measured


def test_cli_help():
    result = run_cli("bench", "scaling", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--tiles", "--methods", "--batch-rays", "--throughput", "--quick"):
        assert option in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (("--tiles", "0"), "--tiles 0"),
    (("--tiles", "1", "4", "--batch-rays", "2"), "--batch-rays 2"),
    (("--preset", "nope"), "--preset nope"),
])
def test_bad_options_are_one_line_errors(args, fragment, tmp_path):
    result = run_cli("bench", "scaling", "--output", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_module_is_import_light():
    code = "import sys, nerfxl.bench.scaling; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
