"""LLFF ``poses_bounds.npy`` with ``images/`` (and LLFF's pre-downscaled ``images_N/`` copies).

Layout (what LLFF's ``imgs2poses.py`` writes, e.g. the ``nerf_llff_data`` scenes)::

    poses_bounds.npy   float [N, 17]: per image a 3×5 matrix flattened row-major, then near, far
    images/            the N images; row i belongs to the i-th file in sorted name order
    images_4/, …       optional copies downscaled by an integer factor (same order)

Each 3×5 matrix is ``[down | right | back | position | hwf]``: the first three columns are the
camera's axes in world coordinates (LLFF's camera looks along −back), the fourth its centre, and
the fifth ``[H, W, focal]`` of the images the poses were computed for. near and far bounds are
z-depths along the view axis (LLFF takes them from percentiles of the sparse points' depths).

Conventions:

- Camera axes: ours are OpenGL's [right, up, back] (see :mod:`nerfxl.data.cameras`), so the
  rotation becomes ``[right, −down, back]``, the same swap LLFF's own ``load_llff_data`` makes.
  The world is kept as written, i.e. COLMAP's reconstruction frame (no known up direction);
  LLFF's load-time recentring, ``bd_factor`` rescaling and NDC rays are not applied.
- Intrinsics: the focal is for the H×W in the array; the images read may be another size (a
  ``images_N/`` copy, or a folder the user resized), so fx, cx follow the real width and fy, cy
  the real height, read from each image's header. The principal point is the image centre (LLFF
  stores none). An image whose aspect ratio differs from H×W is a :class:`DataError`.
- ``--downscale F`` with an integer F reads ``images_F/`` when it exists (its intrinsics fitted
  to the copies' real sizes); otherwise ``images/`` downscaled on the fly, as for other formats.
- Splits: LLFF has none; every 8th image (0, 8, 16, … in sorted order) is val and test, the
  practice of the LLFF/NeRF papers (``llffhold = 8``) and what the other formats without split
  lists do.
- Scene box: the axis-aligned box holding every camera's view frustum between its own near and
  far depth. That is where LLFF says the content lies; the camera centres themselves (in front
  of the near planes) need not be inside. The bounds are all the geometry LLFF keeps, so there is
  no point cloud; an LLFF folder usually keeps COLMAP's ``sparse/`` too, which
  ``--data-format colmap`` reads (with its points) instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.formats.common import (
    ParsedScene,
    PrescaledImages,
    check_rotation,
    fit_cameras_to_images,
    holdout_splits,
)
from nerfxl.data.rays import camera_space_directions
from nerfxl.errors import DataError

POSES_FILE = "poses_bounds.npy"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COPY_FOLDER = re.compile(r"images_([0-9]+)")


def read_poses_bounds(path: Path) -> np.ndarray:
    """The checked float64 [N, 17] array of ``poses_bounds.npy`` (shape, dtype, finiteness)."""
    if not path.is_file():
        raise DataError(path, "file is missing" if not path.exists() else "is not a file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot be read as a NumPy .npy array ({str(e)[:160]})") from None
    if not isinstance(array, np.ndarray):  # np.load opens a .npz archive without complaint
        array.close()
        raise DataError(path, "is a .npz archive, expected one .npy array")
    if array.dtype.kind not in "iuf":
        raise DataError(path, f"must hold real numbers, found dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] == 0:
        raise DataError(path, f"must be an [N, 17] array (per image a 3×5 pose-and-hwf matrix, then near and "
                              f"far), found shape [{', '.join(map(str, array.shape))}]")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise DataError(path, f"row {bad[0]} contains non-finite values (NaN or inf)"
                              + (f", and {len(bad) - 1} more rows" if len(bad) > 1 else ""))
    return array


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` in LLFF's order (sorted by name).

    Hidden files are skipped: copies made on macOS carry ``._IMG_0001.JPG`` metadata files that
    would shift every pose onto the wrong image.
    """
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def downscaled_copies(root: Path) -> dict[int, PrescaledImages]:
    """factor → the ``images_{factor}/`` folder's images, for every integer factor ≥ 2 present."""
    copies = {}
    for folder in root.iterdir():
        match = COPY_FOLDER.fullmatch(folder.name)
        if match and int(match.group(1)) >= 2 and folder.is_dir():
            copies[int(match.group(1))] = PrescaledImages(folder, list_images(folder))
    return dict(sorted(copies.items()))


def llff_to_opengl(poses: np.ndarray) -> np.ndarray:
    """[N, 3, 5] LLFF ``[down | right | back | position | hwf]`` → [N, 3, 4] OpenGL camera-to-world."""
    down, right, back, position = (poses[:, :, k] for k in range(4))
    return np.stack([right, -down, back, position], axis=2)


def check_values(poses: np.ndarray, bounds: np.ndarray, c2ws: np.ndarray, path: Path, names: list[str]) -> None:
    """Reject rows with a non-positive image size, focal or bound, near ≥ far, or a non-rigid rotation."""
    for i, (hwf, (near, far)) in enumerate(zip(poses[:, :, 4], bounds)):
        where = f"row {i} ('{names[i]}')"
        if not (hwf[0] >= 1 and hwf[1] >= 1):  # sizes are rounded to whole pixels
            raise DataError(path, f"{where}: the image height and width (hwf[0:2]) must be positive "
                                  f"(at least 1 pixel), found {hwf[0]:g} and {hwf[1]:g}")
        if hwf[2] <= 0:
            raise DataError(path, f"{where}: the focal length (hwf[2]) must be positive, found {hwf[2]:g}")
        if not (0 < near < far):
            raise DataError(path, f"{where}: the near and far bounds must be positive with near < far, "
                                  f"found near {near:g}, far {far:g}")
        check_rotation(c2ws[i, :, :3], path, where)


def frustum_box(cameras: Cameras, bounds: Tensor) -> Tensor:
    """[2, 3] box holding every camera's view frustum between its near and far depth.

    Args:
        cameras: N undistorted cameras.
        bounds: [N, 2] (near, far) z-depths along each camera's view axis.
    Returns:
        [2, 3] (min, max) over the frustums' 8 N corners (a frustum slice is the convex hull of its
        corners, so the box of the corners holds it).
    """
    n = len(cameras)
    w, h = cameras.width.double(), cameras.height.double()
    zero = torch.zeros_like(w)
    corners = torch.stack([torch.stack(c, dim=-1) for c in ((zero, zero), (w, zero), (zero, h), (w, h))], dim=1)
    index = torch.arange(n).repeat_interleave(4)
    # Directions on the z = −1 plane, so a depth d scales them straight to camera-space points.
    directions = camera_space_directions(cameras, index, corners.reshape(-1, 2).float()).double()  # [4N, 3]
    points = directions[:, None, :] * bounds.double()[index][:, :, None]  # [4N, 2, 3]
    c2w = cameras.camera_to_worlds.double()[index]  # [4N, 3, 4]
    world = torch.einsum("rij,rkj->rki", c2w[:, :, :3], points) + c2w[:, None, :, 3]
    flat = world.reshape(-1, 3)
    return torch.stack([flat.min(dim=0).values, flat.max(dim=0).values]).to(torch.float32)


def _span(values: np.ndarray) -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}…{hi:.4g}"


def parse_llff(root: Path) -> ParsedScene:
    root = Path(root)
    path = root / POSES_FILE
    array = read_poses_bounds(path)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DataError(images_dir, f"folder is missing; LLFF keeps the images that {POSES_FILE} describes in "
                                    f"images/ beside it")
    image_paths = list_images(images_dir)
    n = array.shape[0]
    if len(image_paths) != n:
        raise DataError(path, f"has {n} poses but images/ holds {len(image_paths)} images "
                              f"({', '.join(IMAGE_SUFFIXES)}); LLFF pairs them in sorted name order, "
                              f"so the counts must agree")
    names = [p.name for p in image_paths]
    poses, bounds = array[:, :15].reshape(n, 3, 5), array[:, 15:17]
    c2ws = llff_to_opengl(poses)
    check_values(poses, bounds, c2ws, path, names)

    hwf = poses[:, :, 4]
    width, height = np.round(hwf[:, 1]), np.round(hwf[:, 0])
    # At the hwf size first (principal point at the centre: LLFF stores none), then fitted to the files.
    at_hwf_size = Cameras.create(
        torch.tensor(c2ws, dtype=torch.float32), torch.tensor(hwf[:, 2]), torch.tensor(hwf[:, 2]),
        torch.tensor(width / 2), torch.tensor(height / 2), torch.tensor(width), torch.tensor(height),
        camera_model=CameraModel.PERSPECTIVE,
    )
    cameras = fit_cameras_to_images(at_hwf_size, image_paths, f"{POSES_FILE}'s hwf")
    bounds_t = torch.tensor(bounds)

    metadata = {
        "splits_from": "every 8th image held out (LLFF has no splits)",
        "world": "COLMAP's reconstruction frame, as LLFF wrote it (no known up direction; not recentred)",
        "scene_box_from": "every camera's frustum between its near and far bounds",
        "bounds": f"near {_span(bounds[:, 0])}, far {_span(bounds[:, 1])}",
        "hwf": f"{hwf[0, 1]:g}x{hwf[0, 0]:g}, focal {hwf[0, 2]:.6g}"
               + ("" if np.all(hwf == hwf[0]) else " (first row; rows differ)"),
    }
    copies = downscaled_copies(root)
    if copies:
        metadata["copies"] = (", ".join(c.folder.name for c in copies.values())
                              + f" (read by --downscale {', '.join(map(str, copies))})")
    return ParsedScene(
        format="llff", root=root, source=path, cameras=cameras, image_paths=image_paths,
        image_names=[f"images/{name}" for name in names], camera_model_names=["PINHOLE"] * n,
        splits=holdout_splits(n), scene_box=frustum_box(cameras, bounds_t), metadata=metadata, prescaled=copies,
    )
