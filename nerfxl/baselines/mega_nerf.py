"""The ``independent-3d`` baseline (Mega-NeRF style): K tile models, each trained alone.

Same tile plan as NeRF-XL; every tile's box is grown by ``overlap`` (15%, clamped to the scene
box) and its model is trained *alone* on the training pixels whose rays cross the expanded box.
Those rays see the whole scene, so each model is an ordinary one-tile field over the whole scene
box whose grid is read through a contraction towards the expanded box
(:mod:`nerfxl.baselines.contraction`): the resolution concentrates there, the rest of the scene
gets the shells.

Budget: every tile model is trained with the *same* configuration — ``config.steps`` steps of
``config.batch_rays`` rays — so each model gets the same rays per iteration as one NeRF-XL step and
K models together cost K times the rays (the samples per ray depend on the model's occupancy).

Layout of ``run_dir``::

    baseline.json            boxes, per-tile selections and the sampling statistics below
    models/tile-000/ ...     one ordinary run folder per tile (config.yaml, checkpoints)

The statistic the scaling study reports is the fraction of each model's training samples (interval
midpoints of the marched and pruned samples, as evaluated in training) lying outside its own,
unexpanded, tile; it is measured on ``measure_steps`` steps spread over the run, right after each
such step (same batch, fresh jitter), and summed over them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from nerfxl.baselines.contraction import DEFAULT_INNER_FRACTION, contract_tile_grid
from nerfxl.baselines.mega_nerf_sampler import TilePixelSampler
from nerfxl.baselines.overlap import DEFAULT_OVERLAP, expand_boxes
from nerfxl.baselines.ray_selection import fraction_outside_tile, pixels_hitting_boxes
from nerfxl.configio import save_config_yaml
from nerfxl.data.dataset import Dataset
from nerfxl.data.sampler import generator_for
from nerfxl.errors import DataError
from nerfxl.evaluate import spread_indices
from nerfxl.fileio import write_json_atomic
from nerfxl.plateau import plateau_rule_of, write_convergence
from nerfxl.renderer import sample_positions
from nerfxl.run.config import TrainConfig
from nerfxl.run.load import load_split
from nerfxl.trainer import Trainer

BASELINE_FILE = "baseline.json"
METHOD = "independent-3d"
DEFAULT_MEASURE_STEPS = 4
_MEASURE_STREAM = 0x3E6A  # jitter of the measuring passes, apart from the training streams


def tile_run_dir(run_dir: Path, k: int) -> Path:
    """The run folder of tile k's model."""
    return Path(run_dir) / "models" / f"tile-{int(k):03d}"


def tile_config(config: TrainConfig) -> TrainConfig:
    """The configuration each tile model trains with: one tile, one process, no plan of its own."""
    return dataclasses.replace(config, partitions=1, devices=1, method="nerfxl", tile_plan=None, resume=None)


def install_tile_contraction(trainer: Trainer, expanded_box_model: Tensor, inner_fraction: float) -> None:
    """Make the trainer's single tile read its grid contracted towards ``expanded_box_model`` [2, 3]
    (model coordinates)."""
    contract_tile_grid(trainer.renderer.field, 0, expanded_box_model.to(trainer.device), inner_fraction)


@torch.no_grad()
def measure_training_samples(trainer: Trainer, step: int, tile_box_model: Tensor) -> tuple[int, int]:
    """(samples outside ``tile_box_model`` [2, 3], all samples) of the batch of ``step``, marched and
    pruned as the training step does (stratified, own jitter stream)."""
    batch = trainer.sampler.sample(step).to(trainer.device)
    rays = trainer.rays_for(batch)
    seed = int(torch.randint(2**62, (1,), generator=generator_for(trainer.config.seed, _MEASURE_STREAM, step)))
    generator = torch.Generator(device=trainer.device).manual_seed(seed)
    samples, _, _ = trainer.renderer.query_tile(0, rays, stratified=True, generator=generator)
    if samples.n_samples == 0:
        return 0, 0
    fraction = fraction_outside_tile(sample_positions(rays, samples), tile_box_model.to(rays.origins))
    return round(fraction * samples.n_samples), samples.n_samples


def train_independent_3d(
    config: TrainConfig,
    plan_boxes_world: Tensor,
    run_dir: Path,
    overlap: float = DEFAULT_OVERLAP,
    inner_fraction: float = DEFAULT_INNER_FRACTION,
    measure_steps: int = DEFAULT_MEASURE_STEPS,
    train_data: Dataset | None = None,
    test_data: Dataset | None = None,
) -> dict:
    """Train the K tile models of the ``independent-3d`` baseline one after another.

    Args:
        config: the training configuration every tile model uses (``partitions``/``devices`` ignored).
        plan_boxes_world: [K, 2, 3] the tile plan's boxes in dataset units (e.g. a NeRF-XL run's
            ``tiles.json`` boxes).
        run_dir: output folder (created).
        overlap: growth of each tile box (see :func:`~nerfxl.baselines.overlap.expand_boxes`).
        inner_fraction: least share of each axis of a model's grid given to its expanded box.
        measure_steps: steps at which the samples outside the own tile are counted (0 = none).
        train_data / test_data: loaded splits (None = loaded from ``config``).
    Returns:
        The contents written to ``run_dir/baseline.json``.
    """
    run_dir = Path(run_dir)
    config = tile_config(config)
    if train_data is None:
        train_data = load_split(config, "train")
        try:
            test_data = load_split(config, "test")
        except DataError:
            test_data = None
    plan = torch.as_tensor(plan_boxes_world, dtype=torch.float64).reshape(-1, 2, 3)
    scene_world = train_data.scene_box.detach().double().cpu()
    expanded_world = expand_boxes(plan, overlap, scene_world)
    run_dir.mkdir(parents=True, exist_ok=True)

    record: dict = {
        "method": METHOD, "n_tiles": int(plan.shape[0]), "overlap": overlap, "inner_fraction": inner_fraction,
        "steps": config.steps, "batch_rays": config.batch_rays, "scene_box_world": scene_world.tolist(),
        "tile_boxes_world": plan.tolist(), "expanded_boxes_world": expanded_world.tolist(), "tiles": [],
    }
    selections = None
    for k in range(plan.shape[0]):
        t0 = time.perf_counter()
        trainer = Trainer(config, tile_run_dir(run_dir, k), train_data, test_data)
        tile_model = trainer.transform.box(plan[k]).float()
        expanded_model = trainer.transform.box(expanded_world).float()
        if selections is None:  # every tile trainer shares the scene transform: select once for all tiles
            selections = pixels_hitting_boxes(trainer.train_cameras, expanded_model)
            record.update({"scene_transform": trainer.transform.to_dict(), "scene_box_model": trainer.scene_box.tolist(),
                           "tile_boxes_model": trainer.transform.box(plan).tolist(),
                           "expanded_boxes_model": expanded_model.tolist()})
        trainer.sampler = TilePixelSampler(train_data, selections[k], config.batch_rays, config.seed, tile=k)
        install_tile_contraction(trainer, expanded_model[k], inner_fraction)
        outside, total, measured = train_tile_model(trainer, tile_model, measure_steps)
        record["tiles"].append({
            "tile": k, "run": str(tile_run_dir(run_dir, k).relative_to(run_dir)),
            "selected_pixels": len(selections[k]), "fraction_pixels_selected": selections[k].fraction_selected,
            "measured_steps": measured, "measured_samples": total, "samples_outside_tile": outside,
            "fraction_outside_tile": outside / total if total else math.nan,
            "train_seconds": time.perf_counter() - t0,
        })
    fractions = [t["fraction_outside_tile"] for t in record["tiles"] if math.isfinite(t["fraction_outside_tile"])]
    record["mean_fraction_outside_tile"] = sum(fractions) / len(fractions) if fractions else math.nan
    write_json_atomic(run_dir / BASELINE_FILE, record)
    return record


def train_tile_model(trainer: Trainer, tile_box_model: Tensor, measure_steps: int) -> tuple[int, int, list[int]]:
    """Run one tile model's training loop and save it as a normal run folder.

    Returns:
        (samples outside the own tile, samples counted, the steps measured).
    """
    config = trainer.config
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    save_config_yaml(trainer.run_dir / "config.yaml", config)
    measure = set(spread_indices(config.steps, measure_steps)) if measure_steps > 0 else set()
    outside = total = 0
    plateau, converged = plateau_rule_of(config), False
    while trainer.step < config.steps and not converged:
        step = trainer.step
        stats = trainer.train_step(step)
        if step in measure:
            o, n = measure_training_samples(trainer, step, tile_box_model)
            outside, total = outside + o, total + n
        trainer.step += 1
        converged = plateau is not None and plateau.observe(stats["mse"])
        if trainer.step % config.checkpoint_every == 0 and trainer.step < config.steps and not converged:
            trainer.save()
    trainer.save()
    if plateau is not None:
        write_convergence(trainer.run_dir, plateau, trainer.step, config.steps, converged)
    return outside, total, sorted(measure)
