"""Checkpoint files: atomic, verified, pickle-free; optimizer state round trip."""

import os

import pytest
import torch

from nerfxl.checkpoint import (
    latest_checkpoint,
    remove_stale_temporaries,
    list_checkpoints,
    load_checkpoint,
    load_optimizer_state_tensors,
    optimizer_state_tensors,
    save_checkpoint,
)
from nerfxl.errors import CheckpointError


def _shards(v: float):
    return {"shared": {"w": torch.full((3, 2), v)}, "tile-000": {"grid": torch.arange(5.0) * v}}


def test_round_trip_and_keep(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, _shards(step), {"step": step}, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-00000030", "step-00000040"]
    shards, state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state == {"step": 40}
    torch.testing.assert_close(shards["tile-000"]["grid"], torch.arange(5.0) * 40)
    # No temporary folders are left behind.
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_truncated_and_corrupted_shards_are_detected(tmp_path):
    path = save_checkpoint(tmp_path, 1, _shards(1.0), {"step": 1})
    shard = path / "tile-000.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-4])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_checkpoint_without_manifest_is_not_complete(tmp_path):
    path = save_checkpoint(tmp_path, 5, _shards(1.0), {"step": 5})
    os.remove(path / "manifest.json")
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(path)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, _shards(1.0), {"step": 1})
    import nerfxl.checkpoint as ck

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ck, "write_json_atomic", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 2, _shards(2.0), {"step": 2})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]


def test_missing_shard_is_named(tmp_path):
    path = save_checkpoint(tmp_path, 1, _shards(1.0), {"step": 1})
    with pytest.raises(CheckpointError, match="tile-007"):
        load_checkpoint(path, shard_names=["tile-007"])


def test_optimizer_state_round_trip_by_parameter_name():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam([{"params": list(model[0].parameters()), "lr": 0.1},
                            {"params": list(model[1].parameters()), "lr": 0.01}])
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    tensors = optimizer_state_tensors(opt, model.named_parameters())
    assert set(tensors) == {f"optim.{n}.{k}" for n, _ in model.named_parameters() for k in ("step", "exp_avg", "exp_avg_sq")}
    # Another optimizer over the parameters in another order and grouping (e.g. another set of tiles).
    opt2 = torch.optim.Adam([{"params": list(model[1].parameters())[::-1] + list(model[0].parameters()), "lr": 0.5}])
    load_optimizer_state_tensors(opt2, model.named_parameters(), tensors, "test")
    for p in model.parameters():
        for k in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt.state[p][k], opt2.state[p][k], rtol=0, atol=0)
    bad = {k: (v[:1] if v.dim() else v) for k, v in tensors.items()}
    with pytest.raises(CheckpointError, match="optimizer state 0.weight.exp_avg"):
        load_optimizer_state_tensors(opt2, model.named_parameters(), bad, "test")


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    save_checkpoint(tmp_path, 1, _shards(1.0), {"step": 1})
    stale = tmp_path / "checkpoints" / ".step-00000002.abc.tmp"
    stale.mkdir()
    (stale / "tile-000.safetensors").write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
