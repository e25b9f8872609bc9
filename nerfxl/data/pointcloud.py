"""Point clouds in PLY files (SfM points, nerfstudio's ``sparse_pc.ply``), read and written with plyfile.

Only the vertex element matters here: ``x, y, z`` and, when present, ``red, green, blue``. Colours
stored as floats in [0, 1] (some exporters do that) are converted to uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyParseError
from torch import Tensor

from nerfxl.errors import DataError
from nerfxl.fileio import atomic_path


def read_ply(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """Read the vertices of a PLY file.

    Returns:
        points: [P, 3] float32.
        colors: [P, 3] uint8, or None when the file has no vertex colours.
    Raises:
        DataError: the file is missing, is not a PLY file, or has no vertex x/y/z.
    """
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except FileNotFoundError:
        raise DataError(path, "point cloud file is missing") from None
    except (PlyParseError, OSError, ValueError, EOFError, IndexError) as e:
        raise DataError(path, f"point cloud cannot be read as PLY ({type(e).__name__}: {e})") from None
    names = [el.name for el in ply.elements]
    if "vertex" not in names:
        raise DataError(path, f"PLY file has no 'vertex' element (it has: {', '.join(names) or 'none'})")
    vertex = ply["vertex"].data
    fields = vertex.dtype.names or ()
    missing = [c for c in ("x", "y", "z") if c not in fields]
    if missing:
        raise DataError(path, f"PLY vertices lack {', '.join(missing)} (they have: {', '.join(fields)})")
    points = np.stack([np.asarray(vertex[c], dtype=np.float32) for c in ("x", "y", "z")], axis=-1)
    if not np.isfinite(points).all():
        raise DataError(path, "PLY vertices contain non-finite coordinates")
    colors = None
    if all(c in fields for c in ("red", "green", "blue")):
        raw = np.stack([np.asarray(vertex[c]) for c in ("red", "green", "blue")], axis=-1)
        if np.issubdtype(raw.dtype, np.floating):
            # Float colours are in [0, 1] by convention (Open3D writes them that way).
            raw = np.clip(np.nan_to_num(raw) * 255.0 + 0.5, 0, 255)
        colors = torch.from_numpy(np.clip(raw, 0, 255).astype(np.uint8))
    return torch.from_numpy(np.ascontiguousarray(points)), colors


def write_ply(path: str | Path, points: Tensor | np.ndarray, colors: Tensor | np.ndarray | None = None,
              binary: bool = True) -> None:
    """Write [P, 3] points (and optional [P, 3] uint8 colours) as PLY vertices, atomically."""
    pts = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be [P, 3], got {tuple(pts.shape)}")
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if colors is not None:
        cols = np.asarray(colors.detach().cpu() if isinstance(colors, Tensor) else colors)
        if cols.shape != pts.shape:
            raise ValueError(f"colors must be [P, 3] like points, got {tuple(cols.shape)}")
        dtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(pts.shape[0], dtype=dtype)
    vertex["x"], vertex["y"], vertex["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        cols = cols.astype(np.uint8)
        vertex["red"], vertex["green"], vertex["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    data = PlyData([PlyElement.describe(vertex, "vertex")], text=not binary)
    with atomic_path(path) as tmp:
        data.write(str(tmp))
