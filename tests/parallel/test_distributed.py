"""nerfxl.parallel: collectives on 1 and 3 gloo processes, and launch()'s failure handling.

Process start-up (a torch import each) dominates on two cores, so every collective is checked in a
single 3-process launch shared by several tests, and the failure tests use 2 processes.
"""

from __future__ import annotations

import multiprocessing
import time

import parallel_workers as W
import pytest
import torch
import torch.distributed as dist
from torch import nn

from nerfxl.errors import ConfigError
from nerfxl.parallel import distributed as D
from nerfxl.parallel.launch import WorkerError, launch, running_under_torchrun

WORLD = 3
FLOAT32 = 4


@pytest.fixture(autouse=True)
def no_launcher_env(monkeypatch):
    """Tests decide themselves whether they look launched by torchrun."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ranks():
    """Results of parallel_workers.everything on each of 3 gloo processes (one launch for the module)."""
    start = time.monotonic()
    results = launch(W.everything, WORLD, device="cpu", timeout_s=60, max_runtime_s=120)
    assert time.monotonic() - start < 60
    assert sorted(results) == list(range(WORLD))
    return [results[r] for r in range(WORLD)]


# -- gathers on 3 processes ---------------------------------------------------------------------------


def test_group_is_gloo_on_cpu_and_rank_0_is_main(ranks):
    assert [r["rank"] for r in ranks] == [0, 1, 2]
    assert all(r["world"] == WORLD and r["backend"] == "gloo" for r in ranks)
    assert [r["is_main"] for r in ranks] == [True, False, False]


def test_all_gather_blocks_values_are_the_concatenation(ranks):
    expected = W.all_blocks(WORLD).float()
    for r in ranks:
        assert torch.equal(r["blocks"], expected)


def test_all_gather_blocks_own_gradient_equals_single_process_gradient(ranks):
    full = W.all_blocks(WORLD).requires_grad_(True)
    loss = W.blocks_loss(full)
    loss.backward()
    for r in ranks:
        own = slice(r["rank"] * W.N_LOCAL, (r["rank"] + 1) * W.N_LOCAL)
        # Same loss everywhere, as NeRF-XL requires.
        assert r["blocks_loss"] == pytest.approx(loss.item(), rel=1e-5)
        torch.testing.assert_close(r["blocks_grad"].double(), full.grad[own], rtol=1e-4, atol=1e-5)
    # The true gradients differ per slot, so a backward that summed the other ranks' slots (what
    # torch.distributed.nn's all_gather does) could not pass the check above.
    assert not torch.allclose(full.grad[: W.N_LOCAL], full.grad[W.N_LOCAL: 2 * W.N_LOCAL])


def test_all_gather_blocks_backward_communicates_nothing(ranks):
    # The worker replaced every collective by a raising stub during backward, and the counters agree.
    assert all(r["stats_unchanged_by_backward"] for r in ranks)


def test_all_gather_variable_with_a_rank_of_zero_rows(ranks):
    rows = W.all_rows(WORLD)
    full = rows.clone().requires_grad_(True)
    W.rows_loss(full).backward()
    for r in ranks:
        assert r["row_counts"] == W.ROWS
        assert torch.equal(r["rows"], rows.float())
        assert torch.equal(r["rows_plain"], rows.float())
        assert not r["rows_plain_requires_grad"]
        start = sum(W.ROWS[: r["rank"]])
        assert r["rows_grad"].shape == (W.ROWS[r["rank"]], W.ROW)
        torch.testing.assert_close(r["rows_grad"].double(), full.grad[start: start + W.ROWS[r["rank"]]],
                                   rtol=1e-4, atol=1e-5)


def test_variable_gather_with_mismatched_rows_fails_on_every_rank(ranks):
    for r in ranks:
        assert r["mismatch_error"] is not None and "disagree" in r["mismatch_error"]


# -- reductions and broadcast on 3 processes ----------------------------------------------------------


def test_all_reduce_gradients_sums_and_treats_none_as_zero(ranks):
    # Ranks 0 and 2 hold grads 1 and 3, rank 1 none at all: the sum is 4 everywhere.
    for r in ranks:
        g = r["grads"]
        for name in ("weight", "bias", "extra64"):
            assert torch.equal(g[name], torch.full_like(g[name], 4.0)), name
        assert g["extra64"].dtype == torch.float64
        assert g["never"] is None  # nobody had a gradient: stays None, as in one process
        assert g["frozen"] is None
        assert r["grad_calls"] == 2  # one flat buffer per dtype, not one collective per tensor
        assert torch.equal(r["mean_grad"], torch.full((3,), 1.0))  # (0 + 1 + 2) / 3


def test_broadcast_makes_parameters_and_buffers_identical(ranks):
    source = ranks[0]["state_before"]
    assert not torch.equal(ranks[1]["state_before"]["0.weight"], source["0.weight"])
    for r in ranks:
        assert r["state_after"].keys() == source.keys()
        for k, v in source.items():
            assert r["state_after"][k].dtype == v.dtype
            assert torch.equal(r["state_after"][k], v), k
        assert r["params_still_leaf"]


def test_scalars(ranks):
    for r in ranks:
        assert r["scalar_sum"] == 3.0
        assert r["scalar_max"] == 2.0
        assert r["scalars_mean"] == {"a": 1.0, "b": 2.0}


def test_bytes_counters_count_payloads(ranks):
    stats = ranks[0]["stats"]
    counts = {name: {k: v for k, v in entry.items() if k != "seconds"} for name, entry in stats.items()}
    assert counts["all_gather_blocks"] == {"calls": 1, "bytes": W.N_LOCAL * W.R * W.C * FLOAT32}
    # Variable gathers: a 4 × int64 header, then this rank's rows padded to the largest count (3).
    assert counts["all_gather_variable"] == {"calls": 2, "bytes": 4 * 8 + 3 * W.ROW * FLOAT32}
    # float32: Linear(3, 2) (6 + 2) + `never` (2) + 3 flags; float64: 4 + 1 flag; then the "mean" call: 3 + 1 flag.
    f32 = (6 + 2 + 2) + 3
    assert stats["all_reduce_gradients"]["bytes"] == f32 * FLOAT32 + (4 + 1) * 8 + (3 + 1) * FLOAT32
    assert counts["all_reduce_scalar"] == {"calls": 3, "bytes": (1 + 1 + 2) * 8}
    assert ranks[0]["bytes_sent"] == sum(s["bytes"] for s in stats.values())
    assert ranks[0]["bytes_sent"] > 0


def test_counters_time_the_collectives(ranks):
    for r in ranks:
        seconds = {name: entry["seconds"] for name, entry in r["stats"].items()}
        assert all(0.0 <= s < 60.0 for s in seconds.values())
        # gloo collectives block until every peer has joined, so the time is never zero.
        assert seconds["all_gather_blocks"] > 0.0 and seconds["barrier"] > 0.0


# -- world_size 1: no process group ------------------------------------------------------------------


def test_world_size_1_needs_no_process_group_and_is_the_identity():
    ctx = D.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.group) == (0, 1, None, None)
    assert not dist.is_initialized()

    own = torch.randn(2, 4, 6, requires_grad=True)
    gathered = D.all_gather_blocks(own, ctx)
    assert gathered is own
    gathered.sum().backward()
    assert torch.equal(own.grad, torch.ones_like(own))

    rows = torch.randn(0, 3, requires_grad=True)
    assert D.all_gather_variable(rows, ctx) is rows
    plain, counts = D.all_gather_tensor(rows, ctx, return_counts=True)
    assert counts == [0] and not plain.requires_grad and plain.shape == (0, 3)

    net = nn.Linear(2, 2)
    net.weight.grad = torch.full((2, 2), 3.0)
    before = net.weight.detach().clone()
    D.all_reduce_gradients(net, ctx)
    D.broadcast_parameters(net, ctx)
    assert torch.equal(net.weight.grad, torch.full((2, 2), 3.0)) and net.bias.grad is None
    assert torch.equal(net.weight.detach(), before)
    assert D.all_reduce_scalar(2.5, ctx, op="mean") == 2.5
    D.barrier(ctx)
    assert D.is_main_process(ctx) and ctx.bytes_sent == 0
    D.shutdown(ctx)
    assert not dist.is_initialized()


def test_world_size_1_from_torchrun_env_makes_no_group(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx = D.init_distributed("cpu")
    assert ctx.world_size == 1 and ctx.group is None and not dist.is_initialized()


def test_launch_with_one_process_runs_in_this_process():
    assert launch(W.identity, 1, args=("x",), device="cpu") == {0: {"rank": 0, "world": 1, "value": "x"}}
    assert not multiprocessing.active_children()


def test_launch_under_torchrun_runs_here(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert running_under_torchrun()
    assert launch(W.identity, None, args=(5,), device="cpu") == {0: {"rank": 0, "world": 1, "value": 5}}
    with pytest.raises(ConfigError, match="WORLD_SIZE=1"):
        launch(W.identity, 2, device="cpu")


# -- configuration errors -----------------------------------------------------------------------------


def test_backend_for():
    assert D.backend_for("cpu") == "gloo"
    assert D.backend_for(torch.device("cpu")) == "gloo"
    assert D.backend_for("cuda:1") == ("nccl" if dist.is_nccl_available() else "gloo")


def test_more_processes_than_gpus_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert D.resolve_device("auto", local_rank=0, world_size=2) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="only 1 visible GPU"):
        D.resolve_device("auto", local_rank=1, world_size=2)
    with pytest.raises(ConfigError, match="only 1 visible GPU"):
        launch(W.identity, 2, device="cuda")  # refused before spawning anything
    with pytest.raises(ConfigError, match="names one GPU"):
        D.resolve_device("cuda:0", local_rank=1, world_size=2)
    assert not multiprocessing.active_children()


def test_bad_environment_and_options_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="timeout_s"):
        D.init_distributed("cpu", timeout_s=0)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        D.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        D.init_distributed("cpu")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            D.init_distributed("cuda")
    ctx = D.single_process_context("cpu")
    with pytest.raises(ConfigError, match="src"):
        D.broadcast_parameters([torch.zeros(1)], ctx, src=1)
    with pytest.raises(ConfigError, match="op"):
        D.all_reduce_gradients([], ctx, op="avg")
    with pytest.raises(ConfigError, match="nprocs"):
        launch(W.identity, None)
    with pytest.raises(ConfigError, match="picklable"):
        launch(lambda ctx: None, 2, device="cpu")
    assert not multiprocessing.active_children()


# -- launch failures: bounded, named, nobody left behind ----------------------------------------------


def test_a_rank_that_raises_is_named_and_the_others_are_stopped():
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch(W.raise_on_rank_1, 2, device="cpu", timeout_s=60, max_runtime_s=60)
    assert time.monotonic() - start < 30
    err = info.value
    assert err.rank == 1 and err.exc_type == "ValueError" and err.exitcode == 1
    assert str(err).startswith("rank 1 of 2 raised ValueError: boom from rank 1")
    assert "boom from rank 1" in err.traceback
    assert not multiprocessing.active_children()


def test_a_rank_killed_by_sigkill_ends_the_run_instead_of_hanging():
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        # A long collective timeout: only the death itself can end the run quickly.
        launch(W.sigkill_last_rank, 2, device="cpu", timeout_s=300, max_runtime_s=120)
    assert time.monotonic() - start < 30
    err = info.value
    assert err.rank == 1 and err.exitcode == -9 and err.exc_type is None
    assert "rank 1 of 2 was killed by SIGKILL" in str(err)
    assert not multiprocessing.active_children()


def test_collective_timeout_bounds_the_wait_for_a_hung_rank():
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch(W.rank_1_hangs, 2, device="cpu", timeout_s=6, max_runtime_s=120)
    elapsed = time.monotonic() - start
    assert elapsed < 30
    # Rank 0 gave up waiting in its barrier (gloo's timeout); rank 1, still sleeping, was terminated.
    assert info.value.rank == 0 and info.value.exc_type is not None
    assert info.value.still_running == [1] and "terminated rank(s) [1]" in str(info.value)
    assert not multiprocessing.active_children()
