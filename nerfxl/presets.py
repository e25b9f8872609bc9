"""Named training presets (``nerfxl train PRESET``): tuned starting points per kind of scene."""

from __future__ import annotations

from nerfxl.fields.config import FieldConfig, GridConfig
from nerfxl.renderer import RenderConfig
from nerfxl.run.config import LossConfig, OptimConfig, TrainConfig

TRAIN_PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "city": (
        "Aerial city captures (the default; the built-in procedural city): plane-line VM grid on a flat box, "
        "sky background. Reaches ~25 dB on the small city within minutes on a 2-core CPU.",
        TrainConfig(
            steps=800,
            batch_rays=2048,
            field=FieldConfig(
                grid=GridConfig(mode="vm", base_resolution=(48, 48, 16), scales=(1, 2, 4), scale_z=True,
                                density_channels=8, appearance_channels=24),
                # σ starts near softplus(0) ≈ 0.7, i.e. a faint fog whose samples survive alpha
                # pruning from the first step, so pruning can run from step 0.
                density_shift=0.0,
                background="sky",
            ),
            render=RenderConfig(samples_per_diagonal=512, occupancy_resolution=128, prune_alpha_after=0),
            optim=OptimConfig(lr_grid=0.02, lr_mlp=2e-3),
            loss=LossConfig(distortion=1e-3),
            eval_every=400,
            checkpoint_every=400,
        ),
    ),
    "lego": (
        "Object-centric Blender scenes (white background): plane-line VM grid, 192³ at the finest level. "
        "Reaches ~27.7 dB on lego in 5 minutes and ~29.4 dB in 20 on a 2-core CPU (docs/benchmarks.md).",
        TrainConfig(
            steps=15000,
            # Many cheap steps beat fewer large ones on a CPU: 1024 rays and a marching step of the
            # box diagonal / 256 train 5× the steps per second of 2048 rays at a step of half that,
            # and reach a higher PSNR at every time mark (docs/benchmarks.md).
            batch_rays=1024,
            field=FieldConfig(
                # 48/96/192 nodes: +1.1 dB over 32/64/128 at 20 minutes and +1.3 dB at 5, for the
                # same steps per second (a step's cost follows the samples, not the plane sizes).
                grid=GridConfig(mode="vm", base_resolution=(48, 48, 48), scales=(1, 2, 4),
                                density_channels=8, appearance_channels=24),
                density_shift=0.0,  # see "city": pruning can start at step 0
                background="white",
            ),
            render=RenderConfig(samples_per_diagonal=256, occupancy_resolution=128, prune_alpha_after=0),
            eval_every=5000,
            checkpoint_every=5000,
        ),
    ),
    "hash": (
        "Instant-NGP multiresolution hash grid per tile (the NeRF-XL paper's model); best on a GPU.",
        TrainConfig(
            steps=5000,
            batch_rays=4096,
            field=FieldConfig(grid=GridConfig(type="hash"), feature_dim=15, feature_frequencies=0, background="white"),
            render=RenderConfig(samples_per_diagonal=1024, occupancy_resolution=128),
            optim=OptimConfig(lr_grid=1e-2, lr_mlp=1e-2),
        ),
    ),
    "scaling-law": (
        "A deliberately capacity-starved tile (one 8x8x4 plane-line level, about 2.4 k grid parameters) "
        "for NeRF-XL's scaling law on the small city: one tile plateaus near 21 dB, so K tiles measure "
        "capacity, and every run converges in minutes on a 2-core CPU (nerfxl bench scaling --preset "
        "scaling-law).",
        TrainConfig(
            steps=3000,
            batch_rays=1024,
            city_size="small",
            field=FieldConfig(
                # One coarse level, few channels: the grid, not the shared decoder, bounds what a tile
                # can represent (the decoder's ~20 k parameters are the same at every K).
                grid=GridConfig(mode="vm", base_resolution=(8, 8, 4), scales=(1,), density_channels=4,
                                appearance_channels=12),
                density_shift=0.0,
                background="sky",
            ),
            render=RenderConfig(samples_per_diagonal=256, occupancy_resolution=128, prune_alpha_after=0),
            optim=OptimConfig(lr_grid=0.02, lr_mlp=2e-3),
            loss=LossConfig(distortion=1e-3),
            plateau_window=200,
            plateau_min_gain=0.05,
            eval_every=0,
            checkpoint_every=1000,
        ),
    ),
    "tiny": (
        "A very small model for smoke tests and the test suite (seconds per hundred steps).",
        TrainConfig(
            steps=100,
            batch_rays=1024,
            city_size="tiny",
            field=FieldConfig(
                grid=GridConfig(mode="vm", base_resolution=(16, 16, 8), scales=(1, 2), density_channels=4,
                                appearance_channels=8),
                decoder_width=32,
                background="sky",
                sky_width=16,
                sky_depth=1,
            ),
            render=RenderConfig(samples_per_diagonal=256, occupancy_resolution=32, occupancy_warmup_steps=32),
            eval_every=0,
            checkpoint_every=50,
            eval_views=2,
        ),
    ),
}
