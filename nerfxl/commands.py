"""Training-side CLI commands: train, eval, render, demo, merge, split (registered into ``nerfxl.cli``)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

DEFAULT_PRESET = "city"


def parse_train_args(argv: list[str]):
    """``nerfxl train [PRESET] [--options]`` → TrainConfig; PRESET defaults to ``city``."""
    from nerfxl.presets import TRAIN_PRESETS

    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = [DEFAULT_PRESET, *argv]
    return tyro.extras.overridable_config_cli(TRAIN_PRESETS, args=argv, prog="nerfxl train",
                                              description="Train a radiance field (preset first, then options).")


def run_train(argv: list[str], config=None) -> None:
    """``nerfxl train argv``; ``config``: ``argv`` already parsed (:func:`parse_train_args`)."""
    from nerfxl.baselines.runs import INDEPENDENT_METHODS, train_baseline
    from nerfxl.errors import ConfigError
    from nerfxl.train import train

    if config is None:
        config = parse_train_args(argv)

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in argv)

    if config.method in INDEPENDENT_METHODS:
        if config.viewer:
            raise ConfigError(f"--viewer shows one model; --method {config.method} trains K separate ones "
                              f"(view each under RUN/models/ with `nerfxl view` afterwards)")
        print(f"run folder: {train_baseline(config)}")
        return
    if config.resume is not None:
        check_resume_options(argv)
    # On --resume these two may differ from the saved run (a K-tile run continues on any D dividing K).
    run_dir = train(config, steps_override=config.steps if given("--steps") else None,
                    devices_override=config.devices if given("--devices") else None)
    from nerfxl.parallel.distributed import is_main_process

    if is_main_process():
        print(f"run folder: {run_dir}")


def train_run(config) -> Path:
    """Train ``config`` as ``nerfxl train`` would, without the command line's checks and messages: an
    independent baseline's K models, or one model; returns the run folder (for ``nerfxl bench``)."""
    from nerfxl.baselines.runs import INDEPENDENT_METHODS, train_baseline
    from nerfxl.train import train

    return Path(train_baseline(config) if config.method in INDEPENDENT_METHODS else train(config))


def resume_options() -> tuple[str, ...]:
    """The flags --resume accepts: the step and process counts, and the session options
    (:data:`nerfxl.train.SESSION_OPTIONS`, the switches with their --no- forms)."""
    from nerfxl.run.config import TrainConfig
    from nerfxl.train import SESSION_OPTIONS

    switches = {f.name for f in dataclasses.fields(TrainConfig) if f.type in (bool, "bool")}
    flags = [f"--{prefix}{name.replace('_', '-')}" for name in SESSION_OPTIONS
             for prefix in (("", "no-") if name in switches else ("",))]
    return ("--resume", "--steps", "--devices", *flags)


def check_resume_options(argv: list[str]) -> None:
    """--resume continues the run with its saved config.yaml: refuse options that would be ignored."""
    from nerfxl.errors import ConfigError

    allowed = resume_options()

    if argv and not argv[0].startswith("-"):
        raise ConfigError(f"preset {argv[0]!r} cannot be given with --resume: the run continues with its saved "
                          f"config.yaml")
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in allowed:
            raise ConfigError(f"{flag} cannot be changed on --resume: the run continues with its saved config.yaml "
                              f"(allowed: {', '.join(allowed[1:])})")


@dataclass
class Eval:
    """Score a run's latest checkpoint on held-out views (PSNR, SSIM) and write JSON."""

    run_dir: tyro.conf.Positional[Path]
    """The run folder (outputs/NAME/TIMESTAMP)."""
    output: Optional[Path] = None
    """JSON file to write (default RUN_DIR/eval.json)."""
    split: Literal["test", "val", "train"] = "test"
    """Which split to score."""
    limit: Optional[int] = None
    """Score only this many evenly spread views."""
    save_images: bool = True
    """Save ground truth | render side by side under RUN_DIR/eval/."""
    device: str = "auto"
    """"auto", "cpu", "cuda" or "cuda:N"."""
    devices: int = 1
    """Processes to render on, each holding its share of the tiles; must divide the run's number of tiles
    (under torchrun the world size decides)."""

    def main(self) -> None:
        from nerfxl.baselines.runs import baseline_method, evaluate_baseline
        from nerfxl.evaluate import evaluate_run

        if baseline_method(self.run_dir) is not None:
            result = evaluate_baseline(self.run_dir, self.split, self.limit, self.device, self.output)
            print(f"{self.split}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} over {result['n_images']} "
                  f"views ({result['method']}) -> {result['output']}")
            return
        result = evaluate_run(self.run_dir, self.output, self.device, self.limit, self.save_images, self.split,
                              devices=self.devices)
        if result is None:  # a rank other than 0 under torchrun
            return
        print(f"{self.split}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} over {result['n_images']} views "
              f"(step {result['step']}) -> {result['output']}")


@dataclass
class Render:
    """Render a run along a path (test views, an orbit, a flyover, or a nerfstudio camera_path.json) to
    PNGs + MP4; with --dynamic-fetch only the blocks (or tiles) around the camera are on the device."""

    run_dir: tyro.conf.Positional[Path]
    """The run folder."""
    path: str = "orbit"
    """"orbit", "flyover" (a loop over the ground, looking ahead and down), "test", "train", or a
    nerfstudio camera_path.json file."""
    output: Optional[Path] = None
    """Folder for frames and video (default RUN_DIR/renders/PATH)."""
    frames: int = 120
    """Frames of the orbit."""
    fps: float = 24.0
    """Video frame rate (a camera path file's own fps wins)."""
    resolution_scale: float = 1.0
    """Scale the training resolution (e.g. 0.5 for a quick preview)."""
    depth: bool = False
    """Put a depth map beside each frame."""
    device: str = "auto"
    """"auto", "cpu", "cuda" or "cuda:N"."""
    devices: int = 1
    """Processes to render on, each holding its share of the tiles; must divide the run's number of tiles
    (under torchrun the world size decides). With --dynamic-fetch every process holds the same window
    and renders a share of each frame's pixels."""
    video: Optional[Path] = None
    """Where to write the MP4 (default OUTPUT/video.mp4)."""
    dynamic_fetch: bool = False
    """Stream the model around the camera: only a --neighbourhood × --neighbourhood window (twice:
    ping-pong) is on the device (docs/fetching.md). One ground-plane model streams blocks of its plane; a
    run of several tiles (NeRF-XL, branch parallel) streams the tiles the window overlaps."""
    neighbourhood: int = 3
    """With --dynamic-fetch: the window is N × N blocks (or cells, for tiles) (N ≥ 2)."""
    blocks: Optional[str] = None
    """With --dynamic-fetch: NXxNY, how a single-model run is cut into blocks (a plane-parallel or
    `nerfxl split` run is already cut); for a tiled run, the cells windows are made of (default: as wide
    as the narrowest tile)."""
    block_store: Literal["memory", "mmap"] = "memory"
    """With --dynamic-fetch: keep every block (or tile) in host memory (pinned on GPUs), or read each from
    the memory-mapped checkpoint when needed (models larger than host memory)."""
    camera_limits: Literal["error", "clamp"] = "error"
    """With --dynamic-fetch: a camera that sees past the window stops the render with an error, or is
    lowered until it does not."""

    def main(self) -> None:
        from nerfxl.render import render_fetching, render_run

        path = self.path if self.path in ("orbit", "flyover", "test", "train") else Path(self.path)
        if self.dynamic_fetch:
            result = render_fetching(self.run_dir, path, self.output, self.frames, self.fps, self.resolution_scale,
                                     self.device, self.depth, video=self.video, neighbourhood=self.neighbourhood,
                                     blocks=self.blocks, store=self.block_store, camera_limits=self.camera_limits,
                                     devices=self.devices)
            if result is None:  # a rank other than 0 under torchrun
                return
            seconds = sorted(result["frame_seconds"])
            print(f"rendered {result['frames']} frames to {result['folder']}; video: {result['video']}\n"
                  f"  dynamic fetching: {result['fetched']}, "
                  f"{result['buffer_bytes'] / 1e6:.2f} MB of window buffers, {result['fetches']} fetches, "
                  f"{result['frames_waiting']} frames waited; frame time p50 {seconds[len(seconds) // 2]:.3f} s, "
                  f"max {seconds[-1]:.3f} s")
            return
        result = render_run(self.run_dir, path, self.output, self.frames, self.fps, self.resolution_scale, self.device,
                            self.depth, devices=self.devices, video=self.video)
        if result is None:  # a rank other than 0 under torchrun
            return
        print(f"rendered {result['frames']} frames to {result['folder']}; video: {result['video']}")


@dataclass
class Demo:
    """The main job: generate the small procedural city, train on it, evaluate, render an orbit video."""

    output: Path = Path("outputs")
    """Runs land in OUTPUT/city-small/TIMESTAMP/."""
    steps: Optional[int] = None
    """Training steps (default: the city preset's)."""
    seed: int = 0
    """Training seed."""
    video_frames: int = 48
    """Frames of the orbit video."""
    device: str = "auto"
    """"auto", "cpu", "cuda" or "cuda:N"."""
    partitions: int = 1
    """NeRF-XL tiles K (each with its own grid: more tiles, more capacity)."""
    devices: int = 1
    """Processes D to train, evaluate and render on (must divide --partitions)."""

    def main(self) -> None:
        from nerfxl.data.city import ensure_city
        from nerfxl.evaluate import evaluate_run
        from nerfxl.parallel.tiles import check_tiles_per_process
        from nerfxl.presets import TRAIN_PRESETS
        from nerfxl.render import render_run
        from nerfxl.train import train

        check_tiles_per_process(self.partitions, self.devices)  # before minutes of dataset generation
        t0 = time.perf_counter()
        data = ensure_city("small", seed=0)
        t_data = time.perf_counter() - t0
        config = dataclasses.replace(TRAIN_PRESETS[DEFAULT_PRESET][1], data=data, output=self.output, name="city-small",
                                     seed=self.seed, device=self.device, partitions=self.partitions,
                                     devices=self.devices)
        if self.steps is not None:
            config = dataclasses.replace(config, steps=self.steps)
        t1 = time.perf_counter()
        run_dir = train(config)
        t_train = time.perf_counter() - t1
        result = evaluate_run(run_dir, device=self.device, devices=self.devices)
        video = render_run(run_dir, "orbit", n_frames=self.video_frames, device=self.device, resolution_scale=1.0,
                           devices=self.devices)
        total = time.perf_counter() - t0
        summary = {
            "run": str(run_dir), "dataset": str(data), "steps": config.steps,
            "partitions": self.partitions, "devices": self.devices,
            "test_psnr": round(result["psnr"], 3), "test_ssim": round(result["ssim"], 4),
            "seconds": {"dataset": round(t_data, 1), "train": round(t_train, 1), "total": round(total, 1)},
            "eval_json": result["output"], "video": video["video"],
        }
        from nerfxl.fileio import write_json_atomic

        write_json_atomic(Path(run_dir) / "demo.json", summary)
        print("\n" + "\n".join([
            f"nerfxl demo finished in {total / 60:.1f} min",
            f"  dataset    {data}",
            f"  run        {run_dir}",
            f"  test PSNR  {result['psnr']:.2f} dB   SSIM {result['ssim']:.3f}  ({result['n_images']} held-out views)",
            f"  renders    {Path(run_dir) / 'eval'}",
            f"  video      {video['video']}",
            f"  summary    {Path(run_dir) / 'demo.json'}",
        ]))


@dataclass
class Merge:
    """Join a plane- or channel-parallel run's parts (sub-planes, channel slices) into one model: a new run
    folder that renders, evaluates and resumes on one process. Exact (shared borders must agree)."""

    run_dir: tyro.conf.Positional[Path]
    """The plane- or channel-parallel run folder (left untouched)."""
    output: Optional[Path] = None
    """The new run folder (default: RUN_DIR-merged beside it)."""

    def main(self) -> None:
        from nerfxl.merge import merge_run

        print(f"merged run: {merge_run(self.run_dir, self.output)}")


@dataclass
class Split:
    """Cut a single ground-plane model into NX × NY sub-planes: a new plane-parallel run folder that
    trains on (or renders with) NX·NY processes. Exact: merging it gives the model back."""

    run_dir: tyro.conf.Positional[Path]
    """A single-tile ground-plane run folder (left untouched)."""
    blocks: str
    """NXxNY sub-planes, e.g. 2x2; every level's (nodes − 1) must divide by NX along x and NY along y."""
    output: Optional[Path] = None
    """The new run folder (default: RUN_DIR-split-NXxNY beside it)."""

    def main(self) -> None:
        from nerfxl.merge import split_run

        print(f"split run: {split_run(self.run_dir, self.blocks, self.output)}")


@dataclass
class Check:
    """Verify a run folder: its config.yaml and every checkpoint (files against the manifest's sizes and
    SHA-256, the shards its strategy writes, the tensors and shapes the config builds). Exits non-zero
    when anything is damaged, naming the checkpoint a resume would start from."""

    run_dir: tyro.conf.Positional[Path]
    """The run folder."""

    def main(self) -> None:
        from nerfxl.check import check_run, format_report
        from nerfxl.errors import CheckpointError

        report = check_run(self.run_dir)
        print(f"{self.run_dir}:")
        for line in format_report(report):
            print(line)
        resume = report.resume_from
        if report.ok:
            print(f"ok: {len(report.checkpoints)} checkpoint(s) sound; a resume starts from {resume.path.name}")
            return
        if not report.checkpoints:
            raise CheckpointError(f"{self.run_dir}: no complete checkpoint")
        damaged = sum(c.problem is not None for c in report.checkpoints)
        raise CheckpointError(f"{self.run_dir}: {damaged} damaged checkpoint(s); "
                              + (f"a resume starts from {resume.path.name}" if resume else "nothing to resume from"))


@dataclass
class View:
    """Explore a run in the browser: a viser page renders your camera progressively (coarse while it
    moves, refined when it rests), with tile boxes, training cameras and a camera-path editor."""

    run_dir: tyro.conf.Positional[Path]
    """The run folder."""
    port: int = 7007
    """Port to serve on (the next free one is taken if it is busy)."""
    host: str = "127.0.0.1"
    """Address to listen on. Loopback by default: only this machine can open the page (reach it from
    elsewhere with `ssh -L PORT:127.0.0.1:PORT`)."""
    allow_remote: bool = False
    """Required to listen on a non-loopback --host: anyone who can reach the port can view the model
    and save camera paths into the run folder."""
    resolution: int = 960
    """Pixels of the refined frame's longer side (changeable in the page)."""
    coarse_seconds: float = 0.1
    """What a coarse frame should take while the camera moves (its size follows the measured speed)."""
    device: str = "auto"
    """"auto", "cpu", "cuda" or "cuda:N"."""
    devices: int = 1
    """Processes to render on, each holding its share of the tiles (with --dynamic-fetch: the same
    window, each rendering a share of the pixels)."""
    dynamic_fetch: bool = False
    """Stream the model around the camera (docs/fetching.md): only an N × N window of blocks or tiles is
    on the device; the camera is kept within the window's limits."""
    neighbourhood: int = 3
    """With --dynamic-fetch: the window is N × N blocks (or cells)."""
    blocks: Optional[str] = None
    """With --dynamic-fetch: NXxNY, how a single-model run is cut into blocks (see `nerfxl render`)."""
    block_store: Literal["memory", "mmap"] = "memory"
    """With --dynamic-fetch: where the blocks wait on the host."""

    def main(self) -> None:
        from nerfxl.view import view_run
        from nerfxl.viewer.hosts import check_viewer_flags
        from nerfxl.viewer.server import ViewerOptions

        warning = check_viewer_flags(self.host, self.allow_remote, self.port, self.resolution)
        if warning:
            print(warning, flush=True)
        options = ViewerOptions(host=self.host, port=self.port, resolution=self.resolution,
                                coarse_seconds=self.coarse_seconds)
        view_run(self.run_dir, options, self.devices, self.device, self.dynamic_fetch, self.neighbourhood,
                 self.blocks, self.block_store)


TRAINING_COMMANDS: dict[str, object] = {"eval": Eval, "render": Render, "demo": Demo, "merge": Merge, "split": Split,
                                        "check": Check, "view": View}
