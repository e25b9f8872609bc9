"""Scene overlays as plain geometry: tile and block boxes coloured by owner, training camera frustums,
the fetch window. The server hands these arrays to viser; keeping them here makes them testable."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.viewer.camera import browser_pose

# The 12 edges of a box as pairs of corner indices; corner i has bit 0 → x, bit 1 → y, bit 2 → z.
_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


def box_edges(box) -> np.ndarray:
    """[12, 2, 3] the edges of an axis-aligned box [2, 3] (min, max corners)."""
    box = np.asarray(box, dtype=np.float64).reshape(2, 3)
    corners = np.array([[box[(i >> a) & 1, a] for a in range(3)] for i in range(8)])
    return np.stack([corners[[i, j]] for i, j in _EDGES])


def owner_colours(n: int) -> np.ndarray:
    """[n, 3] uint8 colours, evenly spaced in hue (owner r gets colour r)."""
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.75, 0.95)] for i in range(n)],
                    dtype=np.uint8)


def tile_owners(n_tiles: int, processes: int) -> list[int]:
    """Which of ``processes`` holds each tile (tile k goes to rank k // (K / D), as
    :func:`nerfxl.parallel.tiles.tiles_of_rank`); with one process, or a D that does not divide K, every
    tile is its own owner so the boxes stay distinguishable."""
    if processes <= 1 or n_tiles % processes:
        return list(range(n_tiles))
    per = n_tiles // processes
    return [k // per for k in range(n_tiles)]


def boxes_as_segments(boxes, owners: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [K, 2, 3] → (segments [12 K, 2, 3], colours [12 K, 2, 3] uint8), box k in its owner's colour."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 3)
    palette = owner_colours(max(owners) + 1 if owners else 1)
    segments = np.concatenate([box_edges(b) for b in boxes]) if len(boxes) else np.zeros((0, 2, 3))
    colours = np.repeat(palette[owners], 12 * 2, axis=0).reshape(-1, 2, 3) if len(boxes) else np.zeros((0, 2, 3))
    return segments, colours.astype(np.uint8)


def block_boxes(xy_min, xy_max, nx: int, ny: int, z_range: tuple[float, float]) -> np.ndarray:
    """[nx · ny, 2, 3] the boxes of an nx × ny grid of ground blocks (row-major in y, then x)."""
    xs = np.linspace(xy_min[0], xy_max[0], nx + 1)
    ys = np.linspace(xy_min[1], xy_max[1], ny + 1)
    return np.array([[[xs[i], ys[j], z_range[0]], [xs[i + 1], ys[j + 1], z_range[1]]]
                     for j in range(ny) for i in range(nx)])


def window_box(xy_min, block_size, x0: int, y0: int, n: int, z_range: tuple[float, float]) -> np.ndarray:
    """[2, 3] the box of an n × n window of blocks whose first block is (x0, y0)."""
    lo = (xy_min[0] + x0 * block_size[0], xy_min[1] + y0 * block_size[1])
    return np.array([[lo[0], lo[1], z_range[0]],
                     [lo[0] + n * block_size[0], lo[1] + n * block_size[1], z_range[1]]])


def spread(n: int, limit: int) -> list[int]:
    """At most ``limit`` indices spread evenly over range(n)."""
    if n <= limit:
        return list(range(n))
    return np.linspace(0, n - 1, limit).round().astype(int).tolist()


def frustums(cameras: Cameras, limit: int = 200) -> list[dict]:
    """Up to ``limit`` training cameras as viser frustums: position, wxyz, vertical fov (radians), aspect."""
    out = []
    for i in spread(len(cameras), limit):
        position, wxyz = browser_pose(cameras.camera_to_worlds[i].double().numpy())
        h, w = float(cameras.height[i]), float(cameras.width[i])
        out.append({"index": i, "position": position, "wxyz": wxyz,
                    "fov": float(2 * np.arctan(0.5 * h / float(cameras.fy[i]))), "aspect": w / h})
    return out


def scene_scale(scene_box: Tensor) -> float:
    """The scene box's diagonal (sizes frustums and line widths)."""
    box = torch.as_tensor(scene_box, dtype=torch.float64)
    return float((box[1] - box[0]).norm())
