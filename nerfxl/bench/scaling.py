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

With ``jobs`` > 1 the runs of a protocol train concurrently in that many processes, each with its share
of the CPU threads: on a 2-core CPU two one-thread runs together train about 1.5x the rays per second
of one two-thread run (small tensors parallelise poorly over threads). Every run is still one
single-process run, so the results are those of ``jobs`` = 1 up to float round-off.

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
Protocol = Literal["paper", "equal-work"]
PROTOCOLS: tuple[Protocol, ...] = ("paper", "equal-work")
RESULTS_FILE = "scaling.json"
# What nerfxl.bench.throughput.measure_throughput adds to the results (kept by a resumed study).
THROUGHPUT_KEYS = ("throughput", "throughput_ddp", "exchange", "throughput_skipped")
# NeRF-XL paper (University4, restated in nerf-xl.md §8): share of a Mega-NeRF-style tile's samples outside
# its own tile, by K.
PAPER_FRACTION_OUTSIDE = {2: 0.38, 4: 0.56, 8: 0.62}


@dataclass
class Scaling:
    """Train NeRF-XL and the independent-2d/3d and DDP baselines for K = 1, 2, 4, 8 and compare them:
    writes scaling.json (after every run) and PNG plots of PSNR, rays/s, parameters and more vs K."""

    data: Optional[Path] = None
    """Dataset folder or JSON file; none = the procedural city of the preset's size (--preset
    scaling-law and city: the small one, generated on first use in about a minute; tiny with --quick)."""
    tiles: tuple[int, ...] = (1, 2, 4, 8)
    """Values of K (tiles for NeRF-XL and independent-3d, camera clusters for independent-2d,
    processes for DDP)."""
    methods: tuple[Method, ...] = METHODS
    """Methods to run at every K."""
    steps: int = 800
    """Training steps of every run (every independent model trains this many); with --plateau-window
    the most steps a run may take."""
    batch_rays: int = 2048
    """Rays per iteration at K = 1; at larger K see --protocols."""
    protocols: tuple[Protocol, ...] = ("paper",)
    """How the rays per iteration follow K. "paper" (NeRF-XL's Fig. 8/9): batch_rays in total for every
    method and K (independent models batch_rays // K each; DDP's K processes share batch_rays, which is
    one K = 1 model). "equal-work": K × batch_rays, what K devices do in the same wall time (NeRF-XL and
    DDP K × batch_rays per step, each independent model batch_rays, one device's share)."""
    equal_work_batch_rays: Optional[int] = None
    """Rays per step of one device in protocol equal-work (K x this for NeRF-XL and DDP, this for each
    independent model); none = --batch-rays."""
    plateau_window: int = 0
    """Train every run to a plateau instead of a step count: stop when the training PSNR over the last
    this-many steps gains less than --plateau-min-gain over the window before (0 = train --steps)."""
    plateau_min_gain: float = 0.05
    """Gain in dB between consecutive --plateau-window windows below which a run has converged."""
    render_speed: tuple[int, ...] = ()
    """K values whose trained NeRF-XL model (first protocol) is also rendered on D = 1 and D = 2 real
    processes (eval rays/s of the test views; the paper's rendering-speed claim)."""
    results_json: Optional[Path] = None
    """Also write the results to this file (e.g. docs/results/scaling-law.json)."""
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
    jobs: int = 1
    """Runs trained at the same time, each in its own process with cpu_count / jobs threads (2 on a
    2-core CPU: about 1.5x the throughput of one run at a time). Speed measurements run alone."""
    resume: Optional[Path] = None
    """Continue the study in this folder (it becomes --output): the runs and speed measurements its
    scaling.json already holds are kept when they were made with the same training settings (data,
    preset, steps, rays, plateau rule, seed, eval views); the rest are trained. A study stopped by
    Ctrl-C, a lost session or a crash loses only the run it was in."""

    def main(self) -> None:
        if self.replot is not None:
            publish(read_results(Path(self.replot)))
            return
        publish(run_study(resolve(self)))


# NeRF-XL's scaling law at convergence (docs/benchmarks.md): `nerfxl bench scaling-law` is this study.
SCALING_LAW = Scaling(preset="scaling-law", steps=3000, batch_rays=1024, equal_work_batch_rays=512,
                      protocols=PROTOCOLS, plateau_window=200, plateau_min_gain=0.05, eval_views=12,
                      render_speed=(2, 4), jobs=2)
SCALING_LAW_DESCRIPTION = (
    "NeRF-XL's scaling law at convergence: bench scaling with the scaling-law preset on the small city, "
    "K = 1, 2, 4, 8, all four methods, protocols paper (1024 rays per iteration) and equal-work (512 rays per "
    "device), every run to a plateau (< 0.05 dB over 200 steps, at most 3000), two runs at a time, render "
    "speed of K = 2 and 4 on 1 and 2 processes. Any option of bench scaling can be changed.")

# The study settings a finished run depends on: a resumed study keeps runs whose settings match these.
TRAINING_SETTINGS = ("data", "preset", "steps", "batch_rays", "equal_work_batch_rays", "plateau_window",
                     "plateau_min_gain", "seed", "eval_views")


def publish(results: dict) -> None:
    """Draw the plots into the study folder, save scaling.json (listing them) and print the table."""
    from nerfxl.bench.plots import write_plots

    results["plots"] = [str(p) for p in write_plots(results, Path(results["output"]))]
    save_results(results)
    if results.get("settings", {}).get("results_json"):
        from nerfxl.fileio import write_json_atomic

        write_json_atomic(Path(results["settings"]["results_json"]), results)
        print(f"wrote {results['settings']['results_json']}")
    print(format_table(results))
    print(f"wrote {Path(results['output']) / RESULTS_FILE}")


def read_results(folder: Path, option: str = "--replot") -> dict:
    """A study's ``folder/scaling.json`` (for --replot or --resume), its output pointed at ``folder``."""
    from nerfxl.data.formats.common import read_json

    path = folder / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(f"{option} {folder}: no {RESULTS_FILE} there")
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
        from nerfxl.presets import TRAIN_PRESETS

        size = TRAIN_PRESETS[study.preset][1].city_size
        study = dataclasses.replace(study, data=ensure_city(size, seed=0))
    if study.resume is not None:
        if study.output is not None and Path(study.output) != Path(study.resume):
            raise ConfigError(f"--resume {study.resume} continues that folder: leave out --output {study.output}")
        study = dataclasses.replace(study, output=Path(study.resume))
    output = study.output or Path("outputs/bench-scaling") / datetime.now().strftime("%Y-%m-%d_%H%M%S")
    return dataclasses.replace(study, output=Path(output))


def check(study: Scaling) -> None:
    from nerfxl.presets import TRAIN_PRESETS

    if not study.tiles or any(k < 1 for k in study.tiles):
        raise ConfigError(f"--tiles {' '.join(map(str, study.tiles))}: every K must be a positive integer")
    if not study.methods:
        raise ConfigError("--methods: give at least one method")
    if study.jobs < 1:
        raise ConfigError(f"--jobs {study.jobs}: must be at least 1")
    if study.equal_work_batch_rays is not None and study.equal_work_batch_rays < 1:
        raise ConfigError(f"--equal-work-batch-rays {study.equal_work_batch_rays}: must be at least 1")
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
    """Train and score every (protocol, K, method); returns the results (also in OUTPUT/scaling.json)."""
    started = time.perf_counter()
    results = new_results(study)
    trained: dict[str, dict] = {}  # a configuration trained once serves every (protocol, K, method) asking for it
    kept = resumed_results(study)
    kept_runs = {(r["protocol"], r["k"], r["method"]): r for r in kept.get("runs", [])}
    finished: list[dict] = []  # the runs of the protocols done so far
    # Protocol by protocol, so the speed measurements (on the first protocol's models) come as soon as
    # those are trained; within a protocol method by method, so NeRF-XL's curve over every K comes first.
    for index, protocol in enumerate(dict.fromkeys(study.protocols)):
        cells = [(method, k) for method in dict.fromkeys(study.methods) for k in sorted(set(study.tiles))]
        keys = {cell: config_key(train_config(study, cell[1], cell[0], protocol), cell[0]) for cell in cells}
        todo = []
        for method, k in cells:
            key = keys[method, k]
            if key in trained or any(key == t[0] for t in todo):
                continue
            if (protocol, k, method) in kept_runs:
                trained[key] = kept_runs[protocol, k, method]
                print(f"[bench scaling] {protocol} K={k} {method}: kept from the resumed study", flush=True)
            else:
                todo.append((key, method, k))
        for key, entry in train_runs(study, protocol, todo):
            trained[key] = entry
            results["runs"] = finished + entries_of(protocol, cells, keys, trained)
            results["study_seconds"] = time.perf_counter() - started
            save_results(results)
            print(f"[bench scaling] {protocol} K={entry['k']} {entry['method']}: test {entry['psnr']:.2f} dB, train "
                  f"{entry['train_psnr'] if entry['train_psnr'] is None else round(entry['train_psnr'], 2)} dB, "
                  f"{entry['steps']} steps{' (converged)' if entry['converged'] else ''}, "
                  f"{entry['parameters']:,} parameters, {entry['train_seconds']:.1f} s", flush=True)
        finished += entries_of(protocol, cells, keys, trained)
        results["runs"] = list(finished)
        save_results(results)
        if index == 0:
            measure_speeds(results, study, kept)
    results["study_seconds"] = time.perf_counter() - started
    return results


def entries_of(protocol: Protocol, cells: list[tuple[Method, int]], keys: dict, trained: dict[str, dict]) -> list[dict]:
    """The result rows of one protocol's (method, K) cells trained so far, in the study's order; a cell
    whose run was trained for another cell (same configuration) names it in ``same_run_as``."""
    rows = []
    for method, k in cells:
        run = trained.get(keys[method, k])
        if run is None:
            continue
        if (run["protocol"], run["k"], run["method"]) == (protocol, k, method):
            rows.append(run)
        else:
            rows.append({**run, "protocol": protocol, "k": k, "tiles": k, "method": method,
                         "same_run_as": run.get("same_run_as", run["name"])})
    return rows


def train_runs(study: Scaling, protocol: Protocol, todo: list[tuple[str, Method, int]]):
    """Train ``todo`` ((key, method, K) of one protocol); yields (key, result row) as each run finishes.
    With ``study.jobs`` > 1 the runs go to a pool of that many processes, largest first (so that the
    long ones do not end up alone at the end)."""
    for _, method, k in todo:
        print(f"[bench scaling] {protocol} K={k} {method}: training "
              f"{'up to ' if study.plateau_window else ''}{study.steps} steps", flush=True)
    if study.jobs == 1 or len(todo) <= 1:
        for key, method, k in todo:
            yield key, run_one(study, k, method, protocol)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    largest_first = sorted(todo, key=lambda t: run_cost(study, t[2], t[1], protocol), reverse=True)
    threads = max(1, (os.cpu_count() or 1) // study.jobs)
    # spawn: fork is unsafe once torch has started threads.
    pool = ProcessPoolExecutor(study.jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=limit_threads, initargs=(threads,))
    try:
        futures = {pool.submit(run_one, study, k, method, protocol): key for key, method, k in largest_first}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def limit_threads(threads: int) -> None:
    """A study worker's initializer: ``threads`` CPU threads, so that the jobs share the cores."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_cost(study: Scaling, k: int, method: Method, protocol: Protocol) -> tuple[int, int]:
    """What orders the runs of a pool: rays per iteration (all models), then K (more tiles, more work)."""
    rays = batch_rays_of(study, k, method, protocol)
    return (rays * k if method.startswith("independent") else rays), k


def resumed_results(study: Scaling) -> dict:
    """What a resumed study keeps of OUTPUT/scaling.json: {} when not resuming or when its training
    settings differ (then nothing is kept, and the study says so)."""
    if study.resume is None or not (Path(study.resume) / RESULTS_FILE).is_file():
        return {}
    previous = read_results(Path(study.resume), "--resume")
    ours = new_results(study)["settings"]
    changed = [name for name in TRAINING_SETTINGS if previous.get("settings", {}).get(name) != ours[name]]
    if changed:
        print(f"[bench scaling] --resume {study.resume}: {', '.join(changed)} differ from that study's; "
              f"training every run again", flush=True)
        return {}
    return previous


def measure_speeds(results: dict, study: Scaling, kept: dict) -> None:
    """Rendering speed and multi-process training throughput of the first protocol's NeRF-XL models
    (those of a resumed study when it measured them)."""
    if study.render_speed and kept.get("render_speed") and \
            sorted({r["k"] for r in kept["render_speed"]}) == sorted(set(study.render_speed)):
        results["render_speed"] = kept["render_speed"]
    elif study.render_speed:
        results["render_speed"] = measure_render_speed(results, study)
        save_results(results)
    if study.throughput and "throughput" in kept:
        results.update({name: kept[name] for name in THROUGHPUT_KEYS if name in kept})
    elif study.throughput:
        from nerfxl.bench.throughput import measure_throughput

        nerfxl_runs = {r["k"]: Path(r["run_dir"]) for r in results["runs"] if r["method"] == "nerfxl"}
        results.update(measure_throughput(train_config(study, max(study.tiles), "nerfxl"), study.tiles, nerfxl_runs,
                                          study.throughput_steps, Path(study.output) / "throughput"))
        save_results(results)


def new_results(study: Scaling) -> dict:
    settings = {f.name: getattr(study, f.name) for f in dataclasses.fields(study)}
    return {
        "benchmark": "bench_scaling",
        "output": str(study.output),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
        "cpu_count": os.cpu_count(),
        "paper_fraction_outside_tile": PAPER_FRACTION_OUTSIDE,
        "protocol": list(dict.fromkeys(study.protocols)),
        "runs": [],
        "note": f"Every run is trained on one process ({study.jobs} run(s) at a time, each with cpu_count / "
                f"{study.jobs} threads); rays_per_s is the rays trained per second of wall clock of the whole "
                "training call (setup and checkpointing included), not a multi-process figure (see 'throughput' "
                "for that). Parameters: sum over all of a method's models.",
    }


def save_results(results: dict) -> None:
    from nerfxl.fileio import write_json_atomic

    write_json_atomic(Path(results["output"]) / RESULTS_FILE, results)


def batch_rays_of(study: Scaling, k: int, method: Method, protocol: Protocol) -> int:
    """Rays per step of one model (one independent model, or the whole NeRF-XL / DDP model)."""
    if protocol == "paper":
        total = study.batch_rays
    else:
        total = k * (study.equal_work_batch_rays or study.batch_rays)
    independent = method.startswith("independent")
    return total // k if independent else total


def train_config(study: Scaling, k: int, method: Method, protocol: Protocol = "paper"):
    """The TrainConfig of ``method`` at K = ``k`` under ``protocol``: the preset with the study's budget."""
    from nerfxl.presets import TRAIN_PRESETS

    base = TRAIN_PRESETS[study.preset][1]
    rays = batch_rays_of(study, k, method, protocol)
    common = dict(data=Path(study.data), output=Path(study.output) / "runs", name=f"{protocol}-k{k}-{method}",
                  steps=study.steps, seed=study.seed, devices=1, progress=False, eval_every=0,
                  checkpoint_every=study.steps, resume=None, tile_plan=None, batch_rays=rays,
                  plateau_window=study.plateau_window, plateau_min_gain=study.plateau_min_gain)
    if method == "ddp":  # one process with the rays of all K: what K DDP processes compute
        return dataclasses.replace(base, **common, method="nerfxl", partitions=1)
    if method == "nerfxl":
        return dataclasses.replace(base, **common, method="nerfxl", partitions=k)
    return dataclasses.replace(base, **common, method=method, partitions=k)


def config_key(config, method: Method) -> str:
    """What decides a run's result: its configuration, less the name it is written under. DDP trains
    a one-tile NeRF-XL model, so it shares runs with NeRF-XL at K = 1 (and K = 1 runs are shared by
    the protocols); an independent baseline trains its own way even with one model."""
    from nerfxl.configio import config_to_dict

    family = method if method.startswith("independent") else "nerfxl"
    return f"{family}:{config_to_dict(dataclasses.replace(config, name=None))}"


def run_one(study: Scaling, k: int, method: Method, protocol: Protocol = "paper") -> dict:
    """Train, score and measure one (protocol, K, method)."""
    config = train_config(study, k, method, protocol)
    t0 = time.perf_counter()
    from nerfxl.commands import train_run

    run_dir = train_run(config)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = evaluate(run_dir, method, study.eval_views)
    independent = method.startswith("independent")
    models = 1 if method == "ddp" else k
    # NeRF-XL's K tiles share each ray; independent models each draw their own batch_rays // K.
    rays_per_iteration = config.batch_rays * (k if independent else 1)
    convergence = read_convergence(Path(run_dir))
    steps = convergence["steps"] or config.steps  # the steps a plateau rule left, or all of them
    return {
        "protocol": protocol,
        "k": k,
        "tiles": k,
        "method": method,
        "name": config.name,
        "run_dir": str(run_dir),
        "psnr": scores["psnr"],
        "ssim": scores.get("ssim", math.nan),
        "test_psnr": scores["psnr"],
        "test_ssim": scores.get("ssim", math.nan),
        "train_psnr": convergence["train_psnr"],
        "converged": convergence["converged"],
        "max_steps": config.steps,
        "eval_views": scores.get("n_images", scores.get("views")),
        "eval_seconds": time.perf_counter() - t0,
        "parameters": count_parameters(run_dir, method),
        "models": models,
        "rays_per_model_per_iteration": config.batch_rays,
        "rays_per_iteration": rays_per_iteration,
        "steps": steps,
        "train_seconds": train_seconds,
        "rays_per_s": rays_per_iteration * steps / train_seconds,
        "fraction_outside_tile": fraction_outside(run_dir) if method == "independent-3d" else None,
    }


def read_convergence(run_dir: Path) -> dict:
    """Steps used, whether every model converged and the training PSNR (mean over models) of a run
    trained with a plateau rule (its convergence.json, one per model for the baselines); None values
    without one."""
    from nerfxl.data.formats.common import read_json
    from nerfxl.plateau import CONVERGENCE_FILE

    records = [read_json(p) for p in sorted(Path(run_dir).rglob(CONVERGENCE_FILE))]
    if not records:
        return {"steps": None, "converged": None, "train_psnr": None}
    psnrs = [r["train_psnr"] for r in records if r["train_psnr"] is not None]
    return {"steps": max(r["steps"] for r in records), "converged": all(r["converged"] for r in records),
            "train_psnr": sum(psnrs) / len(psnrs) if psnrs else None}


def measure_render_speed(results: dict, study: Scaling) -> list[dict]:
    """Eval rays/s of the first protocol's NeRF-XL models at K in ``study.render_speed`` on D = 1, 2."""
    protocol = study.protocols[0]
    runs = {r["k"]: r for r in results["runs"] if r["method"] == "nerfxl" and r["protocol"] == protocol}
    out = []
    for k in study.render_speed:
        if k not in runs:
            continue
        for devices in (1, 2):
            if k % devices:
                continue
            scores = evaluate_on(Path(runs[k]["run_dir"]), devices, study.eval_views)
            out.append({"k": k, "devices": devices, "protocol": protocol, "rays_per_s": scores["rays_per_second"],
                        "views": scores.get("n_images", scores.get("views"))})
            print(f"[bench scaling] render K={k} on D={devices}: {scores['rays_per_second']:.0f} rays/s", flush=True)
    return out


def evaluate_on(run_dir: Path, devices: int, limit: int | None) -> dict:
    from nerfxl.evaluate import evaluate_run

    return evaluate_run(run_dir, output=run_dir / f"eval-d{devices}.json", limit=limit, save_images=False,
                        devices=devices)


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
    head = (f"{'protocol':<10} {'K':>3} {'method':<15} {'test':>6} {'train':>6} {'SSIM':>6} {'steps':>6} {'conv':>4} "
            f"{'params':>11} {'rays/s':>9} {'train s':>8} {'outside':>8}")
    rows = [head, "-" * len(head)]
    order = {p: i for i, p in enumerate(PROTOCOLS)}
    for r in sorted(results["runs"], key=lambda r: (order.get(r.get("protocol", "paper"), 0), r["k"],
                                                     METHODS.index(r["method"]))):
        outside = "" if r["fraction_outside_tile"] is None else f"{r['fraction_outside_tile']:.0%}"
        train_psnr = "" if r.get("train_psnr") is None else f"{r['train_psnr']:.2f}"
        converged = {True: "yes", False: "no"}.get(r.get("converged"), "")
        rows.append(f"{r.get('protocol', 'paper'):<10} {r['k']:>3} {r['method']:<15} {r['psnr']:>6.2f} {train_psnr:>6} "
                    f"{r['ssim']:>6.3f} {r['steps']:>6} {converged:>4} {r['parameters']:>11,} "
                    f"{r['rays_per_s']:>9.0f} {r['train_seconds']:>8.1f} {outside:>8}")
    for t in results.get("render_speed", []):
        rows.append(f"render nerfxl K={t['k']} on D={t['devices']}: {t['rays_per_s']:.0f} rays/s")
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
