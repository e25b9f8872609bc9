"""Soak test: resident memory over a long training run must stay flat (no growth beyond the bounded caches).

The run: the "tiny" preset (``TRAIN_PRESETS["tiny"]``: a small VM grid, 1024 rays per step) on the built-in
tiny city (``ensure_city("tiny")``, 24 training images of 96×72), on the CPU, in a temporary run folder,
trained for --steps steps (the learning-rate schedule spans them). The loop is ``train_on_process``'s, step
for step: ``trainer.train_step(trainer.step)``, ``trainer.step += 1``, ``RunLogger.step`` (TensorBoard
scalars every ``log_every`` steps; no progress bar), an evaluation on ``eval_views`` test views every
--eval-every steps (``evaluate_views`` with the logger, so preview images go to TensorBoard too), a
checkpoint (``trainer.save()``, keeping the newest ``keep_checkpoints``) every --checkpoint-every steps and at
the last step. Only the Ctrl-C agreement (a no-op on one process) is left out. Periodic checkpoints and
evaluations are in on purpose: leaks often hide in the code that runs now and then, not in the step.

Sampling: before the first step and after every --sample-every steps (after that step's checkpoint or
evaluation, if any), the process's resident memory is read from /proc/self/status (VmRSS, and its RssAnon
part: the heap; RssFile is mapped libraries and files), with the peak RSS since the previous sample (VmHWM,
reset at each sample through /proc/self/clear_refs), glibc's heap in use and free-but-kept (``mallinfo2``:
what the allocator retains is resident but is no leak), the number of live Python objects
(``len(gc.get_objects())``) and of the torch tensors among them (tensors that C++ alone holds, e.g. saved for
backward, are not counted), and the largest number of samples a step marched since the previous sample (the
per-step tensors scale with it). The census costs ~0.1 s, so it runs only at the samples; its time is
included in ``seconds`` (wall time since the first step) and reported apart.

Reported: the series [step, RSS MB, seconds] (the other measures in ``series_extra``); RSS after warm-up and
at the end, and the growth between them. Warm-up ends at the first sample at or after 10 % of the steps, the
first checkpoint and the first evaluation: by then the image cache, the sampler's stacked images, the
occupancy grid, the optimizer moments and the checkpoint and TensorBoard writers are at their steady state,
and the one-time imports of the periodic paths are done (the first evaluation imports imageio and the PNG
encoding path: ~100 000 Python objects, ~30 MB of libraries). Then the least-squares slope of RSS over the
second half of the run (the samples from --steps / 2 on) in MB per 1000 steps, and the growth it implies over
that half; the same slopes for RssAnon, the malloc heap in use, live tensors and live objects; the tensors
(by shape, dtype) and the Python object types that are more numerous at the end than after warm-up
(counted after ``gc.collect()``, at those two points only); the limits and fill of the bounded
caches (decoded images, depths; the sampler's stacked copy of the images). After the run, glibc's
``malloc_trim(0)`` hands freed heap back to the system: RSS after it shows how much of the end RSS was
merely retained by the allocator.

Verdicts. ``flat``: RSS sets no new high in the second half of the run: its highest value there exceeds the
highest between warm-up and half-way by less than max(16 MB, 2 % of the RSS after warm-up). A leak climbs
steadily, so it keeps setting new highs; bounded caches and the allocator's retention wander under a ceiling.
The least-squares slope of RSS over the second half is reported too, but it is not the verdict: RSS here is a
sawtooth (each evaluation renders whole images, a transient of ~200 MB; afterwards the freed memory is handed
back, ``nerfxl.evaluate.release_freed_memory``, and the next training steps' transients are kept by glibc
again, tens of MB), so a slope over ~20 samples depends on where the teeth fall. 16 MB over the 1 000 steps of
the second half is 16 KB per step (one float32 [1024, 4] tensor of a 1024-ray batch): any per-step leak of
the autograd graph or of the samples (hundreds of KB each) is far above it. ``live_memory_flat``: the same
bound on the fitted growth of glibc's heap in use (torch's CPU tensors are malloc'd, so a leaked tensor, even
one only C++ holds, shows there), and no more live Python tensors at the end than after warm-up.
Python objects live in pymalloc's own arenas, outside
malloc's count: their number is reported (``objects``), and ``--tracemalloc`` gives the Python allocations
that grew most between warm-up and the end, by file and line (slows the run).

    python benchmarks/bench_soak.py [--steps 2000] [--sample-every 50] [--checkpoint-every 250]
        [--eval-every 250] [--batch-rays N] [--plot PATH] [--tracemalloc] [--keep-run DIR] [--quick]

``--quick``: 200 steps, a sample every 20, a checkpoint and an evaluation every 50 (a smoke test; too short
for the verdict to mean much: the allocator is still growing its pools).
Prints one JSON object to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import dataclasses
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FLAT_MIN_MB = 16.0  # the verdict's bound: max(FLAT_MIN_MB, FLAT_FRACTION × RSS after warm-up)
FLAT_FRACTION = 0.02
WARMUP_FRACTION = 0.1
MB = 1024.0**2


def log(msg: str) -> None:
    print(f"[bench_soak] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- probes
def memory_status() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM (peak RSS) of this process in MB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024.0  # kB → MB
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs), so that the next read of
    VmHWM is the peak since now. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2():
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


MALLINFO2 = _mallinfo2()


def malloc_status() -> dict[str, float | None]:
    """glibc's heap in MB over all arenas: in use (allocated chunks + mmapped blocks) and free but kept
    by the allocator (not returned to the system, so still counted in RSS once touched)."""
    if MALLINFO2 is None:
        return {"in_use": None, "free_kept": None}
    m = MALLINFO2()
    return {"in_use": (m.uordblks + m.hblkhd) / MB, "free_kept": m.fordblks / MB}


def live_objects() -> tuple[int, int]:
    """(Python objects the garbage collector tracks, torch tensors among them)."""
    objects = gc.get_objects()
    tensors = sum(1 for o in objects if issubclass(type(o), torch.Tensor))  # type(): no __class__ lookups
    return len(objects), tensors


def census() -> tuple[collections.Counter, collections.Counter]:
    """Live tensors by (shape, dtype, device), and live Python objects by type (after a full collection, so
    that cyclic garbage not yet collected, e.g. the ctypes pointers safetensors makes while saving, is not
    counted; the per-sample counts of :func:`live_objects` do include it)."""
    gc.collect()
    tensors, types = collections.Counter(), collections.Counter()
    for o in gc.get_objects():
        t = type(o)
        types[f"{t.__module__}.{t.__qualname__}"] += 1
        if issubclass(t, torch.Tensor):
            tensors[(tuple(o.shape), str(o.dtype).removeprefix("torch."), o.device.type)] += 1
    return tensors, types


def types_growth(before: collections.Counter, after: collections.Counter, top: int = 15) -> list[dict]:
    """The object types more numerous in ``after``, most grown first."""
    grown = sorted(((after[k] - before.get(k, 0), k) for k in after if after[k] > before.get(k, 0)),
                   key=lambda x: (-x[0], x[1]))
    return [{"type": k, "added": n, "at_end": after[k]} for n, k in grown[:top]]


def census_growth(before: collections.Counter, after: collections.Counter, top: int = 15) -> list[dict]:
    """The (shape, dtype, device) kinds of tensor more numerous in ``after``, most grown first."""
    grown = [(after[k] - before.get(k, 0), k) for k in after if after[k] > before.get(k, 0)]
    grown.sort(key=lambda x: (-x[0], str(x[1])))
    return [{"shape": list(k[0]), "dtype": k[1], "device": k[2], "added": n, "at_end": after[k],
             "bytes_added": n * int(np.prod(k[0], dtype=np.int64)) * torch.empty((), dtype=getattr(torch, k[1])).element_size()}
            for n, k in grown[:top]]


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): return freed heap memory to the system (False when there is no glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # returns whether it released anything
        return True
    except (OSError, AttributeError):
        return False


def fit_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than 2 distinct xs)."""
    if len(set(xs)) < 2:
        return None
    return float(np.polyfit(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64), 1)[0])


def per_1000(slope: float | None) -> float | None:
    return None if slope is None else slope * 1000.0


# ---------------------------------------------------------------------------------------------- the run
def build_trainer(args, run_dir: Path):
    from nerfxl.configio import save_config_yaml
    from nerfxl.data.city import ensure_city
    from nerfxl.presets import TRAIN_PRESETS
    from nerfxl.trainer import Trainer

    base = TRAIN_PRESETS["tiny"][1]
    changes = {"data": ensure_city("tiny", seed=0, progress=False), "device": args.device, "progress": False,
               "steps": args.steps, "checkpoint_every": args.checkpoint_every, "eval_every": args.eval_every}
    if args.batch_rays is not None:
        changes["batch_rays"] = args.batch_rays
    config = dataclasses.replace(base, **changes)
    trainer = Trainer(config, run_dir)
    # As train_on_process: the folder and config.yaml exist before the first step.
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config_yaml(run_dir / "config.yaml", dataclasses.replace(trainer.config, resume=None))
    return trainer


def soak(args, trainer) -> dict:
    """Run train_on_process's loop for ``config.steps`` steps, sampling memory every --sample-every steps."""
    from nerfxl.checkpoint import checkpoint_name, latest_checkpoint
    from nerfxl.evaluate import evaluate_views
    from nerfxl.runlog import RunLogger

    config = trainer.config
    samples: list[dict] = []
    census_s = 0.0
    t_start = time.perf_counter()

    march: list[float] = []  # samples marched per step since the last sample

    def sample() -> None:
        nonlocal census_s
        t0 = time.perf_counter()
        mem = memory_status()
        heap = malloc_status()
        n_objects, n_tensors = live_objects()
        census_s += time.perf_counter() - t0
        samples.append({"step": trainer.step, "seconds": time.perf_counter() - t_start, "rss_mb": mem["VmRSS"],
                        "rss_peak_mb": mem["VmHWM"] if peak_resettable else None, "rss_anon_mb": mem["RssAnon"],
                        "rss_file_mb": mem["RssFile"], "malloc_in_use_mb": heap["in_use"],
                        "malloc_free_kept_mb": heap["free_kept"], "tensors": n_tensors, "objects": n_objects,
                        "samples_per_step_max": max(march) if march else None,
                        "samples_per_step_mean": sum(march) / len(march) if march else None})
        march.clear()
        reset_peak_rss()

    # After warm-up: past 10 % of the steps, and past the first checkpoint and evaluation, whose one-time
    # costs (imageio, PIL's PNG encoder and TensorBoard's image path are imported on the first evaluation:
    # ~100 000 Python objects, ~30 MB of libraries) are not growth.
    warmup_step = max(args.sample_every, int(round(WARMUP_FRACTION * config.steps)),
                      min(config.checkpoint_every, config.steps), config.eval_every or 0)
    warmup_census = snapshot_warmup = None
    checkpoints = evals = 0
    logger = RunLogger(trainer.run_dir, total=config.steps, start=trainer.step, enabled_bar=False)
    rays_per_step = config.batch_rays * trainer.replicas
    peak_resettable = reset_peak_rss()
    sample()
    try:
        while trainer.step < config.steps:
            t0 = time.perf_counter()
            stats = trainer.train_step(trainer.step)
            dt = time.perf_counter() - t0
            trainer.step += 1
            march.append(stats["samples"])
            stats["rays_per_s"] = rays_per_step / max(dt, 1e-9)
            logger.step(trainer.step, stats, write_scalars=trainer.step % config.log_every == 0)
            if config.eval_every and trainer.step % config.eval_every == 0 and trainer.step < config.steps:
                if trainer.test_data is not None:
                    metrics = evaluate_views(trainer, limit=config.eval_views, log_images=logger)
                    logger.scalars(trainer.step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)})
                    evals += 1
            if trainer.step % config.checkpoint_every == 0 or trainer.step == config.steps:
                trainer.save()
                checkpoints += 1
            if trainer.step % args.sample_every == 0 or trainer.step == config.steps:
                sample()
                s = samples[-1]
                log(f"step {s['step']:5d}: RSS {s['rss_mb']:7.1f} MB (anon {s['rss_anon_mb']:7.1f}, peak "
                    f"{s['rss_peak_mb'] or float('nan'):7.1f}, malloc in use {s['malloc_in_use_mb'] or float('nan'):6.1f}), "
                    f"{s['tensors']} tensors, {s['objects']} objects, {s['samples_per_step_max'] or 0:.0f} samples "
                    f"max, {s['seconds']:6.0f} s")
                if warmup_census is None and trainer.step >= warmup_step:
                    warmup_step = trainer.step  # the first sample at or after 10 % of the steps
                    warmup_census = census()
                    if args.tracemalloc:
                        import tracemalloc

                        tracemalloc.start(args.tracemalloc_frames)
                        snapshot_warmup = tracemalloc.take_snapshot()
    finally:
        logger.close()
    last = latest_checkpoint(trainer.run_dir)  # as train_on_process: the last step is always saved
    if last is None or last.name != checkpoint_name(trainer.step):
        trainer.save()
        checkpoints += 1
    train_s = time.perf_counter() - t_start

    traced = None
    if snapshot_warmup is not None:  # before the census below, whose own allocations are not the run's
        import tracemalloc

        gc.collect()  # as at warm-up (census): only live allocations, not cyclic garbage awaiting collection
        end_snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
        diff = end_snapshot.filter_traces(keep).compare_to(snapshot_warmup.filter_traces(keep), "traceback")
        traced = [{"size_diff_kb": d.size_diff / 1024.0, "count_diff": d.count_diff, "size_kb": d.size / 1024.0,
                   "traceback": [f"{fr.filename}:{fr.lineno}" for fr in d.traceback]}
                  for d in diff[:args.tracemalloc_top]]
    end_census = census()
    return {"samples": samples, "warmup_step": warmup_step, "warmup_census": warmup_census or (collections.Counter(), collections.Counter()),
            "end_census": end_census, "tracemalloc": traced, "checkpoints": checkpoints, "evals": evals,
            "train_seconds": train_s, "census_seconds": census_s}


def cache_report(trainer) -> dict:
    """The bounded caches of the training split: limits and how full they are."""
    data = trainer.train_data
    out = {"image_cache_mb_config": trainer.config.image_cache_mb,
           "image_cache_limit_mb": data.images.cache.max_bytes / MB,
           "image_cache_used_mb": data.images.cache.nbytes / MB,
           "images_cached": len(data.images.cache), "images": len(data)}
    if data.depths is not None:
        out.update({"depth_cache_limit_mb": data.depths.cache.max_bytes / MB,
                    "depth_cache_used_mb": data.depths.cache.nbytes / MB})
    stack = trainer.sampler._stack  # all training images stacked once (small equal-sized datasets)
    out["sampler_stacked_images_mb"] = 0.0 if stack is None else stack.numel() * stack.element_size() / MB
    return out


def analyse(samples: list[dict], warmup_step: int, steps: int) -> dict:
    """Warm-up vs end, second-half slopes and the verdict."""
    warm = next(s for s in samples if s["step"] >= warmup_step)
    end = samples[-1]
    half = [s for s in samples if s["step"] >= steps / 2]
    xs = [s["step"] for s in half]
    slopes = {k: fit_slope(xs, [s[k] for s in half]) if all(s[k] is not None for s in half) else None
              for k in ("rss_mb", "rss_anon_mb", "malloc_in_use_mb", "tensors", "objects")}
    span = (xs[-1] - xs[0]) if xs else 0
    fitted = None if slopes["rss_mb"] is None else slopes["rss_mb"] * span
    threshold = max(FLAT_MIN_MB, FLAT_FRACTION * warm["rss_mb"])
    after_warm = [s["rss_mb"] for s in samples if s["step"] >= warm["step"]]
    first_half = [s["rss_mb"] for s in samples if warm["step"] <= s["step"] < steps / 2]
    heap_growth = None if slopes["malloc_in_use_mb"] is None else slopes["malloc_in_use_mb"] * span
    new_high = (max(s["rss_mb"] for s in half) - max(first_half)) if half and first_half else None
    return {
        "rss_mb": {"start": samples[0]["rss_mb"], "warmup": warm["rss_mb"], "end": end["rss_mb"],
                   "min_after_warmup": min(after_warm), "max_after_warmup": max(after_warm)},
        "rss_anon_mb": {"start": samples[0]["rss_anon_mb"], "warmup": warm["rss_anon_mb"], "end": end["rss_anon_mb"]},
        "malloc_in_use_mb": {"start": samples[0]["malloc_in_use_mb"], "warmup": warm["malloc_in_use_mb"],
                             "end": end["malloc_in_use_mb"]},
        "warmup_step": warm["step"],
        "growth_warmup_to_end_mb": end["rss_mb"] - warm["rss_mb"],
        "growth_warmup_to_end_mb_per_1000_steps": (end["rss_mb"] - warm["rss_mb"]) / max(end["step"] - warm["step"], 1) * 1000,
        "second_half": {
            "from_step": xs[0] if xs else None, "to_step": xs[-1] if xs else None, "samples": len(half),
            "rss_slope_mb_per_1000_steps": per_1000(slopes["rss_mb"]),
            "rss_anon_slope_mb_per_1000_steps": per_1000(slopes["rss_anon_mb"]),
            "malloc_in_use_slope_mb_per_1000_steps": per_1000(slopes["malloc_in_use_mb"]),
            "rss_fitted_growth_mb": fitted,
            "rss_endpoint_growth_mb": (half[-1]["rss_mb"] - half[0]["rss_mb"]) if half else None,
            "malloc_in_use_fitted_growth_mb": heap_growth,
        },
        "rss_new_high_in_second_half_mb": new_high,
        "objects": {
            "tensors": {"start": samples[0]["tensors"], "warmup": warm["tensors"], "end": end["tensors"],
                        "second_half_slope_per_1000_steps": per_1000(slopes["tensors"])},
            "python_objects": {"start": samples[0]["objects"], "warmup": warm["objects"], "end": end["objects"],
                               "second_half_slope_per_1000_steps": per_1000(slopes["objects"])},
        },
        "threshold_mb": threshold,
        "threshold_rule": f"max({FLAT_MIN_MB:g} MB, {FLAT_FRACTION:.0%} of the RSS after warm-up), against the "
                          f"second half's highest RSS over the highest between warm-up and half-way",
        "flat": new_high is not None and new_high < threshold,
        "live_memory_flat": (heap_growth < threshold and end["tensors"] <= warm["tensors"]) if heap_growth is not None else None,
    }


def signed_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} MB"


def plot(path: Path, samples: list[dict], result: dict, checkpoint_every: int, eval_every: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s["step"] for s in samples]
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    ax.plot(steps, [s["rss_mb"] for s in samples], marker=".", label="RSS (VmRSS)")
    if all(s["rss_peak_mb"] is not None for s in samples):
        ax.plot(steps, [s["rss_peak_mb"] for s in samples], lw=0.8, alpha=0.6, label="peak RSS since the previous sample")
    ax.plot(steps, [s["rss_anon_mb"] for s in samples], marker=".", alpha=0.7, label="of which anonymous (RssAnon)")
    if all(s["malloc_in_use_mb"] is not None for s in samples):
        ax.plot(steps, [s["malloc_in_use_mb"] for s in samples], marker=".", alpha=0.7,
                label="malloc heap in use (mallinfo2)")
    half = result["second_half"]
    if half["rss_slope_mb_per_1000_steps"] is not None:
        xs = np.array([s for s in steps if s >= half["from_step"]], dtype=np.float64)
        ys = np.array([s["rss_mb"] for s in samples if s["step"] >= half["from_step"]])
        slope = half["rss_slope_mb_per_1000_steps"] / 1000.0
        intercept = ys.mean() - slope * xs.mean()
        ax.plot(xs, intercept + slope * xs, "k--", lw=1,
                label=f"second-half fit: {half['rss_slope_mb_per_1000_steps']:+.2f} MB / 1000 steps")
    ax.axvline(result["warmup_step"], color="grey", lw=0.8, ls=":", label="warm-up")
    last = steps[-1]
    for i, s in enumerate(range(checkpoint_every, last + 1, checkpoint_every)):
        ax.axvline(s, color="tab:red", lw=0.5, alpha=0.4, label="checkpoint" if i == 0 else None)
    if eval_every:
        for i, s in enumerate(range(eval_every, last, eval_every)):
            ax.axvline(s, color="tab:green", lw=0.5, alpha=0.4, ls="--", label="evaluation" if i == 0 else None)
    heap = half["malloc_in_use_fitted_growth_mb"]
    ax.set_title(f"Resident memory over training (tiny preset). Second half's new RSS high: "
                 f"{signed_mb(result['rss_new_high_in_second_half_mb'])} ({'flat' if result['flat'] else 'GROWING'}); "
                 f"heap in use growth "
                 + (f"{heap:+.1f} MB" if heap is not None else "n/a") + f"; bound {result['threshold_mb']:.0f} MB",
                 fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("MB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 2000; --quick 200)")
    parser.add_argument("--sample-every", type=int, default=None, help="steps between samples (default 50; --quick 20)")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="steps between checkpoints, as the loop's checkpoint_every (default 250; --quick 50)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="steps between evaluations on the preset's 2 test views, 0 = none (default 250; --quick 50)")
    parser.add_argument("--batch-rays", type=int, default=None, help="rays per step (default: the preset's 1024)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of RSS over the steps here")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations from warm-up on and report those that grew most (slower)")
    parser.add_argument("--tracemalloc-frames", type=int, default=6, help="frames kept per traced allocation")
    parser.add_argument("--tracemalloc-top", type=int, default=15, help="allocation sites reported")
    parser.add_argument("--keep-run", type=Path, default=None, help="train in this folder and keep it (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 steps, samples every 20")
    args = parser.parse_args()
    defaults = ({"steps": 200, "sample_every": 20, "checkpoint_every": 50, "eval_every": 50} if args.quick
                else {"steps": 2000, "sample_every": 50, "checkpoint_every": 250, "eval_every": 250})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 2 or args.sample_every < 1 or args.checkpoint_every < 1 or args.eval_every < 0:
        parser.error("--steps must be >= 2, --sample-every and --checkpoint-every >= 1, --eval-every >= 0")

    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    rss_imported = memory_status()["VmRSS"]
    work = None
    if args.keep_run is None:
        work = Path(tempfile.mkdtemp(prefix="soak-bench-"))
        run_dir = work / "run"
    else:
        run_dir = args.keep_run
    try:
        t0 = time.perf_counter()
        trainer = build_trainer(args, run_dir)
        setup_s = time.perf_counter() - t0
        rss_setup = memory_status()["VmRSS"]
        log(f"trainer built in {setup_s:.1f} s (RSS {rss_imported:.0f} MB after imports, {rss_setup:.0f} MB now); "
            f"{args.steps} steps, a sample every {args.sample_every}, a checkpoint every {args.checkpoint_every}, "
            f"an evaluation every {args.eval_every or 'never'}")
        run = soak(args, trainer)
        caches = cache_report(trainer)
        checkpoints_on_disk = len([p for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith(".")])
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    samples = run["samples"]
    result = analyse(samples, run["warmup_step"], args.steps)
    peaks = [s["rss_peak_mb"] for s in samples if s["rss_peak_mb"] is not None]
    peak = max(peaks) if peaks else memory_status()["VmHWM"]
    gc.collect()
    rss_gc = memory_status()["VmRSS"]
    trimmed = malloc_trim()
    rss_trim = memory_status()["VmRSS"]
    result["rss_mb"].update({"after_imports": rss_imported, "after_setup": rss_setup, "peak_during_training": peak,
                             "end_after_gc_collect": rss_gc, "end_after_malloc_trim": rss_trim if trimmed else None})
    plot_path = None
    if args.plot is not None:
        plot(args.plot, samples, result, args.checkpoint_every, args.eval_every)
        plot_path = str(args.plot)
    wall = time.perf_counter() - t_start
    half = result["second_half"]
    log(f"RSS {result['rss_mb']['warmup']:.1f} MB at step {result['warmup_step']} → {result['rss_mb']['end']:.1f} MB "
        f"at the end ({result['growth_warmup_to_end_mb']:+.1f} MB); second half {half['rss_slope_mb_per_1000_steps']:+.2f} "
        f"MB / 1000 steps; new high in the second half {signed_mb(result['rss_new_high_in_second_half_mb'])} vs bound "
        f"{result['threshold_mb']:.0f} MB: {'flat' if result['flat'] else 'GROWING'}; heap in use {half['malloc_in_use_fitted_growth_mb'] or float('nan'):+.1f} MB "
        f"({'flat' if result['live_memory_flat'] else 'GROWING'}); {wall:.0f} s")

    print(json.dumps({
        "benchmark": "soak",
        "config": {
            "quick": args.quick,
            "preset": "tiny",
            "city": "tiny",
            "steps": args.steps,
            "sample_every": args.sample_every,
            "checkpoint_every": args.checkpoint_every,
            "keep_checkpoints": trainer.config.keep_checkpoints,
            "eval_every": args.eval_every,
            "eval_views": trainer.config.eval_views,
            "log_every": trainer.config.log_every,
            "batch_rays": trainer.config.batch_rays,
            "device": str(trainer.device),
            "tracemalloc": args.tracemalloc,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        },
        "series_columns": ["step", "rss_mb", "seconds"],
        "series": [[s["step"], round(s["rss_mb"], 2), round(s["seconds"], 2)] for s in samples],
        "series_extra": {k: [round(s[k], 2) if isinstance(s[k], float) else s[k] for s in samples]
                         for k in ("rss_peak_mb", "rss_anon_mb", "rss_file_mb", "malloc_in_use_mb",
                                   "malloc_free_kept_mb", "tensors", "objects", "samples_per_step_max",
                                   "samples_per_step_mean")},
        **result,
        "tensor_kinds_grown_since_warmup": census_growth(run["warmup_census"][0], run["end_census"][0]),
        "object_types_grown_since_warmup": types_growth(run["warmup_census"][1], run["end_census"][1]),
        "tracemalloc_top_growth": run["tracemalloc"],
        "caches": caches,
        "checkpoints_saved": run["checkpoints"],
        "checkpoints_on_disk": checkpoints_on_disk,
        "evaluations": run["evals"],
        "setup_seconds": setup_s,
        "train_seconds": run["train_seconds"],
        "sampling_seconds": run["census_seconds"],
        "steps_per_second": args.steps / run["train_seconds"],
        "wall_seconds": wall,
        "plot": plot_path,
    }, indent=2))


if __name__ == "__main__":
    main()
