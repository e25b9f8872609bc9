"""Training one radiance field of K tiles on D processes (NeRF-XL): the job and its loop.

:func:`train` starts a new run or continues one (``--resume``, a restarted ``--run-dir``), spawns the D
processes (or joins a torchrun job) and restarts them from the newest sound checkpoint when one dies;
:func:`train_on_process` is one process's loop over :class:`~nerfxl.trainer.Trainer` steps, with the
Ctrl-C agreement (:class:`StopRequest`), the live viewer, logging, periodic evaluation and checkpoints.
What one step computes, and why D = 1, 2, 4, ... processes compute the same thing, is
:mod:`nerfxl.trainer`'s; the configuration and the on-disk format are the run layer's (:mod:`nerfxl.run`).

Rank 0 alone logs, shows progress and writes ``config.yaml``/``tiles.json``.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
from pathlib import Path

from nerfxl.checkpoint import checkpoint_name, latest_checkpoint, newest_sound_checkpoint, remove_stale_temporaries
from nerfxl.configio import save_config_yaml
from nerfxl.errors import CheckpointError, ConfigError, PeerLostError, WorkerError
from nerfxl.parallel.distributed import (
    DistContext,
    all_reduce_scalar,
    broadcast_bytes,
    is_lost_peer_error,
    resolve_device,
    single_process_context,
)
from nerfxl.plateau import plateau_rule_of, write_convergence
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
from nerfxl.run.state import check_tile_plan, describe_state_mismatch, load_field_state, load_shared_state, load_strict
from nerfxl.run.strategy import check_processes, model_processes, replicas_of, resolve_strategy, split_field
from nerfxl.run.strategies import strategy_of
from nerfxl.trainer import Trainer

__all__ = [  # the loop; the Trainer (nerfxl.trainer) and the run layer's names re-exported for code written against nerfxl.train
    "Trainer", "train", "train_on_process", "StopRequest", "SESSION_OPTIONS",
    "CitySize", "Exchange", "Method", "Strategy", "OptimConfig", "LossConfig", "TrainConfig", "upsample_resolutions",
    "JOINT_STRATEGIES", "TILE_PLAN_FILE", "check_same_split", "new_run_dir", "run_name", "saved_strategy",
    "strategy_state", "tile_shard_name", "load_run_config", "load_split", "resolve_data_path", "check_tile_plan",
    "describe_state_mismatch", "load_field_state", "load_shared_state", "load_strict", "check_processes",
    "model_processes", "replicas_of", "resolve_strategy", "split_field", "resolve_device",
]



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
    strategy = strategy_of(config)
    if strategy.checkable_before_the_scene(config):  # plane without --blocks: checked once the scene is known
        strategy.check(config, model_size)
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
