"""Running the independent baselines from the command line: ``nerfxl train --method
independent-2d|independent-3d`` trains one, ``nerfxl eval RUN`` scores it (a baseline folder is
recognised by its ``baseline.json``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from nerfxl.baselines.block_nerf import BASELINE_FILE
from nerfxl.errors import CheckpointError, ConfigError, DataError
from nerfxl.fileio import write_json_atomic
from nerfxl.partition.plan import TilePlan, plan_tiles
from nerfxl.run.config import TrainConfig
from nerfxl.run.layout import new_run_dir
from nerfxl.run.load import load_split, resolve_data_path

INDEPENDENT_METHODS = ("independent-2d", "independent-3d")


def train_baseline(config: TrainConfig) -> Path:
    """Train ``config.method``'s K = ``config.partitions`` independent models into a new run folder.

    Each model is an ordinary one-tile run trained with the rest of ``config`` (same steps and
    batch for every model).
    """
    if config.resume is not None:
        raise ConfigError(f"--resume is not supported for --method {config.method}; train a new baseline")
    if config.devices != 1:
        raise ConfigError(f"--method {config.method} trains its models one after another on one process "
                          f"(--devices 1, got {config.devices})")
    run_dir = new_run_dir(config, resolve_data_path(config))
    model_config = dataclasses.replace(config, method="nerfxl", partitions=1)
    if config.method == "independent-2d":
        from nerfxl.baselines.block_nerf import train_independent_2d
        from nerfxl.baselines.clustering import DEFAULT_CLUSTER_OVERLAP

        overlap = DEFAULT_CLUSTER_OVERLAP if config.baseline_overlap is None else config.baseline_overlap
        return train_independent_2d(model_config, config.partitions, run_dir, overlap=overlap)
    if config.method == "independent-3d":
        from nerfxl.baselines.mega_nerf import DEFAULT_OVERLAP, train_independent_3d

        overlap = DEFAULT_OVERLAP if config.baseline_overlap is None else config.baseline_overlap
        train_data = load_split(model_config, "train")
        try:
            test_data = load_split(model_config, "test")
        except DataError:
            test_data = None
        boxes = tile_plan_for(config, train_data).boxes
        train_independent_3d(model_config, boxes, run_dir, overlap=overlap, train_data=train_data, test_data=test_data)
        return run_dir
    raise ConfigError(f"--method {config.method} is not an independent baseline")


def tile_plan_for(config: TrainConfig, train_data) -> TilePlan:
    """The tiles NeRF-XL would train with the same options (--tile-plan, or planned like the trainer)."""
    if config.tile_plan is not None:
        plan = TilePlan.load(config.tile_plan)
        if plan.k != config.partitions:
            raise ConfigError(f"{config.tile_plan}: the plan has {plan.k} tiles but --partitions is {config.partitions}")
        return plan
    return plan_tiles(train_data, config.partitions, config.partition_method, seed=config.seed)


def baseline_method(run_dir: Path) -> str | None:
    """The method of a baseline folder, or None for an ordinary run folder."""
    path = Path(run_dir) / BASELINE_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["method"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable baseline description ({e})") from None


def evaluate_baseline(run_dir: Path, split: str = "test", limit: int | None = None, device: str = "auto",
                      output: Path | None = None) -> dict:
    """Score a baseline folder on a split (writes its eval.json)."""
    method = baseline_method(run_dir)
    if method == "independent-2d":
        from nerfxl.baselines.block_nerf import evaluate_independent_2d

        result = evaluate_independent_2d(run_dir, split=split, limit=limit, device=device, output=output)
        result.setdefault("step", result.get("steps_per_model"))
        return result
    if method == "independent-3d":
        from nerfxl.baselines.mega_nerf_render import evaluate_independent_3d

        result = evaluate_independent_3d(run_dir, split=split, limit=limit, device=device)
        if output is not None:
            write_json_atomic(Path(output), result)
            result["output"] = str(output)
        result.setdefault("method", method)
        result.setdefault("output", str(Path(run_dir) / "eval.json"))
        return result
    raise CheckpointError(f"{run_dir}: {BASELINE_FILE} names method {method!r}, which this nerfxl cannot evaluate")
