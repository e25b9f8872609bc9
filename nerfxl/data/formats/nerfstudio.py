"""nerfstudio ``transforms.json``.

Layout (what ``ns-process-data`` writes, and what instant-ngp-style tools write):

- intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top level or per frame (per frame wins);
  ``camera_angle_x`` is accepted when ``fl_x`` is missing (instant-ngp);
- distortion ``k1, k2, k3, k4, p1, p2`` (missing ones are 0) or ``distortion_params`` =
  [k1, k2, k3, k4, p1, p2] (nerfstudio's order), top level or per frame;
- ``camera_model``: a COLMAP/nerfstudio name (default OPENCV, nerfstudio's default); unknown
  names are a :class:`DataError` listing the supported ones;
- ``frames[]``: ``file_path`` (relative to the JSON's folder), ``transform_matrix`` (4×4 OpenGL
  camera-to-world), optional ``depth_file_path`` and ``mask_path``.

Conventions kept from nerfstudio:

- Frames are sorted by ``file_path`` (nerfstudio sorts them too), so frame indices do not depend on
  the order a tool happened to write.
- ``applied_transform`` (3×4) is the transform ``ns-process-data`` already applied to the COLMAP
  poses *and* to the points it wrote into ``ply_file_path`` (``create_ply_from_colmap`` applies the
  same matrix). Both are therefore already in one frame: poses and points are used as given and the
  matrix is only recorded in ``metadata["applied_transform"]`` (invert it to get back to COLMAP's
  world). The world is "z-up" exactly when the writing tool made it so, which ``ns-process-data``
  does (it swaps COLMAP's y-down to z-up); nerfstudio's auto-orientation/centring at train time is
  not applied.
- Splits: ``train_filenames``/``val_filenames``/``test_filenames`` when present (a missing val list
  falls back to the test list and vice versa; a missing train list is an error); otherwise every
  8th frame (0, 8, 16, … after sorting) is val and test and the rest train.
- Depth: ``depth_file_path`` for all frames or none; ``.npy`` (float) or 16-bit PNG, multiplied by
  the top-level ``depth_unit_scale_factor`` (default 1e-3, nerfstudio's millimetre default, applied
  to both kinds as nerfstudio does). EXR depth cannot be decoded here (no EXR reader is installed)
  and is a :class:`DataError`.
- ``mask_path`` is ignored (counted in ``metadata["masks_ignored"]``): masked training is not
  supported yet.
- Non-standard top-level ``scene_box`` ([[xmin, ymin, zmin], [xmax, ymax, zmax]], written by our
  procedural city) is used as the scene box; otherwise the point cloud's, otherwise the cameras'.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from nerfxl.data.cameras import CAMERA_MODEL_NAMES, CameraModel, Cameras
from nerfxl.data.formats.common import (
    check_frame_file_paths,
    frame_pose,
    ParsedScene,
    holdout_splits,
    image_size,
    matrix,
    number,
    read_frames_json,
    scene_box_tensor,
)
from nerfxl.data.pointcloud import read_ply
from nerfxl.errors import DataError

DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
DEFAULT_DEPTH_UNIT_SCALE = 1e-3


def supported_models() -> str:
    return ", ".join(CAMERA_MODEL_NAMES)


def camera_model_of(name, source: Path, where: str) -> tuple[str, CameraModel]:
    if not isinstance(name, str) or name.upper() not in CAMERA_MODEL_NAMES:
        raise DataError(source, f"{where}: unknown camera_model {name!r}; supported: {supported_models()}")
    return name.upper(), CAMERA_MODEL_NAMES[name.upper()]


def distortion_of(get, source: Path, where: str, model: CameraModel) -> list[float]:
    """(k1, k2, k3, k4, p1, p2) from ``distortion_params`` or the individual keys."""
    params = get("distortion_params")
    if params is not None:
        if not isinstance(params, list) or len(params) != 6:
            raise DataError(source, f"{where}: distortion_params must be 6 values (k1, k2, k3, k4, p1, p2)")
        values = [number(x, source, f"{where}: distortion_params") for x in params]
    else:
        values = [number(get(k), source, f"{where}: {k}") if get(k) is not None else 0.0 for k in DISTORTION_KEYS]
    k4, p1, p2 = values[3], values[4], values[5]
    if model == CameraModel.PERSPECTIVE and k4 != 0.0:
        raise DataError(source, f"{where}: k4 is only used by fisheye models (OPENCV_FISHEYE); "
                                f"this camera is perspective")
    if model == CameraModel.FISHEYE and (p1 != 0.0 or p2 != 0.0):
        raise DataError(source, f"{where}: fisheye models have no tangential distortion, but p1/p2 are set")
    return values


def _norm(root: Path, name: str) -> str:
    return os.path.normpath(str(root / name))


def parse_nerfstudio(json_path: Path) -> ParsedScene:
    json_path = Path(json_path)
    root = json_path.parent
    meta, frames = read_frames_json(json_path)
    check_frame_file_paths(frames, json_path)
    order = sorted(range(len(frames)), key=lambda i: frames[i]["file_path"])
    frames = [frames[i] for i in order]

    c2ws, fx, fy, cx, cy, ws, hs, dists, models, model_names = [], [], [], [], [], [], [], [], [], []
    image_paths, names, depth_paths = [], [], []
    masks = 0
    for frame in frames:
        where = f"frame '{frame['file_path']}'"

        def get(key, frame=frame):
            return frame[key] if key in frame else meta.get(key)

        path = root / frame["file_path"]
        image_paths.append(path)
        names.append(frame["file_path"])
        c2ws.append(frame_pose(frame, json_path))

        name, model = camera_model_of(get("camera_model") or "OPENCV", json_path, where)
        model_names.append(name)
        models.append(int(model))
        if get("w") is not None and get("h") is not None:
            w = number(get("w"), json_path, f"{where}: w", positive=True)
            h = number(get("h"), json_path, f"{where}: h", positive=True)
        else:
            w, h = image_size(path)  # nerfstudio needs w/h too; reading the header is friendlier
        if get("fl_x") is not None:
            f_x = number(get("fl_x"), json_path, f"{where}: fl_x", positive=True)
        elif get("camera_angle_x") is not None:
            angle = number(get("camera_angle_x"), json_path, f"{where}: camera_angle_x", positive=True)
            f_x = 0.5 * w / math.tan(0.5 * angle)
        else:
            raise DataError(json_path, f"{where}: intrinsics missing: no fl_x (or camera_angle_x) "
                                       f"at the top level or in the frame")
        f_y = number(get("fl_y"), json_path, f"{where}: fl_y", positive=True) if get("fl_y") is not None else f_x
        fx.append(f_x)
        fy.append(f_y)
        cx.append(number(get("cx"), json_path, f"{where}: cx") if get("cx") is not None else w / 2.0)
        cy.append(number(get("cy"), json_path, f"{where}: cy") if get("cy") is not None else h / 2.0)
        ws.append(int(round(w)))
        hs.append(int(round(h)))
        dists.append(distortion_of(get, json_path, where, model))
        if isinstance(frame.get("depth_file_path"), str):
            depth_paths.append(root / frame["depth_file_path"])
        if frame.get("mask_path") is not None:
            masks += 1

    n = len(frames)
    cameras = Cameras.create(
        torch.tensor(np.stack(c2ws), dtype=torch.float32), torch.tensor(fx), torch.tensor(fy),
        torch.tensor(cx), torch.tensor(cy), torch.tensor(ws), torch.tensor(hs),
        torch.tensor(dists, dtype=torch.float32), torch.tensor(models),
    )

    splits, split_problems, split_source = _splits(meta, frames, root, json_path)

    depth_scale = 1.0
    if depth_paths and len(depth_paths) != n:
        raise DataError(json_path, f"depth_file_path is given for {len(depth_paths)} of {n} frames; "
                                   f"give it for all frames or none")
    if depth_paths:
        for p in depth_paths:
            if p.suffix.lower() == ".exr":
                raise DataError(p, "EXR depth maps are not supported (no EXR decoder is installed); "
                                   "convert them to .npy (float) or 16-bit PNG")
        scale = meta.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT_SCALE)
        depth_scale = number(scale, json_path, "depth_unit_scale_factor", positive=True)

    points = colors = None
    point_source = None
    if isinstance(meta.get("ply_file_path"), str):
        ply_path = root / meta["ply_file_path"]
        points, colors = read_ply(ply_path)
        point_source = str(meta["ply_file_path"])

    scene_box = scene_box_tensor(meta["scene_box"], json_path) if meta.get("scene_box") is not None else None

    metadata = {"splits_from": split_source, "world": "as written by the producing tool (nerfstudio: z-up)"}
    if meta.get("applied_transform") is not None:
        metadata["applied_transform"] = matrix(meta["applied_transform"], json_path, "applied_transform",
                                               shapes=((3, 4), (4, 4)))[:3].tolist()
    if scene_box is not None:
        metadata["scene_box_from"] = f"'scene_box' in {json_path.name}"
    if masks:
        metadata["masks_ignored"] = masks
    if depth_paths:
        metadata["depth_unit_scale_factor"] = depth_scale

    return ParsedScene(
        format="nerfstudio", root=root, source=json_path, cameras=cameras, image_paths=image_paths,
        image_names=names, camera_model_names=model_names, splits=splits, split_problems=split_problems,
        scene_box=scene_box, points=points, point_colors=colors, point_source=point_source,
        depth_paths=depth_paths or None, depth_scale=depth_scale, metadata=metadata,
    )


def _splits(meta: dict, frames: list[dict], root: Path, json_path: Path):
    lists = {s: meta.get(f"{s}_filenames") for s in ("train", "val", "test")}
    if all(v is None for v in lists.values()):
        return holdout_splits(len(frames)), {}, "every 8th frame held out (no *_filenames lists)"
    index_of = {_norm(root, f["file_path"]): i for i, f in enumerate(frames)}
    splits: dict[str, list[int]] = {}
    for split, names in lists.items():
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise DataError(json_path, f"{split}_filenames must be a list of file paths")
        missing = [x for x in names if _norm(root, x) not in index_of]
        if missing:
            shown = ", ".join(missing[:3]) + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
            raise DataError(json_path, f"{split}_filenames lists files that are not frames: {shown}")
        splits[split] = sorted(index_of[_norm(root, x)] for x in names)
    if "train" not in splits:
        raise DataError(json_path, "has val/test_filenames but no train_filenames")
    problems = {}
    if "val" not in splits:
        splits["val"] = list(splits.get("test", []))
        problems["val"] = "no val_filenames or test_filenames"
    if "test" not in splits:
        splits["test"] = list(splits["val"])
    return splits, problems, "train/val/test_filenames"
