"""Picture of a tile plan: top view (x–y) of the tiles over the planning points, plus a side view.

Each tile is one colour: its points are scattered in it, its footprint outlined in it, and its
label gives the id, point count and work share. Tiles stacked in z (a k-d split along z, or a
uniform grid with nz > 1) share a footprint in the top view; their labels are merged into one
block, and the side view (x–z) below shows the stacking.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from nerfxl.fileio import atomic_path
from nerfxl.partition.plan import TilePlan

# Scatter plots slow down and smear beyond this many dots; a seeded subset shows the same density.
MAX_PLOTTED_POINTS = 100_000


def _colours(k: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "hsv"]
    if k > 20:
        return [cmap(i / k) for i in range(k)]
    return [cmap(i) for i in range(k)]


def plot_tiles(plan: TilePlan, path: str | Path, points: Tensor | None = None, title: str | None = None,
               max_points: int = MAX_PLOTTED_POINTS, seed: int = 0) -> Path:
    """Write a PNG of ``plan`` (over ``points`` [N, 3] if given) to ``path``, atomically.

    Points outside the scene box are not drawn. Returns ``path``.
    """
    # The object API with the Agg canvas: headless, and no change to pyplot's global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    path = Path(path)
    k = plan.k
    colours = _colours(k)
    box = plan.scene_box
    size = (box[1] - box[0]).tolist()

    # Side panel height proportional to the box's z extent (capped so flat scenes stay visible).
    side_ratio = min(max(size[2] / size[0], 0.15), 1.0)
    top_ratio = size[1] / size[0]
    fig_w = 8.0
    fig = Figure(figsize=(fig_w, fig_w * (top_ratio + side_ratio) * 0.9 + 1.2))
    FigureCanvasAgg(fig)
    top, side = fig.subplots(2, 1, gridspec_kw={"height_ratios": [top_ratio, side_ratio]})

    if points is not None:
        pts = torch.as_tensor(points).detach().to(torch.float64).cpu().reshape(-1, 3)
        tile = plan.tile_of_points(pts)
        keep = (tile >= 0).nonzero().flatten()
        if keep.shape[0] > max_points:
            g = torch.Generator().manual_seed(int(seed))
            keep = keep[torch.randperm(keep.shape[0], generator=g)[:max_points]]
        pts, tile = pts[keep].numpy(), tile[keep].numpy()
        dot = max(0.2, min(4.0, 4000.0 / max(len(pts), 1)))
        point_colours = [colours[t] for t in tile]
        top.scatter(pts[:, 0], pts[:, 1], s=dot, c=point_colours, linewidths=0, alpha=0.6, rasterized=True)
        side.scatter(pts[:, 0], pts[:, 2], s=dot, c=point_colours, linewidths=0, alpha=0.6, rasterized=True)

    shares = plan.shares
    labels: dict[tuple[float, float], list[str]] = {}
    for i in range(k):
        (x0, y0, z0), (x1, y1, z1) = plan.boxes[i, 0].tolist(), plan.boxes[i, 1].tolist()
        for ax, (a0, a1, b0, b1) in ((top, (x0, x1, y0, y1)), (side, (x0, x1, z0, z1))):
            ax.add_patch(Rectangle((a0, b0), a1 - a0, b1 - b0, fill=False, edgecolor=colours[i], linewidth=1.5))
        centre = (round(0.5 * (x0 + x1), 9), round(0.5 * (y0 + y1), 9))
        labels.setdefault(centre, []).append(
            f"{i}: {int(plan.points_per_tile[i])} ({100 * float(shares[i]):.1f}%)")
    for (cx, cy), lines in labels.items():
        top.text(cx, cy, "\n".join(lines), ha="center", va="center", fontsize=7 if k <= 16 else 5,
                 bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.7, "linewidth": 0})

    for ax, (a, b), names in ((top, (0, 1), ("x", "y")), (side, (0, 2), ("x", "z"))):
        ax.set_xlim(float(box[0, a]), float(box[1, a]))
        ax.set_ylim(float(box[0, b]), float(box[1, b]))
        ax.set_aspect("equal" if ax is top or size[2] / size[0] >= 0.15 else "auto")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    source = plan.source.get("kind", "?")
    top.set_title(title or f"{plan.method} plan, {k} tiles — top view; {int(plan.points_per_tile.sum())} points "
                           f"({source}), imbalance {plan.imbalance:.2f}", fontsize=9)
    side.set_title("side view (x–z)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
