"""The exception types nerfxl raises for problems a user can fix.

The CLI turns any :class:`NerfxlError` into one line on stderr and a non-zero exit, so the
message must name the file (or option) and the problem on its own.
"""

from __future__ import annotations

from pathlib import Path


class NerfxlError(Exception):
    """Base class of every user-facing nerfxl error."""


class DataError(NerfxlError):
    """A dataset, image, pose file or point cloud is missing or malformed."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ConfigError(NerfxlError):
    """Options that contradict each other or do not match a checkpoint."""


class CheckpointError(NerfxlError):
    """A run folder or checkpoint that is missing, incomplete or from another model."""
