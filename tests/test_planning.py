"""``nerfxl plan`` (nerfxl/planning.py) against measured training on this machine, and its command line.

The measured side is ``benchmarks/plan_measure.py`` (shared with ``benchmarks/bench_plan_validation.py``):
the tiny preset on the tiny city, K = 4, 8, 16 tiles on D = 1, 2, 4 processes (one launch of 4 processes
runs every multi-process job; D = 1 trains here), two measured steps each. What must agree within 10 %:
the bytes per step the busiest process hands to the exchange and to the gradient all-reduce
(``DistContext.stats``), its parameter, Adam-state and occupancy bytes, and the checkpoint's tensor
bytes. The saved-for-backward bytes of a step, predicted from the measured samples with the calibrated
per-sample cost, are held to the same 10 %.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import plan_measure  # noqa: E402  (benchmarks/, on the path above; spawned ranks inherit it)

from nerfxl.presets import TRAIN_PRESETS  # noqa: E402
from test_cli import assert_one_line_error, run_cli  # noqa: E402

TOLERANCE = 0.10
JOBS = [  # (K, D, exchange, replicas, checkpoint)
    (4, 1, "partition", 1, False), (8, 1, "partition", 1, False), (16, 1, "partition", 1, True),
    (4, 2, "partition", 1, True), (16, 2, "partition", 1, False),
    (8, 4, "partition", 1, True), (16, 4, "partition", 1, False),
    (4, 2, "sample", 1, False), (4, 4, "partition", 2, False),
]
HELD = ("exchange_bytes_per_step", "gradient_bytes_per_step", "parameter_bytes", "optimizer_bytes",
        "occupancy_bytes", "checkpoint_bytes", "activation_bytes")




@pytest.fixture(scope="module")
def validation(tiny_city, tmp_path_factory):
    from nerfxl.planning import calibrate_activations, load_for_planning, plan_job

    base = dataclasses.replace(TRAIN_PRESETS["tiny"][1], data=tiny_city, batch_rays=128, eval_every=0,
                               checkpoint_every=10**9)
    work = tmp_path_factory.mktemp("plan-validation")
    jobs = [plan_measure.job(f"K{k}-D{d}-{x}-R{r}", dataclasses.replace(base, partitions=k, devices=d, exchange=x,
                                                                       replicas=r), work, steps=2, checkpoint=c)
            for k, d, x, r, c in JOBS]
    measured = plan_measure.run_all(jobs)
    dataset = load_for_planning(Path(tiny_city))
    cost = calibrate_activations(base)
    return {j["name"]: plan_measure.compare(plan_job(dataset, j["config"], calibration=cost), j["config"],
                                            measured[j["name"]]) for j in jobs}


@pytest.mark.parametrize("k, d, exchange, replicas, checkpoint", JOBS)
def test_predictions_match_measured_runs(validation, k, d, exchange, replicas, checkpoint):
    rows = validation[f"K{k}-D{d}-{exchange}-R{replicas}"]
    misses = {q: rows[q] for q in HELD if q in rows and abs(rows[q]["ratio"] - 1) > TOLERANCE}
    assert not misses, misses
    assert ("checkpoint_bytes" in rows) == checkpoint
    if d == 1:  # one process: nothing is communicated, and the model says so
        assert rows["exchange_bytes_per_step"]["predicted"] == rows["exchange_bytes_per_step"]["measured"] == 0
    else:
        assert rows["exchange_bytes_per_step"]["measured"] > 0 and rows["gradient_bytes_per_step"]["measured"] > 0
    # The marching bound (every cell occupied) is what occupancy skipping and pruning cut down from;
    # it is an expectation over rays, so one batch may exceed it by a little.
    assert 0 < rows["samples_per_ray"]["measured"] <= 1.05 * rows["samples_per_ray"]["marched_bound"]


def test_partition_exchange_bytes_are_exact(validation):
    """6 float32 per ray and held tile + the 48-byte stats gather: 4 tiles over 2 processes, 128 rays."""
    rows = validation["K4-D2-partition-R1"]
    assert rows["exchange_bytes_per_step"]["measured"] == 2 * 128 * 24 + 48


def test_plan_command_prints_table_and_json(tiny_city, tmp_path):
    out = tmp_path / "plan.json"
    result = run_cli("plan", str(tiny_city), "--preset", "tiny", "-k", "4", "-d", "2", "--batch-rays", "128",
                     "--link-gbps", "10", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "bytes / step" in result.stdout and "imbalance" in result.stdout and "time / step" in result.stdout
    report = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    assert report == json.loads(out.read_text())
    assert report["job"]["tiles_per_rank"] == 2 and report["dataset"]["poses_only"]
    assert report["bytes_per_step_per_rank"]["partition_exchange"] == 2 * 128 * 24 + 48
    assert report["imbalance"]["plan_tiles"] >= 1.0 and report["time_per_step_s"]["total"] > 0
    assert report["memory_per_rank_bytes"]["optimizer"] > 2 * report["memory_per_rank_bytes"]["parameters"] - 1


def test_plan_of_a_described_flight_needs_no_files():
    result = run_cli("plan", "--frames", "2000", "--area-m2", "1e6", "--preset", "tiny", "-k", "8", "-d", "8",
                     "--samples-per-ray", "24", "--samples-per-s", "1e7", "--print-as", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dataset"]["frames"] == 2000 and report["samples"]["per_ray_used"] == 24
    assert report["time_per_step_s"]["samples_per_s_from"] == "--samples-per-s"


@pytest.mark.parametrize("args, fragments", [
    (("-k", "4", "-d", "3"), ("--devices 3", "--partitions 4")),
    (("--preset", "nope"), ("--preset 'nope'", "tiny")),
    (("-k", "4", "-d", "4", "--replicas", "3"), ("--replicas 3",)),
    (("--link-gbps", "0"), ("--link-gbps",)),
    (("--scene-box", "0", "0", "0", "1", "1", "-1"), ("--scene-box",)),
])
def test_bad_plan_options_give_one_line(args, fragments):
    assert_one_line_error(run_cli("plan", "--frames", "64", "--preset", "tiny", *args), *fragments)


def test_plan_of_a_missing_dataset_names_it():
    assert_one_line_error(run_cli("plan", "/definitely/not/here"), "/definitely/not/here")


def test_plan_of_a_malformed_dataset_names_the_file(tmp_path):
    (tmp_path / "transforms.json").write_text("{ not json")
    assert_one_line_error(run_cli("plan", str(tmp_path)), "transforms.json")
