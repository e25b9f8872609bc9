"""``nerfxl partition DATA -k K``: plan the tiles of a dataset, print the work per tile, save/plot.

Registered in ``nerfxl.cli`` as the ``partition`` command; imports nothing heavy until it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

# Same value as nerfxl.partition.plan.DEFAULT_RAY_SAMPLES (a test checks); repeated here so the CLI
# module imports no torch.
DEFAULT_RAY_SAMPLES = 1 << 18


@dataclass
class Partition:
    """Split a dataset's scene box into K tiles (NeRF-XL k-d split or a uniform grid) and report the work per tile."""

    data: tyro.conf.Positional[Path]
    """Dataset folder or its JSON file (any format ``nerfxl info`` reads)."""
    k: Annotated[int, tyro.conf.arg(aliases=("-k",))]
    """Number of tiles (one per device); any K ≥ 1 (the paper uses powers of two)."""
    method: Literal["kd", "uniform"] = "kd"
    """kd: recursive median split balancing the points (NeRF-XL); uniform: equal blocks (Mega-NeRF style)."""
    output: Annotated[Optional[Path], tyro.conf.arg(aliases=("-o",))] = None
    """Write the plan as JSON here (use it with `nerfxl train --tile-plan`)."""
    plot: Optional[Path] = None
    """Write a top/side-view PNG of the tiles over the planning points here."""
    source: Literal["auto", "points", "rays"] = "auto"
    """Planning points: the dataset's point cloud, samples along random training rays, or auto (cloud if big enough)."""
    n_ray_samples: int = DEFAULT_RAY_SAMPLES
    """Samples drawn along random training rays when planning from rays."""
    seed: int = 0
    """Seed of the ray samples (and of the point subset a very large cloud is split on)."""
    nz: int = 1
    """Uniform grid: layers along z (must divide K)."""
    split: str = "train"
    """Dataset split whose cameras (for ray samples) are used."""

    def main(self) -> None:
        from nerfxl.data.load import load_dataset
        from nerfxl.partition.plan import plan_tiles, planning_points

        dataset = load_dataset(self.data, split=self.split)
        points = planning_points(dataset, self.k, self.source, self.n_ray_samples, self.seed)
        plan = plan_tiles(points, self.k, self.method, seed=self.seed, nz=self.nz)
        print(plan.table())
        if self.output is not None:
            plan.save(self.output)
            print(f"wrote the plan to {self.output}")
        if self.plot is not None:
            from nerfxl.partition.plot import plot_tiles

            plot_tiles(plan, self.plot, points.points)
            print(f"wrote the plot to {self.plot}")
