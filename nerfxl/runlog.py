"""Progress bar and TensorBoard logging of a run (rank 0 only in distributed runs)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

# One bar per process needs no cross-process lock; tqdm's default one is a multiprocessing semaphore
# that a rank killed mid-run leaves behind ("leaked semaphore" warnings after the error line).
tqdm.set_lock(threading.RLock())


class RunLogger:
    """A tqdm bar with rays/s and PSNR, plus TensorBoard scalars and preview images.

    Args:
        run_dir: the run folder; events go to ``run_dir/tensorboard``.
        total: total steps; start: first step (resume).
        enabled_bar: show the progress bar.
    """

    def __init__(self, run_dir: Path, total: int, start: int = 0, enabled_bar: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self.bar = tqdm(total=total, initial=start, disable=not enabled_bar, dynamic_ncols=True, desc="train", unit="step")
        self._ema: dict[str, float] = {}

    def step(self, step: int, stats: dict[str, float], write_scalars: bool) -> None:
        for k in ("psnr", "rays_per_s"):
            if k in stats:
                old = self._ema.get(k)
                self._ema[k] = stats[k] if old is None else 0.9 * old + 0.1 * stats[k]
        self.bar.update(1)
        if self._ema:
            self.bar.set_postfix(psnr=f"{self._ema.get('psnr', 0):.2f}", rays_s=f"{self._ema.get('rays_per_s', 0):.0f}", refresh=False)
        if write_scalars:
            self.scalars(step, {f"train/{k}": v for k, v in stats.items()})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)

    def image(self, tag: str, step: int, image: Tensor | np.ndarray) -> None:
        """[H, W, 3] float in [0, 1]."""
        array = image.detach().cpu().numpy() if isinstance(image, Tensor) else image
        self.writer.add_image(tag, np.clip(array, 0, 1), step, dataformats="HWC")

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
