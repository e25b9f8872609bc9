"""Tile planning: split the scene box into K disjoint axis-aligned tiles, one per device (nerf-xl.md §2).

- :mod:`.kd_split`: NeRF-XL's recursive median split (any K ≥ 1).
- :mod:`.uniform`: uniform grids of blocks (the Mega-NeRF / LandMark baseline).
- :mod:`.plan`: :class:`TilePlan` (save/load, point ownership) and :func:`plan_tiles`.
- :mod:`.plot`: a PNG of a plan (imports matplotlib; not loaded here).
- :mod:`.cli`: the ``nerfxl partition`` command.

Names are resolved lazily (PEP 562) so that ``nerfxl.partition.cli`` — imported by the CLI for every
command, even ``--help`` — does not pull in torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "kd_split": "kd_split",
    "PlanningPoints": "plan", "TilePlan": "plan", "plan_tiles": "plan", "planning_points": "plan",
    "ray_samples": "plan", "tiling_problem": "plan",
    "grid_shape_for": "uniform", "uniform_grid": "uniform", "uniform_tiles": "uniform",
    "plot_tiles": "plot",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"nerfxl.partition.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'nerfxl.partition' has no attribute {name!r}")
