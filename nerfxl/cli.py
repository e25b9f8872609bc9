"""The ``nerfxl`` command line: one subcommand per job.

Every user-fixable problem surfaces as a :class:`nerfxl.errors.NerfxlError`; :func:`entrypoint`
prints it as one line on stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from nerfxl.bench.scaling import Scaling
from nerfxl.errors import NerfxlError, WorkerError

CitySize = Literal["tiny", "small", "medium", "large"]


@dataclass
class Info:
    """Describe a dataset before training: format, frames per split, resolutions, cameras, box, points."""

    data: tyro.conf.Positional[Path]
    """Dataset folder (nerfstudio, Blender, COLMAP, Mega-NeRF, MatrixCity) or its JSON file."""

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


# Command groups: ``nerfxl GROUP COMMAND ...``. tyro has no nested-dict form, so the group word is
# dispatched here and each group gets its own parser (and its own --help).
COMMAND_GROUPS: dict[str, tuple[str, dict[str, object]]] = {
    "scene": ("Generate synthetic scenes (nerfxl scene city --help).", {"city": City}),
    "bench": ("Studies over many runs (nerfxl bench scaling --help).", {"scaling": Scaling}),
}


def _group_placeholder(name: str, description: str) -> type:
    """A dataclass that only shows up in the top-level help; the group's own parser does the work."""

    def main(self) -> None:
        _run_parser(COMMAND_GROUPS[name][1], ["--help"], f"nerfxl {name}")

    return type(name.capitalize(), (), {"__doc__": description, "main": main, "__annotations__": {}})


def _commands() -> dict[str, object]:
    commands: dict[str, object] = {"train": Train, "info": Info}
    # Training-side commands live beside the trainer; the CLI module stays import-light.
    from nerfxl.commands import TRAINING_COMMANDS

    commands.update(TRAINING_COMMANDS)
    from nerfxl.partition.cli import Partition

    commands["partition"] = Partition
    for name, (description, _) in COMMAND_GROUPS.items():
        commands[name] = dataclass(_group_placeholder(name, description))
    return commands


def _run_parser(commands: dict[str, object], argv: list[str], prog: str) -> None:
    command = tyro.extras.subcommand_cli_from_dict(commands, args=argv, prog=prog)
    command.main()


@dataclass
class Train:
    """Train a radiance field: nerfxl train [PRESET] [--data PATH] [--steps N] ... (nerfxl train --help)."""

    def main(self) -> None:
        _run_train(["--help"])


def _run_train(argv: list[str]) -> None:
    from nerfxl.commands import run_train

    run_train(argv)


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
