"""Rendering and scoring the ``independent-3d`` baseline: the tile models blended per 3D sample.

A ray is marched once through the scene box (the step NeRF-XL uses: scene diagonal /
``samples_per_diagonal``). Each sample takes the tile models whose expanded box contains it, with
inverse-distance weights to the tile centroids (:func:`~nerfxl.baselines.blending.blend_weights_3d`);
σ and colour are the weighted sums of those models' σ and colour, and the blended samples are
volume-rendered as one segment. An interval is skipped when no model containing its midpoint
marks it occupied (each model's occupancy grid covers the whole scene, but only its own expanded
box is trusted).

Background rule: every model has its own background (sky) model. A ray's background is the
blend of all models' backgrounds with the 3D blend weights taken at the point where the ray leaves
the scene box (for a ray that misses the box: its origin clamped into the box) — the models
trusted last along the ray are the ones that saw what lies behind it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from nerfxl.baselines.blending import blend_weights_3d
from nerfxl.baselines.contraction import contract_tile_grid
from nerfxl.baselines.mega_nerf import BASELINE_FILE, tile_run_dir
from nerfxl.baselines.overlap import box_centres
from nerfxl.data.boxes import intersect_rays_boxes, points_in_boxes
from nerfxl.data.rays import RayBundle
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import CheckpointError
from nerfxl.evaluate import image_metrics, spread_indices, summarise_scores
from nerfxl.fileio import write_json_atomic
from nerfxl.renderer import RenderedRays, TiledRenderer, finish_rendering, sample_positions
from nerfxl.rendering.sampling import march_rays_in_box
from nerfxl.rendering.segments import composite_segments, render_segments
from nerfxl.parallel.distributed import resolve_device
from nerfxl.parallel.images import image_of, novel_view_rays, to_uint8
from nerfxl.run.config import TrainConfig
from nerfxl.run.load import load_split
from nerfxl.run.trained import TrainedRun, load_trained


@dataclass
class BlendedModels:
    """The K tile models of an ``independent-3d`` run, ready to render (model coordinates).

    Attributes:
        renderers: K one-tile renderers (eval mode), tile k's model at index k.
        expanded_boxes: [K, 2, 3] the boxes the models were trained on.
        centroids: [K, 3] centres of the unexpanded tiles (the blend's reference points).
        scene_box: [2, 3].
        config: tile 0's training configuration (all tiles share it).
        transform: dataset → model coordinates.
    """

    renderers: list[TiledRenderer]
    expanded_boxes: Tensor
    centroids: Tensor
    scene_box: Tensor
    config: TrainConfig
    transform: SceneTransform

    @property
    def step_size(self) -> float:
        return self.renderers[0].step_size


class BlendedOccupancy:
    """Occupied where some model whose expanded box contains the point marks it occupied."""

    def __init__(self, models: BlendedModels):
        self.models = models

    def query(self, positions: Tensor) -> Tensor:
        """[N, 3] → [N] bool."""
        inside = points_in_boxes(positions, self.models.expanded_boxes.to(positions))  # [N, K]
        occupied = torch.zeros(positions.shape[0], dtype=torch.bool, device=positions.device)
        for k, renderer in enumerate(self.models.renderers):
            occupied |= inside[:, k] & renderer.occupancy_grid(0).query(positions)
        return occupied


def read_baseline(run_dir: Path) -> dict:
    path = Path(run_dir) / BASELINE_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not an independent-3d run (no {BASELINE_FILE})")
    return json.loads(path.read_text())


def load_tile_model(tile_dir: Path, expanded_box_model: Tensor, inner_fraction: float, device: torch.device) -> TrainedRun:
    """One tile model from its latest checkpoint, with its contraction installed first (the
    checkpoint's grid keys are the contracted grid's)."""
    return load_trained(tile_dir, device=str(device),
                        prepare_field=lambda field: contract_tile_grid(field, 0, expanded_box_model, inner_fraction))


def load_blended_models(run_dir: Path, device: str = "auto") -> BlendedModels:
    """All tile models of an ``independent-3d`` run folder."""
    record = read_baseline(run_dir)
    dev = resolve_device(device)
    expanded = torch.tensor(record["expanded_boxes_model"], dtype=torch.float32)
    runs = [load_tile_model(tile_run_dir(run_dir, k), expanded[k], float(record["inner_fraction"]), dev)
            for k in range(int(record["n_tiles"]))]
    return BlendedModels(
        renderers=[run.renderer for run in runs],
        expanded_boxes=expanded.to(dev),
        centroids=box_centres(torch.tensor(record["tile_boxes_model"], dtype=torch.float32)).to(dev),
        scene_box=torch.tensor(record["scene_box_model"], dtype=torch.float32).to(dev),
        config=runs[0].config,
        transform=runs[0].transform,
    )


def blended_background(models: BlendedModels, rays: RayBundle) -> Tensor:
    """[R, 3] background colours by the rule of the module docstring."""
    _, t_exit, _ = intersect_rays_boxes(rays.origins, rays.directions, models.scene_box.to(rays.origins))
    box = models.scene_box.to(rays.origins)
    # Clamped: round-off must not leave the exit point just outside every expanded box.
    exit_points = (rays.origins + rays.directions * t_exit).clamp(box[0], box[1])
    weights = blend_weights_3d(exit_points, models.expanded_boxes, models.centroids)  # [R, K]
    colours = torch.stack([r.background(rays) for r in models.renderers], dim=1)  # [R, K, 3]
    return (weights[..., None].to(colours) * colours).sum(dim=1)


@torch.no_grad()
def render_blended(models: BlendedModels, rays: RayBundle) -> RenderedRays:
    """Render R rays (model coordinates) through the blended tile models."""
    c = models.config.render
    samples = march_rays_in_box(rays.origins, rays.directions, models.scene_box, models.step_size,
                                occupancy=BlendedOccupancy(models), max_samples_per_ray=c.max_samples_per_ray)
    ri = samples.ray_indices
    positions = sample_positions(rays, samples)
    weights = blend_weights_3d(positions, models.expanded_boxes, models.centroids).to(positions)  # [S, K]
    sigmas = positions.new_zeros(samples.n_samples)
    rgbs = positions.new_zeros(samples.n_samples, 3)
    for k, renderer in enumerate(models.renderers):
        take = (weights[:, k] > 0).nonzero()[:, 0]
        if take.numel() == 0:
            continue
        sigma_k, rgb_k = renderer.field.query(0, positions[take], rays.directions[ri[take]], rays.image_indices[ri[take]])
        w = weights[take, k]
        sigmas[take] += w * sigma_k
        rgbs[take] += w[:, None] * rgb_k
    block = render_segments(samples.t_starts, samples.t_ends, sigmas, rgbs, ri, len(rays))
    out = composite_segments(block[:, None], background=blended_background(models, rays))
    return finish_rendering(out, samples.n_samples)


def render_blended_image(models: BlendedModels, cameras, index: int) -> dict[str, Tensor]:
    """Camera ``index`` (model-frame cameras) as a novel view (zero appearance embedding), in chunks.

    Returns:
        {"rgb": [H, W, 3], "depth": [H, W], "opacity": [H, W]} on CPU.
    """
    rays = novel_view_rays(cameras, index)
    chunk = models.config.render.chunk_rays
    parts = []
    for s in range(0, len(rays.origins), chunk):
        part = RayBundle(rays.origins[s:s + chunk], rays.directions[s:s + chunk], rays.image_indices[s:s + chunk])
        parts.append(render_blended(models, part))
    return image_of(torch.cat([p.rgb for p in parts]), torch.cat([p.depth for p in parts]),
                    torch.cat([p.opacity for p in parts]), cameras, index)


def evaluate_independent_3d(run_dir: Path, split: str = "test", limit: int | None = None, device: str = "auto",
                            save_images: bool = False) -> dict:
    """Score an ``independent-3d`` run on (up to ``limit`` evenly spread views of) a split; writes
    ``run_dir/eval.json`` and returns its contents."""
    import imageio.v3 as iio

    run_dir = Path(run_dir)
    models = load_blended_models(run_dir, device)
    data = load_split(models.config, split)
    cameras = models.transform.cameras(data.cameras).to(models.scene_box.device)
    indices = spread_indices(len(data), limit)
    per_image = []
    t0 = time.perf_counter()
    for j, i in enumerate(indices):
        rendered = render_blended_image(models, cameras, i)
        target = data.images.rgb(i)
        m = image_metrics(rendered["rgb"], target)
        m["image"] = data.image_names[i] if data.image_names else str(i)
        per_image.append(m)
        if save_images:
            (run_dir / "eval").mkdir(parents=True, exist_ok=True)
            iio.imwrite(run_dir / "eval" / f"{j:04d}.png", to_uint8(torch.cat([target, rendered["rgb"]], dim=1)))
    seconds = time.perf_counter() - t0
    result = {"method": "independent-3d", "run": str(run_dir), "split": split, "n_tiles": len(models.renderers),
              **summarise_scores(per_image, seconds, cameras, indices)}
    write_json_atomic(run_dir / "eval.json", result)
    return result
