"""``nerfxl bench scaling``: NeRF-XL against its baselines as the number of tiles K grows.

For every K in ``tiles`` and every method, one single-process run is trained from the same preset
(so every tile/model has the preset's grid: per-tile capacity is fixed and parameters grow with K)
with equal total rays per iteration, then scored on the test views:

- ``nerfxl``: K tiles trained jointly, ``batch_rays`` rays per step (D = 1 holds all K tiles; the
  same mathematics as D processes).
- ``independent-3d`` / ``independent-2d``: K models trained alone, ``batch_rays // K`` rays each per
  step, so the K models together see ``batch_rays`` rays per iteration as NeRF-XL does.
- ``ddp``: one K = 1 model with ``K × batch_rays`` rays per step, which is exactly what K data-parallel
  processes of ``batch_rays`` rays each compute.

``scaling.json`` is rewritten (atomically) after every finished (K, method), so an interrupted study
keeps what it measured; the plots (:mod:`nerfxl.bench.plots`) and a table come at the end. With
``--throughput`` NeRF-XL is also timed on real processes (:mod:`nerfxl.bench.throughput`).

This module imports no torch at import time (the CLI lists it); the work happens in :meth:`Scaling.main`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Optional

from nerfxl.errors import ConfigError

Method = Literal["nerfxl", "independent-3d", "independent-2d", "ddp"]
METHODS: tuple[Method, ...] = ("nerfxl", "independent-3d", "independent-2d", "ddp")
RESULTS_FILE = "scaling.json"
# NeRF-XL paper (University4, restated in nerf-xl.md §8): share of a Mega-NeRF-style tile's samples outside
# its own tile, by K.
PAPER_FRACTION_OUTSIDE = {2: 0.38, 4: 0.56, 8: 0.62}


@dataclass
class Scaling:
    """Train NeRF-XL and the independent-2d/3d and DDP baselines for K = 1, 2, 4, 8 and compare them:
    writes scaling.json (after every run) and PNG plots of PSNR, rays/s, parameters and more vs K."""

    data: Optional[Path] = None
    """Dataset folder or JSON file; none = the large procedural city (generated on first use, ~4 min),
    or the tiny one with --quick."""
    tiles: tuple[int, ...] = (1, 2, 4, 8)
    """Values of K (tiles for NeRF-XL and independent-3d, camera clusters for independent-2d,
    processes for DDP)."""
    methods: tuple[Method, ...] = METHODS
    """Methods to run at every K."""
    steps: int = 800
    """Training steps of every run (every independent model trains this many)."""
    batch_rays: int = 2048
    """Rays per iteration, in total over a method's models (independent: batch_rays // K per model);
    DDP at K uses K × batch_rays by definition."""
    preset: str = "city"
    """Training preset (nerfxl train --help) giving each tile's / model's grid and the schedule."""
    seed: int = 0
    """Seed of every run."""
    output: Optional[Path] = None
    """Study folder; none = outputs/bench-scaling/TIMESTAMP."""
    eval_views: Optional[int] = None
    """Test views scored per run (evenly spread); none = all."""
    throughput: bool = True
    """Also time NeRF-XL on D = K real processes for every K that fits (CPU cores or GPUs) and count
    the bytes per step of the partition- vs sample-based exchange at the largest such K."""
    throughput_steps: int = 4
    """Timed steps per process count (after one untimed step)."""
    quick: bool = False
    """Smoke test: tiny preset on the tiny city, tiles (1, 2), 10 steps, 256 rays, 2 eval views
    (overrides those options)."""
    replot: Optional[Path] = None
    """Train nothing: redraw the plots and print the table of this finished study folder's scaling.json."""

    def main(self) -> None:
        if self.replot is not None:
            publish(read_results(Path(self.replot)))
            return
        publish(run_study(resolve(self)))


def publish(results: dict) -> None:
    """Draw the plots into the study folder, save scaling.json (listing them) and print the table."""
    from nerfxl.bench.plots import write_plots

    results["plots"] = [str(p) for p in write_plots(results, Path(results["output"]))]
    save_results(results)
    print(format_table(results))
    print(f"wrote {Path(results['output']) / RESULTS_FILE}")


def read_results(folder: Path) -> dict:
    """A finished study's ``folder/scaling.json`` (for --replot), its output pointed at ``folder``."""
    from nerfxl.data.formats.common import read_json

    path = folder / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(f"--replot {folder}: no {RESULTS_FILE} there")
    results = read_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise ConfigError(f"{path}: not a scaling study's results (no 'runs' list)")
    return {**results, "output": str(folder)}


def resolve(study: Scaling) -> Scaling:
    """Apply --quick, check the options and fill in the defaults (data, output); one-line errors."""
    if study.quick:
        study = dataclasses.replace(study, preset="tiny", tiles=(1, 2), steps=10, batch_rays=256, eval_views=2)
    check(study)
    if study.data is None:
        from nerfxl.data.city import ensure_city

        study = dataclasses.replace(study, data=ensure_city("tiny" if study.quick else "large", seed=0))
    output = study.output or Path("outputs/bench-scaling") / datetime.now().strftime("%Y-%m-%d_%H%M%S")
    return dataclasses.replace(study, output=Path(output))


def check(study: Scaling) -> None:
    from nerfxl.presets import TRAIN_PRESETS

    if not study.tiles or any(k < 1 for k in study.tiles):
        raise ConfigError(f"--tiles {' '.join(map(str, study.tiles))}: every K must be a positive integer")
    if not study.methods:
        raise ConfigError("--methods: give at least one method")
    if study.steps < 1:
        raise ConfigError(f"--steps {study.steps}: must be at least 1")
    if study.batch_rays < max(study.tiles):
        raise ConfigError(f"--batch-rays {study.batch_rays}: an independent model at K = {max(study.tiles)} "
                          f"would get no rays (need at least K)")
    if study.eval_views is not None and study.eval_views < 1:
        raise ConfigError(f"--eval-views {study.eval_views}: must be at least 1")
    if study.preset not in TRAIN_PRESETS:
        raise ConfigError(f"--preset {study.preset}: unknown (choose from {', '.join(TRAIN_PRESETS)})")
    if study.data is not None and not Path(study.data).exists():
        raise ConfigError(f"--data {study.data}: no such file or folder")


def run_study(study: Scaling) -> dict:
    """Train and score every (K, method); returns the results (also in OUTPUT/scaling.json)."""
    results = new_results(study)
    # Method by method, so NeRF-XL's curve over every K is known first (the study can take hours).
    for method in dict.fromkeys(study.methods):
        for k in sorted(set(study.tiles)):
            print(f"[bench scaling] K={k} {method}: training {study.steps} steps", flush=True)
            entry = run_one(study, k, method)
            results["runs"].append(entry)
            save_results(results)
            print(f"[bench scaling] K={k} {method}: psnr {entry['psnr']:.2f} dB, {entry['parameters']:,} parameters, "
                  f"{entry['train_seconds']:.1f} s", flush=True)
    if study.throughput:
        from nerfxl.bench.throughput import measure_throughput

        nerfxl_runs = {r["k"]: Path(r["run_dir"]) for r in results["runs"] if r["method"] == "nerfxl"}
        results.update(measure_throughput(train_config(study, max(study.tiles), "nerfxl"), study.tiles, nerfxl_runs,
                                          study.throughput_steps, Path(study.output) / "throughput"))
        save_results(results)
    return results


def new_results(study: Scaling) -> dict:
    settings = {f.name: getattr(study, f.name) for f in dataclasses.fields(study)}
    return {
        "benchmark": "bench_scaling",
        "output": str(study.output),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
        "cpu_count": os.cpu_count(),
        "paper_fraction_outside_tile": PAPER_FRACTION_OUTSIDE,
        "runs": [],
        "note": "All runs are trained on one process one after another; rays_per_s is the rays trained per "
                "second of wall clock of the whole training call (setup and checkpointing included), not a "
                "multi-process figure (see 'throughput' for that). Parameters: sum over all of a method's models.",
    }


def save_results(results: dict) -> None:
    from nerfxl.fileio import write_json_atomic

    write_json_atomic(Path(results["output"]) / RESULTS_FILE, results)


def train_config(study: Scaling, k: int, method: Method):
    """The TrainConfig of ``method`` at K = ``k``: the preset with the study's budget."""
    from nerfxl.presets import TRAIN_PRESETS

    base = TRAIN_PRESETS[study.preset][1]
    common = dict(data=Path(study.data), output=Path(study.output) / "runs", name=f"k{k}-{method}", steps=study.steps,
                  seed=study.seed, devices=1, progress=False, eval_every=0, checkpoint_every=study.steps,
                  resume=None, tile_plan=None)
    if method == "ddp":  # one process, K × the rays: what K DDP processes compute
        return dataclasses.replace(base, **common, method="nerfxl", partitions=1, batch_rays=k * study.batch_rays)
    if method == "nerfxl":
        return dataclasses.replace(base, **common, method="nerfxl", partitions=k, batch_rays=study.batch_rays)
    # Independent: each of the K models trains with the config, so split the iteration's rays.
    return dataclasses.replace(base, **common, method=method, partitions=k, batch_rays=study.batch_rays // k)


def run_one(study: Scaling, k: int, method: Method) -> dict:
    """Train, score and measure one (K, method)."""
    config = train_config(study, k, method)
    t0 = time.perf_counter()
    if method.startswith("independent"):
        from nerfxl.baselines.runs import train_baseline

        run_dir = train_baseline(config)
    else:
        from nerfxl.train import train

        run_dir = train(config)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = evaluate(run_dir, method, study.eval_views)
    independent = method.startswith("independent")
    models = 1 if method == "ddp" else k
    # NeRF-XL's K tiles share each ray; independent models each draw their own batch_rays // K.
    rays_per_iteration = config.batch_rays * (k if independent else 1)
    return {
        "k": k,
        "method": method,
        "run_dir": str(run_dir),
        "psnr": scores["psnr"],
        "ssim": scores.get("ssim", math.nan),
        "eval_views": scores.get("n_images", scores.get("views")),
        "eval_seconds": time.perf_counter() - t0,
        "parameters": count_parameters(run_dir, method),
        "models": models,
        "rays_per_model_per_iteration": config.batch_rays,
        "rays_per_iteration": rays_per_iteration,
        "steps": config.steps,
        "train_seconds": train_seconds,
        "rays_per_s": rays_per_iteration * config.steps / train_seconds,
        "fraction_outside_tile": fraction_outside(run_dir) if method == "independent-3d" else None,
    }


def evaluate(run_dir: Path, method: Method, limit: int | None) -> dict:
    if method.startswith("independent"):
        from nerfxl.baselines.runs import evaluate_baseline

        return evaluate_baseline(run_dir, limit=limit)
    from nerfxl.evaluate import evaluate_run

    return evaluate_run(run_dir, limit=limit, save_images=False)


def count_parameters(run_dir: Path, method: Method) -> int:
    """Parameters of every model of a run (one run folder, or a baseline's models/*)."""
    if method == "independent-3d":  # its models only load with their contraction installed
        from nerfxl.baselines.mega_nerf_render import load_blended_models

        renderers = load_blended_models(run_dir, device="cpu").renderers
    else:
        from nerfxl.run.trained import load_trained

        renderers = [load_trained(f.parent, device="cpu").renderer for f in sorted(Path(run_dir).rglob("config.yaml"))]
    return sum(p.numel() for renderer in renderers for p in renderer.parameters())


def fraction_outside(run_dir: Path) -> float:
    """independent-3d: mean over tiles of the share of training samples outside the own tile."""
    import json

    return float(json.loads((Path(run_dir) / "baseline.json").read_text())["mean_fraction_outside_tile"])


def format_table(results: dict) -> str:
    """The runs as a compact fixed-width table (one row per (K, method))."""
    head = f"{'K':>3} {'method':<15} {'PSNR':>6} {'SSIM':>6} {'params':>11} {'rays/s':>9} {'train s':>8} {'outside':>8}"
    rows = [head, "-" * len(head)]
    for r in sorted(results["runs"], key=lambda r: (r["k"], METHODS.index(r["method"]))):
        outside = "" if r["fraction_outside_tile"] is None else f"{r['fraction_outside_tile']:.0%}"
        rows.append(f"{r['k']:>3} {r['method']:<15} {r['psnr']:>6.2f} {r['ssim']:>6.3f} {r['parameters']:>11,} "
                    f"{r['rays_per_s']:>9.0f} {r['train_seconds']:>8.1f} {outside:>8}")
    for t in results.get("throughput", []):
        rows.append(f"throughput nerfxl K=D={t['devices']}: {t['rays_per_s']:.0f} rays/s")
    for t in results.get("throughput_ddp", []):
        rows.append(f"throughput ddp D={t['devices']}: {t['rays_per_s']:.0f} rays/s")
    exchange = results.get("exchange")
    if exchange:
        rows.append(f"exchange at K=D={exchange['devices']}: partition {exchange['partition_bytes_per_step']:,.0f} B, "
                    f"sample {exchange['sample_bytes_per_step']:,.0f} B per step and process")
        if "partition_exchange_seconds_per_step" in exchange:
            rows.append(f"  seconds in collectives per step: partition {exchange['partition_exchange_seconds_per_step']:.4f}, "
                        f"sample {exchange['sample_exchange_seconds_per_step']:.4f}, "
                        f"gradients {exchange['gradient_seconds_per_step']:.4f}")
    return "\n".join(rows)
