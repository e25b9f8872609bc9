"""The generated bad-input corpus: malformed datasets, configs and checkpoints, each a named case.

Every case starts from a small *valid* input (a base written once per test module by
:func:`write_bases`: one tiny dataset per format and two tiny trained runs), copies it under the
case's own folder, breaks one thing, and says which command to run on it and what the single error
line must name. :mod:`test_bad_input_corpus` runs every case through the real command line.

Categories:

- ``dataset``: transforms JSON (nerfstudio, Blender, MatrixCity), COLMAP binary/text, Mega-NeRF
  ``.pt`` files, LLFF ``poses_bounds.npy`` and its image folders, images (missing, unreadable,
  truncated, of the wrong size), empty splits. Formats are read by ``nerfxl info`` (it parses
  every frame); problems only found when images are loaded or decoded need
  ``nerfxl train ... --steps 1``.
- ``config``: command-line options (unknown, wrong type, impossible combinations) and a run's
  ``config.yaml`` read back by ``--resume`` / ``eval``.
- ``checkpoint``: a run's checkpoint with missing, truncated, corrupted or foreign files, read by
  ``eval``, ``render`` and ``train --resume``.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
from fixture_writers import random_cameras, to4x4, write_image, write_json  # noqa: E402

W, H = 16, 12  # every base image
FL = 14.0
TRAIN_TINY = ("--no-progress", "--batch-rays", "64", "--steps", "1")


# ------------------------------------------------------------------------------------------------
# Valid bases


def write_nerfstudio(root: Path, n: int = 8) -> Path:
    """transforms.json with top-level intrinsics (w, h given: images are not opened while parsing)."""
    frames = []
    for i, c2w in enumerate(random_cameras(n, seed=1)):
        write_image(root / "images" / f"frame_{i:03d}.png", W, H, seed=i)
        frames.append({"file_path": f"images/frame_{i:03d}.png", "transform_matrix": to4x4(c2w).tolist()})
    write_json(root / "transforms.json", {"camera_model": "OPENCV", "fl_x": FL, "fl_y": FL, "cx": W / 2,
                                          "cy": H / 2, "w": W, "h": H, "frames": frames})
    return root


def write_blender(root: Path) -> Path:
    c2ws = random_cameras(4, seed=2)
    for split, idx in (("train", range(3)), ("test", range(3, 4))):
        frames = []
        for i in idx:
            write_image(root / split / f"r_{i}.png", W, H, seed=i, alpha=True)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": to4x4(c2ws[i]).tolist()})
        write_json(root / f"transforms_{split}.json", {"camera_angle_x": 2 * math.atan(W / 2 / FL), "frames": frames})
    return root


COLMAP_MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "FULL_OPENCV": 6}


def colmap_camera_record(camera_id: int = 1, model: str = "PINHOLE", params=(FL, FL, W / 2, H / 2),
                         width: int = W, height: int = H) -> bytes:
    return struct.pack("<iiQQ", camera_id, COLMAP_MODEL_IDS[model], width, height) + struct.pack(
        f"<{len(params)}d", *params)


def colmap_image_record(image_id: int, qvec, tvec, camera_id: int, name: str) -> bytes:
    return (struct.pack("<i7di", image_id, *qvec, *tvec, camera_id) + name.encode() + b"\0"
            + struct.pack("<Q", 0))


def opencv_w2c(c2w_gl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(qvec w,x,y,z, tvec) of COLMAP's world-to-camera for an OpenGL camera-to-world."""
    c2w = np.eye(4)
    c2w[:3] = c2w_gl
    c2w[:3, 1:3] *= -1
    w2c = np.linalg.inv(c2w)
    r = w2c[:3, :3]
    w = math.sqrt(max(1e-12, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    q = np.array([w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)])
    return q / np.linalg.norm(q), w2c[:3, 3]


def colmap_images(n: int = 4) -> list[tuple]:
    """(image_id, qvec, tvec, camera_id, name) of the base model."""
    out = []
    for i, c2w in enumerate(random_cameras(n, seed=3)):
        q, t = opencv_w2c(c2w)
        out.append((i + 1, q, t, 1, f"img_{i:03d}.png"))
    return out


def write_colmap_bin(folder: Path, cameras: list[bytes], images: list[tuple], n_points: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.bin").write_bytes(struct.pack("<Q", len(cameras)) + b"".join(cameras))
    (folder / "images.bin").write_bytes(struct.pack("<Q", len(images))
                                        + b"".join(colmap_image_record(*im) for im in images))
    rng = np.random.default_rng(0)
    points = b"".join(struct.pack("<Q3d3BdQ", i + 1, *rng.normal(scale=0.5, size=3), 10, 20, 30, 0.5, 0)
                      for i in range(n_points))
    (folder / "points3D.bin").write_bytes(struct.pack("<Q", n_points) + points)


def write_colmap(root: Path, text: bool = False) -> Path:
    images = colmap_images()
    for im in images:
        write_image(root / "images" / im[4], W, H, seed=im[0])
    folder = root / "sparse" / "0"
    if not text:
        write_colmap_bin(folder, [colmap_camera_record()], images)
        return root
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text(f"# Camera list\n1 PINHOLE {W} {H} {FL} {FL} {W / 2} {H / 2}\n")
    lines = ["# Image list"]
    for image_id, q, t, cam, name in images:
        lines += [" ".join(map(str, [image_id, *q, *t, cam, name])), ""]
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "points3D.txt").write_text("# 3D points\n1 0.1 0.2 0.3 10 20 30 0.5\n")
    return root


def write_meganerf(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"origin_drb": torch.zeros(3), "pose_scale_factor": 50.0}, root / "coordinates.pt")
    for i, c2w in enumerate(random_cameras(4, seed=4)):
        split = "train" if i < 3 else "val"
        (root / split / "metadata").mkdir(parents=True, exist_ok=True)
        torch.save({"W": W, "H": H, "c2w": torch.tensor(c2w, dtype=torch.float32),
                    "intrinsics": torch.tensor([FL, FL, W / 2, H / 2])}, root / split / "metadata" / f"{i:06d}.pt")
        write_image(root / split / "rgbs" / f"{i:06d}.png", W, H, seed=i)
    return root


def write_matrixcity_raw(root: Path) -> Path:
    frames = []
    for i, c2w in enumerate(random_cameras(4, seed=5, radius=150.0)):
        write_image(root / f"{i:04d}.png", W, H, seed=i)
        m = to4x4(c2w)
        m[:3, :3] *= 0.01  # MatrixCity's raw exports scale the rotation by 0.01
        frames.append({"frame_index": i, "rot_mat": m.tolist()})
    write_json(root / "transforms.json", {"camera_angle_x": 2 * math.atan(W / 2 / FL), "frames": frames})
    return root


def write_llff(root: Path, n: int = 8) -> Path:
    """poses_bounds.npy (OpenGL cameras turned into LLFF's [down, right, back]) + images/ + images_2/."""
    rows = []
    for i, c2w in enumerate(random_cameras(n, seed=6)):
        write_image(root / "images" / f"IMG_{i:03d}.png", W, H, seed=i)
        write_image(root / "images_2" / f"IMG_{i:03d}.png", W // 2, H // 2, seed=i)
        right, up, back, position = c2w.T
        pose = np.stack([-up, right, back, position, [H, W, FL]], axis=1)
        rows.append(np.concatenate([pose.reshape(15), [1.0, 8.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))
    return root


@dataclass
class Bases:
    """The valid inputs every case copies before breaking one thing."""

    root: Path
    nerfstudio: Path
    blender: Path
    colmap: Path
    colmap_text: Path
    meganerf: Path
    matrixcity_raw: Path
    llff: Path
    run: Path = field(default=None)  # a tiny single-tile run, checkpoint at step 2
    run_k2: Path = field(default=None)  # another run: 2 tiles, same dataset


def write_datasets(root: Path) -> Bases:
    return Bases(root=root, nerfstudio=write_nerfstudio(root / "nerfstudio"), blender=write_blender(root / "blender"),
                 colmap=write_colmap(root / "colmap"), colmap_text=write_colmap(root / "colmap-text", text=True),
                 meganerf=write_meganerf(root / "meganerf"), matrixcity_raw=write_matrixcity_raw(root / "matrixcity"),
                 llff=write_llff(root / "llff"))


def train_args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    """A tiny run (2 steps, a checkpoint at step 2) on ``data``."""
    return ["train", "tiny", "--data", str(data), "--output", str(out), "--name", name, "--steps", "2",
            "--checkpoint-every", "2", "--batch-rays", "64", "--no-progress", "--device", "cpu", *extra]


def the_run(out: Path, name: str) -> Path:
    runs = sorted((out / name).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


# ------------------------------------------------------------------------------------------------
# Cases


@dataclass
class Invocation:
    """What to run and what to check.

    args: the nerfxl command line.
    expect: fragments the one error line must contain (the offending file, option or key).
    watch: a folder whose every file must be byte-for-byte untouched by the command.
    no_output: a folder the command must not create anything in (where a run would land).
    """

    args: list[str]
    expect: tuple[str, ...]
    watch: Path
    no_output: Path | None = None


@dataclass(frozen=True)
class Case:
    """A named bad input."""

    name: str
    category: str
    build: Callable[[Bases, Path], Invocation]


CASES: dict[str, Case] = {}


def case(category: str):
    def register(fn: Callable[[Bases, Path], Invocation]):
        assert fn.__name__ not in CASES
        CASES[fn.__name__] = Case(fn.__name__, category, fn)
        return fn
    return register


def copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def info(data: Path, *expect: str, target: Path | None = None) -> Invocation:
    return Invocation(["info", str(target or data)], expect, watch=data)


def train_on(data: Path, d: Path, *expect: str, extra: tuple[str, ...] = ()) -> Invocation:
    out = d / "out"
    return Invocation(["train", "tiny", "--data", str(data), "--output", str(out), *TRAIN_TINY, *extra], expect,
                      watch=data, no_output=out)


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta, indent=1))


def ns(b: Bases, d: Path, change: Callable[[dict], object] | None = None) -> Path:
    data = copy(b.nerfstudio, d / "data")
    if change is not None:
        edit_json(data / "transforms.json", change)
    return data


def frame(meta: dict, i: int = 2) -> dict:
    return meta["frames"][i]


# -- transforms JSON -------------------------------------------------------------------------------


@case("dataset")
def json_syntax_error(b, d):
    data = ns(b, d)
    text = (data / "transforms.json").read_text()
    (data / "transforms.json").write_text(text[: len(text) // 2])  # cut mid-file
    return info(data, "transforms.json", "malformed JSON at line")


@case("dataset")
def json_not_utf8(b, d):
    data = ns(b, d)
    (data / "transforms.json").write_bytes(b"\xff\xfe\x00\x81 binary junk \x00")
    return info(data, "transforms.json", "not UTF-8")


@case("dataset")
def json_frames_empty(b, d):
    return info(ns(b, d, lambda m: m.update(frames=[])), "transforms.json", "'frames' is empty")


@case("dataset")
def json_frame_without_file_path(b, d):
    return info(ns(b, d, lambda m: frame(m).pop("file_path")), "transforms.json", "frame 2", "file_path")


@case("dataset")
def json_pose_wrong_shape(b, d):
    return info(ns(b, d, lambda m: frame(m).update(transform_matrix=np.eye(3).tolist())),
                "transforms.json", "frame_002", "transform_matrix must be 4×4")


@case("dataset")
def json_pose_nan(b, d):
    def change(m):
        frame(m)["transform_matrix"][0][3] = float("nan")  # json.dumps writes NaN, which json.loads accepts
    return info(ns(b, d, change), "transforms.json", "frame_002", "non-finite")


@case("dataset")
def json_pose_scaled_rotation(b, d):
    def change(m):
        frame(m)["transform_matrix"] = (np.diag([2.0, 2.0, 2.0, 1.0])).tolist()
    return info(ns(b, d, change), "transforms.json", "frame_002", "not orthonormal")


@case("dataset")
def json_zero_focal(b, d):
    return info(ns(b, d, lambda m: m.update(fl_x=0)), "transforms.json", "fl_x must be positive")


@case("dataset")
def json_intrinsics_missing(b, d):
    return info(ns(b, d, lambda m: [m.pop("fl_x"), m.pop("fl_y")]), "transforms.json", "intrinsics missing")


@case("dataset")
def json_unknown_camera_model(b, d):
    return info(ns(b, d, lambda m: m.update(camera_model="PANORAMA")), "transforms.json", "PANORAMA")


@case("dataset")
def json_split_list_names_unknown_frame(b, d):
    return info(ns(b, d, lambda m: m.update(train_filenames=["images/frame_001.png", "images/nope.png"])),
                "transforms.json", "images/nope.png")


@case("dataset")
def json_point_cloud_garbage(b, d):
    data = ns(b, d, lambda m: m.update(ply_file_path="points.ply"))
    (data / "points.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\nend_header\n\x01\x02")
    return info(data, "points.ply")


@case("dataset")
def blender_zero_camera_angle(b, d):
    data = copy(b.blender, d / "data")
    edit_json(data / "transforms_train.json", lambda m: m.update(camera_angle_x=0.0))
    return info(data, "transforms_train.json", "camera_angle_x must be positive")


@case("dataset")
def matrixcity_raw_rotation_not_scaled(b, d):
    data = copy(b.matrixcity_raw, d / "data")
    edit_json(data / "transforms.json", lambda m: m["frames"][1].update(rot_mat=np.eye(4).tolist()))
    return info(data, "transforms.json", "frame 1", "rot_mat")


@case("dataset")
def folder_with_no_dataset(b, d):
    data = d / "data"
    (data / "images").mkdir(parents=True)
    (data / "notes.txt").write_text("not a dataset")
    return info(data, "cannot tell the dataset format")


# -- COLMAP -----------------------------------------------------------------------------------------


def colmap_case(b: Bases, d: Path) -> tuple[Path, Path]:
    data = copy(b.colmap, d / "data")
    return data, data / "sparse" / "0"


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@case("dataset")
def colmap_cameras_bin_truncated(b, d):
    data, model = colmap_case(b, d)
    truncate(model / "cameras.bin", 30)  # the count and half a record
    return info(data, "cameras.bin", "truncated")


@case("dataset")
def colmap_images_bin_truncated(b, d):
    data, model = colmap_case(b, d)
    truncate(model / "images.bin", 8 + 64 + 5)  # inside the first image's name
    return info(data, "images.bin", "truncated")


@case("dataset")
def colmap_points3d_bin_truncated(b, d):
    data, model = colmap_case(b, d)
    size = (model / "points3D.bin").stat().st_size
    truncate(model / "points3D.bin", size - 20)
    return info(data, "points3D.bin", "truncated")


@case("dataset")
def colmap_images_bin_huge_count(b, d):
    data, model = colmap_case(b, d)
    raw = (model / "images.bin").read_bytes()
    (model / "images.bin").write_bytes(struct.pack("<Q", 2**40) + raw[8:])  # must fail fast, not allocate
    return info(data, "images.bin", "corrupt")


@case("dataset")
def colmap_unknown_camera_model_id(b, d):
    data, model = colmap_case(b, d)
    raw = bytearray((model / "cameras.bin").read_bytes())
    struct.pack_into("<i", raw, 12, 42)
    (model / "cameras.bin").write_bytes(bytes(raw))
    return info(data, "cameras.bin", "unknown model id 42")


@case("dataset")
def colmap_zero_focal(b, d):
    data, model = colmap_case(b, d)
    write_colmap_bin(model, [colmap_camera_record(params=(0.0, FL, W / 2, H / 2))], colmap_images())
    return info(data, "cameras.bin", "focal")


@case("dataset")
def colmap_zero_image_size(b, d):
    data, model = colmap_case(b, d)
    write_colmap_bin(model, [colmap_camera_record(width=0, height=H)], colmap_images())
    return info(data, "cameras.bin", "size")


@case("dataset")
def colmap_nan_quaternion(b, d):
    data, model = colmap_case(b, d)
    images = colmap_images()
    images[1] = (images[1][0], np.array([math.nan, 0, 0, 0]), *images[1][2:])
    write_colmap_bin(model, [colmap_camera_record()], images)
    return info(data, "images.bin", "img_001.png", "non-finite")


@case("dataset")
def colmap_text_bad_number(b, d):
    data = copy(b.colmap_text, d / "data")
    path = data / "sparse" / "0" / "cameras.txt"
    path.write_text(path.read_text().replace(f" {FL} ", " fourteen ", 1))
    return info(data, "cameras.txt", "line 2", "fourteen")


# -- Mega-NeRF --------------------------------------------------------------------------------------


@case("dataset")
def meganerf_coordinates_not_a_torch_file(b, d):
    data = copy(b.meganerf, d / "data")
    (data / "coordinates.pt").write_bytes(b"PK\x03\x04 this is not a torch file")
    return info(data, "coordinates.pt", "torch.load")


@case("dataset")
def meganerf_metadata_zero_focal(b, d):
    data = copy(b.meganerf, d / "data")
    path = data / "train" / "metadata" / "000001.pt"
    meta = torch.load(path, weights_only=True)
    meta["intrinsics"] = torch.tensor([0.0, FL, W / 2, H / 2])
    torch.save(meta, path)
    return info(data, "000001.pt", "focal")


# -- LLFF -------------------------------------------------------------------------------------------


def llff_case(b: Bases, d: Path, change: Callable[[np.ndarray], np.ndarray] | None = None) -> Path:
    data = copy(b.llff, d / "data")
    if change is not None:
        np.save(data / "poses_bounds.npy", change(np.load(data / "poses_bounds.npy")))
    return data


def llff_value(row: int, column: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(array: np.ndarray) -> np.ndarray:
        array[row, column] = value
        return array
    return change


@case("dataset")
def llff_poses_wrong_shape(b, d):
    return info(llff_case(b, d, lambda a: a[:, :15]), "poses_bounds.npy", "[N, 17]", "[8, 15]")


@case("dataset")
def llff_poses_not_npy(b, d):
    data = llff_case(b, d)
    (data / "poses_bounds.npy").write_bytes(b"\x93NUMPY\x01\x00 then garbage")
    return info(data, "poses_bounds.npy", "cannot be read")


@case("dataset")
def llff_poses_nan(b, d):
    return info(llff_case(b, d, llff_value(2, 3, math.nan)), "poses_bounds.npy", "row 2", "non-finite")


@case("dataset")
def llff_zero_focal(b, d):
    return info(llff_case(b, d, llff_value(1, 14, 0.0)), "poses_bounds.npy", "row 1", "focal length")


@case("dataset")
def llff_near_not_positive(b, d):
    return info(llff_case(b, d, llff_value(3, 15, 0.0)), "poses_bounds.npy", "row 3", "bounds must be positive")


@case("dataset")
def llff_count_mismatch(b, d):
    data = llff_case(b, d)
    (data / "images" / "IMG_005.png").unlink()
    return info(data, "poses_bounds.npy", "8 poses but images/ holds 7 images")


@case("dataset")
def llff_images_folder_missing(b, d):
    data = llff_case(b, d)
    shutil.rmtree(data / "images")
    return info(data, "images", "folder is missing")


@case("dataset")
def llff_image_aspect_mismatch(b, d):
    data = llff_case(b, d)
    write_image(data / "images" / "IMG_004.png", H, W, seed=4)  # rotated
    return info(data, "IMG_004.png", "aspect ratios differ")


# -- images and splits (found when a split is loaded or an image decoded: train) ---------------------


@case("dataset")
def llff_downscaled_copy_count_mismatch(b, d):
    data = llff_case(b, d)
    (data / "images_2" / "IMG_000.png").unlink()
    return train_on(data, d, "images_2", "holds 7 images", extra=("--downscale", "2"))


@case("dataset")
def split_train_empty(b, d):
    data = ns(b, d, lambda m: m.update(train_filenames=[], test_filenames=["images/frame_000.png"]))
    return train_on(data, d, "transforms.json", "train split is empty")


@case("dataset")
def blender_without_train_file(b, d):
    data = copy(b.blender, d / "data")
    (data / "transforms_train.json").unlink()
    return train_on(data, d, "train split is empty", "transforms_train.json")


@case("dataset")
def image_missing(b, d):
    data = ns(b, d)
    (data / "images" / "frame_003.png").unlink()
    return train_on(data, d, "frame_003.png", "missing")


@case("dataset")
def image_unreadable(b, d):
    data = ns(b, d)
    for p in (data / "images").glob("*.png"):
        p.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    return train_on(data, d, "images/frame_0", "cannot be read")


@case("dataset")
def image_wrong_size(b, d):
    data = ns(b, d)
    for i, p in enumerate(sorted((data / "images").glob("*.png"))):
        write_image(p, W + 4, H, seed=i)
    return train_on(data, d, "images/frame_0", f"{W + 4}x{H}", f"{W}x{H}")


# -- command-line options -----------------------------------------------------------------------------


def options(b: Bases, d: Path, *args: str, expect: tuple[str, ...], train: bool = True) -> Invocation:
    data = copy(b.nerfstudio, d / "data")
    out = d / "out"
    if train:
        args = ("train", "tiny", "--data", str(data), "--output", str(out), "--no-progress", *args)
    return Invocation(list(args), expect, watch=data, no_output=out)


@case("config")
def option_unknown_flag(b, d):
    return options(b, d, "--stepz", "3", expect=("--stepz", "--steps"))


@case("config")
def option_wrong_type(b, d):
    return options(b, d, "--steps", "abc", expect=("--steps", "abc"))


@case("config")
def option_bad_choice(b, d):
    return options(b, d, "--data-format", "ply", expect=("--data-format", "ply"))


@case("config")
def option_unknown_preset(b, d):
    return options(b, d, "train", "gigantic", "--steps", "1", expect=("gigantic", "tiny"), train=False)


@case("config")
def option_missing_positional(b, d):
    return options(b, d, "eval", expect=("eval", "PATH"), train=False)


@case("config")
def option_devices_do_not_divide_partitions(b, d):
    return options(b, d, "--partitions", "4", "--devices", "3", "--steps", "1", expect=("--devices", "3"))


@case("config")
def option_tile_plan_missing(b, d):
    return options(b, d, "--partitions", "2", "--tile-plan", str(d / "plan.json"), "--steps", "1",
                   expect=("--tile-plan", "plan.json"))


@case("config")
def option_plane_strategy_with_tiles(b, d):
    return options(b, d, "--strategy", "plane", "--partitions", "2", "--steps", "1", expect=("--partitions",))


def resume(run: Path, *args: str) -> list[str]:
    return ["train", "--resume", str(run), "--no-progress", *args]


@case("config")
def resume_changes_a_saved_option(b, d):
    run = copy(b.run, d / "run")
    return Invocation(resume(run, "--batch-rays", "8"), ("--batch-rays", "config.yaml"), watch=run)


@case("config")
def resume_with_a_preset(b, d):
    run = copy(b.run, d / "run")
    return Invocation(["train", "city", "--resume", str(run)], ("preset", "city", "--resume"), watch=run)


# -- config.yaml ------------------------------------------------------------------------------------


def yaml_case(b: Bases, d: Path, edit: Callable[[str], str] | bytes, command: str = "resume") -> Invocation:
    run = copy(b.run, d / "run")
    path = run / "config.yaml"
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        path.write_text(edit(path.read_text()))
    args = resume(run, "--steps", "4") if command == "resume" else ["eval", str(run), "--output", str(d / "e.json")]
    return Invocation(args, ("config.yaml",), watch=run)


def replace_line(key: str, value: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        lines = text.splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        lines[i] = f"{key}: {value}"
        return "\n".join(lines) + "\n"
    return edit


@case("config")
def yaml_unknown_key(b, d):
    inv = yaml_case(b, d, lambda t: t + "learning_rate_of_doom: 3\n")
    inv.expect += ("learning_rate_of_doom",)
    return inv


@case("config")
def yaml_wrong_type(b, d):
    inv = yaml_case(b, d, replace_line("batch_rays", "lots"))
    inv.expect += ("batch_rays", "lots")
    return inv


@case("config")
def yaml_nested_bad_choice(b, d):
    inv = yaml_case(b, d, lambda t: t.replace("    type: plane-line", "    type: octree", 1), command="eval")
    inv.expect += ("field.grid.type", "octree")
    return inv


@case("config")
def yaml_syntax_error(b, d):
    inv = yaml_case(b, d, lambda t: t.replace("steps: 2", "steps: [2,", 1))
    inv.expect += ("not valid YAML", "line")
    return inv


@case("config")
def yaml_not_a_mapping(b, d):
    return yaml_case(b, d, lambda t: "- just\n- a list\n", command="eval")


@case("config")
def yaml_not_utf8(b, d):
    return yaml_case(b, d, b"steps: \xff\xfe\x00 2\n")


@case("config")
def yaml_impossible_processes(b, d):
    inv = yaml_case(b, d, lambda t: replace_line("devices", "3")(replace_line("partitions", "4")(t)))
    inv.expect = ("3", "4")
    return inv


@case("config")
def yaml_missing(b, d):
    run = copy(b.run, d / "run")
    (run / "config.yaml").unlink()
    return Invocation(["eval", str(run), "--output", str(d / "e.json")], ("not a nerfxl run", "config.yaml"), watch=run)


@case("config")
def yaml_data_folder_gone(b, d):
    inv = yaml_case(b, d, replace_line("data", str(d / "moved-away")))
    inv.expect = ("moved-away",)
    return inv


# -- checkpoints -----------------------------------------------------------------------------------


def ckpt_of(run: Path) -> Path:
    (ckpt,) = sorted((run / "checkpoints").glob("step-*"))
    return ckpt


def rewrite_manifest(ckpt: Path) -> None:
    """Make the manifest agree with the files now in the folder (a consistent but wrong checkpoint)."""
    import hashlib

    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"] = {p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                         for p in sorted(ckpt.iterdir()) if p.name != "manifest.json"}
    (ckpt / "manifest.json").write_text(json.dumps(manifest, indent=2))


def run_case(b: Bases, d: Path, edit: Callable[[Path, Path], None], *expect: str, command: str = "eval") -> Invocation:
    run = copy(b.run, d / "run")
    edit(run, ckpt_of(run))
    if command == "eval":
        args = ["eval", str(run), "--output", str(d / "eval.json"), "--limit", "1", "--device", "cpu"]
    elif command == "render":
        args = ["render", str(run), "--output", str(d / "frames"), "--frames", "2", "--device", "cpu"]
    else:
        args = resume(run, "--steps", "4")
    return Invocation(args, expect, watch=run)


@case("checkpoint")
def ckpt_missing_manifest(b, d):
    return run_case(b, d, lambda run, c: (c / "manifest.json").unlink(), "no complete checkpoint")


@case("checkpoint")
def ckpt_manifest_malformed(b, d):
    return run_case(b, d, lambda run, c: (c / "manifest.json").write_text('{"step": 2, "files": {'),
                    "manifest.json", command="render")


@case("checkpoint")
def ckpt_shard_truncated(b, d):
    return run_case(b, d, lambda run, c: truncate(c / "tile-000.safetensors", 1000), "tile-000.safetensors",
                    "truncated")


@case("checkpoint")
def ckpt_shard_corrupted(b, d):
    def edit(run, c):
        raw = bytearray((c / "tile-000.safetensors").read_bytes())
        raw[-100] ^= 0xFF  # same size, one byte flipped
        (c / "tile-000.safetensors").write_bytes(bytes(raw))
    return run_case(b, d, edit, "tile-000.safetensors", "SHA-256", command="render")


@case("checkpoint")
def ckpt_shard_missing(b, d):
    return run_case(b, d, lambda run, c: (c / "shared.safetensors").unlink(), "shared.safetensors", "missing")


@case("checkpoint")
def ckpt_shard_not_safetensors(b, d):
    def edit(run, c):
        (c / "tile-000.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
        rewrite_manifest(c)
    return run_case(b, d, edit, "tile-000.safetensors")


@case("checkpoint")
def ckpt_wrong_shapes(b, d):
    from safetensors.torch import load_file, save_file

    def edit(run, c):
        tensors = load_file(c / "tile-000.safetensors")
        name = next(k for k, v in tensors.items() if v.dim() >= 2 and not k.startswith("optim"))
        tensors[name] = torch.zeros(*[s + 1 for s in tensors[name].shape])
        save_file(tensors, c / "tile-000.safetensors")
        rewrite_manifest(c)
    return run_case(b, d, edit, "tile-000")


@case("checkpoint")
def ckpt_another_runs_shard(b, d):
    def edit(run, c):
        shutil.copy(ckpt_of(b.run_k2) / "tile-001.safetensors", c / "tile-000.safetensors")
    return run_case(b, d, edit, "tile-000.safetensors")


@case("checkpoint")
def ckpt_another_runs_shard_in_manifest(b, d):
    def edit(run, c):
        shutil.copy(ckpt_of(b.run_k2) / "tile-001.safetensors", c / "tile-000.safetensors")
        rewrite_manifest(c)
    return run_case(b, d, edit, "tile-000")


@case("checkpoint")
def ckpt_another_runs_state(b, d):
    def edit(run, c):
        shutil.copy(ckpt_of(b.run_k2) / "state.json", c / "state.json")
        rewrite_manifest(c)
    return run_case(b, d, edit, "tile-001")


@case("checkpoint")
def ckpt_another_runs_manifest(b, d):
    def edit(run, c):
        shutil.copy(ckpt_of(b.run_k2) / "manifest.json", c / "manifest.json")
    return run_case(b, d, edit, "step-00000002", command="render")


@case("checkpoint")
def ckpt_state_missing_key(b, d):
    def edit(run, c):
        state = json.loads((c / "state.json").read_text())
        del state["tile_boxes"]
        (c / "state.json").write_text(json.dumps(state))
        rewrite_manifest(c)
    return run_case(b, d, edit, "state.json", "tile_boxes")


@case("checkpoint")
def ckpt_state_not_json(b, d):
    def edit(run, c):
        (c / "state.json").write_text("{ this is not json")
        rewrite_manifest(c)
    return run_case(b, d, edit, "state.json")


@case("checkpoint")
def ckpt_resume_from_corrupted(b, d):
    def edit(run, c):
        raw = bytearray((c / "shared.safetensors").read_bytes())
        raw[-10] ^= 0xFF
        (c / "shared.safetensors").write_bytes(bytes(raw))
    return run_case(b, d, edit, "shared.safetensors", command="resume")


@case("checkpoint")
def render_camera_path_malformed(b, d):
    run = copy(b.run, d / "run")
    path = d / "camera_path.json"
    path.write_text('{"camera_path": [{"camera_to_world": [1, 2, 3]}]')
    return Invocation(["render", str(run), "--path", str(path), "--output", str(d / "frames"), "--device", "cpu"],
                      ("camera_path.json",), watch=run)
