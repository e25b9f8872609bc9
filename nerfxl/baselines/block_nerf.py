"""The ``independent-2d`` baseline (Block-NeRF style): K models trained alone, blended as images.

Training: the training cameras are clustered into K overlapping groups by their world positions
(:func:`~nerfxl.baselines.clustering.cluster_cameras`); model j covers the whole scene box and is
trained, on its own, on cluster j's images only. Rendering: every one of the ``nearest`` clusters
closest to the novel camera renders the whole view, and the images are mixed with inverse-distance
weights (:func:`~nerfxl.baselines.blending.blend_weights_2d`).

Layout of a baseline folder::

    RUN/baseline.json             method, k, overlap, seed, centroids (world units), clusters
    RUN/models/cluster-000/       an ordinary run folder (config.yaml + checkpoints)
    RUN/models/cluster-001/ ...
    RUN/eval.json                 written by evaluate_independent_2d
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from nerfxl.baselines.blending import DEFAULT_NEAREST_2D, DEFAULT_POWER_2D, blend_weights_2d
from nerfxl.baselines.clustering import DEFAULT_CLUSTER_OVERLAP, cluster_cameras
from nerfxl.baselines.subset import subset_dataset
from nerfxl.checkpoint import checkpoint_name, latest_checkpoint, remove_stale_temporaries
from nerfxl.configio import save_config_yaml
from nerfxl.data.cameras import Cameras
from nerfxl.data.dataset import Dataset
from nerfxl.errors import CheckpointError, ConfigError, NerfxlError
from nerfxl.fileio import write_json_atomic
from nerfxl.plateau import plateau_rule_of, write_convergence
from nerfxl.run.config import TrainConfig
from nerfxl.run.load import load_split
from nerfxl.trainer import Trainer

METHOD = "independent-2d"
BASELINE_FILE = "baseline.json"
MODELS_DIR = "models"


def cluster_run_dir(run_dir: Path, j: int) -> Path:
    """The run folder of cluster ``j``'s model."""
    return Path(run_dir) / MODELS_DIR / f"cluster-{int(j):03d}"


def plan_clusters(train_data: Dataset, k: int, overlap: float, seed: int) -> tuple[Tensor, list[list[int]]]:
    """Cluster a split's cameras by their world positions.

    Returns:
        centroids: [K, 3] float64, world units.
        members: K sorted lists of the training-image indices of each cluster (all non-empty,
            together covering every image).
    """
    centroids, membership = cluster_cameras(train_data.cameras.positions, k, overlap=overlap, seed=seed)  # [K,3], [N,K]
    members = [membership[:, j].nonzero().flatten().tolist() for j in range(k)]
    return centroids, members


def train_cluster_model(config: TrainConfig, run_dir: Path, data: Dataset) -> dict:
    """Train one model on ``data`` for ``config.steps`` steps into the run folder ``run_dir``.

    Writes ``config.yaml`` and checkpoints every ``config.checkpoint_every`` steps and at the end,
    as :func:`nerfxl.train.train` does, so :func:`nerfxl.trained.load_trained` reads the folder.

    Returns:
        {"steps", "train_seconds", "final": last step's stats}.
    """
    run_dir = Path(run_dir)
    trainer = Trainer(config, run_dir, train_data=data, test_data=None)  # before mkdir: bad input leaves nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    save_config_yaml(run_dir / "config.yaml", dataclasses.replace(config, resume=None))
    stats: dict = {}
    seconds = 0.0
    plateau, converged = plateau_rule_of(config), False
    for step in range(config.steps):
        t0 = time.perf_counter()
        stats = trainer.train_step(step)
        seconds += time.perf_counter() - t0
        trainer.step = step + 1
        converged = plateau is not None and plateau.observe(stats["mse"])
        if trainer.step % config.checkpoint_every == 0 or converged:
            trainer.save()
        if converged:
            break
    last = latest_checkpoint(run_dir)
    if last is None or last.name != checkpoint_name(trainer.step):
        trainer.save()
    if plateau is not None:
        write_convergence(run_dir, plateau, trainer.step, config.steps, converged)
    return {"steps": trainer.step, "train_seconds": seconds, "final": stats}


def train_independent_2d(config: TrainConfig, k: int, run_dir: Path, overlap: float = DEFAULT_CLUSTER_OVERLAP,
                         steps: int | None = None, train_data: Dataset | None = None,
                         log: Callable[[str], None] | None = print) -> Path:
    """Train the ``independent-2d`` baseline: K camera clusters, one whole-scene model per cluster.

    Every model is trained with the *same* configuration (``config``, with ``steps`` when given):
    the same number of steps of the same ``batch_rays``, so each model sees equal total ray
    samples (steps × batch_rays), the budget the scaling study compares at; the K models together
    see K times one model's. Clustering uses ``config.seed``; so does every model (its batches are
    drawn from its own cluster's images, so they still differ).

    Args:
        config: one model's training configuration (single process, one tile per model is usual).
        k: number of camera clusters = models.
        run_dir: the baseline's folder (must not hold a baseline yet).
        overlap: cluster overlap (Block-NeRF's 50% by default; see :mod:`.clustering`).
        steps: overrides ``config.steps``.
        train_data: the loaded training split (None: loaded from ``config``).
        log: one line per model trained (None: silent).
    Returns:
        ``run_dir``, holding ``baseline.json`` and ``models/cluster-{j:03d}`` run folders.
    Raises:
        ConfigError: ``run_dir`` already holds a baseline or models, more devices than one,
            or ``k`` does not suit the cameras.
    """
    run_dir = Path(run_dir)
    if (run_dir / BASELINE_FILE).exists() or (run_dir / MODELS_DIR).exists():
        # Mixing models of two clusterings would blend images of unrelated models.
        raise ConfigError(f"{run_dir}: already holds an independent-2d baseline; pick a new folder")
    if config.devices != 1:
        raise ConfigError(f"--method {METHOD} trains its models one after another on one process (--devices 1)")
    if steps is not None:
        config = dataclasses.replace(config, steps=int(steps))
    config = dataclasses.replace(config, resume=None)
    if train_data is None:
        train_data = load_split(config, "train")
    centroids, members = plan_clusters(train_data, k, overlap, config.seed)

    summaries = []
    for j, indices in enumerate(members):
        subset = subset_dataset(train_data, indices)
        summary = train_cluster_model(config, cluster_run_dir(run_dir, j), subset)
        summaries.append(summary)
        if log is not None:
            final = summary["final"]
            log(f"cluster {j + 1}/{k}: {len(indices)} images, {summary['steps']} steps in "
                f"{summary['train_seconds']:.1f} s, psnr {final.get('psnr', float('nan')):.2f}")

    names = train_data.image_names
    write_json_atomic(run_dir / BASELINE_FILE, {
        "method": METHOD,
        "k": int(k),
        "overlap": float(overlap),
        "seed": int(config.seed),
        "steps_per_model": int(config.steps),
        "rays_per_model": int(config.steps) * int(config.batch_rays),
        "n_train_images": len(train_data),
        "centroids": centroids.tolist(),
        "clusters": [
            {
                "model": str(cluster_run_dir(run_dir, j).relative_to(run_dir)),
                "n_images": len(indices),
                "image_indices": indices,
                "image_names": [names[i] for i in indices] if names else [],
                "train_seconds": s["train_seconds"],
                "final_stats": s["final"],
            }
            for j, (indices, s) in enumerate(zip(members, summaries))
        ],
    })
    return run_dir


@dataclass
class Independent2D:
    """A trained ``independent-2d`` baseline: its clusters, and their models loaded on first use.

    Attributes:
        run_dir: the baseline folder.
        centroids: [K, 3] float64 cluster centres, world units.
        info: the parsed ``baseline.json``.
        device: where models are loaded.
        models: cluster index → :class:`~nerfxl.trained.TrainedRun`, filled by :meth:`model`.
    """

    run_dir: Path
    centroids: Tensor
    info: dict
    device: str = "auto"
    models: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def model(self, j: int):
        """Cluster ``j``'s trained run (loaded once; only the clusters a view needs get loaded)."""
        from nerfxl.run.trained import load_trained

        if j not in self.models:
            self.models[j] = load_trained(Path(self.run_dir) / self.info["clusters"][j]["model"], device=self.device)
        return self.models[j]


def load_independent_2d(run_dir: Path, device: str = "auto") -> Independent2D:
    """Open a baseline folder written by :func:`train_independent_2d` (models load lazily).

    Raises:
        CheckpointError: no readable ``baseline.json`` of this method, or a cluster without a model.
    """
    run_dir = Path(run_dir)
    path = run_dir / BASELINE_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: not an {METHOD} baseline (no {BASELINE_FILE})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if info.get("method") != METHOD:
        raise CheckpointError(f"{path}: method is {info.get('method')!r}, not {METHOD!r}")
    for c in info["clusters"]:
        if not (run_dir / c["model"] / "config.yaml").is_file():
            raise CheckpointError(f"{run_dir / c['model']}: the cluster's model is missing")
    centroids = torch.tensor(info["centroids"], dtype=torch.float64)
    return Independent2D(run_dir, centroids, info, device)


@torch.no_grad()
def render_blended_2d(baseline: Independent2D, cameras: Cameras, index: int, nearest: int = DEFAULT_NEAREST_2D,
                      power: float = DEFAULT_POWER_2D) -> dict[str, Tensor]:
    """Render camera ``index`` as a novel view: the nearest clusters' images, blended.

    Args:
        baseline: from :func:`load_independent_2d`.
        cameras: cameras in *world* units (each model applies its own scene transform).
        index: which camera.
        nearest, power: see :func:`~nerfxl.baselines.blending.blend_weights_2d`.
    Returns:
        {"rgb": [H, W, 3], "depth": [H, W] ray distance in world units, "opacity": [H, W],
        "weights": [K] float64 blend weights (sum 1)} on CPU. Models with zero weight are not rendered.
    """
    from nerfxl.parallel.images import render_image

    weights = blend_weights_2d(cameras.positions[index].double().cpu(), baseline.centroids, nearest=nearest, power=power)
    out: dict[str, Tensor] = {}
    for j in weights.nonzero().flatten().tolist():
        run = baseline.model(j)
        model_cameras = run.transform.cameras(cameras[index]).to(run.renderer.scene_box.device)
        image = render_image(run.renderer, model_cameras, 0)
        # Ray distances back to world units: models share the scene box, but need not share a transform.
        image["depth"] = image["depth"] / run.transform.scale
        w = float(weights[j])
        for name, value in image.items():
            out[name] = out[name] + w * value if name in out else w * value
    out["weights"] = weights
    return out


def evaluate_independent_2d(run_dir: Path, split: str = "test", limit: int | None = None, device: str = "auto",
                            nearest: int = DEFAULT_NEAREST_2D, power: float = DEFAULT_POWER_2D,
                            output: Path | None = None) -> dict:
    """Score the blended renders of a split's views (PSNR, SSIM as :mod:`nerfxl.evaluate`).

    Writes ``run_dir/eval.json`` (or ``output``) and returns the same dict: mean "psnr", "ssim",
    "n_images", "render_seconds", "rays_per_second" (pixels of blended images per second, so it
    includes rendering each view up to ``nearest`` times), "models_per_view" and "per_image".
    """
    from nerfxl.evaluate import image_metrics, spread_indices, summarise_scores

    run_dir = Path(run_dir)
    baseline = load_independent_2d(run_dir, device=device)
    data = load_split(baseline.model(0).config, split)  # every model was trained on the same dataset
    indices = spread_indices(len(data), limit)
    per_image = []
    t0 = time.perf_counter()
    for i in indices:
        rendered = render_blended_2d(baseline, data.cameras, i, nearest=nearest, power=power)
        m = image_metrics(rendered["rgb"], data.images.rgb(i))
        m["image"] = data.image_names[i] if data.image_names else str(i)
        m["weights"] = rendered["weights"].tolist()
        per_image.append(m)
    seconds = time.perf_counter() - t0
    if not per_image:
        raise NerfxlError(f"{run_dir}: the {split} split has no images to evaluate")
    result = {
        "method": METHOD,
        "run": str(run_dir),
        "split": split,
        "k": baseline.k,
        "nearest": int(nearest),
        "power": float(power),
        "models_per_view": float(np.mean([sum(w > 0 for w in m["weights"]) for m in per_image])),
        "steps_per_model": baseline.info.get("steps_per_model"),
        **summarise_scores(per_image, seconds, data.cameras, indices),
    }
    out = Path(output) if output else run_dir / "eval.json"
    write_json_atomic(out, result)
    result["output"] = str(out)
    return result
