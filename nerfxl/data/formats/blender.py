"""Blender synthetic scenes (NeRF's ``nerf_synthetic``): ``transforms_{train,val,test}.json``.

Each file has ``camera_angle_x`` (horizontal field of view, radians) and ``frames[]`` with
``file_path`` (relative, usually without extension: ``./train/r_0`` → ``train/r_0.png``) and a 4×4
OpenGL camera-to-world ``transform_matrix``. Blender's world is already z-up, so poses are used as
given. The focal length is 0.5·W / tan(0.5·camera_angle_x) with W read from the file's first image;
the principal point is the image centre. Images are RGBA; :class:`~nerfxl.data.images.ImageSource`
composites them onto the dataset's background. The scene box is NeRF's [-1.5, 1.5]³.

A missing ``transforms_val.json`` makes the val split use the test frames (the 400×400 lego copy we
test with has only train and test), recorded in ``metadata["val_from"]``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.formats.common import (
    SPLITS,
    ParsedScene,
    check_frame_file_paths,
    frame_pose,
    image_size,
    number,
    read_frames_json,
)
from nerfxl.errors import DataError

SCENE_BOX = [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]


def _image_path(root: Path, file_path: str) -> Path:
    path = root / file_path
    # nerf_synthetic omits the extension; keep an explicit one when the file has it.
    if path.suffix.lower() in (".png", ".jpg", ".jpeg") or path.exists():
        return path
    return path.with_name(path.name + ".png")


def parse_blender(root: Path) -> ParsedScene:
    root = Path(root)
    c2ws, fx, ws, hs, paths, names = [], [], [], [], [], []
    splits: dict[str, list[int]] = {}
    problems: dict[str, str] = {}
    for split in SPLITS:
        json_path = root / f"transforms_{split}.json"
        if not json_path.exists():
            problems[split] = f"there is no {json_path.name}"
            splits[split] = []
            continue
        meta, frames = read_frames_json(json_path)
        if "camera_angle_x" not in meta:
            raise DataError(json_path, "intrinsics missing: no camera_angle_x")
        angle = number(meta["camera_angle_x"], json_path, "camera_angle_x", positive=True)
        start = len(paths)
        check_frame_file_paths(frames, json_path)
        for frame in frames:
            c2ws.append(frame_pose(frame, json_path))
            paths.append(_image_path(root, frame["file_path"]))
            names.append(paths[-1].relative_to(root).as_posix() if paths[-1].is_relative_to(root) else str(paths[-1]))
        # All frames of a file share the first image's size (true of every Blender synthetic scene);
        # an image of another size is reported when it is first read.
        w, h = image_size(paths[start])
        focal = 0.5 * w / math.tan(0.5 * angle)
        n = len(paths) - start
        fx += [focal] * n
        ws += [w] * n
        hs += [h] * n
        splits[split] = list(range(start, len(paths)))

    metadata = {"splits_from": "transforms_{split}.json", "world": "z-up (Blender)",
                "scene_box_from": "NeRF's [-1.5, 1.5]³ for Blender scenes"}
    if not splits["val"] and splits["test"]:
        splits["val"] = list(splits["test"])
        metadata["val_from"] = "test (no transforms_val.json)"
    if not paths:
        raise DataError(root, "no transforms_train.json, transforms_val.json or transforms_test.json")

    f = torch.tensor(fx, dtype=torch.float32)
    w_t, h_t = torch.tensor(ws), torch.tensor(hs)
    cameras = Cameras.create(torch.tensor(np.stack(c2ws), dtype=torch.float32), f, f, w_t / 2.0, h_t / 2.0,
                             w_t, h_t, None, CameraModel.PERSPECTIVE)
    return ParsedScene(
        format="blender", root=root, source=root, cameras=cameras, image_paths=paths, image_names=names,
        camera_model_names=["PINHOLE"] * len(paths), splits=splits, split_problems=problems,
        scene_box=torch.tensor(SCENE_BOX), metadata=metadata,
    )
