"""What every format parser shares: the parsed-scene record, strict JSON/number/pose readers, split rules.

A parser reads *all* frames of a scene into a :class:`ParsedScene` (cameras at full resolution, file
paths, split membership, scene box); :func:`nerfxl.data.load.load_dataset` then cuts one split out of
it. Parsing everything once keeps the scene box and frame order identical for every split.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from nerfxl.data.cameras import Cameras
from nerfxl.errors import DataError

SPLITS = ("train", "val", "test")
ALL_SPLITS = (*SPLITS, "all")

# Formats without split information hold out every HOLDOUT_EVERY-th frame (sorted by name) for
# val/test, the usual LLFF / mip-NeRF 360 practice.
HOLDOUT_EVERY = 8

# How far R^T R may be from the identity before a pose is rejected: loose enough for poses written
# with float32 precision, tight enough to catch scaled or sheared matrices (e.g. MatrixCity's raw
# block files, whose rotations are scaled by 0.01).
ROTATION_TOLERANCE = 1e-2


@dataclass
class PrescaledImages:
    """A copy of a scene's images already downscaled by an integer factor (LLFF's ``images_4/``, …).

    Attributes:
        folder: where the copies are.
        paths: the folder's image files in frame order (sorted by name); they are frame i's copy only
            when there is one per frame, which :func:`nerfxl.data.load.dataset_from_scene` checks
            when it reads them.
    """

    folder: Path
    paths: list[Path]


@dataclass
class ParsedScene:
    """All N frames of a scene, in the format-independent conventions of :mod:`nerfxl.data.cameras`.

    Attributes:
        format: format name.
        root: the folder the data lives in.
        source: the file (or folder) the description came from; errors about the whole scene name it.
        cameras: N cameras at the files' full resolution.
        image_paths: N image files.
        image_names: N names (relative paths) for reports.
        camera_model_names: N names of the cameras' models as the format spelled them.
        splits: split name → indices into the N frames ("all" is implicit).
        split_problems: split name → why that split is empty (e.g. a missing file), for the error.
        scene_box: [2, 3] bounds, or None to derive them from points, then cameras.
        points, point_colors: optional [P, 3] float32 / [P, 3] uint8 point cloud.
        point_source: where the points came from, for ``describe_dataset``.
        depth_paths: N depth files or None.
        depth_scale: factor from depth file values to scene units.
        metadata: format-specific extras (conversions applied, notes).
        prescaled: integer factor → a copy of every image already downscaled by it; loading with
            that ``downscale`` reads the copy (intrinsics fitted to its real size) instead of
            downscaling the full-size files on the fly.
    """

    format: str
    root: Path
    source: Path
    cameras: Cameras
    image_paths: list[Path]
    image_names: list[str]
    camera_model_names: list[str]
    splits: dict[str, list[int]]
    split_problems: dict[str, str] = field(default_factory=dict)
    scene_box: Tensor | None = None
    points: Tensor | None = None
    point_colors: Tensor | None = None
    point_source: str | None = None
    depth_paths: list[Path] | None = None
    depth_scale: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)
    prescaled: dict[int, PrescaledImages] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_paths)

    def indices(self, split: str) -> list[int]:
        if split == "all":
            return list(range(len(self)))
        return list(self.splits.get(split, []))


def read_json(path: Path) -> Any:
    """Parse a JSON file; any problem becomes a :class:`DataError` naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file is missing") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, expected a JSON file") from None
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text, expected JSON") from None
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def read_frames_json(path: Path) -> tuple[dict, list[dict]]:
    """A transforms-style JSON: an object with a non-empty ``frames`` list of objects."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataError(path, f"expected a JSON object at the top level, found {type(meta).__name__}")
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DataError(path, "has no 'frames' list")
    if not frames:
        raise DataError(path, "'frames' is empty")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise DataError(path, f"frame {i} is not a JSON object")
    return meta, frames


def number(value: Any, source: Path, what: str, positive: bool = False) -> float:
    """A finite float from a JSON value, or a DataError saying which value is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(source, f"{what} must be a number, found {json.dumps(value)[:40]}")
    try:
        x = float(value)
    except ValueError:
        raise DataError(source, f"{what} must be a number, found {value!r}") from None
    if not math.isfinite(x):
        raise DataError(source, f"{what} is not finite ({value})")
    if positive and x <= 0:
        raise DataError(source, f"{what} must be positive, found {value}")
    return x


def matrix(value: Any, source: Path, what: str, shapes: tuple[tuple[int, int], ...] = ((4, 4),)) -> np.ndarray:
    """A finite float64 matrix of one of ``shapes`` from a JSON value (or tensor)."""
    try:
        m = np.asarray(value.detach().cpu().numpy() if isinstance(value, Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(source, f"{what} is not a numeric matrix") from None
    if m.shape not in shapes:
        want = " or ".join(f"{a}×{b}" for a, b in shapes)
        raise DataError(source, f"{what} must be {want}, found shape {'×'.join(map(str, m.shape)) or 'scalar'}")
    if not np.isfinite(m).all():
        raise DataError(source, f"{what} contains non-finite values")
    return m


def check_rotation(rotation: np.ndarray, source: Path, what: str) -> None:
    """Reject rotation blocks that are scaled, sheared or reflections."""
    err = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if err > ROTATION_TOLERANCE:
        scale = float(np.linalg.norm(rotation, axis=0).mean())
        raise DataError(source, f"{what}: the rotation part is not orthonormal (max |RᵀR − I| = {err:.3g}, "
                                f"column length ≈ {scale:.4g}); poses must be rigid camera-to-world matrices")
    if np.linalg.det(rotation) < 0:
        raise DataError(source, f"{what}: the rotation part is a reflection (determinant < 0)")


def pose_matrix(value: Any, source: Path, what: str) -> np.ndarray:
    """A rigid 4×4 camera-to-world matrix from JSON; returns its [3, 4] top rows."""
    m = matrix(value, source, what)
    check_rotation(m[:3, :3], source, what)
    return m[:3, :4]


def check_frame_file_paths(frames: list, source: Path) -> None:
    """Every transforms-style frame must name its image in a 'file_path' string."""
    for i, frame in enumerate(frames):
        if not isinstance(frame.get("file_path"), str):
            raise DataError(source, f"frame {i} has no 'file_path' string")


def frame_pose(frame: dict, source: Path) -> np.ndarray:
    """The checked [3, 4] camera-to-world of a transforms-style frame (its 'transform_matrix')."""
    where = f"frame '{frame['file_path']}'"
    if "transform_matrix" not in frame:
        raise DataError(source, f"{where} has no 'transform_matrix'")
    return pose_matrix(frame["transform_matrix"], source, f"{where}: transform_matrix")


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image from its header only (no decoding)."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(path, f"image cannot be read ({e})") from None


def check_same_aspect(size: tuple[int, int], reference: tuple[int, int], path: Path, described_by: str) -> None:
    """Reject an image of ``size`` (W, H) that is no uniform resize of ``reference`` (W, H).

    Resizing tools round each side on its own (to nearest, down or up), so the image passes when one
    scale s puts both s·W and s·H within a pixel of its sides.
    """
    (w, h), (ref_w, ref_h) = size, reference
    lowest = max((w - 1) / ref_w, (h - 1) / ref_h)
    highest = min((w + 1) / ref_w, (h + 1) / ref_h)
    if lowest > highest:
        raise DataError(path, f"image is {w}x{h}, but {described_by} says {ref_w}x{ref_h}: the aspect ratios "
                              f"differ ({w / h:.4g} vs {ref_w / ref_h:.4g}), so it is not that image resized "
                              f"(cropped or rotated?)")


def fit_cameras_to_images(cameras: Cameras, paths: Sequence[Path], described_by: str) -> Cameras:
    """The same N cameras at the real sizes of ``paths`` (read from the headers, nothing decoded).

    fx and cx follow the width's ratio, fy and cy the height's, so the pixel grid keeps covering the
    same field of view whatever rounding made the files (as :meth:`Cameras.rescale` does). A file
    whose aspect ratio differs from its camera's is a :class:`DataError` naming the file;
    ``described_by`` says where the cameras' sizes came from, for that message.
    """
    sizes = [image_size(p) for p in paths]
    for size, w, h, path in zip(sizes, cameras.width.tolist(), cameras.height.tolist(), paths):
        check_same_aspect(size, (w, h), path, described_by)
    width = torch.tensor([w for w, _ in sizes], dtype=torch.int64)
    height = torch.tensor([h for _, h in sizes], dtype=torch.int64)
    # float64 ratios: a 4032-pixel side scaled to 504 must give exactly focal / 8.
    sx = width.double() / cameras.width.double()
    sy = height.double() / cameras.height.double()
    scale = lambda x, s: (x.double() * s).to(x.dtype)  # noqa: E731
    return replace(cameras, fx=scale(cameras.fx, sx), fy=scale(cameras.fy, sy), cx=scale(cameras.cx, sx),
                   cy=scale(cameras.cy, sy), width=width, height=height)


def holdout_splits(n: int, every: int = HOLDOUT_EVERY) -> dict[str, list[int]]:
    """Every ``every``-th frame (0, 8, 16, …) is val and test; the rest is train."""
    held = [i for i in range(n) if i % every == 0]
    return {"train": [i for i in range(n) if i % every != 0], "val": held, "test": list(held)}


def scene_box_tensor(value: Any, source: Path, what: str = "scene_box") -> Tensor:
    """A [2, 3] (min, max) box from JSON, with min < max on every axis."""
    box = matrix(value, source, what, shapes=((2, 3),))
    if not (box[0] < box[1]).all():
        raise DataError(source, f"{what} must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max")
    return torch.tensor(box, dtype=torch.float32)


def scene_box_below_cameras(positions: Tensor, margin: float = 0.1, depth: float = 1.0) -> Tensor:
    """[2, 3] box for aerial captures in z-up worlds, where the content lies *below* the cameras.

    Horizontally the camera footprint widened by ``margin``; vertically from the highest camera
    (plus the margin) down to ``depth`` × the larger horizontal side below the lowest camera, so
    flights lower than their footprint is wide (the usual case) keep the ground inside. A
    heuristic: formats that carry no geometry (Mega-NeRF, MatrixCity) give nothing better, and a
    box that is too large only costs samples while one that is too small loses content; pass an
    explicit box for tight bounds.
    """
    pos = positions.to(torch.float64)
    lo, hi = pos.min(dim=0).values, pos.max(dim=0).values
    side = float((hi[:2] - lo[:2]).max().clamp_min(1e-3))
    pad = max(side * margin, 1e-3)
    box_lo = torch.stack([lo[0] - pad, lo[1] - pad, lo[2] - depth * side])
    box_hi = torch.stack([hi[0] + pad, hi[1] + pad, hi[2] + pad])
    return torch.stack([box_lo, box_hi]).to(torch.float32)
