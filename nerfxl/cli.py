"""The ``nerfxl`` command line: one subcommand per job.

Every user-fixable problem surfaces as a :class:`nerfxl.errors.NerfxlError`; :func:`entrypoint`
prints it as one line on stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, TypeVar, Union

import tyro

from nerfxl.bench.scaling import SCALING_LAW, SCALING_LAW_DESCRIPTION, Scaling
from nerfxl.errors import ConfigError, NerfxlError, WorkerError

T = TypeVar("T")
HELP_FLAGS = ("-h", "--help")

CitySize = Literal["tiny", "small", "medium", "large"]


@dataclass
class Info:
    """Describe a dataset before training: format, frames per split, resolutions, cameras, box, points."""

    data: tyro.conf.Positional[Path]
    """Dataset folder (nerfstudio, Blender, COLMAP, LLFF, Mega-NeRF, MatrixCity) or its JSON file."""

    def main(self) -> None:
        from nerfxl.data.load import describe_dataset

        print(describe_dataset(self.data))


@dataclass
class City:
    """Generate the deterministic procedural city as a nerfstudio-format dataset."""

    out_dir: tyro.conf.Positional[Path]
    """Folder to write (transforms.json, images/, depth/, points.ply)."""
    size: CitySize = "small"
    """tiny: seconds, for tests; small: the default demo scene; medium; large: for scaling studies."""
    seed: int = 0
    """Layout seed: the same seed gives bit-identical files."""
    overwrite: bool = False
    """Replace a non-empty out_dir (only once the new dataset is complete)."""

    def main(self) -> None:
        from nerfxl.data.city import generate_city

        path = generate_city(self.out_dir, size=self.size, seed=self.seed, overwrite=self.overwrite)
        print(f"wrote the {self.size} city (seed {self.seed}) to {path}")


@dataclass
class MatrixCityPoses:
    """Write a poses-only MatrixCity-format aerial flight (no images): transforms_{train,test}.json for
    `nerfxl info` / `nerfxl plan` at city scale (MatrixCity has 258 003 frames over 25 km²)."""

    out_dir: tyro.conf.Positional[Path]
    """Folder to write (a MatrixCity pose folder: transforms_train.json, transforms_test.json)."""
    frames: int = 258_000
    """Frames in all (train + test)."""
    width: int = 1920
    """Image width in pixels."""
    height: int = 1080
    """Image height in pixels."""
    fov_deg: float = 50.0
    """Horizontal field of view in degrees."""
    area_m2: float = 25e6
    """Area of the square city the viewpoints cover, in m²."""
    altitude_m: float = 200.0
    """Flight altitude above the ground (z = 0), in metres (±5 % jitter)."""
    pitch_deg: float = 45.0
    """How far below the horizon the cameras look, in degrees (each viewpoint: four headings)."""
    test_every: int = 100
    """Every N-th frame goes to the test split (0 = none)."""
    seed: int = 0
    """Seed of the viewpoints' jitter: the same seed gives identical files."""
    overwrite: bool = False
    """Replace a non-empty out_dir."""

    def main(self) -> None:
        from nerfxl.data.aerial_poses import write_matrixcity_poses

        path = write_matrixcity_poses(self.out_dir, self.frames, self.width, self.height, self.fov_deg, self.area_m2,
                                      self.altitude_m, self.pitch_deg, self.test_every, self.seed, self.overwrite)
        print(f"wrote {self.frames} MatrixCity poses (no images) to {path}")


@dataclass
class Plan:
    """Predict what a NeRF-XL job costs each process before it runs: parameters, Adam state, activations,
    bytes per step of each exchange and of the gradient all-reduce, load imbalance of the tile plan, time
    per step over a link (JSON and a table; images are never read)."""

    data: tyro.conf.Positional[Optional[Path]] = None
    """Dataset folder or JSON file (any format `nerfxl info` reads; loaded poses-only). None: an aerial
    flight described by --frames, --width, --height, --area-m2, --altitude-m."""
    preset: str = "city"
    """Training preset of the model (city, lego, hash, tiny: see `nerfxl train --help`)."""
    k: Annotated[int, tyro.conf.arg(aliases=("-k",))] = 1
    """K, tiles (--partitions)."""
    devices: Annotated[int, tyro.conf.arg(aliases=("-d",))] = 1
    """D, processes: --replicas copies of the model, each on D / replicas processes holding K / (D / replicas) tiles."""
    batch_rays: Optional[int] = None
    """Rays per step (per replica); default: the preset's."""
    exchange: Literal["partition", "sample"] = "partition"
    """The exchange the time per step assumes (both are reported)."""
    replicas: int = 1
    """Data-parallel copies of the model (hybrid; D / replicas processes per copy)."""
    link_gbps: float = 100.0
    """Each process's network link in Gb/s (for the time per step)."""
    samples_per_ray: Optional[float] = None
    """Samples per ray surviving empty-space skipping, over all tiles (a trained model's figure); default:
    the marching bound (every occupancy cell occupied)."""
    samples_per_s: Optional[float] = None
    """One process's forward + backward samples per second (e.g. a GPU's); default: measured on this machine."""
    scene_box: Optional[tuple[float, float, float, float, float, float]] = None
    """Scene bounds xmin ymin zmin xmax ymax zmax in dataset units (default: the dataset's own box)."""
    data_format: Optional[Literal["nerfstudio", "blender", "colmap", "mega-nerf", "matrixcity", "llff"]] = None
    """Dataset format; default: detected."""
    split: str = "train"
    """The split whose cameras give the rays."""
    frames: int = 258_000
    """Without DATA: frames of the described flight."""
    width: int = 1920
    """Without DATA: image width."""
    height: int = 1080
    """Without DATA: image height."""
    area_m2: float = 25e6
    """Without DATA: area of the square city, m²."""
    altitude_m: float = 200.0
    """Without DATA: flight altitude, metres."""
    fov_deg: float = 50.0
    """Without DATA: horizontal field of view, degrees."""
    seed: int = 0
    """Seed of the tile plan and of the rays drawn."""
    output: Annotated[Optional[Path], tyro.conf.arg(aliases=("-o",))] = None
    """Also write the JSON here."""
    print_as: Literal["both", "table", "json"] = "both"
    """What to print: the table then the JSON, or one of them."""

    def main(self) -> None:
        import json
        import resource
        import time

        from nerfxl.errors import ConfigError
        from nerfxl.fileio import write_json_atomic
        from nerfxl.planning import described_flight, format_report, load_for_planning, plan_job, scene_box_tensor
        from nerfxl.presets import TRAIN_PRESETS

        t0 = time.perf_counter()
        if self.preset not in TRAIN_PRESETS:
            raise ConfigError(f"--preset {self.preset!r}: choose one of {', '.join(TRAIN_PRESETS)}")
        base = TRAIN_PRESETS[self.preset][1]
        config = dataclasses.replace(base, partitions=self.k, devices=self.devices, exchange=self.exchange,
                                     replicas=self.replicas, seed=self.seed,
                                     batch_rays=base.batch_rays if self.batch_rays is None else self.batch_rays)
        if self.data is not None:
            dataset = load_for_planning(self.data, self.split, self.data_format, self.scene_box)
        else:
            dataset = described_flight(self.frames, self.width, self.height, self.area_m2, self.altitude_m,
                                       self.fov_deg, seed=self.seed)
            if self.scene_box is not None:
                dataset.scene_box = scene_box_tensor(self.scene_box)
        t_load = time.perf_counter() - t0
        report = plan_job(dataset, config, self.link_gbps, self.samples_per_ray, self.samples_per_s, seed=self.seed)
        report["job"]["preset"] = self.preset
        report["run"] = {"load_seconds": t_load, "seconds": time.perf_counter() - t0,
                         "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        if self.output is not None:
            write_json_atomic(self.output, report)
        if self.print_as in ("both", "table"):
            print(format_report(report))
            print(f"(planned in {report['run']['seconds']:.1f} s, peak RSS "
                  f"{report['run']['peak_rss_bytes'] / 2**20:.0f} MiB)")
        if self.print_as in ("both", "json"):
            print(json.dumps(report, indent=2))


# Command groups: ``nerfxl GROUP COMMAND ...``. tyro has no nested-dict form, so the group word is
# dispatched here and each group gets its own parser (and its own --help).
COMMAND_GROUPS: dict[str, tuple[str, dict[str, object]]] = {
    "scene": ("Generate synthetic scenes (nerfxl scene city --help, nerfxl scene matrixcity-poses --help).",
              {"city": City, "matrixcity-poses": MatrixCityPoses}),
    "bench": ("Studies over many runs (nerfxl bench scaling --help, nerfxl bench scaling-law --help).",
              {"scaling": Scaling, "scaling-law": (SCALING_LAW, SCALING_LAW_DESCRIPTION)}),
}


def _group_placeholder(name: str, description: str) -> type:
    """A dataclass that only shows up in the top-level help; the group's own parser does the work."""

    def main(self) -> None:
        _run_parser(COMMAND_GROUPS[name][1], ["--help"], f"nerfxl {name}")

    return type(name.capitalize(), (), {"__doc__": description, "main": main, "__annotations__": {}})


def _commands() -> dict[str, object]:
    commands: dict[str, object] = {"train": Train, "info": Info, "plan": Plan}
    # Training-side commands live beside the trainer; the CLI module stays import-light.
    from nerfxl.commands import TRAINING_COMMANDS

    commands.update(TRAINING_COMMANDS)
    from nerfxl.partition.cli import Partition

    commands["partition"] = Partition
    for name, (description, _) in COMMAND_GROUPS.items():
        commands[name] = dataclass(_group_placeholder(name, description))
    return commands


def _run_parser(commands: dict[str, object], argv: list[str], prog: str) -> None:
    """Parse ``argv`` as one of ``commands`` and run it. A command is a dataclass, or (instance,
    description): a named set of defaults for a dataclass (``bench scaling-law``)."""
    options = []
    for name, command in commands.items():
        if isinstance(command, tuple):
            defaults, description = command
            options.append(Annotated[type(defaults), tyro.conf.subcommand(name=name, default=defaults,
                                                                           description=description)])
        else:
            options.append(Annotated[Any, tyro.conf.subcommand(name=name, constructor=command)])
    union = Union[tuple(options + [Annotated[None, tyro.conf.Suppress]])]  # noqa: UP007 - a runtime Union
    command = parse_quietly(lambda: tyro.cli(union, args=argv, prog=prog), argv)
    command.main()


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RULE_CHARS = set("─-")
MAX_LISTED = 5  # suggestions kept from tyro's lists


def parse_quietly(parse: Callable[[], T], argv: list[str]) -> T:
    """Run a tyro parse; its usage errors (a multi-line box on stderr, then exit 2) become one ConfigError.

    ``--help`` is left to tyro untouched (help on stdout, exit 0). Anything else tyro writes to
    stderr while parsing successfully (warnings) is passed on once parsing is done.
    """
    if any(arg in HELP_FLAGS for arg in argv):
        return parse()
    captured = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100000"  # tyro wraps its boxes to the terminal; unwrapped, no value is cut in two
    failed = False
    try:
        with contextlib.redirect_stderr(captured):
            return parse()
    except SystemExit as e:
        if e.code in (None, 0):
            raise
        failed = True
        raise ConfigError(condense_usage_error(captured.getvalue())) from None
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
        if not failed and captured.getvalue():
            sys.stderr.write(captured.getvalue())


def _box_body(lines: list[str]) -> tuple[str, list[str]] | None:
    """(title, content lines with their indentation) of a tyro error box, UTF-8 or ASCII; None if not a box."""
    first = lines[0].strip()
    if first.startswith("╭"):
        body = []
        for line in lines[1:]:
            line = line.strip()
            if not line.startswith("│"):
                continue
            inner = line[1:-1] if line.endswith("│") else line[1:]
            body.append(inner[1:] if inner.startswith(" ") else inner)
        return first.strip("╭╮─ "), body
    if len(lines) > 1 and lines[1].strip() and set(lines[1].strip()) <= _RULE_CHARS:
        return first, [line[2:] if line.startswith("  ") else line for line in lines[2:]]
    return None


def condense_usage_error(text: str) -> str:
    """tyro's usage-error box as one line: its message, the similar options it suggests, the help hint."""
    lines = [_ANSI_ESCAPE.sub("", line).rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        return "invalid command line (see nerfxl --help)"
    box = _box_body(lines)
    if box is None:
        return " ".join(line.strip() for line in lines)
    title, body = box
    sections: list[list[str]] = [[]]
    for line in body:
        if not line.strip():
            continue
        if len(line.strip()) >= 3 and set(line.strip()) <= _RULE_CHARS:
            sections.append([])
        else:
            sections[-1].append(line)
    parts, hint = [], None
    for section in sections:
        if not section or section[0].strip() == "Argument helptext:":
            continue
        if section[0].strip().startswith("For full helptext"):
            joined = " ".join(line.strip() for line in section)
            hint = re.sub(r"^For full helptext, (run:?|see)\s*", "", joined)
            continue
        base = min(len(line) - len(line.lstrip()) for line in section)
        chunks: list[tuple[str, list[str]]] = []  # a line of the message and the items listed under it
        for line in section:
            depth = len(line) - len(line.lstrip()) - base
            if depth == 0 or not chunks:
                chunks.append((line.strip(), []))
            elif depth <= 4:  # an option or subcommand the box lists; deeper lines are its help text
                chunks[-1][1].append(line.strip())
        texts = []
        for head, items in chunks:
            if len(items) > MAX_LISTED:
                items = items[:MAX_LISTED] + ["…"]
            texts.append(" ".join([head, ", ".join(items)]) if items else head)
        part = " ".join(t if t.endswith((".", ":", ";")) or i == len(texts) - 1 else t + "." for i, t in enumerate(texts))
        part = re.sub(r"^Error parsing (\S+?):", r"\1:", part).rstrip(".")
        if part.startswith("Expected ") and title:
            part = f"{title}: {part[0].lower()}{part[1:]}"
        if len(part) > 1 and part[0].isupper() and part[1].islower():
            part = part[0].lower() + part[1:]
        parts.append(part)
    message = "; ".join(parts) or title or "invalid command line"
    return f"{message} (see {hint})" if hint else message


@dataclass
class Train:
    """Train a radiance field: nerfxl train [PRESET] [--data PATH] [--steps N] ... (nerfxl train --help)."""

    def main(self) -> None:
        _run_train(["--help"])


def _run_train(argv: list[str]) -> None:
    from nerfxl.commands import parse_train_args, run_train

    # Parsed here so that a usage error is one line.
    run_train(argv, parse_quietly(lambda: parse_train_args(argv), argv))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":
        _run_train(argv[1:])
    elif argv and argv[0] in COMMAND_GROUPS:
        _run_parser(COMMAND_GROUPS[argv[0]][1], argv[1:], f"nerfxl {argv[0]}")
    else:
        _run_parser(_commands(), argv, "nerfxl")


def entrypoint() -> None:
    """Console-script entry point: one clear line and a non-zero exit for user errors."""
    try:
        main()
    except WorkerError as e:
        if e.user_error:  # bad input seen by a rank: the same one line a single process would print
            print(f"nerfxl: error: {e.error_message}", file=sys.stderr)
            sys.exit(2)
        if e.traceback:  # a bug in a rank: its traceback, as a single process would show it
            print(f"[rank {e.rank}] {e.traceback}", file=sys.stderr, end="")
        print(f"nerfxl: error: {e}", file=sys.stderr)
        sys.exit(1 if e.traceback else 2)
    except NerfxlError as e:
        print(f"nerfxl: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("nerfxl: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
