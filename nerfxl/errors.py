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


class PeerLostError(NerfxlError):
    """This process lost contact with another of its job (it died, hangs, or its machine went away)."""


class WorkerError(NerfxlError):
    """A process of a multi-process run (spawned by :func:`nerfxl.parallel.launch.launch`) raised or died.

    Attributes:
        rank: the rank that failed first.
        exitcode: its exit code (negative: killed by that signal), or None if it was still running.
        exc_type: the exception's class name, or None when it died without raising.
        traceback: its formatted traceback ("" when it died without one).
        others: one-line descriptions of the ranks that failed after it (usually as a consequence).
        still_running: ranks that had neither failed nor finished (then terminated) — after a
            collective timeout, likely the ones that were stuck.
        user_error: the first failure was a :class:`NerfxlError` (bad input, not a bug): its message
            is the whole story and ``error_message`` holds it.
        error_message: the first failing rank's exception message ("" when it died without one).
    """

    def __init__(self, message: str, rank: int, exitcode: int | None, exc_type: str | None = None,
                 traceback: str = "", others: list[str] | None = None, still_running: list[int] | None = None,
                 user_error: bool = False, error_message: str = ""):
        super().__init__(message)
        self.user_error = user_error
        self.error_message = error_message
        self.still_running = still_running or []
        self.rank = rank
        self.exitcode = exitcode
        self.exc_type = exc_type
        self.traceback = traceback
        self.others = others or []

    def with_message(self, message: str) -> "WorkerError":
        """The same failure told by ``message`` (e.g. with the run's last checkpoint added)."""
        return WorkerError(message, self.rank, self.exitcode, self.exc_type, self.traceback, self.others,
                           self.still_running, self.user_error, self.error_message)
