"""MatrixCity (city-super/MatrixCity): the synthetic 25 km² city rendered with Unreal Engine.

Two kinds of pose files exist; both use NeRF's OpenGL camera axes and a z-up world (the poses were
exported through Blender, whose world is z-up; MatrixCity's own split script selects blocks by the
x/y of the camera positions).

1. Split files used in the paper, ``<city>/<view>/pose/<block>/transforms_{train,test}.json``:
   top-level ``camera_angle_x, fl_x, fl_y, cx, cy, w, h`` (and zero ``k1..k4, p1, p2``),
   ``frames[]`` with ``file_path`` (relative to the JSON, e.g. ``../../train/block_1/0000.png``)
   and a 4×4 ``transform_matrix`` whose **positions are in units of 100 m** (the rotation is
   already normalised). We multiply positions by 100 → metres (``metadata["position_scale"]``).
   "val" uses the test file (MatrixCity has no val split).
2. Raw per-block captures, ``<city>/<view>/{train,test}/<block>/transforms.json``: top-level
   ``camera_angle_x``, ``frames[]`` with ``frame_index`` and ``rot_mat`` (4×4) whose **positions are
   in metres but whose rotation is scaled by 0.01** (multiplied by 100 here). Images are
   ``<frame_index:04d>.png`` beside the JSON or in ``rgb/``. No split information: every 8th frame
   is val/test.

Depth: MatrixCity ships depth as EXR (float16, centimetres). No EXR decoder is installed here, so
depth is not loaded; ``metadata["depth"]`` says so when a ``depth/`` folder is present.

The data carries no geometry, so the scene box is the heuristic box below the cameras
(:func:`~nerfxl.data.formats.common.scene_box_below_cameras`); it fits aerial blocks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.formats.common import (
    check_frame_file_paths,
    frame_pose,
    ParsedScene,
    check_rotation,
    holdout_splits,
    image_size,
    matrix,
    number,
    read_frames_json,
    scene_box_below_cameras,
)
from nerfxl.errors import DataError

POSE_FILE_POSITION_SCALE = 100.0  # pose/<block>/transforms_*.json positions are in 100 m
RAW_ROTATION_SCALE = 100.0  # raw transforms.json rotations are scaled by 0.01
EXR_NOTE = "EXR depth (cm) present but not loaded: no EXR decoder is installed"


def is_raw_block(frames: list[dict]) -> bool:
    return "rot_mat" in frames[0]


def parse_matrixcity(path: Path) -> ParsedScene:
    """``path``: a pose folder with transforms_{train,test}.json, or a raw block's transforms.json / folder."""
    path = Path(path)
    if path.is_file():
        if path.name.startswith("transforms_"):
            return _parse_pose_folder(path.parent)
        return _parse_raw_block(path)
    if (path / "transforms.json").is_file() and not (path / "transforms_train.json").is_file():
        return _parse_raw_block(path / "transforms.json")
    return _parse_pose_folder(path)


def _intrinsic(meta: dict, frame: dict, key: str):
    return frame[key] if key in frame else meta.get(key)


def _parse_pose_folder(root: Path) -> ParsedScene:
    c2ws, fx, fy, cx, cy, ws, hs, paths, names = [], [], [], [], [], [], [], [], []
    splits: dict[str, list[int]] = {}
    problems: dict[str, str] = {}
    for split in ("train", "test"):
        json_path = root / f"transforms_{split}.json"
        if not json_path.is_file():
            splits[split] = []
            problems[split] = f"there is no {json_path.name}"
            continue
        meta, frames = read_frames_json(json_path)
        start = len(paths)
        check_frame_file_paths(frames, json_path)
        for frame in frames:
            where = f"frame '{frame['file_path']}'"
            c2w = frame_pose(frame, json_path).copy()
            c2w[:, 3] *= POSE_FILE_POSITION_SCALE
            image = root / frame["file_path"]
            w = _intrinsic(meta, frame, "w")
            h = _intrinsic(meta, frame, "h")
            if w is None or h is None:
                w, h = image_size(image)
            w = number(w, json_path, f"{where}: w", positive=True)
            h = number(h, json_path, f"{where}: h", positive=True)
            if _intrinsic(meta, frame, "fl_x") is not None:
                f_x = number(_intrinsic(meta, frame, "fl_x"), json_path, f"{where}: fl_x", positive=True)
            elif _intrinsic(meta, frame, "camera_angle_x") is not None:
                angle = number(_intrinsic(meta, frame, "camera_angle_x"), json_path, "camera_angle_x", positive=True)
                f_x = 0.5 * w / math.tan(0.5 * angle)
            else:
                raise DataError(json_path, f"{where}: intrinsics missing: no fl_x or camera_angle_x")
            f_y = _intrinsic(meta, frame, "fl_y")
            c2ws.append(c2w)
            fx.append(f_x)
            fy.append(number(f_y, json_path, f"{where}: fl_y", positive=True) if f_y is not None else f_x)
            c_x, c_y = _intrinsic(meta, frame, "cx"), _intrinsic(meta, frame, "cy")
            cx.append(number(c_x, json_path, f"{where}: cx") if c_x is not None else w / 2)
            cy.append(number(c_y, json_path, f"{where}: cy") if c_y is not None else h / 2)
            ws.append(int(round(w)))
            hs.append(int(round(h)))
            paths.append(image)
            names.append(frame["file_path"])
        splits[split] = list(range(start, len(paths)))
    if not paths:
        raise DataError(root, "no MatrixCity pose files: looked for transforms_train.json and transforms_test.json")
    splits["val"] = list(splits["test"])
    if "test" in problems:
        problems["val"] = problems["test"]
    metadata = {
        "splits_from": "transforms_train.json / transforms_test.json (val = test)",
        "world": "z-up, metres",
        "position_scale": POSE_FILE_POSITION_SCALE,
    }
    return _scene(root, root / "transforms_train.json" if splits["train"] else root / "transforms_test.json",
                  c2ws, fx, fy, cx, cy, ws, hs, paths, names, splits, problems, metadata)


def _parse_raw_block(json_path: Path) -> ParsedScene:
    root = json_path.parent
    meta, frames = read_frames_json(json_path)
    c2ws, paths, names, indices = [], [], [], []
    for i, frame in enumerate(frames):
        if "rot_mat" not in frame or "frame_index" not in frame:
            raise DataError(json_path, f"frame {i} lacks 'rot_mat' or 'frame_index'")
        index = int(number(frame["frame_index"], json_path, f"frame {i}: frame_index"))
        where = f"frame {index}"
        c2w = matrix(frame["rot_mat"], json_path, f"{where}: rot_mat")[:3].copy()
        c2w[:, :3] *= RAW_ROTATION_SCALE
        check_rotation(c2w[:, :3], json_path, f"{where}: rot_mat (rotation × 100)")
        base = root / frame["path"] if isinstance(frame.get("path"), str) else root
        stem = f"{index:04d}.png"
        image = base / stem if (base / stem).exists() or not (base / "rgb" / stem).exists() else base / "rgb" / stem
        c2ws.append(c2w)
        paths.append(image)
        names.append(image.relative_to(root).as_posix() if image.is_relative_to(root) else str(image))
        indices.append(index)
    order = sorted(range(len(paths)), key=lambda i: indices[i])  # numeric: names stop sorting at 10000
    c2ws, paths, names = [c2ws[i] for i in order], [paths[i] for i in order], [names[i] for i in order]
    if "camera_angle_x" not in meta and "fl_x" not in meta:
        raise DataError(json_path, "intrinsics missing: no camera_angle_x or fl_x")
    w, h = image_size(paths[0])  # raw files carry no image size; all frames of a block share it
    if "fl_x" in meta:
        f_x = number(meta["fl_x"], json_path, "fl_x", positive=True)
    else:
        f_x = 0.5 * w / math.tan(0.5 * number(meta["camera_angle_x"], json_path, "camera_angle_x", positive=True))
    n = len(paths)
    metadata = {
        "splits_from": "every 8th frame held out (raw block files have no splits)",
        "world": "z-up, metres",
        "rotation_scale": RAW_ROTATION_SCALE,
        "position_scale": 1.0,
    }
    if (root / "depth").is_dir():
        metadata["depth"] = EXR_NOTE
    return _scene(root, json_path, c2ws, [f_x] * n, [f_x] * n, [w / 2] * n, [h / 2] * n, [w] * n, [h] * n,
                  paths, names, holdout_splits(n), {}, metadata)


def _scene(root, source, c2ws, fx, fy, cx, cy, ws, hs, paths, names, splits, problems, metadata) -> ParsedScene:
    cameras = Cameras.create(
        torch.tensor(np.stack(c2ws), dtype=torch.float32), torch.tensor(fx), torch.tensor(fy),
        torch.tensor(cx), torch.tensor(cy), torch.tensor(ws), torch.tensor(hs), None, CameraModel.PERSPECTIVE,
    )
    metadata["scene_box_from"] = "heuristic box below the cameras"
    return ParsedScene(
        format="matrixcity", root=root, source=source, cameras=cameras, image_paths=paths, image_names=names,
        camera_model_names=["PINHOLE"] * len(paths), splits=splits, split_problems=problems,
        scene_box=scene_box_below_cameras(cameras.positions), metadata=metadata,
    )
