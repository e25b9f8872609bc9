"""LandMark's plane, channel and branch parallel on D gloo processes train exactly the one-process model.

The reference is an ordinary one-tile ground-plane model trained in this process (strategy "tiles",
D = 1). Plane parallel on 2 (2x1) and 4 (2x2) processes and channel parallel on 2 and 4 must follow its
loss trajectory, end with its parameters once the parts are merged (sub-planes stitched, channels
concatenated), and see its gradients at steps 0, 3 and 7 — with pose corrections, an appearance
embedding, total variation and density L1 switched on, so every kind of parameter and every gradient
path is exercised (positions → pose, shared borders, replicated lines and heads, per-slice regularisers).

Branch parallel (2 × 2 blocks on 2 processes, K/D = 2 blocks each) is compared with the multi-branch
model in one process the same way.

Hybrid model × data parallel: 2 replicas × 2-way plane parallel (and × NeRF-XL's 2 tiles) on 4
processes, 256 rays per replica, equal 2-way model parallel with 512 rays — losses, gradients and
parameters, per model part — and both replicas end bit-identical; replica 0 alone writes the checkpoint.

Negative control: plane parallel without the border-gradient sum trains each copy of a shared border on
its own, and the merge then finds the copies disagree.

Tolerances (float32; seen: losses ≤ 2e-10 relative, parameters ≤ 1e-7): losses 1e-6 relative,
parameters 1e-5 absolute, gradients 1e-4 of the largest reference value.
"""

from __future__ import annotations

import json

import landmark_workers as W
import pytest
import torch

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_window import PlaneSplit, merge_grid_states
from nerfxl.parallel.channel_parallel import merge_channel_states
from nerfxl.parallel.launch import launch
from test_landmark_strategies_config import landmark_config

STEPS = 8
GRAD_STEPS = (0, 3, 7)
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RUN_ID")


JOBS = {  # name: (strategy, D, blocks, broken)
    "plane_2x2": ("plane", 4, "2x2", None),
    "channel_4": ("channel", 4, None, None),
    "plane_2x1": ("plane", 2, "2x1", None),
    "channel_2": ("channel", 2, None, None),
    "plane_2x2_no_border_sync": ("plane", 4, "2x2", "no-border-sync"),
    "branch_2x2_D2": ("branch", 2, "2x2", None),
}
HYBRID = {  # name: (strategy, D, blocks, further config, the 2-way model-parallel twin with twice the batch)
    "plane_2x1_x2": ("plane", 4, "2x1", {"replicas": 2}, "plane_2x1_512_rays"),
    "tiles_K2_x2": ("tiles", 4, None, {"replicas": 2, "partitions": 2}, "tiles_K2_512_rays"),
    "plane_2x1_512_rays": ("plane", 2, "2x1", {"batch_rays": 512}, None),
    "tiles_K2_512_rays": ("tiles", 2, None, {"batch_rays": 512, "partitions": 2}, None),
}


@pytest.fixture(scope="module")
def runs(tiny_city, tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("landmark-training")
    jobs = []
    for name, (strategy, d, blocks, broken) in JOBS.items():
        jobs.append({"name": name, "config": landmark_config(tiny_city, out / "output", strategy, d, blocks),
                     "run_dir": str(out / name), "steps": STEPS, "grad_steps": GRAD_STEPS, "ranks": list(range(d)),
                     "broken": broken})
    for name, (strategy, d, blocks, more, _) in HYBRID.items():
        jobs.append({"name": name, "config": landmark_config(tiny_city, out / "output", strategy, d, blocks, **more),
                     "run_dir": str(out / name), "steps": STEPS, "grad_steps": GRAD_STEPS, "ranks": list(range(d)),
                     "save": True})
    with pytest.MonkeyPatch.context() as mp:
        for name in LAUNCHER_ENV:
            mp.delenv(name, raising=False)
        per_rank = launch(W.run_jobs, 4, args=(jobs,), device="cpu", timeout_s=120, max_runtime_s=400)
    sizes = {name: spec[1] for name, spec in [*JOBS.items(), *HYBRID.items()]}
    results = {name: [per_rank[r][name] for r in range(d)] for name, d in sizes.items()}
    results["run_dirs"] = {name: out / name for name in HYBRID}
    results["reference"] = [W.train_here({"config": landmark_config(tiny_city, out / "output", "tiles", 1),
                                          "run_dir": str(out / "reference"), "steps": STEPS,
                                          "grad_steps": GRAD_STEPS})]
    results["branch_2x2_D1"] = [W.train_here({"config": landmark_config(tiny_city, out / "output", "branch", 1, "2x2"),
                                              "run_dir": str(out / "branch_D1"), "steps": STEPS})]
    return results


def merged(ranks: list[dict], strategy: str, blocks: str | None, key: str = "tile", step: int | None = None) -> dict:
    parts = [r[key] if step is None else r[key][step] for r in ranks]
    if strategy == "plane":
        return merge_grid_states(parts, PlaneSplit.parse(blocks), "test")
    return merge_channel_states(parts, "test")


@pytest.mark.parametrize("name", ["plane_2x2", "plane_2x1", "channel_4", "channel_2"])
def test_strategy_trains_exactly_the_one_process_model(runs, name):
    strategy, d, blocks, _ = JOBS[name]
    ranks, ref = runs[name], runs["reference"][0]
    for r in ranks:
        torch.testing.assert_close(torch.tensor(r["losses"], dtype=torch.float64),
                                   torch.tensor(ref["losses"], dtype=torch.float64), rtol=1e-6, atol=0,
                                   msg=lambda m: f"{name} rank {r['rank']} losses: {m}")
    tile = merged(ranks, strategy, blocks)
    assert sorted(tile) == sorted(ref["tile"])
    for n, want in ref["tile"].items():
        torch.testing.assert_close(tile[n], want, rtol=0, atol=1e-5, msg=lambda m: f"{name} tile {n}: {m}")
    for r in ranks:
        for n, want in ref["shared"].items():
            torch.testing.assert_close(r["shared"][n], want, rtol=0, atol=1e-5,
                                       msg=lambda m: f"{name} rank {r['rank']} {n}: {m}")


@pytest.mark.parametrize("name", ["plane_2x2", "plane_2x1", "channel_4", "channel_2"])
def test_strategy_gradients_are_the_one_process_gradients(runs, name):
    """Adam hides a gradient off by a constant factor from the parameters: compare gradients directly."""
    strategy, _, blocks, _ = JOBS[name]
    ranks, ref = runs[name], runs["reference"][0]
    for step in GRAD_STEPS:
        grads = merged(ranks, strategy, blocks, key="grads", step=step)
        for n, want in ref["grads"][step].items():
            scale = float(want.abs().max())
            torch.testing.assert_close(grads[n], want, rtol=0, atol=1e-4 * max(scale, 1e-12),
                                       msg=lambda m: f"{name} step {step} grad {n}: {m}")


def test_replicated_parameters_stay_identical_on_every_process(runs):
    for name in ("plane_2x2", "channel_4"):
        first = runs[name][0]
        for r in runs[name][1:]:
            for n, t in first["shared"].items():
                assert torch.equal(r["shared"][n], t), f"{name}: {n} differs between rank 0 and rank {r['rank']}"


def test_without_the_border_sum_plane_parallel_drifts_and_merge_says_so(runs):
    ranks = runs["plane_2x2_no_border_sync"]
    with pytest.raises(ConfigError, match="shared border"):
        merged(ranks, "plane", "2x2")
    # The losses leave the reference's trajectory too, beyond the 1e-6 the exact runs are held to
    # (seen: 8.5e-6 after 8 steps).
    ref = torch.tensor(runs["reference"][0]["losses"], dtype=torch.float64)
    got = torch.tensor(ranks[0]["losses"], dtype=torch.float64)
    assert float(((got - ref).abs() / ref).max()) > 1e-6


def test_branch_parallel_on_2_processes_equals_the_multi_branch_model_in_one(runs):
    """Branch parallel = 2 × 2 uniform ground blocks, each its own grid, the sample exchange."""
    ref = runs["branch_2x2_D1"][0]
    assert sorted(ref["tiles"]) == [0, 1, 2, 3]
    held = {}
    for r in runs["branch_2x2_D2"]:
        torch.testing.assert_close(torch.tensor(r["losses"], dtype=torch.float64),
                                   torch.tensor(ref["losses"], dtype=torch.float64), rtol=1e-6, atol=0)
        held.update(r["tiles"])
    assert sorted(held) == [0, 1, 2, 3]
    for k, tensors in ref["tiles"].items():
        # Uniform 2 × 2 blocks over the scene's ground, each spanning the full height.
        assert float(tensors["box"][0, 2]) == float(ref["tiles"][0]["box"][0, 2])
        for n, want in tensors.items():
            torch.testing.assert_close(held[k][n], want, rtol=0, atol=1e-5, msg=lambda m: f"block {k} {n}: {m}")


def held_tensors(r: dict) -> dict:
    """A rank's tiles (or parts of them) and shared parameters at the end, flattened by name."""
    out = {f"tile-{k}.{n}": t for k, tensors in r["tiles"].items() for n, t in tensors.items()}
    out.update({f"shared.{n}": t for n, t in r["shared"].items()})
    return out


@pytest.mark.parametrize("name", ["plane_2x1_x2", "tiles_K2_x2"])
def test_hybrid_2x2_equals_2_way_model_parallel_with_twice_the_batch(runs, name):
    twin = runs[HYBRID[name][4]]
    for r in runs[name]:
        ref = twin[r["rank"] % 2]  # rank g holds part g % 2 in replica g // 2
        torch.testing.assert_close(torch.tensor(r["losses"], dtype=torch.float64),
                                   torch.tensor(ref["losses"], dtype=torch.float64), rtol=1e-6, atol=0,
                                   msg=lambda m: f"{name} rank {r['rank']} losses: {m}")
        for step in GRAD_STEPS:
            for n, want in ref["grads"][step].items():
                scale = float(want.abs().max())
                torch.testing.assert_close(r["grads"][step][n], want, rtol=0, atol=1e-4 * max(scale, 1e-12),
                                           msg=lambda m: f"{name} rank {r['rank']} step {step} grad {n}: {m}")
        held, want_all = held_tensors(r), held_tensors(ref)
        assert sorted(held) == sorted(want_all)
        for n, want in want_all.items():
            torch.testing.assert_close(held[n], want, rtol=0, atol=1e-5, msg=lambda m: f"{name} {n}: {m}")


@pytest.mark.parametrize("name", ["plane_2x1_x2", "tiles_K2_x2"])
def test_hybrid_replicas_stay_bit_identical_and_replica_0_writes_the_checkpoint(runs, name):
    ranks = runs[name]
    for part in (0, 1):
        first, second = held_tensors(ranks[part]), held_tensors(ranks[part + 2])
        for n, t in first.items():
            assert torch.equal(second[n], t), f"{name}: {n} differs between the replicas of part {part}"
    checkpoint = sorted((runs["run_dirs"][name] / "checkpoints").glob("step-*"))[-1]
    state = json.loads((checkpoint / "state.json").read_text())
    plane = name.startswith("plane")
    assert (state["replicas"], state["trained_on_processes"], state["strategy"]["parts"]) == (2, 4, 2 if plane else 1)
    want = ["shared", "tile-000-window-000", "tile-000-window-001"] if plane else ["shared", "tile-000", "tile-001"]
    assert sorted(p.name for p in checkpoint.glob("*.safetensors")) == [f"{n}.safetensors" for n in want]
