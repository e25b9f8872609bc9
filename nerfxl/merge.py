"""``nerfxl merge`` and ``nerfxl split``: one model ⇄ its plane-parallel or channel-parallel parts, exactly.

A plane-parallel run's checkpoint holds one shard per sub-plane window and a channel-parallel run's one
per channel slice, each with the replicated parts (lines, heads, occupancy) and the optimizer moments of
what it holds. Merging stitches the windows (shared borders must agree) or concatenates the channels,
moments included, into one ordinary single-tile run that renders, evaluates and resumes training on one
process like any other. Splitting cuts a single ground-plane run into NX × NY windows (e.g. for plane
parallel training on NX·NY processes, or for streaming blocks). split → merge is the identity.

Both write a *new* run folder (default: next to the source, suffixed ``-merged`` / ``-split-NXxNY``) and
never touch the source.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from nerfxl.checkpoint import load_checkpoint, save_checkpoint
from nerfxl.configio import save_config_yaml
from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_line import level_resolutions
from nerfxl.fields.grid_plane_window import PlaneSplit, split_grid_state
from nerfxl.run.layout import TILE_PLAN_FILE, checkpoint_strategy, saved_strategy
from nerfxl.run.load import run_checkpoint
from nerfxl.run.parts import read_merged_tile
from nerfxl.run.strategies import strategy_named

TILES, PLANE = strategy_named("tiles"), strategy_named("plane")  # what merge and split write


def _default_output(run_dir: Path, suffix: str) -> Path:
    out = run_dir.with_name(run_dir.name + suffix)
    i = 1
    while out.exists():
        out = run_dir.with_name(f"{run_dir.name}{suffix}-{i}")
        i += 1
    return out


def _write_run(source: Path, output: Path, config, step: int, shards: dict, state: dict) -> Path:
    """A new run folder: config, checkpoint; any tile plan copied. Refuses to overwrite anything."""
    if output.exists():
        raise ConfigError(f"{output}: already exists; choose another --output")
    output.mkdir(parents=True)
    try:
        save_config_yaml(output / "config.yaml", config)
        if (source / TILE_PLAN_FILE).is_file():
            shutil.copy2(source / TILE_PLAN_FILE, output / TILE_PLAN_FILE)
        save_checkpoint(output, step, shards, state, keep=1)
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)  # nothing half-written is left behind
        raise
    return output


def merge_run(run_dir: Path, output: Path | None = None) -> Path:
    """Merge a plane- or channel-parallel run's latest checkpoint into a single-process run folder."""
    run_dir = Path(run_dir)
    config, ckpt, state = run_checkpoint(run_dir)
    strategy = saved_strategy(state)
    if not checkpoint_strategy(state).joint:
        raise ConfigError(f"{run_dir}: a {strategy['name']} run has no parts to merge (merge joins the sub-planes of "
                          f"--strategy plane or the channel slices of --strategy channel)")
    tile = read_merged_tile(ckpt, strategy)
    shards, _ = load_checkpoint(ckpt, shard_names=["shared"])
    merged_config = dataclasses.replace(config, strategy=TILES.name, blocks=None, devices=1, resume=None)
    merged_state = dict(state, strategy={"name": TILES.name, "parts": 1, "blocks": None}, trained_on_processes=1,
                        merged_from=str(run_dir))
    out = Path(output) if output else _default_output(run_dir, "-merged")
    return _write_run(run_dir, out, merged_config, int(state["step"]),
                      {"shared": shards["shared"], TILES.shard_name(0): tile}, merged_state)


def split_run(run_dir: Path, blocks: str, output: Path | None = None) -> Path:
    """Cut a single ground-plane run's latest checkpoint into NX × NY plane windows (a plane-parallel run
    for NX·NY processes; the moments are cut too, so training continues exactly)."""
    run_dir = Path(run_dir)
    split = PlaneSplit.parse(blocks)
    config, ckpt, state = run_checkpoint(run_dir)
    if checkpoint_strategy(state) is not TILES or int(state["n_tiles"]) != 1:
        raise ConfigError(f"{run_dir}: split cuts a single model (one tile); this run has {state['n_tiles']} tiles "
                          f"and strategy {saved_strategy(state)['name']} (merge it first if it is plane or channel parallel)")
    g = config.field.grid
    if g.type != "plane-line" or g.mode != "ground":
        raise ConfigError(f"{run_dir}: split cuts a ground plane; this run's grid is {g.type} ({g.mode})")
    res = state.get("tiles", {}).get("0", {}).get("grid_resolution") or list(g.base_resolution)
    split.check_resolutions(level_resolutions(res, g.scales, g.scale_z, g.level_scaling))
    shards, _ = load_checkpoint(ckpt, shard_names=["shared", TILES.shard_name(0)])
    tile = shards[TILES.shard_name(0)]
    grid_part = {n: t for n, t in tile.items() if _is_grid_entry(n)}
    rest = {n: t for n, t in tile.items() if not _is_grid_entry(n)}
    out_shards = {"shared": shards["shared"]}
    for index in range(split.parts):
        out_shards[PLANE.shard_name(0, index)] = {**rest, **split_grid_state(grid_part, split, index)}
    split_config = dataclasses.replace(config, strategy=PLANE.name, blocks=str(split), devices=split.parts, resume=None)
    split_state = dict(state, strategy={"name": PLANE.name, "parts": split.parts, "blocks": str(split)},
                       trained_on_processes=split.parts, split_from=str(run_dir))
    out = Path(output) if output else _default_output(run_dir, f"-split-{split}")
    return _write_run(run_dir, out, split_config, int(state["step"]), out_shards, split_state)


def _is_grid_entry(name: str) -> bool:
    return name.startswith("grid.") or name.startswith("optim.grid.")
