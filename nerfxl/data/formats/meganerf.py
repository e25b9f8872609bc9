"""Mega-NeRF / Mill 19 / UrbanScene3D datasets (the layout of cmusatyalab/mega-nerf).

Layout::

    coordinates.pt            {"origin_drb": [3] tensor, "pose_scale_factor": float}
    train/metadata/<stem>.pt  {"W": int, "H": int, "intrinsics": [fx, fy, cx, cy], "c2w": [3, 4], ...}
    train/rgbs/<stem>.jpg|png
    val/metadata/…, val/rgbs/…

All ``.pt`` files are read with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling).

Axis conventions (from mega-nerf's ``scripts/colmap_to_mega_nerf.py`` and ``ray_utils.py``):

- The world frame is "DRB": +X down, +Y right, +Z back (towards the viewer), metric positions
  recentred on ``origin_drb`` and divided by ``pose_scale_factor``: ``p_norm = (p_drb - origin) / s``.
- The stored ``c2w`` maps OpenGL camera axes (+X right, +Y up, looks down −Z; their ray directions
  are ``((u - cx)/fx, -(v - cy)/fy, -1)``) into that normalised DRB world. Mega-NeRF's default
  ``center_pixels=True`` puts pixel centres at +0.5, as we do.

We convert to a z-up, right-handed world in metres, centred on ``origin_drb``:
x = right (DRB +Y), y = forward (DRB −Z), z = up (DRB −X), i.e. ``p = M · p_norm · s`` with

    M = [[0, 1, 0], [0, 0, -1], [-1, 0, 0]]   (det +1)

and ``c2w_ours = [M R | M t s]``. ``metadata["world_from_mega_nerf"]`` is the 4×4 ``[s M | 0]`` acting
on normalised DRB points; back in Mega-NeRF's metric DRB frame a point is ``origin_drb + Mᵀ p``.
Mega-NeRF's ``ray_altitude_range`` (metric DRB x, i.e. minus height) becomes z = −(altitude −
origin_drb[0]).

Splits: "train" is ``train/``, "val" and "test" are ``val/`` (Mega-NeRF has no separate test set),
frames sorted by file name. There is no geometry in the data, so the scene box is a heuristic box
below the (aerial) cameras; see :func:`~nerfxl.data.formats.common.scene_box_below_cameras`.
Images in Mega-NeRF data are already undistorted; a stored ``distortion`` entry is ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.formats.common import ParsedScene, check_rotation, matrix, number, scene_box_below_cameras
from nerfxl.errors import DataError

DRB_TO_ZUP = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
IMAGE_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".png", ".PNG")


def torch_load(path: Path):
    """``torch.load(weights_only=True)`` with every failure turned into a DataError naming the file."""
    if not path.is_file():
        raise DataError(path, "file is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt/unsafe pickles
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"cannot be read with torch.load(weights_only=True): {message[:200]}") from None


def _scalar(value, path: Path, what: str, positive: bool = False) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise DataError(path, f"{what} must be a single number, found a tensor of shape {tuple(value.shape)}")
        value = value.item()
    return number(value, path, what, positive=positive)


def parse_meganerf(root: Path) -> ParsedScene:
    root = Path(root)
    coords_path = root / "coordinates.pt"
    coords = torch_load(coords_path)
    if not isinstance(coords, dict) or "origin_drb" not in coords or "pose_scale_factor" not in coords:
        raise DataError(coords_path, "expected a dict with 'origin_drb' and 'pose_scale_factor'")
    origin = matrix([coords["origin_drb"].tolist() if isinstance(coords["origin_drb"], torch.Tensor)
                     else coords["origin_drb"]], coords_path, "origin_drb", shapes=((1, 3),))[0]
    scale = _scalar(coords["pose_scale_factor"], coords_path, "pose_scale_factor", positive=True)

    c2ws, fx, fy, cx, cy, ws, hs, paths, names = [], [], [], [], [], [], [], [], []
    splits: dict[str, list[int]] = {}
    problems: dict[str, str] = {}
    for folder in ("train", "val"):
        meta_dir = root / folder / "metadata"
        start = len(paths)
        if not meta_dir.is_dir():
            problems[folder] = f"there is no {folder}/metadata folder"
            splits[folder] = []
            continue
        for meta_path in sorted(meta_dir.glob("*.pt"), key=lambda p: p.name):
            meta = torch_load(meta_path)
            if not isinstance(meta, dict):
                raise DataError(meta_path, "expected a dict with W, H, intrinsics and c2w")
            missing = [k for k in ("W", "H", "intrinsics", "c2w") if k not in meta]
            if missing:
                raise DataError(meta_path, f"metadata lacks {', '.join(missing)}")
            w = _scalar(meta["W"], meta_path, "W", positive=True)
            h = _scalar(meta["H"], meta_path, "H", positive=True)
            k = matrix([meta["intrinsics"].tolist() if isinstance(meta["intrinsics"], torch.Tensor)
                        else meta["intrinsics"]], meta_path, "intrinsics [fx, fy, cx, cy]", shapes=((1, 4),))[0]
            if k[0] <= 0 or k[1] <= 0:
                raise DataError(meta_path, "intrinsics: focal lengths must be positive")
            c2w = matrix(meta["c2w"], meta_path, "c2w", shapes=((3, 4), (4, 4)))[:3]
            check_rotation(c2w[:, :3], meta_path, "c2w")
            ours = np.empty((3, 4))
            ours[:, :3] = DRB_TO_ZUP @ c2w[:, :3]
            ours[:, 3] = DRB_TO_ZUP @ c2w[:, 3] * scale
            image = next((meta_path.parent.parent / "rgbs" / f"{meta_path.stem}{ext}" for ext in IMAGE_EXTENSIONS
                          if (meta_path.parent.parent / "rgbs" / f"{meta_path.stem}{ext}").exists()), None)
            if image is None:
                raise DataError(meta_path.parent.parent / "rgbs" / f"{meta_path.stem}.jpg",
                                f"image file is missing (no {meta_path.stem} with any of "
                                f"{', '.join(IMAGE_EXTENSIONS)} for {folder}/metadata/{meta_path.name})")
            c2ws.append(ours)
            fx.append(k[0])
            fy.append(k[1])
            cx.append(k[2])
            cy.append(k[3])
            ws.append(int(round(w)))
            hs.append(int(round(h)))
            paths.append(image)
            names.append(f"{folder}/rgbs/{image.name}")
        splits[folder] = list(range(start, len(paths)))
        if not splits[folder]:
            problems[folder] = f"{folder}/metadata has no .pt files"
    if not paths:
        raise DataError(root, "no frames: train/metadata and val/metadata hold no .pt files")
    splits["test"] = list(splits["val"])
    if "val" in problems:
        problems["test"] = problems["val"]

    cameras = Cameras.create(
        torch.tensor(np.stack(c2ws), dtype=torch.float32), torch.tensor(fx), torch.tensor(fy),
        torch.tensor(cx), torch.tensor(cy), torch.tensor(ws), torch.tensor(hs), None, CameraModel.PERSPECTIVE,
    )
    world_from = np.eye(4)
    world_from[:3, :3] = DRB_TO_ZUP * scale
    return ParsedScene(
        format="mega-nerf", root=root, source=coords_path, cameras=cameras, image_paths=paths, image_names=names,
        camera_model_names=["PINHOLE"] * len(paths), splits=splits, split_problems=problems,
        scene_box=scene_box_below_cameras(cameras.positions),
        metadata={
            "splits_from": "train/ and val/ folders (test = val)",
            "world": "z-up, metres, origin at origin_drb (converted from Mega-NeRF's normalised DRB frame)",
            "pose_scale_factor": scale,
            "origin_drb": origin.tolist(),
            "world_from_mega_nerf": world_from.tolist(),
            "scene_box_from": "heuristic box below the cameras",
        },
    )
