"""The :class:`Trainer`: one process's share of a training run — the datasets, this process's tiles in a
renderer, the optimizer — with one training step and the run's checkpoints (saving, loading).
:mod:`nerfxl.train` runs it in a loop over D processes.

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
modules after a SUM all-reduce of their gradients. Rank 0 alone writes the checkpoint manifest; every
process writes its own tiles' shards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from nerfxl.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_optimizer_state_tensors,
    optimizer_state_tensors,
    save_checkpoint,
)
from nerfxl.data.dataset import Dataset
from nerfxl.data.rays import RayBundle, generate_rays
from nerfxl.data.sampler import RayBatch, RayBatchSampler, generator_for
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import ConfigError, DataError, NerfxlError
from nerfxl.fields.config import build_radiance_field
from nerfxl.optim import GridAdam
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
    broadcast_bytes,
    broadcast_parameters,
    resolve_device,
    single_process_context,
    split_into_replicas,
)
from nerfxl.partition.plan import TilePlan
from nerfxl.renderer import RenderedRays, TiledRenderer
from nerfxl.run.config import TrainConfig, upsample_resolutions
from nerfxl.run.layout import TILE_PLAN_FILE, check_same_split, strategy_state
from nerfxl.run.load import load_split
from nerfxl.run.state import check_tile_plan, load_field_state
from nerfxl.run.strategies import strategy_of

__all__ = ["Trainer", "exponential_lr"]


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
        strategy: how the model is spread over ``ctx`` (:mod:`nerfxl.run.strategies`): which tiles this
            process holds, how a batch is rendered and the gradients combined, the shards it writes.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, train_data: Dataset | None = None,
                 test_data: Dataset | None = None, ctx: DistContext | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.world = ctx if ctx is not None else single_process_context(resolve_device(config.device))
        self.strategy = strategy_of(config)
        self.replicas = self.strategy.replicas(config, self.world.world_size)
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
        config = self.config = self.strategy.resolve(config, self.ctx.world_size, train_data.scene_box)
        self.strategy.check(config, self.ctx.world_size)
        self.transform = SceneTransform.fit_box(train_data.scene_box)
        self.scene_box = self.transform.box(train_data.scene_box.double()).float()
        self.train_cameras = self.transform.cameras(train_data.cameras).to(self.device)
        self.test_cameras = None if test_data is None else self.transform.cameras(test_data.cameras).to(self.device)

        self.plan = self._tile_plan()
        tile_boxes = self.transform.box(self.plan.boxes).float()
        self.tile_ids = self.strategy.tile_ids(config.partitions, self.ctx.world_size, self.ctx.rank)
        field_module = build_radiance_field(config.field, tile_boxes, n_images=len(train_data), tile_ids=self.tile_ids,
                                            seed=config.seed)
        field_module = self.strategy.split_field(field_module, config, self.ctx)
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

                plan = plan_tiles(self.train_data, c.partitions, c.partition_method, seed=c.seed,
                                  grid_shape=self.strategy.plan_grid_shape(c))
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
        # fused: one kernel per tensor for the whole Adam update (CPU and CUDA); with K tiles' many
        # small tensors, foreach's op-by-op loop cost 10 % of a K = 64 step on the CPU.
        return GridAdam(groups, eps=o.eps, fused=True)

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
        """Render identical rays on every process of the model as the strategy does (NeRF-XL tiles: through
        the configured exchange)."""
        return self.strategy.render(self.renderer, rays, self.ctx, self.config, stratified, generators, background)

    def background_for(self, rays: RayBundle, generator: torch.Generator) -> Tensor:
        """[R, 3] background colours, identical on every process of the model, differentiable on
        its rank 0 only.

        Every process computes the same background; were it differentiable everywhere, the SUM
        all-reduce of shared gradients would count the sky/appearance gradient M times. (Replicas
        have their own rays, and their gradients are averaged.)
        """
        everywhere = self.strategy.background_on_every_process  # channel parallel, see channel_parallel.py
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
        if self.strategy.joint:  # every process marched every sample
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
        if loss.requires_grad:  # not when no sample survived anywhere and nothing else is trained
            loss.backward()
        self.strategy.reduce_gradients(self.renderer.field, self.ctx)  # the whole model's gradients
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
        return {k: self.strategy.shard_name(k, self.ctx.rank) for k in self.tile_ids}

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
