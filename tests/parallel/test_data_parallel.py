"""The data-parallel baseline (``--method ddp``): D processes with R rays each train exactly what one
process trains with D·R rays (nerfxl.parallel.data_parallel).

One launch of 2 processes trains the multi-process jobs, the D = 1 references (global batch 2R)
train in this process. Two model variants: the tiny preset's sky background with appearance
embeddings, pose corrections and a total-variation regulariser; and a random background with the
depth loss (three random draws per ray to skip, and a term over a different number of rays on each
rank).

Tolerances (float32; the mean over ranks of per-rank means rounds differently from one mean), with
the largest error seen as a fraction of each:
- losses: relative 1e-6 (seen 0.11); parameters after 8-10 steps: absolute 1e-5 (seen 0.045);
- gradients: elementwise within 1e-4 of the reference's largest entry + 1e-4 relative (seen 0.02).
Adam is nearly invariant to a constant gradient scale: a SUM instead of the mean leaves the losses
within tolerance and moves parameters only 4-6 tolerances, but the gradients, compared directly,
are off by 5000 tolerances. Rank 1 rendering rank 0's rows, or skipping no jitter or too few
background draws, is off by ≥ 16 tolerances in the losses and ≥ 1000 in gradients and parameters;
a per-rank mean of the depth term instead of the global one by 170 (losses) and 200 (gradients).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import ddp_workers as W
import pytest
import torch

from nerfxl.errors import ConfigError
from nerfxl.parallel.data_parallel import skip_draws
from nerfxl.parallel.launch import launch
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.run.config import TrainConfig
from nerfxl.run.strategy import check_processes

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
RAYS = 128  # per process
LOSS_RTOL = 1e-6
PARAM_ATOL = 1e-5
GRAD_TOL = 1e-4
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RUN_ID")
STEPS = {"sky": 10, "random_depth": 8}
GRAD_STEPS = {"sky": (0, 4, 9), "random_depth": (0, 7)}


def training_config(data: Path, output: Path, variant: str, devices: int, method: str = "ddp") -> TrainConfig:
    base = TRAIN_PRESETS["tiny"][1]
    field = dataclasses.replace(base.field, density_shift=1.0, appearance_embedding_dim=4, pose_correction=True)
    loss = dataclasses.replace(base.loss, total_variation=1e-4)
    if variant == "random_depth":
        field = dataclasses.replace(field, background="random")
        loss = dataclasses.replace(loss, depth=0.05)
    return dataclasses.replace(
        base, data=data, output=output, progress=False, device="cpu", downscale=2.0, method=method,
        batch_rays=RAYS * WORLD // devices, devices=devices, field=field, loss=loss,
        render=dataclasses.replace(base.render, occupancy_update_every=4, occupancy_warmup_steps=4, prune_alpha_after=2),
    )


def job(name: str, variant: str, data: Path, out: Path, devices: int, method: str = "ddp") -> dict:
    return {"name": name, "config": training_config(data, out / "output", variant, devices, method),
            "run_dir": str(out / name), "steps": STEPS[variant], "grad_steps": GRAD_STEPS[variant]}


@pytest.fixture(scope="module")
def runs(tiny_city, tmp_path_factory) -> dict[str, list[dict]]:
    """{variant: per-rank results of D = 2, variant + "_D1": [the reference], "nerfxl_D1": [K = 1 nerfxl]}."""
    out = tmp_path_factory.mktemp("ddp-training")
    with pytest.MonkeyPatch.context() as mp:
        for name in LAUNCHER_ENV:  # launch() must spawn, not think it runs under torchrun
            mp.delenv(name, raising=False)
        per_rank = launch(W.run_jobs, WORLD, args=([job(v, v, tiny_city, out, WORLD) for v in STEPS],), device="cpu",
                          timeout_s=120, max_runtime_s=300)
    results = {v: [per_rank[r][v] for r in range(WORLD)] for v in STEPS}
    for v in STEPS:
        results[f"{v}_D1"] = [W.train_here(job(f"{v}_D1", v, tiny_city, out, 1))]
    results["nerfxl_D1"] = [W.train_here(job("nerfxl_D1", "sky", tiny_city, out, 1, method="nerfxl"))]
    return results


def assert_grad_close(got, want, msg: str) -> None:
    """Equal up to GRAD_TOL of the reference's largest entry (None = no gradient = zeros)."""
    if got is None and want is None:
        return
    like = want if want is not None else got
    got = torch.zeros_like(like) if got is None else got
    want = torch.zeros_like(like) if want is None else want
    torch.testing.assert_close(got, want, rtol=GRAD_TOL, atol=GRAD_TOL * float(want.abs().max()), msg=msg)


# -- D = 2 with R rays = D = 1 with 2R rays ------------------------------------------------------------


@pytest.mark.parametrize("variant", list(STEPS))
def test_two_processes_train_what_one_process_trains_on_the_global_batch(runs, variant):
    ranks, ref = runs[variant], runs[f"{variant}_D1"][0]
    assert all(math.isfinite(x) for x in ref["losses"])
    for r in ranks:
        # Rank r rendered rows [r·R, (r+1)·R) of the global batch.
        rows = slice(r["rank"] * RAYS, (r["rank"] + 1) * RAYS)
        for key in ("image_indices", "pixels"):
            assert torch.equal(r["rays"][key], ref["rays"][key][rows]), key
        # Global stats on every rank; the same samples (the same rays, jitter and occupancy).
        torch.testing.assert_close(torch.tensor(r["losses"], dtype=torch.float64),
                                   torch.tensor(ref["losses"], dtype=torch.float64), rtol=LOSS_RTOL, atol=0)
        torch.testing.assert_close(torch.tensor(r["psnr"]), torch.tensor(ref["psnr"]), rtol=LOSS_RTOL, atol=0)
        assert r["samples"] == ref["samples"]
        assert r["grads"].keys() == ref["grads"].keys()
        for step, grads in r["grads"].items():
            for n, g in grads["averaged"].items():
                assert_grad_close(g, ref["grads"][step]["averaged"][n], f"{variant}, rank {r['rank']}, step {step}, {n}")
        for n, p in r["params"].items():
            torch.testing.assert_close(p, ref["params"][n], rtol=0, atol=PARAM_ATOL, msg=lambda m: f"{variant} {n}\n{m}")
    for n, p in ranks[0]["params"].items():  # identical replicas: the same bits everywhere
        assert torch.equal(p, ranks[1]["params"][n]), n


@pytest.mark.parametrize("variant", list(STEPS))
def test_gradients_are_the_mean_of_real_per_process_shares(runs, variant):
    """Each rank's own gradient is a different share (not the whole); their mean, which every rank
    steps with, is the reference gradient; their sum (a SUM all-reduce) is far outside tolerance."""
    ranks, ref = runs[variant], runs[f"{variant}_D1"][0]
    for step, want in ref["grads"].items():
        partial = [r["grads"][step]["partial"] for r in ranks]
        averaged = [r["grads"][step]["averaged"] for r in ranks]
        decoder = "decoder.mlp.0.weight"
        for p in partial:
            with pytest.raises(AssertionError):
                assert_grad_close(p[decoder], want["averaged"][decoder], "share")
        with pytest.raises(AssertionError):
            assert_grad_close(partial[0][decoder] + partial[1][decoder], want["averaged"][decoder], "sum")
        for n, g in averaged[0].items():
            assert (g is None) == (averaged[1][n] is None) and (g is None or torch.equal(g, averaged[1][n])), n
            if g is not None:
                mean = sum(p[n] if p[n] is not None else torch.zeros_like(g) for p in partial) / WORLD
                torch.testing.assert_close(g, mean, rtol=1e-6, atol=1e-7 * float(g.abs().max()))
        assert all(g is not None for n, g in averaged[0].items() if n.startswith(("tiles.", "decoder.")))


def test_one_process_ddp_is_ordinary_training(runs):
    """--method ddp on D = 1 trains what --method nerfxl does with one tile (same rays, same draws)."""
    ddp, nerfxl = runs["sky_D1"][0], runs["nerfxl_D1"][0]
    torch.testing.assert_close(torch.tensor(ddp["losses"], dtype=torch.float64),
                               torch.tensor(nerfxl["losses"], dtype=torch.float64), rtol=LOSS_RTOL, atol=0)
    assert ddp["samples"] == nerfxl["samples"]
    for n, p in ddp["params"].items():
        assert torch.equal(p, nerfxl["params"][n]), n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_skipping_draws_continues_the_global_stream(dtype):
    """What the exactness rests on: rand(a) then rand(b) is rand(a + b)[a:] (CPU generator)."""
    for a, b in [(0, 5), (128, 128), (3 * 1000, 3 * 333)]:
        whole = torch.rand(a + b, generator=torch.Generator().manual_seed(7), dtype=dtype)
        rest = torch.rand(b, generator=skip_draws(torch.Generator().manual_seed(7), a, dtype), dtype=dtype)
        assert torch.equal(rest, whole[a:])


# -- the command line ------------------------------------------------------------------------------------


def test_ddp_needs_one_partition():
    with pytest.raises(ConfigError, match="--method ddp .* --partitions must be 1 .* --method nerfxl"):
        check_processes(TrainConfig(method="ddp", partitions=2, devices=2), 2)
    check_processes(TrainConfig(method="ddp", partitions=1, devices=3), 3)  # any D


def nerfxl(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "nerfxl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_cli_refuses_ddp_on_several_partitions(tmp_path):
    result = nerfxl("train", "tiny", "--method", "ddp", "--partitions", "2", "--devices", "2",
                    "--output", tmp_path, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nerfxl: error: --method ddp"), result.stderr
    assert not any(tmp_path.iterdir())


def test_cli_ddp_run_writes_one_copy_that_eval_reads(tiny_city, tmp_path):
    result = nerfxl("train", "tiny", "--data", tiny_city, "--method", "ddp", "--devices", "2", "--device", "cpu",
                    "--steps", "4", "--batch-rays", "64", "--downscale", "2", "--no-progress",
                    "--output", tmp_path, "--name", "ddp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "ddp").iterdir()
    (ckpt,) = (run / "checkpoints").iterdir()
    assert sorted(p.name for p in ckpt.iterdir() if p.suffix == ".safetensors") == ["shared.safetensors",
                                                                                   "tile-000.safetensors"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 4 and state["n_tiles"] == 1 and state["trained_on_processes"] == 2
    result = nerfxl("eval", run, "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scores = json.loads((run / "eval.json").read_text())
    assert scores["step"] == 4 and math.isfinite(scores["psnr"])
