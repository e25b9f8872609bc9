"""Training one radiance field (K tiles in one process): config, setup, loop, checkpoints, resume.

The batch of step ``s`` depends only on (seed, s), occupancy refreshes and sample jitter draw from
generators seeded the same way, so a resumed run draws exactly what the uninterrupted run would
have drawn.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Optional

import torch
from torch import Tensor

from nerfxl.checkpoint import (
    checkpoint_name,
    flatten_optimizer_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer_state,
)
from nerfxl.configio import load_config_yaml, save_config_yaml
from nerfxl.data.dataset import Dataset
from nerfxl.data.rays import RayBundle, generate_rays
from nerfxl.data.sampler import RayBatch, RayBatchSampler, generator_for
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import CheckpointError, ConfigError, DataError, NerfxlError
from nerfxl.fields.config import FieldConfig, build_radiance_field
from nerfxl.renderer import RenderConfig, TiledRenderer

CitySize = Literal["tiny", "small", "medium", "large"]


@dataclass
class OptimConfig:
    """Adam with separate learning rates for feature grids and MLPs, decayed exponentially."""

    lr_grid: float = 0.02
    """Learning rate of feature-grid parameters (planes, lines, hash tables)."""
    lr_mlp: float = 2e-3
    """Learning rate of MLPs, heads, embeddings and the background model."""
    lr_pose: float = 1e-4
    """Learning rate of per-image pose corrections (when enabled)."""
    lr_final_fraction: float = 0.1
    """Learning rates decay exponentially to this fraction of their start by the last step."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up at the start."""
    eps: float = 1e-15
    """Adam epsilon (small, as in Instant-NGP: sparse grid gradients)."""


@dataclass
class LossConfig:
    """Weights of the loss terms (0 switches a term off)."""

    distortion: float = 1e-3
    """Mip-NeRF 360 distortion loss (mean over rays)."""
    total_variation: float = 0.0
    """Total variation of plane-line grids."""
    density_l1: float = 0.0
    """L1 of density grid features (plane-line grids)."""
    depth: float = 0.0
    """L1 between rendered and dataset depth, where the dataset has depth."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.yaml`` in the run folder."""

    data: Optional[Path] = None
    """Dataset folder or JSON file; none = the built-in procedural city (generated on first use)."""
    data_format: Optional[Literal["nerfstudio", "blender", "colmap", "mega-nerf", "matrixcity"]] = None
    """Dataset format; none = detected from the folder's layout."""
    scene_box: Optional[tuple[float, float, float, float, float, float]] = None
    """Scene bounds xmin ymin zmin xmax ymax zmax in dataset units; none = the dataset's own box
    (from its points or cameras; worth setting for Mega-NeRF / MatrixCity captures)."""
    city_size: CitySize = "small"
    """Size of the built-in city when no --data is given."""
    output: Path = Path("outputs")
    """Runs land in OUTPUT/NAME/TIMESTAMP/."""
    name: Optional[str] = None
    """Experiment name (default: the dataset folder's name)."""
    steps: int = 3000
    """Training steps."""
    seed: int = 0
    """Seed of ray batches, sample jitter and initialisation: a seed makes a run repeatable."""
    batch_rays: int = 4096
    """Rays per step."""
    downscale: float = 1.0
    """Train on images downscaled by this factor."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour that transparent dataset pixels are composited onto (Blender scenes)."""
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    """The radiance field."""
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    """Sampling and rendering."""
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    """Loss weights."""
    grid_upsample_steps: tuple[int, ...] = ()
    """Steps at which plane-line grids grow in resolution (the optimizer restarts for grids)."""
    grid_final_resolution: tuple[int, int, int] = (0, 0, 0)
    """Base resolution reached at the last upsample step (0 = unchanged)."""
    eval_every: int = 1000
    """Steps between evaluations on held-out views (0 = only at the end)."""
    eval_views: int = 4
    """Held-out views rendered at each periodic evaluation."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (and one at the end)."""
    keep_checkpoints: int = 3
    """Complete checkpoints kept on disk."""
    log_every: int = 25
    """Steps between TensorBoard scalars."""
    device: str = "auto"
    """"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"."""
    image_cache_mb: int = 2048
    """Bound of the decoded-image cache per split."""
    progress: bool = True
    """Show a progress bar."""
    resume: Optional[Path] = None
    """Continue this run folder from its latest checkpoint, with its saved configuration."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


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


def run_name(config: TrainConfig, data_path: Path) -> str:
    if config.name:
        return config.name
    p = data_path if data_path.is_dir() else data_path.parent
    return p.name or "run"


def exponential_lr(step: int, total: int, final_fraction: float, warmup: int) -> float:
    """Learning-rate multiplier at ``step``."""
    factor = final_fraction ** (min(step, total) / max(total, 1))
    if warmup > 0 and step < warmup:
        factor *= (step + 1) / warmup
    return factor


class Trainer:
    """Holds a run: datasets, renderer (field + occupancy), optimizer, run folder.

    Args:
        config: the run's configuration.
        run_dir: the run folder; created if needed.
        train_data / test_data: loaded splits (None = loaded from ``config``).
    """

    def __init__(self, config: TrainConfig, run_dir: Path, train_data: Dataset | None = None, test_data: Dataset | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        if train_data is None:
            train_data = load_split(config, "train")
            try:
                test_data = load_split(config, "test")
            except DataError:
                test_data = None  # a dataset without a test split still trains; eval says so
        self.train_data = train_data
        self.test_data = test_data
        self.transform = SceneTransform.fit_box(train_data.scene_box)
        self.scene_box = self.transform.box(train_data.scene_box.double()).float()
        self.train_cameras = self.transform.cameras(train_data.cameras).to(self.device)
        self.test_cameras = None if test_data is None else self.transform.cameras(test_data.cameras).to(self.device)

        torch.manual_seed(config.seed)
        tile_boxes = self.scene_box[None]  # one tile: the single-device model
        field_module = build_radiance_field(config.field, tile_boxes, n_images=len(train_data), seed=config.seed)
        self.renderer = TiledRenderer(field_module, self.scene_box, config.render).to(self.device)
        self.sampler = RayBatchSampler(train_data, config.batch_rays, config.seed)
        self.optimizer = self._build_optimizer()
        self.step = 0

    # ----------------------------------------------------------------- optimisation
    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        groups = []
        lrs = {"grids": o.lr_grid, "mlps": o.lr_mlp, "appearance": o.lr_mlp, "pose": o.lr_pose}
        for name, params in self.renderer.field.parameter_groups().items():
            params = [p for p in params if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lrs[name], "name": name, "base_lr": lrs[name]})
        # foreach: one fused kernel per group instead of a Python loop over tensors (CPU too).
        return torch.optim.Adam(groups, eps=o.eps, foreach=True)

    def _set_lr(self, step: int) -> None:
        o = self.config.optim
        factor = exponential_lr(step, self.config.steps, o.lr_final_fraction, o.warmup_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor

    def _maybe_upsample(self, step: int) -> None:
        c = self.config
        if step not in c.grid_upsample_steps or not any(c.grid_final_resolution):
            return
        i = sorted(c.grid_upsample_steps).index(step) + 1
        n = len(c.grid_upsample_steps)
        start = c.field.grid.base_resolution
        # Geometric growth in voxel count from the starting to the final resolution.
        res = tuple(int(round(s * (f / s) ** (i / n))) for s, f in zip(start, c.grid_final_resolution))
        for tile in self.renderer.field.tiles:
            if hasattr(tile.grid, "resize"):
                tile.grid.resize(res)
        self.optimizer = self._build_optimizer()

    def grid_resolutions(self) -> list[list[int]]:
        """Per tile, the current base resolution of resizable (plane-line) grids, else []."""
        return [list(t.grid.base_resolution) if hasattr(t.grid, "resize") else [] for t in self.renderer.field.tiles]

    # ----------------------------------------------------------------- one step
    def rays_for(self, batch: RayBatch) -> RayBundle:
        field_module = self.renderer.field
        c2w = None
        if field_module.pose is not None:
            c2w = field_module.correct_poses(self.train_cameras.camera_to_worlds[batch.image_indices], batch.image_indices)
        return generate_rays(self.train_cameras, batch.image_indices, batch.pixels, c2w)

    def training_loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        """Loss of step ``step`` (deterministic in (seed, step) and the current parameters)."""
        batch = self.sampler.sample(step).to(self.device)
        rays = self.rays_for(batch)
        jitter = self._step_generator(0x5A4D, step)
        background = self.renderer.field.background_colour(rays.directions, rays.image_indices, generator=jitter)
        out = self.renderer(rays, stratified=True, generator=jitter, background=background)
        target = batch.rgb
        if self.renderer.field.background is not None and self.renderer.field.background.is_random:
            # Re-composite the target onto the same random colours the render used.
            dataset_bg = self.train_data.background.to(target)
            target = target + (1.0 - batch.alpha)[:, None] * (background - dataset_bg)
        mse = torch.mean((out.rgb - target) ** 2)
        loss = mse
        lc = self.config.loss
        stats = {"mse": float(mse.detach()), "psnr": float(-10 * torch.log10(mse.detach().clamp_min(1e-10))), "samples": out.n_samples}
        if lc.distortion > 0:
            dist = out.distortion.mean()
            loss = loss + lc.distortion * dist
            stats["distortion"] = float(dist.detach())
        if lc.depth > 0 and batch.depth is not None:
            valid = batch.depth > 0
            if bool(valid.any()):
                # Dataset depth is z-depth in world units; rendered depth is ray distance in model units.
                dirs_cam_z = self._camera_z(batch, rays)
                target_t = batch.depth * self.transform.scale / dirs_cam_z
                depth_l1 = (out.depth[valid] - target_t[valid]).abs().mean()
                loss = loss + lc.depth * depth_l1
                stats["depth_l1"] = float(depth_l1)
        for tile in self.renderer.field.tiles:
            grid = tile.grid
            if lc.total_variation > 0 and hasattr(grid, "total_variation"):
                loss = loss + lc.total_variation * grid.total_variation()
            if lc.density_l1 > 0 and hasattr(grid, "density_l1"):
                loss = loss + lc.density_l1 * grid.density_l1()
        stats["loss"] = float(loss.detach())
        return loss, stats

    def _camera_z(self, batch: RayBatch, rays: RayBundle) -> Tensor:
        """Cosine between each ray and its camera's viewing axis (z-depth = t · cos)."""
        forward = -self.train_cameras.camera_to_worlds[batch.image_indices][:, :3, 2]
        return (rays.directions * forward).sum(-1).clamp_min(1e-6)

    def _step_generator(self, stream: int, step: int) -> torch.Generator:
        """A generator on the training device seeded from (seed, stream, step) only (exact resume)."""
        g = generator_for(self.config.seed, stream, step)
        return torch.Generator(device=self.device).manual_seed(int(torch.randint(2**62, (1,), generator=g)))

    def train_step(self, step: int) -> dict[str, float]:
        self._maybe_upsample(step)
        self._set_lr(step)
        occ_gen = self._step_generator(0x0CC, step)
        self.renderer.update_occupancy(step, occ_gen)
        self.renderer.prune_alpha = step >= self.config.render.prune_alpha_after
        loss, stats = self.training_loss(step)
        if not math.isfinite(stats["loss"]):
            raise NerfxlError(f"loss became {stats['loss']} at step {step}; stopping "
                              f"(last good checkpoint: {latest_checkpoint(self.run_dir) or 'none'})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return stats

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_shards(self) -> dict[str, dict[str, Tensor]]:
        field_module = self.renderer.field
        shared = {k: v for k, v in field_module.state_dict().items() if not k.startswith("tiles.")}
        shards = {"shared": shared}
        for k, tile in enumerate(field_module.tiles):
            tensors = dict(tile.state_dict())
            tensors.update({f"occupancy.{n}": v for n, v in self.renderer.occupancy[k].state_dict().items()})
            shards[f"tile-{k:03d}"] = tensors
        opt_tensors, _ = flatten_optimizer_state(self.optimizer.state_dict())
        shards["optimizer"] = opt_tensors
        return shards

    def save(self) -> Path:
        _, opt_meta = flatten_optimizer_state(self.optimizer.state_dict())
        state = {
            "step": self.step,
            "n_tiles": self.renderer.n_tiles,
            "tile_boxes": self.renderer.tile_boxes().tolist(),
            "grid_resolutions": self.grid_resolutions(),
            "scene_transform": self.transform.to_dict(),
            "n_train_images": len(self.train_data),
            "optimizer": opt_meta,
        }
        return save_checkpoint(self.run_dir, self.step, self.checkpoint_shards(), state, keep=self.config.keep_checkpoints)

    def load(self, path: Path, with_optimizer: bool = True) -> None:
        shards, state = load_checkpoint(path)
        load_field_state(self.renderer, shards, state, path)
        if with_optimizer and "optimizer" in shards:
            self.optimizer = self._build_optimizer()
            try:
                self.optimizer.load_state_dict(unflatten_optimizer_state(shards["optimizer"], state["optimizer"]))
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{path}: optimizer state does not match this model ({e})") from None
        self.step = int(state["step"])


def load_field_state(renderer: TiledRenderer, shards: dict, state: dict, path: Path) -> None:
    """Load tile and shared shards into ``renderer``, explaining any mismatch in one line."""
    field_module = renderer.field
    if state["n_tiles"] != renderer.n_tiles:
        raise CheckpointError(f"{path}: checkpoint has {state['n_tiles']} tiles, the config builds {renderer.n_tiles}")
    for k, tile in enumerate(field_module.tiles):
        res = state.get("grid_resolutions", [[]] * renderer.n_tiles)[k]
        if res and hasattr(tile.grid, "resize") and list(tile.grid.base_resolution) != list(res):
            tile.grid.resize(tuple(res))
    for k, tile in enumerate(field_module.tiles):
        tensors = shards[f"tile-{k:03d}"]
        tile_part = {n: v for n, v in tensors.items() if not n.startswith("occupancy.")}
        occ_part = {n[len("occupancy."):]: v for n, v in tensors.items() if n.startswith("occupancy.")}
        _load_strict(tile, tile_part, f"{path}/tile-{k:03d}.safetensors")
        _load_strict(renderer.occupancy[k], occ_part, f"{path}/tile-{k:03d}.safetensors (occupancy)")
    shared_module_state = {k: v for k, v in field_module.state_dict().items() if not k.startswith("tiles.")}
    mismatch = describe_state_mismatch(shared_module_state, shards["shared"])
    if mismatch:
        raise CheckpointError(f"{path}/shared.safetensors: {mismatch}")
    field_module.load_state_dict({**field_module.state_dict(), **shards["shared"]})


def describe_state_mismatch(expected: dict[str, Tensor], found: dict[str, Tensor]) -> str | None:
    """One line naming what differs between a module's state and a checkpoint's, or None."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        return f"checkpoint lacks {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "") + " that the config builds"
    if extra:
        return f"checkpoint has {extra[0]}" + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else "") + " that the config does not build"
    for name, t in expected.items():
        if tuple(found[name].shape) != tuple(t.shape):
            return f"{name} is {list(found[name].shape)} in the checkpoint but {list(t.shape)} in the config"
    return None


def _load_strict(module: torch.nn.Module, tensors: dict[str, Tensor], where: str) -> None:
    mismatch = describe_state_mismatch(module.state_dict(), tensors)
    if mismatch:
        raise CheckpointError(f"{where}: {mismatch}")
    module.load_state_dict(tensors)


def new_run_dir(config: TrainConfig, data_path: Path) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    run = Path(config.output) / run_name(config, data_path) / stamp
    i = 1
    while run.exists():
        run = run.with_name(f"{stamp}-{i}")
        i += 1
    return run


def load_run_config(run_dir: Path) -> TrainConfig:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: not a nerfxl run folder (no config.yaml)")
    return load_config_yaml(run_dir / "config.yaml", TrainConfig)


def train(config: TrainConfig, steps_override: int | None = None) -> Path:
    """Train a new run, or continue ``config.resume``; returns the run folder.

    On resume the run's saved configuration is used as it was, except the step count when
    ``steps_override`` is given. Ctrl-C saves a checkpoint and re-raises.
    """
    from nerfxl.evaluate import evaluate_views
    from nerfxl.runlog import RunLogger

    resume = config.resume
    if resume is not None:
        run_dir = Path(resume)
        saved = load_run_config(run_dir)
        config = dataclasses.replace(saved, progress=config.progress, resume=None)
        if steps_override is not None:
            config = dataclasses.replace(config, steps=steps_override)
    else:
        run_dir = new_run_dir(config, resolve_data_path(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, run_dir)
    if resume is not None:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise CheckpointError(f"{run_dir}: no complete checkpoint to resume from")
        trainer.load(ckpt)
    save_config_yaml(run_dir / "config.yaml", dataclasses.replace(config, resume=None))

    logger = RunLogger(run_dir, total=config.steps, start=trainer.step, enabled_bar=config.progress)
    rays_per_step = config.batch_rays
    try:
        while trainer.step < config.steps:
            t0 = time.perf_counter()
            stats = trainer.train_step(trainer.step)
            dt = time.perf_counter() - t0
            trainer.step += 1
            stats["rays_per_s"] = rays_per_step / max(dt, 1e-9)
            logger.step(trainer.step, stats, write_scalars=trainer.step % config.log_every == 0)
            if config.eval_every and trainer.step % config.eval_every == 0 and trainer.step < config.steps:
                if trainer.test_data is not None:
                    metrics = evaluate_views(trainer, limit=config.eval_views, log_images=logger)
                    logger.scalars(trainer.step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)})
            if trainer.step % config.checkpoint_every == 0 or trainer.step == config.steps:
                trainer.save()
    except KeyboardInterrupt:
        path = trainer.save()
        print(f"\ninterrupted at step {trainer.step}; checkpoint saved to {path}")
        raise
    finally:
        logger.close()
    last = latest_checkpoint(run_dir)
    if last is None or last.name != checkpoint_name(trainer.step):
        trainer.save()
    return run_dir
