"""Checkpoints: safetensors shards + JSON, written atomically, verified on load.

Layout of one checkpoint (a folder under ``RUN_DIR/checkpoints/``)::

    step-00001000/
        shared.safetensors      modules shared by all tiles (decoder, embeddings, ...) and their
                                optimizer moments
        tile-000.safetensors    one shard per tile — weights, occupancy grid, optimizer moments —
        tile-001.safetensors    named by tile (not by process), so the files of a run do not
                                depend on how many devices trained it, and any D that divides K
                                can load them (re-sharding)
        state.json              step, tile boxes, per-tile resolutions, scene transform
        manifest.json           written last: file sizes and SHA-256 of everything above

A checkpoint folder is first written under a temporary name and renamed into place, so a killed
writer never leaves a folder that looks complete; ``manifest.json`` is the completeness mark.
With several processes each writes its own shards into the temporary folder, rank 0 collects
their sizes and hashes, writes the manifest and renames (the run folder must be on a file system
every process sees). No pickle anywhere: tensors go through safetensors, everything else JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from nerfxl.errors import CheckpointError
from nerfxl.fileio import write_json_atomic

if TYPE_CHECKING:
    from nerfxl.parallel.distributed import DistContext

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


def save_checkpoint(run_dir: Path, step: int, shards: dict[str, dict[str, Tensor]], state: dict[str, Any], keep: int = 3,
                    ctx: "DistContext | None" = None) -> Path:
    """Write one checkpoint atomically and drop all but the newest ``keep`` complete ones.

    With several processes (``ctx.world_size > 1``) every process must call this at the same step:
    each passes its own shards (names must not collide across processes); rank 0's ``state`` is
    written, with the ``"tiles"`` entries (tile id → info) of every process merged into it. A write
    that fails on any process makes every process raise, and nothing is renamed into place.

    Args:
        run_dir: the run folder.
        step: the training step the checkpoint holds (the next step to run is ``step``).
        shards: shard name → flat dict of tensors; each becomes ``<name>.safetensors``.
        state: JSON-serialisable metadata (saved as ``state.json``).
        keep: how many complete checkpoints to keep (older ones are deleted after this one lands).
        ctx: the process group; None = a single process.
    Returns:
        The checkpoint folder.
    """
    from nerfxl.parallel.distributed import all_gather_bytes, barrier, broadcast_bytes

    distributed = ctx is not None and ctx.world_size > 1
    main = not distributed or ctx.rank == 0
    root = Path(run_dir) / CHECKPOINTS
    final = root / checkpoint_name(step)
    tmp_name = b""
    if main:
        root.mkdir(parents=True, exist_ok=True)
        tmp_name = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root)).name.encode()
    if distributed:
        tmp_name = broadcast_bytes(tmp_name if main else None, ctx)
    tmp = root / tmp_name.decode()
    try:
        report: dict[str, Any] = {"files": {}, "tiles": state.get("tiles", {})}
        try:
            report["files"] = _write_shards(tmp, shards)
        except (OSError, SafetensorError) as e:  # disk full, quota, permissions: report, do not hang the others
            report["error"] = f"{tmp}: {e}"
        reports = [report] if not distributed else [json.loads(b) for b in all_gather_bytes(json.dumps(report).encode(), ctx)]
        errors = [f"rank {r}: {rep['error']}" for r, rep in enumerate(reports) if "error" in rep]
        if errors:
            raise CheckpointError(f"could not write checkpoint {final.name}: " + "; ".join(errors))
        if main:
            files: dict[str, dict[str, Any]] = {}
            tiles: dict[str, Any] = {}
            for rep in reports:
                files.update(rep["files"])
                tiles.update(rep["tiles"])
            full_state = dict(state)
            if tiles:
                full_state["tiles"] = dict(sorted(tiles.items(), key=lambda kv: int(kv[0])))
            files.update(_write_shards(tmp, {}, {STATE: json.dumps(full_state, indent=1)}))
            write_json_atomic(tmp / MANIFEST, {"step": step, "files": dict(sorted(files.items()))})
            _rename_into_place(tmp, final)
    finally:
        if main and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if main:
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    if distributed:
        barrier(ctx)  # nobody moves on (or reads the checkpoint) before it is in place
    return final


def _write_shards(folder: Path, shards: dict[str, dict[str, Tensor]], texts: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Write shards (and text files) into ``folder``, fsync them; returns {file: {bytes, sha256}}."""
    written = []
    for name, tensors in shards.items():
        path = folder / f"{name}.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
        written.append(path)
    for fname, text in (texts or {}).items():
        (folder / fname).write_text(text)
        written.append(folder / fname)
    entries = {}
    for p in written:
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        entries[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    return entries


def _rename_into_place(tmp: Path, final: Path) -> None:
    if final.exists():  # re-saving a step (e.g. after a resume): swap, never delete first
        trash = final.parent / f".{final.name}.old"
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete checkpoint folders a killed writer left half-written (hidden ``.step-*`` folders).

    Only safe when nobody is writing checkpoints into ``run_dir``: call it as a run starts.
    """
    root = Path(run_dir) / CHECKPOINTS
    stale = [p for p in root.glob(".step-*") if p.is_dir()] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


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


def newest_sound_checkpoint(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint whose every file matches its manifest (sizes and SHA-256), and the
    newer ones skipped on the way with why (one line each): what a resume falls back to."""
    skipped = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path, hashes=True)
            read_state(path)
        except CheckpointError as e:
            skipped.append((path, str(e)))
            continue
        return path, skipped
    return None, skipped


def verify_checkpoint(path: Path, hashes: bool = True, files: Iterable[str] | None = None) -> dict[str, Any]:
    """Check every file (or only ``files``) against the manifest; return the manifest. Raises CheckpointError."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        entries = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {MANIFEST})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / MANIFEST}: unreadable manifest ({e})") from None
    wanted = None if files is None else set(files)
    for fname, meta in entries.items():
        if wanted is not None and fname not in wanted:
            continue
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
    manifest = verify_checkpoint(path, hashes=False)
    names = [f[: -len(".safetensors")] for f in manifest["files"] if f.endswith(".safetensors")]
    if shard_names is not None:
        missing = sorted(set(shard_names) - set(names))
        if missing:
            raise CheckpointError(f"{path}: has no shard(s) {', '.join(missing)} (it holds {', '.join(sorted(names))})")
        names = list(shard_names)
    if verify:  # hash only what this process reads: K tiles × D readers would hash everything D times
        verify_checkpoint(path, hashes=True, files=[f"{n}.safetensors" for n in names] + [STATE])
    shards = {}
    for name in names:
        try:
            shards[name] = load_file(str(path / f"{name}.safetensors"))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path / (name + '.safetensors')}: cannot be read ({e})") from None
    return shards, read_state(path)


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json`` (one-line CheckpointError when unreadable or not an object)."""
    try:
        state = json.loads((Path(path) / STATE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{Path(path) / STATE}: unreadable state ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{Path(path) / STATE}: expected a JSON object")
    return state


OPTIMIZER_PREFIX = "optim."


def optimizer_state_tensors(optimizer: torch.optim.Optimizer, named_params: Iterable[tuple[str, Tensor]]) -> dict[str, Tensor]:
    """The optimizer's per-parameter state of ``named_params`` as ``optim.<name>.<key>`` tensors.

    Keyed by parameter *name*, not by position in the optimizer, so the state of a tile can be saved
    with the tile and loaded into an optimizer built over any other set of tiles.
    """
    out: dict[str, Tensor] = {}
    for name, p in named_params:
        for key, value in optimizer.state.get(p, {}).items():
            if not isinstance(value, Tensor):
                value = torch.tensor(value, dtype=torch.float64)
            out[f"{OPTIMIZER_PREFIX}{name}.{key}"] = value
    return out


def load_optimizer_state_tensors(optimizer: torch.optim.Optimizer, named_params: Iterable[tuple[str, Tensor]],
                                 tensors: dict[str, Tensor], where: str) -> None:
    """Inverse of :func:`optimizer_state_tensors`; parameters without saved state start fresh.

    Raises:
        CheckpointError: a saved moment has another shape than its parameter.
    """
    by_name: dict[str, dict[str, Tensor]] = {}
    for full, value in tensors.items():
        if full.startswith(OPTIMIZER_PREFIX):
            name, key = full[len(OPTIMIZER_PREFIX):].rsplit(".", 1)
            by_name.setdefault(name, {})[key] = value
    for name, p in named_params:
        saved = by_name.get(name)
        if not saved:
            continue
        state = {}
        for key, value in saved.items():
            if value.dim() > 0 and tuple(value.shape) != tuple(p.shape):
                raise CheckpointError(f"{where}: optimizer state {name}.{key} is {list(value.shape)}, "
                                      f"the parameter is {list(p.shape)}")
            # Moments live with the parameter; Adam keeps its step counter on the CPU.
            state[key] = value.to(p.device) if value.dim() > 0 else value.to(torch.float32)
        optimizer.state[p] = state


def without_optimizer_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
