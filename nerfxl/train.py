"""Training one radiance field of K tiles on D processes (NeRF-XL): config, setup, loop, checkpoints.

The batch of step ``s`` depends only on (seed, s); occupancy refreshes and sample jitter draw from
generators seeded from (seed, stream, step, tile), so a resumed run draws exactly what the
uninterrupted run would have drawn, and every process draws the same batch while each tile draws
the same jitter whichever process holds it. Hence training on D = 1, 2, 4, ... processes computes
the same thing (nerf-xl.md §5): D = 1 is the single-process reference twin.

With ``--replicas R`` (hybrid model × data parallel) the D processes form R replicas of the model,
each spread over M = D / R processes as below; every replica renders its own share of a global batch
and the gradients of the processes holding the same part are averaged (:mod:`nerfxl.parallel.data_parallel`),
so R replicas with B rays each compute what one replica computes with R·B rays. ``--method ddp`` (the
data-parallel baseline) is the case M = 1: every process holds the one tile's whole model.

With ``--strategy`` the model is spread LandMark's ways instead (docs/landmark.md): ``branch`` is a
uniform block grid trained as tiles with the sample exchange; ``plane`` and ``channel`` give every
process its part of one tile's grid (:mod:`nerfxl.parallel.plane_parallel`,
:mod:`nerfxl.parallel.channel_parallel`), every process renders every ray, and the field's own
collectives combine the parts; their checkpoints hold one shard per part.

Roles: every process renders its K/D tiles, exchanges per-ray blocks (or per-sample values with
``--exchange sample``), computes the same loss, and steps its own tiles plus its copy of the shared
modules after a SUM all-reduce of their gradients. Rank 0 alone logs, shows progress, writes
``config.yaml``/``tiles.json``, and the checkpoint manifest; every process writes its own tiles' shards.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import Tensor

from nerfxl.checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    load_optimizer_state_tensors,
    newest_sound_checkpoint,
    optimizer_state_tensors,
    remove_stale_temporaries,
    save_checkpoint,
)
from nerfxl.configio import save_config_yaml
from nerfxl.data.dataset import Dataset
from nerfxl.data.rays import RayBundle, generate_rays
from nerfxl.data.sampler import RayBatch, RayBatchSampler, generator_for
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import CheckpointError, ConfigError, DataError, NerfxlError, PeerLostError, WorkerError
from nerfxl.fields.config import build_radiance_field
from nerfxl.fields.grid_plane_window import PlaneSplit
from nerfxl.optim import GridAdam
from nerfxl.plateau import plateau_rule_of, write_convergence
from nerfxl.parallel.data_parallel import (
    average_gradients,
    global_stats,
    mean_over_global_batch,
    shard_generators,
    shard_of_batch,
    skip_draws,
)
from nerfxl.parallel.distributed import (
    DistContext,
    all_gather_tensor,
    all_reduce_gradients,
    all_reduce_scalar,
    broadcast_bytes,
    broadcast_parameters,
    is_lost_peer_error,
    resolve_device,
    single_process_context,
    split_into_replicas,
)
from nerfxl.parallel.partition_based import render_partition_based
from nerfxl.parallel.sample_based import render_sample_based
from nerfxl.parallel.tiles import tiles_of_rank
from nerfxl.partition.plan import TilePlan
from nerfxl.renderer import RenderedRays, TiledRenderer
from nerfxl.run.config import CitySize, Exchange, LossConfig, Method, OptimConfig, Strategy, TrainConfig, upsample_resolutions
from nerfxl.run.layout import (
    JOINT_STRATEGIES,
    TILE_PLAN_FILE,
    check_same_split,
    new_run_dir,
    run_name,
    saved_strategy,
    strategy_state,
    tile_shard_name,
)
from nerfxl.run.load import load_run_config, load_split, resolve_data_path
from nerfxl.run.state import (
    check_tile_plan,
    describe_state_mismatch,
    load_field_state,
    load_shared_state,
    load_strict,
)
from nerfxl.run.strategy import check_processes, model_processes, replicas_of, resolve_strategy, split_field

__all__ = [  # the Trainer and the loop; the rest is the run layer's, re-exported for code written against nerfxl.train
    "Trainer", "train", "train_on_process", "StopRequest", "SESSION_OPTIONS",
    "CitySize", "Exchange", "Method", "Strategy", "OptimConfig", "LossConfig", "TrainConfig", "upsample_resolutions",
    "JOINT_STRATEGIES", "TILE_PLAN_FILE", "check_same_split", "new_run_dir", "run_name", "saved_strategy",
    "strategy_state", "tile_shard_name", "load_run_config", "load_split", "resolve_data_path", "check_tile_plan",
    "describe_state_mismatch", "load_field_state", "load_shared_state", "load_strict", "check_processes",
    "model_processes", "replicas_of", "resolve_strategy", "split_field", "resolve_device",
]


def exponential_lr(step: int, total: int, final_fraction: float, warmup: int) -> float:
    """Learning-rate multiplier at ``step``."""
    factor = final_fraction ** (min(step, total) / max(total, 1))
    if warmup > 0 and step < warmup:
        factor *= (step + 1) / warmup
    return factor


class Trainer:
    """Holds a run: datasets, renderer (this process's tiles + occupancy), optimizer, run folder.

    Args:
        config: the run's configuration.
        run_dir: the run folder; created if needed.
        train_data / test_data: loaded splits (None = loaded from ``config``).
        ctx: this process's place in the job (None: a single process on ``config.device``).

    Attributes:
        world: ``ctx``, the whole job (checkpoints, Ctrl-C agreement).
        ctx: the processes one replica of the model is spread over (the whole job unless
            --replicas > 1 or --method ddp, where it is this process alone): rendering, exchange and
            the strategy's gradient sums run here.
        replica_ctx: the processes holding the same part of the model in the other replicas, over
            which gradients are averaged (a one-process context without replicas).
        replicas: the number of data-parallel replicas.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, train_data: Dataset | None = None,
                 test_data: Dataset | None = None, ctx: DistContext | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.world = ctx if ctx is not None else single_process_context(resolve_device(config.device))
        self.replicas = replicas_of(config, self.world.world_size)
        self.ctx, self.replica_ctx = split_into_replicas(self.world, self.replicas)
        self.device = self.world.device
        if train_data is None:
            train_data = load_split(config, "train")
            try:
                test_data = load_split(config, "test")
            except DataError:
                test_data = None  # a dataset without a test split still trains; eval says so
        self.train_data = train_data
        self.test_data = test_data
        config = self.config = resolve_strategy(config, self.ctx.world_size, train_data.scene_box)
        check_processes(config, self.ctx.world_size)
        self.transform = SceneTransform.fit_box(train_data.scene_box)
        self.scene_box = self.transform.box(train_data.scene_box.double()).float()
        self.train_cameras = self.transform.cameras(train_data.cameras).to(self.device)
        self.test_cameras = None if test_data is None else self.transform.cameras(test_data.cameras).to(self.device)

        self.plan = self._tile_plan()
        tile_boxes = self.transform.box(self.plan.boxes).float()
        # plane/channel: every process holds its part of the one tile.
        self.tile_ids = ([0] if config.strategy in JOINT_STRATEGIES
                         else tiles_of_rank(config.partitions, self.ctx.world_size, self.ctx.rank))
        field_module = build_radiance_field(config.field, tile_boxes, n_images=len(train_data), tile_ids=self.tile_ids,
                                            seed=config.seed)
        field_module = split_field(field_module, config, self.ctx)
        self.renderer = TiledRenderer(field_module, self.scene_box, config.render).to(self.device)
        # The seeded build already makes them equal; the broadcasts make it a guarantee (nerf-xl.md §5):
        # the shared modules within a model, everything this process holds across replicas.
        shared = [t for m in field_module.shared_modules().values() for t in [*m.parameters(), *m.buffers()]]
        broadcast_parameters(shared, self.ctx)
        broadcast_parameters(field_module, self.replica_ctx)
        # Every process draws the global batch and keeps its replica's rows (see training_loss).
        self.sampler = RayBatchSampler(train_data, config.batch_rays * self.replicas, config.seed)
        self.optimizer = self._build_optimizer()
        self.step = 0

    def _tile_plan(self) -> TilePlan:
        """The run's tile plan in dataset units: rank 0 decides, every process gets the same boxes."""
        c = self.config
        box = self.train_data.scene_box.detach().double().cpu()
        if c.partitions == 1 and c.tile_plan is None:
            return TilePlan(boxes=box[None], method="kd", scene_box=box, points_per_tile=[0], weight_per_tile=[0.0],
                            source={"kind": "single tile"})
        text = None
        if self.world.is_main:
            saved = self.run_dir / TILE_PLAN_FILE
            where = saved if saved.is_file() else c.tile_plan
            if where is not None:
                plan = TilePlan.load(where)
                if plan.k != c.partitions:
                    raise ConfigError(f"{where}: the plan has {plan.k} tiles but --partitions is {c.partitions}")
                if not torch.allclose(plan.scene_box, box, rtol=1e-6, atol=1e-6 * float(box.abs().max())):
                    raise ConfigError(f"{where}: the plan splits the box {plan.scene_box.tolist()} but the dataset's "
                                      f"scene box is {box.tolist()}")
            else:
                from nerfxl.partition.plan import plan_tiles

                shape = None
                if c.strategy == "branch":
                    split = PlaneSplit.parse(c.blocks)
                    shape = (split.nx, split.ny, 1)
                plan = plan_tiles(self.train_data, c.partitions, c.partition_method, seed=c.seed, grid_shape=shape)
            text = json.dumps(plan.to_dict()).encode()
        text = broadcast_bytes(text, self.world)
        return TilePlan.from_dict(json.loads(text))

    # ----------------------------------------------------------------- optimisation
    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        groups = []
        lrs = {"grids": o.lr_grid, "mlps": o.lr_mlp, "appearance": o.lr_mlp, "pose": o.lr_pose}
        for name, params in self.renderer.field.parameter_groups().items():
            params = [p for p in params if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lrs[name], "name": name, "base_lr": lrs[name],
                               "sparse": name == "grids" and o.grid_updates == "sparse"})
        # foreach: one fused kernel per group instead of a Python loop over tensors (CPU too).
        return GridAdam(groups, eps=o.eps, foreach=True)

    def _set_lr(self, step: int) -> None:
        o = self.config.optim
        factor = exponential_lr(step, self.config.steps, o.lr_final_fraction, o.warmup_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor

    def _maybe_upsample(self, step: int) -> None:
        c = self.config
        if step not in c.grid_upsample_steps or not any(c.grid_final_resolution):
            return
        res = upsample_resolutions(c)[sorted(c.grid_upsample_steps).index(step)]
        for tile in self.renderer.field.tiles:
            if hasattr(tile.grid, "resize"):
                tile.grid.resize(res)
        self.optimizer = self._build_optimizer()

    def grid_resolution(self, k: int) -> list[int]:
        """Current base resolution of held tile k's grid if it is resizable (plane-line), else []."""
        grid = self.renderer.field.tile(k).grid
        return list(grid.base_resolution) if hasattr(grid, "resize") else []

    # ----------------------------------------------------------------- one step
    def rays_for(self, batch: RayBatch) -> RayBundle:
        field_module = self.renderer.field
        c2w = None
        if field_module.pose is not None:
            c2w = field_module.correct_poses(self.train_cameras.camera_to_worlds[batch.image_indices], batch.image_indices)
        return generate_rays(self.train_cameras, batch.image_indices, batch.pixels, c2w)

    def render(self, rays: RayBundle, stratified: bool, generators, background: Tensor | None) -> RenderedRays:
        """Render identical rays on every process of the model through the configured exchange."""
        if self.config.method == "ddp" or self.renderer.field.joint_evaluation:
            return self.renderer(rays, stratified, generators, background)
        strategy = render_sample_based if self.config.exchange == "sample" else render_partition_based
        return strategy(self.renderer, rays, self.ctx, stratified=stratified, generators=generators, background=background)

    def background_for(self, rays: RayBundle, generator: torch.Generator) -> Tensor:
        """[R, 3] background colours, identical on every process of the model, differentiable on
        its rank 0 only.

        Every process computes the same background; were it differentiable everywhere, the SUM
        all-reduce of shared gradients would count the sky/appearance gradient M times. (Replicas
        have their own rays, and their gradients are averaged.)
        """
        everywhere = self.config.strategy == "channel"  # see channel_parallel.py
        with torch.set_grad_enabled(torch.is_grad_enabled() and (self.ctx.is_main or everywhere)):
            return self.renderer.field.background_colour(rays.directions, rays.image_indices, generator=generator)

    def training_loss(self, step: int) -> tuple[Tensor, dict[str, float]]:
        """Loss of step ``step`` (deterministic in (seed, step) and the current parameters).

        Returns:
            (this process's loss to differentiate: the shared data terms plus its own tiles'
            regularisers; stats of the whole model, identical on every process).
        """
        batch = self.sampler.sample(step)
        replicated = self.replicas > 1
        if replicated:
            batch = shard_of_batch(batch, self.replica_ctx)  # this replica's rows of the global batch
        batch = batch.to(self.device)
        rays = self.rays_for(batch)
        background_generator, tile_generators = self._step_generator(0xB6, step), self._tile_generators(0x5A4D, step)
        if replicated:
            # Skip the draws the global batch spends on the lower replicas' rows: one per ray and tile
            # (sample jitter), three per ray (a random background colour).
            before = self.replica_ctx.rank * len(batch)
            background_generator = skip_draws(background_generator, 3 * before, rays.directions.dtype)
            tile_generators = shard_generators(tile_generators, before, rays.origins.dtype)
        background = self.background_for(rays, background_generator)
        out = self.render(rays, True, tile_generators, background)
        target = batch.rgb
        if self.renderer.field.background is not None and self.renderer.field.background.is_random:
            # Re-composite the target onto the same random colours the render used.
            dataset_bg = self.train_data.background.to(target)
            target = target + (1.0 - batch.alpha)[:, None] * (background.detach() - dataset_bg)
        mse = torch.mean((out.rgb - target) ** 2)
        loss = mse
        lc = self.config.loss
        stats = {"mse": float(mse.detach()), "psnr": float(-10 * torch.log10(mse.detach().clamp_min(1e-10)))}
        if lc.distortion > 0:
            dist = out.distortion.mean()
            loss = loss + lc.distortion * dist
            stats["distortion"] = float(dist.detach())
        if lc.depth > 0 and batch.depth is not None:
            valid = batch.depth > 0
            if replicated or bool(valid.any()):  # replicas: every process joins the count
                # Dataset depth is z-depth in world units; rendered depth is ray distance in model units.
                dirs_cam_z = self._camera_z(batch, rays)
                target_t = batch.depth * self.transform.scale / dirs_cam_z
                errors = (out.depth[valid] - target_t[valid]).abs()
                depth_l1 = mean_over_global_batch(errors, self.replica_ctx) if replicated else errors.mean()
                loss = loss + lc.depth * depth_l1
                stats["depth_l1"] = float(depth_l1.detach())
        regulariser = torch.zeros((), device=self.device)
        for tile in self.renderer.field.tiles:
            grid = tile.grid
            if lc.total_variation > 0 and hasattr(grid, "total_variation"):
                regulariser = regulariser + lc.total_variation * grid.total_variation()
            if lc.density_l1 > 0 and hasattr(grid, "density_l1"):
                regulariser = regulariser + lc.density_l1 * grid.density_l1()
        # One small gather per step: samples and regulariser of every process (load balance, true loss).
        local = torch.tensor([[float(out.n_samples), float(regulariser.detach())]], dtype=torch.float64, device=self.device)
        per_rank = all_gather_tensor(local, self.ctx).cpu()
        if self.renderer.field.joint_evaluation:  # every process marched every sample
            stats["samples"] = stats["samples_max_rank"] = float(per_rank[0, 0])
        else:
            stats["samples"] = float(per_rank[:, 0].sum())
            stats["samples_max_rank"] = float(per_rank[:, 0].max())
        stats["loss"] = float(loss.detach()) + float(per_rank[:, 1].sum())
        if replicated:  # the regulariser is the same in every replica
            stats = global_stats(stats, self.replica_ctx)
        return loss + regulariser, stats

    def _camera_z(self, batch: RayBatch, rays: RayBundle) -> Tensor:
        """Cosine between each ray and its camera's viewing axis (z-depth = t · cos)."""
        forward = -self.train_cameras.camera_to_worlds[batch.image_indices][:, :3, 2]
        # Detached: a target scale must not train pose corrections (and it is computed on every process).
        return (rays.directions.detach() * forward).sum(-1).clamp_min(1e-6)

    def _step_generator(self, stream: int, step: int, *more: int) -> torch.Generator:
        """A generator on the training device seeded from (seed, stream, step, *more) only (exact resume)."""
        g = generator_for(self.config.seed, stream, step, *more)
        return torch.Generator(device=self.device).manual_seed(int(torch.randint(2**62, (1,), generator=g)))

    def _tile_generators(self, stream: int, step: int):
        """Tile k → its own generator for this step: the same draws whichever process holds tile k."""
        return lambda k: self._step_generator(stream, step, 1 + int(k))

    def train_step(self, step: int) -> dict[str, float]:
        self._maybe_upsample(step)
        self._set_lr(step)
        self.renderer.update_occupancy(step, self._tile_generators(0x0CC, step))
        self.renderer.prune_alpha = step >= self.config.render.prune_alpha_after
        loss, stats = self.training_loss(step)
        if not math.isfinite(stats["loss"]):  # the same value on every process: all stop together
            raise NerfxlError(f"loss became {stats['loss']} at step {step}; stopping "
                              f"(last good checkpoint: {latest_checkpoint(self.run_dir) or 'none'})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.renderer.field.joint_evaluation:
            self.renderer.field.sync_gradients()
        else:
            all_reduce_gradients(list(self.renderer.field.shared_parameters()), self.ctx, op="sum")
        average_gradients(self.renderer.field, self.replica_ctx)  # the identity without replicas
        self.optimizer.step()
        return stats

    # ----------------------------------------------------------------- checkpoints
    def _named_shared_parameters(self) -> list[tuple[str, Tensor]]:
        return [(n, p) for n, p in self.renderer.field.named_parameters() if not n.startswith("tiles.")]

    def checkpoint_shards(self) -> dict[str, dict[str, Tensor]]:
        """This process's shards: its tiles (weights, occupancy, optimizer moments), + shared on rank 0.

        With replicas, replica 0 alone writes; the other replicas hold identical copies.
        """
        if not self.replica_ctx.is_main:
            return {}
        field_module = self.renderer.field
        shards = {}
        if self.ctx.is_main:
            shared = {k: v for k, v in field_module.state_dict().items() if not k.startswith("tiles.")}
            shared.update(optimizer_state_tensors(self.optimizer, self._named_shared_parameters()))
            shards["shared"] = shared
        for k in self.tile_ids:
            tile = field_module.tile(k)
            tensors = dict(tile.state_dict())
            tensors.update({f"occupancy.{n}": v for n, v in self.renderer.occupancy_grid(k).state_dict().items()})
            tensors.update(optimizer_state_tensors(self.optimizer, tile.named_parameters()))
            shards[self.shard_names[k]] = tensors
        return shards

    @property
    def shard_names(self) -> dict[int, str]:
        """Held tile k → the name of the checkpoint shard this process writes for it."""
        return {k: tile_shard_name(k, self.config.strategy, self.ctx.rank) for k in self.tile_ids}

    def save(self) -> Path:
        """Checkpoint the current step (every process must call it at the same step)."""
        state = {
            "step": self.step,
            "n_tiles": self.renderer.n_tiles,
            "tile_boxes": self.renderer.tile_boxes().tolist(),
            "tiles": {str(k): {"grid_resolution": self.grid_resolution(k)} for k in self.tile_ids},
            "scene_transform": self.transform.to_dict(),
            "n_train_images": len(self.train_data),
            "trained_on_processes": self.world.world_size,
            "replicas": self.replicas,
            "strategy": strategy_state(self.config, self.ctx.world_size),
        }
        return save_checkpoint(self.run_dir, self.step, self.checkpoint_shards(), state, keep=self.config.keep_checkpoints,
                               ctx=self.world)

    def load(self, path: Path, with_optimizer: bool = True, verify: bool = True) -> None:
        """Restore this process's tiles and the shared modules (any D that divides K can load).
        ``verify``: hash the shards read against the manifest (False: the caller has checked them)."""
        _, state = load_checkpoint(path, shard_names=[], verify=False)
        check_same_split(state, self.config, self.ctx.world_size, path)
        shards, state = load_checkpoint(path, shard_names=["shared", *self.shard_names.values()], verify=verify)
        check_tile_plan(self.renderer, state, path)
        load_field_state(self.renderer, shards, state, path, self.shard_names)
        self.optimizer = self._build_optimizer()
        if with_optimizer:
            field_module = self.renderer.field
            load_optimizer_state_tensors(self.optimizer, self._named_shared_parameters(), shards["shared"],
                                         f"{path}/shared.safetensors")
            for k, name in self.shard_names.items():
                load_optimizer_state_tensors(self.optimizer, field_module.tile(k).named_parameters(),
                                             shards[name], f"{path}/{name}.safetensors")
        self.step = int(state["step"])


SESSION_OPTIONS = ("progress", "max_restarts", "viewer", "viewer_port", "viewer_host", "viewer_allow_remote",
                   "viewer_fraction", "viewer_resolution")
"""TrainConfig fields a resumed run takes from the command line instead of its saved config.yaml."""


def check_viewer_options(config: TrainConfig) -> str | None:
    """One-line errors for impossible --viewer-* values; the warning to print for a remote host."""
    if not config.viewer:
        return None
    if not 0.0 < config.viewer_fraction < 1.0:
        raise ConfigError(f"--viewer-fraction {config.viewer_fraction}: must lie strictly between 0 and 1")
    from nerfxl.viewer.hosts import check_viewer_flags

    return check_viewer_flags(config.viewer_host, config.viewer_allow_remote, config.viewer_port,
                              config.viewer_resolution, prefix="--viewer-")


def train(config: TrainConfig, steps_override: int | None = None, devices_override: int | None = None) -> Path:
    """Train a new run, or continue ``config.resume``; returns the run folder.

    With ``config.devices`` > 1 this spawns the processes on this machine; under torchrun (or any
    launcher that sets RANK/WORLD_SIZE) this process is one rank of the job and the world size is D.
    On resume the run's saved configuration is used as it was, except the step count and the
    number of processes when given (a K-tile run continues on any D that divides K). Ctrl-C saves a
    checkpoint and re-raises (with several processes the last periodic checkpoint is kept instead).
    """
    from nerfxl.parallel.launch import launch, launched_externally

    if config.max_restarts < 0:
        raise ConfigError(f"--max-restarts {config.max_restarts}: must be ≥ 0")
    warning = check_viewer_options(config)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if config.resume is None and config.run_dir is not None and latest_checkpoint(config.run_dir) is not None:
        config = dataclasses.replace(config, resume=config.run_dir)  # a restarted command continues its run
    resume = config.resume is not None
    if resume:
        run_dir = Path(config.resume)
        saved = load_run_config(run_dir)
        # Session options (how this invocation runs), not properties of the run: taken from the command.
        session = {name: getattr(config, name) for name in SESSION_OPTIONS}
        config = dataclasses.replace(saved, resume=None, **session)
        if steps_override is not None:
            config = dataclasses.replace(config, steps=steps_override)
        if devices_override is not None:
            config = dataclasses.replace(config, devices=devices_override)
    external = launched_externally()
    if external:
        import os

        world = int(os.environ["WORLD_SIZE"])
        if config.devices not in (1, world):
            raise ConfigError(f"--devices {config.devices} but the launcher started {world} processes (WORLD_SIZE)")
        config = dataclasses.replace(config, devices=world)
    model_size = model_processes(config, config.devices)
    config = resolve_strategy(config, model_size)
    if config.strategy != "plane" or config.blocks is not None:
        check_processes(config, model_size)  # plane without --blocks: checked once the scene is known
    if config.tile_plan is not None and not Path(config.tile_plan).is_file():
        raise ConfigError(f"--tile-plan {config.tile_plan}: no such file")
    if not resume and config.run_dir is not None:
        run_dir = Path(config.run_dir)
    elif not resume and not external:
        run_dir = new_run_dir(config, resolve_data_path(config))
    elif not resume:
        run_dir = None  # rank 0 picks it and tells the others
    if config.devices == 1 and not external:
        return train_on_process(single_process_context(resolve_device(config.device)), config, run_dir, resume)[0]
    restarts = 0
    while True:
        try:
            results = launch(train_on_process, None if external else config.devices,
                             args=(config, None if run_dir is None else str(run_dir), resume),
                             device=config.device, timeout_s=config.collective_timeout_s)
            break
        except WorkerError as e:
            # A process that died (killed, out of memory) or lost its peers; not a bug or bad input, which
            # a restart would only repeat.
            lost = e.exc_type in (None, PeerLostError.__name__)
            last = latest_checkpoint(run_dir) if run_dir is not None else None
            if not lost or external or restarts >= config.max_restarts:
                if lost and run_dir is not None:
                    raise e.with_message(f"{e}; {describe_last_checkpoint(run_dir)}") from None
                raise
            restarts += 1
            print(f"nerfxl: {e}; restart {restarts} of {config.max_restarts} from "
                  f"{last.name if last else 'the start'}", file=sys.stderr, flush=True)
            resume = last is not None
    run_dir, interrupted = next(iter(results.values()))
    if interrupted:
        raise KeyboardInterrupt
    return Path(run_dir)


def describe_last_checkpoint(run_dir: Path) -> str:
    """"last complete checkpoint: … (continue with …)" for a run that stopped, or that it has none."""
    last = latest_checkpoint(run_dir)
    if last is None:
        return f"{run_dir} has no complete checkpoint yet"
    return f"last complete checkpoint: {last} (continue with: nerfxl train --resume {run_dir})"


def resume_checkpoint(run_dir: Path, ctx: DistContext) -> Path:
    """The checkpoint a resume starts from: the newest whose every file matches its manifest. Rank 0
    verifies and tells the others; a damaged newer one is reported and skipped (left as it is)."""
    if ctx.is_main:
        found, skipped = newest_sound_checkpoint(run_dir)
        if found is None:
            why = f" (the newest is damaged: {skipped[0][1]})" if skipped else ""
            answer = {"error": f"{run_dir}: no sound checkpoint to resume from{why}"}
        else:
            for path, why in skipped:
                print(f"nerfxl: warning: skipping {path.name}: {why}", file=sys.stderr, flush=True)
            answer = {"path": str(found)}
        data = json.dumps(answer).encode()
    answer = json.loads(broadcast_bytes(data if ctx.is_main else None, ctx).decode())
    if "error" in answer:
        raise CheckpointError(answer["error"])
    return Path(answer["path"])


def train_on_process(ctx: DistContext, config: TrainConfig, run_dir: Path | str | None, resume: bool) -> tuple[Path, bool]:
    """One process's part of :func:`train` (module level: the spawner pickles it by name).

    Returns:
        (run folder, whether the run stopped early on a Ctrl-C that all processes agreed on).
    """
    from nerfxl.evaluate import evaluate_views
    from nerfxl.runlog import RunLogger

    if run_dir is None:
        chosen = str(new_run_dir(config, resolve_data_path(config))).encode() if ctx.is_main else None
        run_dir = broadcast_bytes(chosen, ctx).decode()
    run_dir = Path(run_dir)
    trainer = Trainer(config, run_dir, ctx=ctx)  # before creating the folder: bad input leaves nothing behind
    if resume:
        trainer.load(resume_checkpoint(run_dir, ctx), verify=False)  # every file was hashed choosing it
        if ctx.is_main:
            print(f"resuming {run_dir} from step {trainer.step}", file=sys.stderr, flush=True)
    trainer.sampler.sample(trainer.step)  # unreadable images fail here, before the run folder exists
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)
        save_config_yaml(run_dir / "config.yaml", dataclasses.replace(trainer.config, resume=None))
        if trainer.plan.k > 1 and not (run_dir / TILE_PLAN_FILE).is_file():
            trainer.plan.save(run_dir / TILE_PLAN_FILE)

    logger = RunLogger(run_dir, total=config.steps, start=trainer.step, enabled_bar=config.progress) if ctx.is_main else None
    rays_per_step = config.batch_rays * trainer.replicas  # the global batch
    stop = StopRequest(ctx)
    live = start_live_viewer(trainer) if config.viewer else None
    plateau = plateau_rule_of(config)
    converged = False
    try:
        while trainer.step < config.steps and not converged:
            t0 = time.perf_counter()
            stats = trainer.train_step(trainer.step)
            dt = time.perf_counter() - t0
            trainer.step += 1
            # Every process has the same stats, so every process stops at the same step.
            converged = plateau is not None and plateau.observe(stats["mse"])
            if stop.agreed():
                path = trainer.save()
                if ctx.is_main:
                    print(f"\ninterrupted at step {trainer.step}; checkpoint saved to {path}", flush=True)
                return run_dir, True
            stats["rays_per_s"] = rays_per_step / max(dt, 1e-9)
            if live is not None:
                live.between_steps()
            if logger is not None:
                logger.step(trainer.step, stats, write_scalars=trainer.step % config.log_every == 0)
            if config.eval_every and trainer.step % config.eval_every == 0 and trainer.step < config.steps:
                if trainer.test_data is not None and trainer.replica_ctx.is_main:
                    # Replica 0 evaluates; the other replicas go on and wait for it at the next step's
                    # gradient average.
                    metrics = evaluate_views(trainer, limit=config.eval_views, log_images=logger)
                    if logger is not None:
                        logger.scalars(trainer.step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)})
            if trainer.step % config.checkpoint_every == 0 or trainer.step == config.steps or converged:
                trainer.save()
    except RuntimeError as e:
        if ctx.world_size == 1 or not is_lost_peer_error(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PeerLostError(f"rank {ctx.rank} of {ctx.world_size} lost contact with another process at step "
                            f"{trainer.step} ({first[:200]}); {describe_last_checkpoint(run_dir)}") from None
    except KeyboardInterrupt:
        if ctx.world_size > 1:
            raise  # saved above when all processes agreed to stop; otherwise the last checkpoint stands
        path = trainer.save()
        print(f"\ninterrupted at step {trainer.step}; checkpoint saved to {path}")
        raise
    finally:
        stop.close()
        if logger is not None:
            logger.close()
        if live is not None:
            live.close()
    last = latest_checkpoint(run_dir)
    if last is None or last.name != checkpoint_name(trainer.step):
        trainer.save()
    if plateau is not None and ctx.is_main:
        write_convergence(run_dir, plateau, trainer.step, config.steps, converged)
    return run_dir, False


def start_live_viewer(trainer: Trainer):
    """The viewer of a training run (every process builds one; rank 0's serves the page)."""
    from nerfxl.viewer.live import LiveOptions, LiveViewer

    c = trainer.config
    return LiveViewer(trainer, LiveOptions(host=c.viewer_host, port=c.viewer_port, fraction=c.viewer_fraction,
                                           resolution=c.viewer_resolution))


class StopRequest:
    """Ctrl-C for a multi-process run: a stop every process agrees on at a step boundary.

    A process receiving SIGINT only raises a flag; after each step the flags are combined (one tiny
    all-reduce) so that all processes stop after the *same* step and can write one consistent
    checkpoint together. A single process keeps Python's default: KeyboardInterrupt at once.
    """

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self.requested = False
        self._previous = None
        if ctx.world_size > 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True

    def agreed(self) -> bool:
        """Whether any process asked to stop (every process must call this after every step)."""
        if self.ctx.world_size == 1:
            return False
        return all_reduce_scalar(float(self.requested), self.ctx, op="max") > 0

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
