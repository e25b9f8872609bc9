"""The small ground-plane training config the LandMark strategy tests share (tests/parallel, tests/test_merge.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nerfxl.fields.config import GridConfig
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.run.config import TrainConfig


def landmark_config(data: Path, output: Path, strategy: str, devices: int, blocks: str | None = None,
                    **overrides) -> TrainConfig:
    """``overrides``: further TrainConfig fields (e.g. replicas, batch_rays, partitions)."""
    base = TRAIN_PRESETS["tiny"][1]
    # (9 − 1) and (17 − 1) split by 2 along x and y; 4 density and 8 appearance channels split by 4.
    grid = GridConfig(mode="ground", base_resolution=(9, 9, 5), scales=(1, 2), level_scaling="cells",
                      density_channels=4, appearance_channels=8)
    config = dataclasses.replace(
        base, data=data, output=output, progress=False, device="cpu", downscale=2.0, batch_rays=256,
        strategy=strategy, devices=devices, blocks=blocks,
        field=dataclasses.replace(base.field, grid=grid, density_shift=1.0, appearance_embedding_dim=4,
                                  pose_correction=True),
        render=dataclasses.replace(base.render, occupancy_update_every=4, occupancy_warmup_steps=4, prune_alpha_after=2),
        loss=dataclasses.replace(base.loss, total_variation=1e-4, density_l1=1e-4),
    )
    return dataclasses.replace(config, **overrides)
