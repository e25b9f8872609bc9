"""`nerfxl check RUN_DIR`: verify a run folder — its configuration and every checkpoint.

For each checkpoint: the manifest is there and every file matches it (size and SHA-256), ``state.json``
reads, the shards are the ones its strategy writes (shared + one per tile, window or channel slice),
and each tile shard holds exactly the tensors, with the shapes, that the run's configuration builds.
Half-written folders a killed writer left behind are listed (training ignores and removes them). The
verdict names the checkpoint a resume would start from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nerfxl.checkpoint import CHECKPOINTS, MANIFEST, STATE, list_checkpoints, verify_checkpoint
from nerfxl.errors import CheckpointError, NerfxlError
from nerfxl.run.layout import checkpoint_strategy, expected_shards, tile_shard_name
from nerfxl.run.load import load_run_config


@dataclass
class CheckpointReport:
    path: Path
    problem: str | None = None
    files: int = 0
    bytes: int = 0
    step: int | None = None


@dataclass
class RunReport:
    run_dir: Path
    checkpoints: list[CheckpointReport] = field(default_factory=list)
    incomplete: list[Path] = field(default_factory=list)

    @property
    def resume_from(self) -> CheckpointReport | None:
        """The newest sound checkpoint (what ``--resume`` starts from)."""
        sound = [c for c in self.checkpoints if c.problem is None]
        return sound[-1] if sound else None

    @property
    def ok(self) -> bool:
        return bool(self.checkpoints) and all(c.problem is None for c in self.checkpoints)


def check_tile_shapes(path: Path, config, state: dict) -> None:
    """Every tile shard of a tiled checkpoint holds what the configuration builds (one-line error)."""
    from nerfxl.fetch.tiles import build_tile_shell, read_tile_layout, tile_state
    boxes = torch.tensor(state["tile_boxes"], dtype=torch.float32)
    if boxes.dim() != 3 or boxes.shape[0] != int(state["n_tiles"]):
        raise CheckpointError(f"{path / STATE}: tile_boxes do not hold n_tiles = {state['n_tiles']} boxes")
    for k in range(boxes.shape[0]):
        read_tile_layout(path / f"{tile_shard_name(k)}.safetensors", tile_state(*build_tile_shell(config, state, boxes, k)))


def check_checkpoint(path: Path, config) -> CheckpointReport:
    """One checkpoint's report (``problem`` None when sound)."""
    report = CheckpointReport(path)
    try:
        manifest = verify_checkpoint(path, hashes=True)
        report.files = len(manifest["files"])
        report.bytes = sum(int(m["bytes"]) for m in manifest["files"].values())
        try:
            state = json.loads((path / STATE).read_text())
            report.step = int(state["step"])
            shards = expected_shards(state)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path / STATE}: unreadable ({e})") from None
        held = {f[: -len(".safetensors")] for f in manifest["files"] if f.endswith(".safetensors")}
        if held != shards:
            missing, extra = sorted(shards - held), sorted(held - shards)
            raise CheckpointError(f"{path}: shards {'missing: ' + ', '.join(missing) if missing else ''}"
                                  f"{'; ' if missing and extra else ''}{'unexpected: ' + ', '.join(extra) if extra else ''}")
        if config is not None and not checkpoint_strategy(state).joint:  # whole tiles in their shards
            check_tile_shapes(path, config, state)
    except NerfxlError as e:
        report.problem = str(e)
    return report


def check_run(run_dir: Path) -> RunReport:
    """Check ``run_dir``'s configuration and every checkpoint (a one-line error if it is not a run)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    config = load_run_config(run_dir)  # one-line error for a missing or malformed config.yaml
    report = RunReport(run_dir)
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        complete = set(list_checkpoints(run_dir))
        report.incomplete = sorted(p for p in root.iterdir() if p.is_dir() and p not in complete
                                   and (p.name.startswith(".step-") or not (p / MANIFEST).is_file()))
        report.checkpoints = [check_checkpoint(p, config) for p in sorted(complete)]
    return report


def format_report(report: RunReport) -> list[str]:
    """The lines ``nerfxl check`` prints, one per checkpoint then the verdict."""
    lines = []
    for c in report.checkpoints:
        if c.problem is None:
            lines.append(f"  {c.path.name}  ok       {c.files} files, {c.bytes / 1e6:.1f} MB")
        else:
            lines.append(f"  {c.path.name}  DAMAGED  {c.problem}")
    for p in report.incomplete:
        lines.append(f"  {p.name}  incomplete (no manifest: a write that never finished; ignored)")
    return lines
