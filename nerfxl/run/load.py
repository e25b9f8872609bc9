"""Reading a run back: its dataset as its configuration loads it, its saved configuration
(``config.yaml``), and a checkpoint's ``state.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nerfxl.checkpoint import latest_checkpoint, load_checkpoint
from nerfxl.configio import load_config_yaml
from nerfxl.data.dataset import Dataset
from nerfxl.errors import CheckpointError, ConfigError

from .config import TrainConfig


def resolve_data_path(config: TrainConfig) -> Path:
    """The dataset to train on: --data, or the built-in city (generated into the cache once)."""
    if config.data is not None:
        if not Path(config.data).exists():
            raise ConfigError(f"--data {config.data}: no such file or folder")
        return Path(config.data)
    from nerfxl.data.city import ensure_city

    return ensure_city(config.city_size, seed=0)


def load_split(config: TrainConfig, split: str) -> Dataset:
    """One split of the run's dataset, loaded as the run's configuration says."""
    from nerfxl.data.load import load_dataset

    data = load_dataset(resolve_data_path(config), split, downscale=config.downscale, background=config.background,
                        cache_bytes=config.image_cache_mb * 1024**2, format=config.data_format)
    if config.scene_box is not None:
        box = torch.tensor(config.scene_box, dtype=torch.float32).reshape(2, 3)
        if not bool((box[1] > box[0]).all()):
            raise ConfigError(f"--scene-box {list(config.scene_box)}: each max must exceed its min")
        data.scene_box = box
    return data


def load_run_config(run_dir: Path) -> TrainConfig:
    """A run folder's saved configuration (``config.yaml``), with one-line errors."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: not a nerfxl run folder (no config.yaml)")
    return load_config_yaml(run_dir / "config.yaml", TrainConfig)


STATE_KEYS = ("step", "n_tiles", "tile_boxes", "scene_transform", "n_train_images")
"""What every checkpoint's state.json holds (a run is loaded from them)."""


def run_checkpoint(run_dir: Path, checkpoint: Path | None = None) -> tuple[TrainConfig, Path, dict]:
    """A run's configuration, its checkpoint (default: the latest complete one) and that
    checkpoint's state.json, with one-line errors for a folder that is not a run or has none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    if (run_dir / "baseline.json").is_file() and not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: an independent baseline (baseline.json): `nerfxl eval` scores it; its models "
                              f"are run folders under {run_dir / 'models'}")
    config = load_run_config(run_dir)
    ckpt = checkpoint or latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir}: the run has no complete checkpoint yet")
    state = load_checkpoint(ckpt, shard_names=[], verify=False)[1]
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{Path(ckpt) / 'state.json'}: lacks {', '.join(missing)}")
    return config, Path(ckpt), state
