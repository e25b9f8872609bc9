"""Moved to :mod:`nerfxl.run.trained` and :mod:`nerfxl.run.load`; these names stay importable from here
for code written against ``nerfxl.trained`` (inside nerfxl, import them from the run layer)."""

from nerfxl.run.load import STATE_KEYS, run_checkpoint
from nerfxl.run.trained import TrainedRun, load_trained

__all__ = ["STATE_KEYS", "TrainedRun", "load_trained", "run_checkpoint"]
