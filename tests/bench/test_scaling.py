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


def test_equal_rays_per_iteration_in_the_paper_protocol(study):
    _, results = study
    runs = {(r["k"], r["method"]): r for r in results["runs"]}
    for m in ("nerfxl", "independent-3d", "independent-2d", "ddp"):
        assert runs[2, m]["rays_per_iteration"] == 128 and runs[2, m]["protocol"] == "paper"
    assert runs[2, "independent-3d"]["rays_per_model_per_iteration"] == 64
    # DDP's two processes share the 128 rays: one K = 1 model, trained once for both.
    assert runs[2, "ddp"]["same_run_as"] == runs[1, "nerfxl"]["name"]
    assert runs[2, "ddp"]["run_dir"] == runs[1, "nerfxl"]["run_dir"]


def test_rays_per_step_of_each_protocol():
    from pathlib import Path

    from nerfxl.bench.scaling import train_config

    study = Scaling(data=Path("."), output=Path("out"), batch_rays=1024, preset="tiny")
    expected = {  # (method, K) → (paper, equal-work) rays per step of one model
        ("nerfxl", 1): (1024, 1024), ("nerfxl", 4): (1024, 4096), ("ddp", 4): (1024, 4096),
        ("independent-3d", 4): (256, 1024), ("independent-2d", 8): (128, 1024),
    }
    for (method, k), rays in expected.items():
        got = tuple(train_config(study, k, method, p).batch_rays for p in ("paper", "equal-work"))
        assert got == rays, (method, k)


def test_both_protocols_trained_to_a_plateau_in_one_json(tiny_city, tmp_path):
    out = tmp_path / "study"
    results_json = tmp_path / "law.json"
    Scaling(data=tiny_city, tiles=(1, 2), methods=("nerfxl", "independent-2d", "ddp"), steps=40, batch_rays=64,
            preset="tiny", output=out, eval_views=1, throughput=False, protocols=("paper", "equal-work"),
            plateau_window=3, plateau_min_gain=50.0, results_json=results_json).main()
    results = json.loads(results_json.read_text())
    assert results["protocol"] == ["paper", "equal-work"]
    runs = {(r["protocol"], r["k"], r["method"]): r for r in results["runs"]}
    assert len(runs) == 12
    for r in runs.values():
        for key in ("method", "tiles", "parameters", "steps", "converged", "train_psnr", "test_psnr", "test_ssim"):
            assert key in r
        assert r["converged"] is True and r["steps"] == 6  # any gain < 50 dB is a plateau: two windows of 3
        assert math.isfinite(r["train_psnr"]) and math.isfinite(r["test_psnr"])
    assert runs["equal-work", 2, "nerfxl"]["rays_per_iteration"] == 128
    assert runs["equal-work", 2, "independent-2d"]["rays_per_model_per_iteration"] == 64
    # K = 1 is the same model in both protocols: trained once.
    assert runs["equal-work", 1, "nerfxl"]["same_run_as"] == runs["paper", 1, "nerfxl"]["name"]
    for name in ("psnr_vs_k-paper.png", "psnr_vs_parameters-equal-work.png"):
        assert (out / name).stat().st_size > 1000


def test_a_resumed_study_keeps_finished_runs_and_trains_the_rest(tiny_city, tmp_path, capsys):
    out = tmp_path / "study"
    common = dict(data=tiny_city, tiles=(1, 2), steps=4, batch_rays=64, preset="tiny", eval_views=1,
                  throughput=False)
    Scaling(**common, methods=("nerfxl",), output=out).main()  # a study stopped after NeRF-XL's runs
    first = json.loads((out / "scaling.json").read_text())
    capsys.readouterr()
    Scaling(**common, methods=("nerfxl", "independent-2d"), resume=out).main()
    said = capsys.readouterr().out
    results = json.loads((out / "scaling.json").read_text())
    runs = {(r["k"], r["method"]): r for r in results["runs"]}
    assert set(runs) == {(1, "nerfxl"), (2, "nerfxl"), (1, "independent-2d"), (2, "independent-2d")}
    for r in first["runs"]:  # kept as they were, not retrained
        assert runs[r["k"], r["method"]] == r
    assert said.count("kept from the resumed study") == 2 and "independent-2d: training" in said
    # Other training settings: nothing is kept.
    Scaling(**{**common, "steps": 5}, methods=("nerfxl",), resume=out).main()
    assert "steps differ" in capsys.readouterr().out


def test_two_jobs_train_the_same_runs_in_the_same_order(study, tiny_city, tmp_path):
    """Two runs at a time (each its own process, one thread): the study's rows, in the study's order, and
    the same numbers as one run at a time up to float round-off (other thread counts sum differently)."""
    _, alone = study
    out = tmp_path / "study"
    Scaling(data=tiny_city, tiles=(1, 2), methods=METHODS, steps=3, batch_rays=128, preset="tiny", output=out,
            eval_views=1, throughput=False, jobs=2).main()
    together = json.loads((out / "scaling.json").read_text())
    assert [(r["k"], r["method"]) for r in together["runs"]] == [(r["k"], r["method"]) for r in alone["runs"]]
    for a, b in zip(alone["runs"], together["runs"]):
        assert a["parameters"] == b["parameters"] and a["steps"] == b["steps"]
        assert b["psnr"] == pytest.approx(a["psnr"], abs=0.05), (a["k"], a["method"])
        assert ("same_run_as" in a) == ("same_run_as" in b)
    assert together["study_seconds"] > 0 and "2 run(s) at a time" in together["note"]


def test_equal_work_has_its_own_rays_per_device():
    from pathlib import Path

    from nerfxl.bench.scaling import train_config

    study = Scaling(data=Path("."), output=Path("out"), batch_rays=1024, equal_work_batch_rays=512, preset="tiny")
    assert train_config(study, 4, "nerfxl", "paper").batch_rays == 1024
    assert train_config(study, 4, "nerfxl", "equal-work").batch_rays == 2048
    assert train_config(study, 4, "independent-3d", "equal-work").batch_rays == 512
    assert train_config(study, 1, "ddp", "equal-work").batch_rays == 512


def test_the_scaling_law_study_is_a_named_command():
    result = run_cli("bench", "scaling-law", "--help")
    assert result.returncode == 0, result.stderr
    for default in ("scaling-law", "(default: 1024)", "(default: 512)", "(default: paper equal-work)",
                    "(default: 200)", "(default: 2 4)"):
        assert default in " ".join(result.stdout.replace("│", " ").split()), default


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
    (("--jobs", "0"), "--jobs 0"),
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


def test_quick_study_with_real_processes_through_the_cli(tiny_city, tmp_path):
    """--quick as CI runs it, throughput on: NeRF-XL and DDP timed on D = 1 and 2 real processes, both
    exchanges counted in bytes and seconds; --replot redraws the figures from scaling.json alone."""
    out = tmp_path / "study"
    result = subprocess.run([sys.executable, "-m", "nerfxl.cli", "bench", "scaling", "--quick", "--data", str(tiny_city),
                             "--methods", "nerfxl", "ddp", "--throughput-steps", "2", "--output", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "scaling.json").read_text())
    nerfxl = {t["devices"]: t for t in results["throughput"]}
    ddp = {t["devices"]: t for t in results["throughput_ddp"]}
    assert set(nerfxl) == set(ddp) == {1, 2}
    assert all(t["from_checkpoint"] and t["rays_per_s"] > 0 for t in [*nerfxl.values(), *ddp.values()])
    assert nerfxl[2]["rays_per_step"] == 256 and ddp[2]["rays_per_step"] == 2 * 256  # DDP: a batch per replica
    assert ddp[1]["exchange_bytes_per_step"] == 0 and ddp[2]["gradient_bytes_per_step"] > 0
    exchange = results["exchange"]
    assert exchange["devices"] == 2
    assert 0 < exchange["partition_bytes_per_step"] < exchange["sample_bytes_per_step"]
    assert exchange["partition_exchange_seconds_per_step"] > 0 and exchange["sample_exchange_seconds_per_step"] > 0
    assert "throughput ddp D=2" in result.stdout and "seconds in collectives per step" in result.stdout

    (out / "exchange_bytes.png").unlink()
    again = run_cli("bench", "scaling", "--replot", str(out))
    assert again.returncode == 0, again.stderr
    assert (out / "exchange_bytes.png").stat().st_size > 1000


def test_replot_of_a_folder_without_results_is_a_one_line_error(tmp_path):
    result = run_cli("bench", "scaling", "--replot", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no scaling.json" in result.stderr
