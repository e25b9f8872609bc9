"""What a NeRF-XL job costs each process, before it runs (``nerfxl plan``).

From a camera set (a dataset loaded poses-only, or an aerial flight described by its size) and a model
(a training preset, K tiles, D processes, rays per step, the exchange, replicas) this module predicts,
for the busiest process:

- **parameters, gradients and Adam state** (bytes): one tile's and the shared modules' parameters are
  counted on a built model (one tile, the real number of images), at the grid's final resolution;
- **occupancy grids**: cells per tile from the tile plan's boxes, 5 bytes a cell (float32 density +
  bool);
- **activations**: the bytes autograd saves for backward in one training step, as
  ``a·S + b·R·(K/M) + c·R·K + d·R`` for S samples and R rays on a process holding K/M of the K tiles.
  a, b, c, d are *measured* (:func:`calibrate_activations`): a short forward of the preset's own field
  on a synthetic box, counting every tensor autograd saves (``saved_tensors_hooks``, each storage
  once, parameters excluded) — exact for the graph on any device, since CUDA and CPU save the same
  tensors; a GPU's peak adds the transients of the largest layer on top;
- **bytes per step** each process hands to the collectives, as :class:`~nerfxl.parallel.distributed.DistContext`
  counts them: the partition-based all-gather of [K/M, R, 6] float32 blocks, the sample-based gathers
  of (t₀, t₁, σ, rgb) + an int32 ray index per sample (padded to the busiest process), the trainer's
  small stats gather, the SUM all-reduce of the shared modules' gradients (one flat float32 buffer
  + a flag per tensor), and with replicas the averaging all-reduce of everything a process holds;
- **samples per ray**: the marching bound — every in-box ray length over the step, per tile, from
  rays drawn like training batches and intersected with every tile — or a given figure
  (``samples_per_ray``, what survives occupancy skipping in a trained model), spread over the tiles
  like the bound;
- **load imbalance**: max / mean of the plan's per-tile weight (:attr:`TilePlan.imbalance`), per
  process, and of the rays' marching work per tile (what the plan balances only when it is planned
  on rays);
- **time per step**: the busiest process's samples at a samples/s rate (measured here by the
  calibration, or given) plus the collectives' bytes on a ring over a link of ``link_gbps``.

``benchmarks/bench_plan_validation.py`` and ``tests/test_planning.py`` compare these predictions with
measured multi-process runs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.dataset import Dataset
from nerfxl.data.rays import RayBundle, generate_rays
from nerfxl.data.sampler import generator_for
from nerfxl.errors import ConfigError
from nerfxl.fields.config import FieldConfig, build_radiance_field
from nerfxl.parallel.tiles import check_tiles_per_process, tiles_of_rank
from nerfxl.partition.plan import TilePlan, plan_tiles
from nerfxl.renderer import TiledRenderer, tile_occupancy_resolution
from nerfxl.rendering.segments import SEGMENT_WIDTH, composite_segments, render_segments
from nerfxl.run.config import TrainConfig, upsample_resolutions

FLOAT = 4  # bytes of float32: parameters, moments, gradients, blocks
SEGMENT_BYTES = SEGMENT_WIDTH * FLOAT  # one ray's segment in one tile: colour (3), opacity, depth, distortion
SAMPLE_ROW_BYTES = 6 * FLOAT + 4  # sample exchange: t_start, t_end, σ, rgb (float32) + ray index (int32)
GATHER_HEADER_BYTES = 4 * 8  # a variable-row gather first exchanges 4 int64: rows, row size, dims, dtype
STATS_BYTES = GATHER_HEADER_BYTES + 2 * 8  # the trainer's per-step gather of (samples, regulariser) float64
STOP_AGREEMENT_BYTES = 8  # the training loop's Ctrl-C agreement: one float64 all-reduce per step
OCCUPANCY_CELL_BYTES = FLOAT + 1  # float32 density estimate + bool occupied
ADAM_STEP_BYTES = FLOAT  # Adam's per-tensor step counter (a float32 scalar)
PLAN_RAYS = 1 << 16  # rays drawn to estimate the marching work per tile
CALIBRATION_RAYS = 256


# ----------------------------------------------------------------------------------------------
# The job


@dataclass(frozen=True)
class Layout:
    """How K tiles spread over D processes: M = D / replicas processes per model copy, K / M tiles each."""

    partitions: int
    devices: int
    replicas: int
    model_processes: int
    tiles_per_rank: int


def job_layout(config: TrainConfig) -> Layout:
    """The job's :class:`Layout`; one-line ConfigErrors for process counts that do not divide."""
    if config.method != "nerfxl" or config.strategy != "tiles":
        raise ConfigError(f"nerfxl plan models NeRF-XL tiles (--method nerfxl --strategy tiles), not "
                          f"--method {config.method} --strategy {config.strategy}")
    if config.devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {config.devices}")
    if config.replicas < 1 or config.devices % config.replicas:
        raise ConfigError(f"--replicas {config.replicas} does not split --devices {config.devices} into equal "
                          f"model-parallel groups (choose a divisor of {config.devices})")
    if config.batch_rays < 1:
        raise ConfigError(f"--batch-rays must be at least 1, got {config.batch_rays}")
    m = config.devices // config.replicas
    per = check_tiles_per_process(config.partitions, m)
    return Layout(config.partitions, config.devices, config.replicas, m, per)


def peak_field(config: TrainConfig) -> FieldConfig:
    """The field at its largest: a plane-line grid at the last ``--grid-upsample-steps`` resolution."""
    resolutions = upsample_resolutions(config)
    if not resolutions or config.field.grid.type != "plane-line":
        return config.field
    grid = dataclasses.replace(config.field.grid, base_resolution=tuple(resolutions[-1]))
    return dataclasses.replace(config.field, grid=grid)


# ----------------------------------------------------------------------------------------------
# Parameters and state


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of one tile and of the shared modules (decoder, appearance, pose, background).

    Attributes:
        tile, tile_tensors: elements and tensors of one tile (every tile has the same grid and heads).
        shared, shared_tensors: elements and tensors of the shared modules (all-reduced every step).
        shared_by_module: elements per shared module.
    """

    tile: int
    tile_tensors: int
    shared: int
    shared_tensors: int
    shared_by_module: dict[str, int]


def parameter_counts(field: FieldConfig, n_images: int) -> ParameterCounts:
    """Count by building the model with one tile (on the CPU; the appearance embedding and pose
    corrections get ``n_images`` rows, as in training)."""
    box = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    model = build_radiance_field(field, box, n_images=max(int(n_images), 1), seed=0)
    tile = [p for p in model.tile(0).parameters() if p.requires_grad]
    shared = {name: [p for p in module.parameters() if p.requires_grad]
              for name, module in model.shared_modules().items()}
    return ParameterCounts(
        tile=sum(p.numel() for p in tile), tile_tensors=len(tile),
        shared=sum(p.numel() for ps in shared.values() for p in ps),
        shared_tensors=sum(len(ps) for ps in shared.values()),
        shared_by_module={name: sum(p.numel() for p in ps) for name, ps in shared.items() if ps},
    )


def occupancy_cells(plan: TilePlan, config: TrainConfig) -> list[int]:
    """Occupancy cells of each tile's grid (the renderer's rule, on the plan's boxes)."""
    scene = plan.scene_box.float()
    cells = []
    for box in plan.boxes.float():
        nx, ny, nz = tile_occupancy_resolution(box, scene, config.render)
        cells.append(nx * ny * nz)
    return cells


def state_bytes(counts: ParameterCounts, tiles: int, cells: int) -> dict[str, int]:
    """Bytes a process holding ``tiles`` tiles (with ``cells`` occupancy cells in all) keeps between steps:
    parameters, their gradients, Adam's two moments + step counters, occupancy grids."""
    numel = tiles * counts.tile + counts.shared
    tensors = tiles * counts.tile_tensors + counts.shared_tensors
    return {
        "parameters": numel * FLOAT,
        "gradients": numel * FLOAT,
        "optimizer": 2 * numel * FLOAT + tensors * ADAM_STEP_BYTES,
        "occupancy": cells * OCCUPANCY_CELL_BYTES,
    }


def checkpoint_bytes(counts: ParameterCounts, cells: list[int]) -> dict[str, int]:
    """Tensor bytes of one checkpoint: per tile its weights, moments, step counters and occupancy grid;
    the shared modules with theirs (the safetensors headers and JSON files add a few kB)."""
    def with_moments(numel: int, tensors: int) -> int:
        return 3 * numel * FLOAT + tensors * ADAM_STEP_BYTES

    tiles = [with_moments(counts.tile, counts.tile_tensors) + c * OCCUPANCY_CELL_BYTES for c in cells]
    shared = with_moments(counts.shared, counts.shared_tensors)
    return {"largest_tile": max(tiles), "tiles": sum(tiles), "shared": shared, "total": sum(tiles) + shared}


# ----------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True)
class RayWork:
    """Where the marching work of training rays lies, per tile.

    Attributes:
        samples_per_ray: [K] expected marched samples per ray in each tile (every occupancy cell
            occupied: the bound before empty-space skipping), capped at max_samples_per_ray per tile.
        hit_fraction: [K] fraction of rays that cross each tile.
        rays: rays drawn.
        step: marching step in dataset units.
    """

    samples_per_ray: Tensor
    hit_fraction: Tensor
    rays: int
    step: float

    @property
    def tiles_crossed_per_ray(self) -> float:
        return float(self.hit_fraction.sum())

    @property
    def bound_per_ray(self) -> float:
        return float(self.samples_per_ray.sum())


def training_rays(dataset: Dataset, n: int, seed: int = 0) -> RayBundle:
    """``n`` rays through pixels drawn uniformly over every training pixel (as training batches are);
    only the cameras are used."""
    cams = dataset.cameras.to("cpu")
    g = generator_for(seed, 0x9A4)
    counts = (cams.width * cams.height).to(torch.float64)
    image = torch.multinomial(counts, n, replacement=True, generator=g)
    size = torch.stack([cams.width[image], cams.height[image]], dim=-1).to(torch.float32)
    uv = torch.rand(n, 2, generator=g) * size
    return generate_rays(cams, image, uv)


def ray_work(dataset: Dataset, plan: TilePlan, config: TrainConfig, n: int = PLAN_RAYS, seed: int = 0) -> RayWork:
    """Intersect ``n`` training rays with every tile: marched samples per ray per tile, as the marcher
    counts them (a segment of length L gets about L / step + 1 intervals: the one straddling each face
    is split)."""
    rays = training_rays(dataset, n, seed)
    boxes = plan.boxes.to(torch.float64)
    diagonal = float((plan.scene_box[1] - plan.scene_box[0]).norm())
    step = diagonal / config.render.samples_per_diagonal
    cap = config.render.max_samples_per_ray
    total = torch.zeros(plan.k, dtype=torch.float64)
    hits = torch.zeros(plan.k, dtype=torch.float64)
    origins, directions = rays.origins.double(), rays.directions.double()
    chunk = max(1, (1 << 22) // plan.k)
    for start in range(0, n, chunk):
        t0, t1, hit = intersect_rays_boxes(origins[start:start + chunk], directions[start:start + chunk], boxes)
        count = torch.where(hit, ((t1 - t0) / step + 1.0).clamp(max=cap), torch.zeros_like(t0))
        total += count.sum(dim=0)
        hits += hit.sum(dim=0)
    return RayWork(total / n, hits / n, n, step)


def samples_per_rank(per_tile: Tensor, model_processes: int) -> Tensor:
    """[M] samples per ray on each process (the sum over its K / M consecutive tiles)."""
    return per_tile.reshape(model_processes, -1).sum(dim=1)


# ----------------------------------------------------------------------------------------------
# Bytes per step


def exchange_bytes(config: TrainConfig, layout: Layout, counts: ParameterCounts,
                   busiest_samples: float) -> dict[str, float]:
    """Bytes per training step one process hands to the collectives (``DistContext.stats``), by kind.

    Args:
        busiest_samples: samples per step of the process with the most (the sample exchange pads every
            process's rows to it).
    Returns:
        ``partition_exchange`` (the [K/M, R, 6] blocks + the stats gather), ``sample_exchange`` (the two
        variable gathers + the stats gather), ``gradient_all_reduce`` (shared modules), and
        ``replica_average`` / ``replica_stats`` (zero without replicas); ``exchange`` is the configured one.
    """
    m, r = layout.model_processes, config.batch_rays
    out = {"partition_exchange": 0.0, "sample_exchange": 0.0, "gradient_all_reduce": 0.0,
           "replica_average": 0.0, "replica_stats": 0.0}
    if m > 1:
        out["partition_exchange"] = float(layout.tiles_per_rank * r * SEGMENT_BYTES + STATS_BYTES)
        rows = math.ceil(busiest_samples)
        out["sample_exchange"] = float(2 * GATHER_HEADER_BYTES + rows * SAMPLE_ROW_BYTES + STATS_BYTES) if rows else \
            float(2 * GATHER_HEADER_BYTES + STATS_BYTES)
        out["gradient_all_reduce"] = float((counts.shared + counts.shared_tensors) * FLOAT)
    if layout.replicas > 1:
        held = layout.tiles_per_rank * counts.tile + counts.shared
        tensors = layout.tiles_per_rank * counts.tile_tensors + counts.shared_tensors
        out["replica_average"] = float((held + tensors) * FLOAT)
        keys = 4 + (config.loss.distortion > 0)  # mse, samples, samples_max_rank, loss (+ distortion)
        out["replica_stats"] = float(GATHER_HEADER_BYTES + 8 * keys)
    out["exchange"] = out["sample_exchange" if config.exchange == "sample" else "partition_exchange"]
    return out


def wire_bytes(payload: dict[str, float], layout: Layout) -> dict[str, float]:
    """Bytes each process puts on its link per step, on ring algorithms: an all-gather of P bytes per
    process sends (M − 1)·P; an all-reduce of N bytes sends 2·(M − 1)/M·N (the replica average: over R)."""
    m, reps = layout.model_processes, layout.replicas
    return {
        "exchange": (m - 1) * payload["exchange"],
        "gradient_all_reduce": 2 * (m - 1) / m * payload["gradient_all_reduce"],
        "replica_average": 2 * (reps - 1) / reps * (payload["replica_average"] + payload["replica_stats"]),
    }


# ----------------------------------------------------------------------------------------------
# Activations, measured


@dataclass(frozen=True)
class ActivationCost:
    """Bytes autograd saves for backward in a training step, per unit of work (:func:`calibrate_activations`).

    Attributes:
        per_sample: a tile's field evaluation, marching and segment rendering, per sample.
        per_sample_render: of which the segment rendering.
        per_sample_merge: the sample exchange's part per *gathered* sample (every process sorts and
            renders every process's samples): ``render_sample_based``'s per-sample cost on one process
            minus the field's (``per_sample − per_sample_render``).
        per_ray_tile: per ray and held tile (segment outputs).
        per_ray_composite: per ray and tile in the compositing of K ≥ 2 segments.
        per_ray: per ray (compositing's fixed part, the loss).
        per_ray_background: per ray, on the one process whose background is differentiable.
        seconds_per_sample: forward + backward time per sample of the tile part on this machine.
        how: how these were measured.
    """

    per_sample: float
    per_sample_render: float
    per_sample_merge: float
    per_ray_tile: float
    per_ray_composite: float
    per_ray: float
    per_ray_background: float
    seconds_per_sample: float
    how: str


class SavedBytes:
    """Context manager counting the bytes of the tensors autograd saves for backward inside it: each
    storage once, at its full size, leaving out the storages of ``exclude`` (parameters, buffers)."""

    def __init__(self, exclude=()):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}
        self._hooks = None

    def _pack(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude:
            self.storages[ptr] = max(self.storages.get(ptr, 0), storage.nbytes())
        return t

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())

    def __enter__(self) -> "SavedBytes":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def _synthetic_renderer(config: TrainConfig, k: int, samples_per_diagonal: int) -> TiledRenderer:
    """The preset's field and renderer over the unit cube in K slabs along x, every cell occupied, no pruning."""
    boxes = torch.stack([torch.tensor([[i / k, 0.0, 0.0], [(i + 1) / k, 1.0, 1.0]]) for i in range(k)])
    field = build_radiance_field(peak_field(config), boxes, n_images=1, seed=0)
    render = dataclasses.replace(config.render, samples_per_diagonal=samples_per_diagonal, prune_alpha_threshold=0.0,
                                 prune_transmittance_threshold=0.0)
    return TiledRenderer(field, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), render)


def _synthetic_rays(n: int, seed: int = 0) -> RayBundle:
    """Rays from above the unit cube into it (every ray crosses the cube)."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.rand(n, 3, generator=g) * torch.tensor([2.0, 2.0, 0.5]) + torch.tensor([-0.5, -0.5, 1.5])
    targets = torch.rand(n, 3, generator=g) * torch.tensor([1.0, 1.0, 0.2])
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    return RayBundle(origins, directions, torch.zeros(n, dtype=torch.int64))


def _tile_part(renderer: TiledRenderer, rays: RayBundle) -> tuple[int, int, float]:
    """(saved bytes, samples, seconds forward + backward) of one tile's render_tile."""
    exclude = [*renderer.parameters(), *renderer.buffers()]
    t0 = time.perf_counter()
    with SavedBytes(exclude) as saved:
        block, n = renderer.render_tile(0, rays, True, torch.Generator().manual_seed(1))
    block.square().sum().backward()
    return saved.nbytes, n, time.perf_counter() - t0


def _sample_exchange_part(renderer: TiledRenderer, rays: RayBundle) -> tuple[int, int]:
    """(saved bytes, samples) of the sample exchange's rendering on one process (gathers are identities)."""
    from nerfxl.parallel.distributed import single_process_context
    from nerfxl.parallel.sample_based import render_sample_based

    exclude = [*renderer.parameters(), *renderer.buffers()]
    with SavedBytes(exclude) as saved:
        out = render_sample_based(renderer, rays, single_process_context("cpu"), stratified=True,
                                  generators=lambda k: torch.Generator().manual_seed(1))
    return saved.nbytes, out.n_samples


def calibrate_activations(config: TrainConfig, rays: int = CALIBRATION_RAYS) -> ActivationCost:
    """Measure the :class:`ActivationCost` of ``config``'s field on this machine (about a second)."""
    bundle = _synthetic_rays(rays)
    # Two sample densities on one tile: the slope is the per-sample cost, the rest the per-ray one.
    (b1, s1, _), (b2, s2, seconds) = (_tile_part(_synthetic_renderer(config, 1, spd), bundle) for spd in (64, 192))
    seconds = min(seconds, _tile_part(_synthetic_renderer(config, 1, 192), bundle)[2])  # the quieter of two runs
    per_sample = (b2 - b1) / max(s2 - s1, 1)
    per_ray_tile = max(b1 - per_sample * s1, 0.0) / rays
    (c1, n1), (c2, n2) = (_sample_exchange_part(_synthetic_renderer(config, 1, spd), bundle) for spd in (64, 192))
    per_sample_exchange = (c2 - c1) / max(n2 - n1, 1)

    # Segment rendering alone, on random samples (the sample exchange renders everyone's samples).
    n = 8 * rays
    g = torch.Generator().manual_seed(2)
    ray_ids = torch.sort(torch.randint(rays, (n,), generator=g)).values
    t_starts = torch.rand(n, generator=g)
    sigmas, rgbs = torch.rand(n, generator=g).requires_grad_(), torch.rand(n, 3, generator=g).requires_grad_()
    with SavedBytes() as saved:
        render_segments(t_starts, t_starts + 0.01, sigmas, rgbs, ray_ids, rays)
    per_sample_render = saved.nbytes / n

    # Compositing K = 2 and 4 segments per ray (in each ray's own order), plus the loss terms.
    composite = []
    for k in (2, 4):
        blocks = torch.rand(rays, k, SEGMENT_WIDTH, generator=g).requires_grad_()
        order = torch.argsort(torch.rand(rays, k, generator=g), dim=1)
        with SavedBytes() as saved:
            out = composite_segments(blocks, order=order, background=torch.ones(rays, 3))
            ((out.rgb - 0.5) ** 2).mean() + out.distortion.mean()
        composite.append(saved.nbytes)
    per_ray_composite = (composite[1] - composite[0]) / (2 * rays)
    per_ray = max(composite[0] - 2 * per_ray_composite * rays, 0.0) / rays

    field = _synthetic_renderer(config, 1, 64).field
    with SavedBytes([*field.parameters(), *field.buffers()]) as saved:
        field.background_colour(bundle.directions, bundle.image_indices)
    return ActivationCost(
        per_sample=per_sample, per_sample_render=per_sample_render,
        per_sample_merge=max(per_sample_exchange - (per_sample - per_sample_render), 0.0), per_ray_tile=per_ray_tile,
        per_ray_composite=per_ray_composite, per_ray=per_ray, per_ray_background=saved.nbytes / rays,
        seconds_per_sample=seconds / max(s2, 1),
        how=(f"saved-for-backward bytes counted with torch.autograd.graph.saved_tensors_hooks (each storage once, "
             f"parameters and buffers excluded) while the preset's field renders {rays} synthetic rays through one "
             f"tile at two sample densities ({s1} and {s2} samples: the slope is per sample), the same through the "
             f"sample exchange's rendering, segment rendering and compositing of K = 2, 4 random segments measured "
             f"alone; seconds per sample: forward + backward "
             f"of the {s2}-sample tile on this machine, the faster of two runs ({torch.get_num_threads()} threads)"),
    )


def activation_bytes(cost: ActivationCost, config: TrainConfig, layout: Layout, rank_samples: float,
                     all_samples: float, main: bool) -> float:
    """Saved-for-backward bytes of one training step on a process with ``rank_samples`` samples
    (``all_samples``: every process's, which the sample exchange renders everywhere; ``main``: the
    process whose background is differentiable)."""
    r, k = config.batch_rays, layout.partitions
    if config.exchange == "sample" and layout.model_processes > 1:
        field_only = cost.per_sample - cost.per_sample_render
        total = field_only * rank_samples + cost.per_sample_merge * all_samples + cost.per_ray * r
    else:
        total = cost.per_sample * rank_samples + cost.per_ray_tile * r * layout.tiles_per_rank
        if k > 1:
            total += cost.per_ray_composite * r * k + cost.per_ray * r
    if main:
        total += cost.per_ray_background * r
    return total


# ----------------------------------------------------------------------------------------------
# The whole report


def plan_job(dataset: Dataset, config: TrainConfig, link_gbps: float = 100.0, samples_per_ray: Optional[float] = None,
             samples_per_s: Optional[float] = None, plan: TilePlan | None = None, calibration: ActivationCost | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Everything ``nerfxl plan`` reports, as a JSON-compatible dict (see the module docstring).

    Args:
        dataset: the training split (cameras and scene box; images are not read).
        config: the job: preset with --partitions, --devices, --batch-rays, --exchange, --replicas set.
        link_gbps: each process's network link, in gigabits per second.
        samples_per_ray: samples per ray that survive empty-space skipping (over all tiles); None: the
            marching bound.
        samples_per_s: one process's forward + backward samples per second; None: measured here.
        plan: the tile plan (default: planned as training plans it).
        calibration: measured activation costs (default: :func:`calibrate_activations`).
    """
    if not (math.isfinite(link_gbps) and link_gbps > 0):
        raise ConfigError(f"--link-gbps must be a positive number, got {link_gbps}")
    if samples_per_ray is not None and not (math.isfinite(samples_per_ray) and samples_per_ray >= 0):
        raise ConfigError(f"--samples-per-ray must be a non-negative number, got {samples_per_ray}")
    if samples_per_s is not None and not (math.isfinite(samples_per_s) and samples_per_s > 0):
        raise ConfigError(f"--samples-per-s must be a positive number, got {samples_per_s}")
    layout = job_layout(config)
    t0 = time.perf_counter()
    if plan is None:
        if layout.partitions == 1:
            box = dataset.scene_box.double()
            plan = TilePlan(boxes=box[None], method="kd", scene_box=box, points_per_tile=[0], weight_per_tile=[0.0],
                            source={"kind": "single tile"})
        else:
            plan = plan_tiles(dataset, layout.partitions, config.partition_method, seed=config.seed)
    elif plan.k != layout.partitions:
        raise ConfigError(f"the tile plan has {plan.k} tiles but --partitions is {layout.partitions}")
    t_plan = time.perf_counter() - t0
    work = ray_work(dataset, plan, config, seed=seed)
    counts = parameter_counts(peak_field(config), len(dataset))
    cells = occupancy_cells(plan, config)
    cost = calibration if calibration is not None else calibrate_activations(config)

    m, r = layout.model_processes, config.batch_rays
    bound = work.bound_per_ray
    used = bound if samples_per_ray is None else float(samples_per_ray)
    survive = used / bound if bound > 0 else 0.0
    per_rank_spr = samples_per_rank(work.samples_per_ray * survive, m)
    rank_samples = (per_rank_spr * r).tolist()  # samples per step of each process of one model copy
    busiest = int(torch.tensor(rank_samples).argmax()) if rank_samples else 0
    all_samples = sum(rank_samples)

    rank_cells = [sum(cells[k] for k in tiles_of_rank(layout.partitions, m, q)) for q in range(m)]
    state = state_bytes(counts, layout.tiles_per_rank, max(rank_cells))
    activations = [activation_bytes(cost, config, layout, s, all_samples, main=(q == 0)) for q, s in enumerate(rank_samples)]
    if config.exchange == "sample" and m > 1:
        receive = m * max(rank_samples) * SAMPLE_ROW_BYTES
    else:
        receive = layout.partitions * r * SEGMENT_BYTES if m > 1 else 0
    memory = dict(state, activations=int(max(activations)), exchange_buffers=int(receive))
    memory["total"] = int(sum(memory.values()))

    payload = exchange_bytes(config, layout, counts, max(rank_samples))
    wire = wire_bytes(payload, layout)
    rate = samples_per_s if samples_per_s is not None else 1.0 / max(cost.seconds_per_sample, 1e-12)
    link = link_gbps * 1e9 / 8
    seconds = {"compute": max(rank_samples) / rate, "exchange": wire["exchange"] / link,
               "gradient_all_reduce": wire["gradient_all_reduce"] / link, "replica_average": wire["replica_average"] / link}
    seconds["total"] = sum(seconds.values())

    plan_ranks = plan.shares.reshape(m, -1).sum(dim=1)
    work_tiles = work.samples_per_ray / max(bound, 1e-12)
    cams = dataset.cameras
    pixels = (cams.width * cams.height).to(torch.float64)
    return {
        "job": {"partitions": layout.partitions, "devices": layout.devices, "replicas": layout.replicas,
                "model_processes": m, "tiles_per_rank": layout.tiles_per_rank, "batch_rays": r,
                "exchange": config.exchange, "link_gbps": link_gbps, "grid": config.field.grid.type},
        "dataset": {"root": str(dataset.root), "format": dataset.format, "split": dataset.split,
                    "frames": len(dataset), "mean_megapixels": float(pixels.mean()) / 1e6,
                    "poses_only": bool(dataset.metadata.get("poses_only", False)),
                    "scene_box": dataset.scene_box.tolist()},
        "parameters": {"per_tile": counts.tile, "shared": counts.shared, "shared_by_module": counts.shared_by_module,
                       "per_rank": layout.tiles_per_rank * counts.tile + counts.shared,
                       "model": layout.partitions * counts.tile + counts.shared},
        "memory_per_rank_bytes": memory,
        "checkpoint_bytes": checkpoint_bytes(counts, cells),
        "samples": {"marched_bound_per_ray": bound, "per_ray_used": used,
                    "per_ray_from": "the marching bound (every cell occupied)" if samples_per_ray is None
                    else "--samples-per-ray", "tiles_crossed_per_ray": work.tiles_crossed_per_ray,
                    "busiest_rank": busiest, "per_step_per_rank": rank_samples, "step_in_dataset_units": work.step},
        "bytes_per_step_per_rank": payload,
        "wire_bytes_per_step_per_rank": wire,
        "stop_agreement_bytes_per_step": STOP_AGREEMENT_BYTES if layout.devices > 1 else 0,
        "imbalance": {"plan_tiles": plan.imbalance, "plan_ranks": float(plan_ranks.max()) * m,
                      "ray_work_tiles": float(work_tiles.max()) * layout.partitions,
                      "ray_work_ranks": float(samples_per_rank(work_tiles, m).max()) * m,
                      "plan_source": plan.source.get("kind", "?")},
        "time_per_step_s": dict(seconds, samples_per_s=rate,
                                samples_per_s_from="--samples-per-s" if samples_per_s is not None else "measured here"),
        "activation_cost": dataclasses.asdict(cost),
        "planning_seconds": t_plan,
    }


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def format_report(report: dict[str, Any]) -> str:
    """The report as a short table (bytes in decimal units)."""
    j, p, mem, b, w = (report[k] for k in ("job", "parameters", "memory_per_rank_bytes", "bytes_per_step_per_rank",
                                           "wire_bytes_per_step_per_rank"))
    s, imb, t, d = report["samples"], report["imbalance"], report["time_per_step_s"], report["dataset"]
    rows = [
        ("dataset", f"{d['frames']} frames ({d['format']}{', poses only' if d['poses_only'] else ''}), "
                    f"{d['mean_megapixels']:.2f} MP each"),
        ("job", f"K = {j['partitions']} tiles on D = {j['devices']} processes ({j['replicas']} replica(s), "
                f"{j['tiles_per_rank']} tile(s) each), {j['batch_rays']} rays/step, {j['exchange']} exchange"),
        ("parameters", f"{p['per_tile']:,} per tile, {p['shared']:,} shared; {p['per_rank']:,} per rank, "
                       f"{p['model']:,} in the model"),
        ("memory / rank", f"parameters {_bytes(mem['parameters'])}, gradients {_bytes(mem['gradients'])}, Adam "
                          f"{_bytes(mem['optimizer'])}, occupancy {_bytes(mem['occupancy'])}"),
        ("", f"activations {_bytes(mem['activations'])}, exchange buffers {_bytes(mem['exchange_buffers'])}; "
             f"total {_bytes(mem['total'])}"),
        ("checkpoint", f"{_bytes(report['checkpoint_bytes']['total'])} (largest tile "
                       f"{_bytes(report['checkpoint_bytes']['largest_tile'])})"),
        ("samples / ray", f"{s['per_ray_used']:.1f} used ({s['per_ray_from']}); marching bound "
                          f"{s['marched_bound_per_ray']:.1f}; {s['tiles_crossed_per_ray']:.2f} tiles crossed"),
        ("bytes / step", f"partition {_bytes(b['partition_exchange'])}, sample {_bytes(b['sample_exchange'])}, "
                         f"gradients {_bytes(b['gradient_all_reduce'])}"
                         + (f", replica average {_bytes(b['replica_average'])}" if j["replicas"] > 1 else "")
                         + " (handed in per rank)"),
        ("on the link", f"exchange {_bytes(w['exchange'])}, gradients {_bytes(w['gradient_all_reduce'])}"
                        + (f", replicas {_bytes(w['replica_average'])}" if j["replicas"] > 1 else "")
                        + " (sent per rank, ring)"),
        ("imbalance", f"plan {imb['plan_tiles']:.3f} per tile, {imb['plan_ranks']:.3f} per rank (planned on "
                      f"{imb['plan_source']}); ray work {imb['ray_work_tiles']:.3f} per tile, "
                      f"{imb['ray_work_ranks']:.3f} per rank"),
        ("time / step", f"{t['total']:.3g} s = compute {t['compute']:.3g} s ({t['samples_per_s']:.3g} samples/s, "
                        f"{t['samples_per_s_from']}) + exchange {t['exchange']:.3g} s + gradients "
                        f"{t['gradient_all_reduce']:.3g} s at {j['link_gbps']:g} Gb/s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {text}" for name, text in rows)


def load_for_planning(data: Path, split: str = "train", format: str | None = None,
                      scene_box: tuple[float, ...] | None = None) -> Dataset:
    """A dataset's ``split`` loaded poses-only (no image is checked or read), with an optional box."""
    from nerfxl.data.load import load_dataset

    dataset = load_dataset(data, split, format=format, poses_only=True)
    if scene_box is not None:
        dataset.scene_box = scene_box_tensor(scene_box)
    return dataset


def scene_box_tensor(values: tuple[float, ...]) -> Tensor:
    """--scene-box xmin ymin zmin xmax ymax zmax as a [2, 3] tensor (each max above its min)."""
    box = torch.tensor(values, dtype=torch.float32).reshape(2, 3)
    if not bool((box[1] > box[0]).all()):
        raise ConfigError(f"--scene-box {list(values)}: each max must exceed its min")
    return box


def described_flight(frames: int, width: int, height: int, area_m2: float, altitude_m: float,
                     fov_deg: float, pitch_deg: float = 45.0, seed: int = 0) -> Dataset:
    """A poses-only dataset of an aerial flight (:func:`nerfxl.data.aerial_poses.aerial_poses`) without
    any file: ``frames`` cameras of ``width`` × ``height`` over a square of ``area_m2``."""
    from nerfxl.data.aerial_poses import aerial_poses, aerial_scene_box, focal_length
    from nerfxl.data.cameras import CameraModel, Cameras
    from nerfxl.data.images import PosesOnlyImages

    if width < 1 or height < 1:
        raise ConfigError(f"--width and --height must be positive, got {width}x{height}")
    c2w = aerial_poses(frames, area_m2, altitude_m, pitch_deg, seed)
    f = focal_length(width, fov_deg)
    n = len(c2w)
    cameras = Cameras.create(torch.tensor(c2w, dtype=torch.float32), torch.full((n,), f), torch.full((n,), f),
                             torch.full((n,), width / 2), torch.full((n,), height / 2),
                             torch.full((n,), width, dtype=torch.int64), torch.full((n,), height, dtype=torch.int64),
                             None, CameraModel.PERSPECTIVE)
    names = [f"frame-{i:06d}" for i in range(n)]
    images = PosesOnlyImages([Path(name) for name in names], [(width, height)] * n, cache_bytes=0)
    box = torch.tensor(aerial_scene_box(c2w, altitude_m), dtype=torch.float32)
    return Dataset(cameras=cameras, images=images, split="train", scene_box=box, format="aerial flight",
                   root=Path("."), image_names=names,
                   metadata={"poses_only": True, "area_m2": area_m2, "altitude_m": altitude_m})
