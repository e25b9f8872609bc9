"""Checkpoints: safetensors shards + JSON, written atomically, verified on load.

Layout of one checkpoint (a folder under ``RUN_DIR/checkpoints/``)::

    step-00001000/
        shared.safetensors      modules shared by all tiles (decoder, embeddings, ...)
        tile-000.safetensors    one shard per tile, named by tile (not by process), so the
        tile-001.safetensors    files of a run do not depend on how many devices trained it
        optimizer.safetensors   optimizer tensors (its JSON part goes into state.json)
        state.json              step, resolutions, RNG and sampler state, optimizer metadata
        manifest.json           written last: file sizes and SHA-256 of everything above

A checkpoint folder is first written under a temporary name and renamed into place, so a killed
writer never leaves a folder that looks complete; ``manifest.json`` is the completeness mark.
No pickle anywhere: tensors go through safetensors, everything else through JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from nerfxl.errors import CheckpointError
from nerfxl.fileio import write_json_atomic

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
STATE = "state.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(run_dir: Path, step: int, shards: dict[str, dict[str, Tensor]], state: dict[str, Any], keep: int = 3) -> Path:
    """Write one checkpoint atomically and drop all but the newest ``keep`` complete ones.

    Args:
        run_dir: the run folder.
        step: the training step the checkpoint holds (the next step to run is ``step``).
        shards: shard name → flat dict of tensors; each becomes ``<name>.safetensors``.
        state: JSON-serialisable metadata (saved as ``state.json``).
        keep: how many complete checkpoints to keep (older ones are deleted after this one lands).
    Returns:
        The checkpoint folder.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        files: dict[str, dict[str, Any]] = {}
        for name, tensors in shards.items():
            path = tmp / f"{name}.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
            files[path.name] = {}
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        files[STATE] = {}
        for fname in files:
            p = tmp / fname
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            files[fname] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        write_json_atomic(tmp / MANIFEST, {"step": step, "files": files})
        if final.exists():  # re-saving a step (e.g. after a resume): swap, never delete first
            trash = root / f".{final.name}.old"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a manifest), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def verify_checkpoint(path: Path, hashes: bool = True) -> dict[str, Any]:
    """Check every file against the manifest; return the manifest. Raises CheckpointError."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        entries = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {MANIFEST})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / MANIFEST}: unreadable manifest ({e})") from None
    for fname, meta in entries.items():
        p = path / fname
        if not p.is_file():
            raise CheckpointError(f"{p}: missing from checkpoint")
        if p.stat().st_size != meta["bytes"]:
            raise CheckpointError(f"{p}: size {p.stat().st_size} bytes, manifest says {meta['bytes']} (truncated or replaced)")
        if hashes and _sha256(p) != meta["sha256"]:
            raise CheckpointError(f"{p}: contents do not match the manifest's SHA-256 (corrupted)")
    return manifest


def load_checkpoint(path: Path, shard_names: list[str] | None = None, verify: bool = True) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read a checkpoint's shards (all, or ``shard_names``) and its state.

    Returns:
        (shards, state): shard name → tensors, and the ``state.json`` contents.
    """
    path = Path(path)
    manifest = verify_checkpoint(path, hashes=verify)
    names = [f[: -len(".safetensors")] for f in manifest["files"] if f.endswith(".safetensors")]
    if shard_names is not None:
        missing = sorted(set(shard_names) - set(names))
        if missing:
            raise CheckpointError(f"{path}: has no shard(s) {', '.join(missing)} (it holds {', '.join(sorted(names))})")
        names = list(shard_names)
    shards = {}
    for name in names:
        try:
            shards[name] = load_file(str(path / f"{name}.safetensors"))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path / (name + '.safetensors')}: cannot be read ({e})") from None
    state = json.loads((path / STATE).read_text())
    return shards, state


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON metadata."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    """The global torch CPU RNG state as JSON-friendly data (training draws from it rarely)."""
    return {"torch_cpu": torch.get_rng_state().tolist()}


def set_rng_state(state: dict[str, Any]) -> None:
    if "torch_cpu" in state:
        torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
