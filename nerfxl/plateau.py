"""Stopping a run when its training PSNR has plateaued (train to convergence, not to a step count).

The per-step PSNR is one batch's and noisy, so the rule compares windows: the PSNR of the mean
squared error over the last ``window`` steps against that of the window before. When the gain is
below ``min_gain_db`` the run has plateaued. Every process sees the same per-step statistics, so
every process stops at the same step.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

CONVERGENCE_FILE = "convergence.json"
"""Written into a run folder trained with a plateau rule: steps used, whether it converged, the last
gain and window PSNR."""


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] colours."""
    return -10.0 * math.log10(max(mse, 1e-10))


@dataclass
class PlateauRule:
    """Windows of ``window`` steps; plateau when the newer window's PSNR gains < ``min_gain_db``.

    A resumed run starts with empty windows: it trains at least two more windows before it can stop.
    """

    window: int
    min_gain_db: float = 0.05
    _errors: deque = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be ≥ 1 step, got {self.window}")
        self._errors = deque(maxlen=2 * self.window)  # the two windows compared

    def observe(self, mse: float) -> bool:
        """Record one step's training MSE; True when the last two windows show a plateau."""
        self._errors.append(float(mse))
        return len(self._errors) == 2 * self.window and self.gain_db() < self.min_gain_db

    def gain_db(self) -> float:
        """PSNR of the newer window minus that of the older (nan before two full windows)."""
        if len(self._errors) < 2 * self.window:
            return math.nan
        errors = list(self._errors)
        older, newer = errors[: self.window], errors[self.window:]
        return psnr_of_mse(sum(newer) / self.window) - psnr_of_mse(sum(older) / self.window)

    def window_psnr(self) -> float:
        """PSNR of the mean MSE over the newest window (or the steps seen so far)."""
        recent = list(self._errors)[-self.window:]
        return psnr_of_mse(sum(recent) / len(recent)) if recent else math.nan


def plateau_rule_of(config) -> PlateauRule | None:
    """The rule a TrainConfig asks for (``plateau_window`` > 0), or None (train every step)."""
    return PlateauRule(config.plateau_window, config.plateau_min_gain) if config.plateau_window else None


def write_convergence(run_dir: Path, rule: PlateauRule, steps: int, max_steps: int, converged: bool) -> None:
    """``run_dir/convergence.json``: where and whether a run with a plateau rule stopped."""
    from nerfxl.fileio import write_json_atomic

    def finite(x: float) -> float | None:
        return None if math.isnan(x) else x

    write_json_atomic(Path(run_dir) / CONVERGENCE_FILE, {
        "steps": steps, "max_steps": max_steps, "converged": converged, "window": rule.window,
        "min_gain_db": rule.min_gain_db, "last_gain_db": finite(rule.gain_db()), "train_psnr": finite(rule.window_psnr())})
