"""COLMAP sparse models (``sparse/0/`` or ``sparse/``; ``.bin`` or ``.txt``) with an ``images/`` folder.

Why our own reader and not pycolmap: with pycolmap 4.2, ``pycolmap.Reconstruction(path)`` on
malformed models (checked while writing this module)

- *silently* accepts truncated ``cameras.bin``/``points3D.bin`` and returns garbage (a camera
  truncated after 20 bytes came back as a 4×4 PINHOLE with all-zero intrinsics);
- hangs (or tries to allocate without bound) on a header whose record count is huge;
- raises messages that name no file ("Rig with ID 0 does not exist" for a truncated images.bin).

A loader must reject such files with a message naming the file, so this module reads the three
model files itself, checking every length against the bytes actually present. Only the legacy
``cameras``/``images``/``points3D`` files are read; COLMAP ≥ 3.12 also writes ``rigs``/``frames``,
which add nothing a NeRF needs (each image keeps its own camera-from-world pose).

Conventions:

- COLMAP stores world-to-camera poses (quaternion w, x, y, z and translation) in OpenCV camera axes
  (+X right, +Y down, looks down +Z). We invert to camera-to-world and flip the camera's Y and Z
  axes to get OpenGL axes. The world frame is kept as reconstructed: COLMAP has no notion of "up",
  so the world is z-up only if the reconstruction was aligned that way.
- COLMAP's image coordinates put the centre of the top-left pixel at (0.5, 0.5), as ours do, so the
  principal point is used unchanged.
- Camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV (perspective, radial-
  tangential) and OPENCV_FISHEYE, SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE (equidistant fisheye).
  Other models (FULL_OPENCV, FOV, THIN_PRISM_FISHEYE, …) used by an image are a DataError.
- No split information: images are sorted by name and every 8th (0, 8, …) is val and test.
- The sparse points become the point cloud; the scene box comes from them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.formats.common import ParsedScene, holdout_splits
from nerfxl.errors import DataError

# COLMAP model id → (name, number of parameters), from COLMAP's src/colmap/sensor/models.h.
COLMAP_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
PARAM_COUNT = {name: count for name, count in COLMAP_MODELS.values()}
# Larger sides are corruption (or a parse of garbage), not an image.
MAX_IMAGE_SIDE = 1 << 24
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE",
             "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE")


@dataclass
class ColmapCamera:
    camera_id: int
    model: str
    width: int
    height: int
    params: list[float]


@dataclass
class ColmapImage:
    image_id: int
    qvec: np.ndarray  # [4] w, x, y, z (world-to-camera rotation)
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray  # [P, 3] float64
    colors: np.ndarray  # [P, 3] uint8
    folder: Path
    ext: str


# ----------------------------------------------------------------------------------------------
# Binary files


class _Reader:
    """Little-endian reads from a byte buffer that fail with a DataError instead of reading past the end."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(path, "file is missing") from None
        except OSError as e:
            raise DataError(path, f"cannot be read ({e.strerror or e})") from None
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.remaining() < size:
            raise DataError(self.path, f"file is truncated: {what} needs {size} bytes at offset {self.pos}, "
                                       f"only {self.remaining()} left")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def skip(self, size: int, what: str) -> None:
        if self.remaining() < size:
            raise DataError(self.path, f"file is truncated: {what} needs {size} bytes at offset {self.pos}, "
                                       f"only {self.remaining()} left")
        self.pos += size

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DataError(self.path, f"file is truncated: {what} has no terminating NUL")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(self.path, f"{what} is not UTF-8") from None

    def count(self, min_record: int, what: str) -> int:
        (n,) = self.unpack("Q", f"the number of {what}")
        # Each record takes at least min_record bytes: a count the file cannot hold is corruption,
        # caught here before looping over (or allocating for) billions of records.
        if n * min_record > self.remaining():
            raise DataError(self.path, f"file is truncated or corrupt: the header says {n} {what} "
                                       f"but only {self.remaining()} bytes follow")
        return n

    def done(self) -> None:
        if self.remaining():
            raise DataError(self.path, f"{self.remaining()} unexpected bytes after the last record")


def read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    cameras = {}
    for _ in range(r.count(24, "cameras")):
        camera_id, model_id, width, height = r.unpack("iiQQ", "a camera record")
        if model_id not in COLMAP_MODELS:
            raise DataError(path, f"camera {camera_id} has unknown model id {model_id}")
        name, n_params = COLMAP_MODELS[model_id]
        params = list(r.unpack("d" * n_params, f"camera {camera_id}'s parameters"))
        cameras[camera_id] = ColmapCamera(camera_id, name, int(width), int(height), params)
    r.done()
    return cameras


def read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    images = {}
    for _ in range(r.count(64 + 1 + 8, "images")):
        values = r.unpack("i7di", "an image record")
        image_id, camera_id = values[0], values[8]
        name = r.cstring(f"image {image_id}'s name")
        (n_points,) = r.unpack("Q", f"image {image_id}'s number of 2D points")
        r.skip(24 * n_points, f"image {image_id}'s 2D points")  # (x, y, point3D_id) we do not need
        images[image_id] = ColmapImage(image_id, np.array(values[1:5]), np.array(values[5:8]), camera_id, name)
    r.done()
    return images


def read_points3d_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points and colours. Records are variable-length (their tracks), so one Python pass finds the
    record offsets, then numpy gathers the fixed fields: ~3× faster than unpacking each record,
    which matters for SfM models with millions of points."""
    r = _Reader(path)
    n = r.count(43 + 8, "points")
    data, size = r.data, len(r.data)
    track_length = struct.Struct("<Q").unpack_from
    offsets = np.empty(n, dtype=np.int64)
    pos = r.pos
    for i in range(n):
        if pos + 51 > size:
            raise DataError(path, f"file is truncated: point {i} of {n} needs 51 bytes at offset {pos}, "
                                  f"only {size - pos} left")
        offsets[i] = pos
        pos += 51 + 8 * track_length(data, pos + 43)[0]
    if pos > size:
        raise DataError(path, f"file is truncated: the last point's track ends at byte {pos}, the file has {size}")
    r.pos = pos
    r.done()
    buf = np.frombuffer(data, dtype=np.uint8)
    xyz = np.empty((n, 3), dtype=np.float64)
    rgb = np.empty((n, 3), dtype=np.uint8)
    for start in range(0, n, 65536):  # chunks bound the [chunk, 24] index arrays
        offs = offsets[start:start + 65536, None]
        xyz[start:start + 65536] = buf[offs + np.arange(8, 32)].copy().view("<f8")  # after the u64 id
        rgb[start:start + 65536] = buf[offs + np.arange(32, 35)]
    return xyz, rgb


# ----------------------------------------------------------------------------------------------
# Text files


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line that is not a comment; blank lines are kept."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot be read as text ({e})") from None
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if not line.lstrip().startswith("#")]


def _parse(path: Path, lineno: int, what: str, parse, value: str):
    try:
        return parse(value)
    except ValueError:
        raise DataError(path, f"line {lineno}: {what} {value!r} is not a valid number") from None


def read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for lineno, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 4:
            raise DataError(path, f"line {lineno}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS…")
        camera_id = _parse(path, lineno, "camera id", int, parts[0])
        model = parts[1].upper()
        width = _parse(path, lineno, "width", int, parts[2])
        height = _parse(path, lineno, "height", int, parts[3])
        params = [_parse(path, lineno, "parameter", float, p) for p in parts[4:]]
        if model in PARAM_COUNT and len(params) != PARAM_COUNT[model]:
            raise DataError(path, f"line {lineno}: model {model} takes {PARAM_COUNT[model]} parameters, "
                                  f"found {len(params)}")
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, params)
    return cameras


def read_images_txt(path: Path) -> dict[int, ColmapImage]:
    """Two lines per image: the pose line, then the (possibly empty) 2D-point line."""
    images = {}
    lines = _data_lines(path)
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        if not line:  # tolerate blank separators where a pose line is expected
            i += 1
            continue
        parts = line.split()
        if len(parts) < 10:
            raise DataError(path, f"line {lineno}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        image_id = _parse(path, lineno, "image id", int, parts[0])
        numbers = [_parse(path, lineno, "pose value", float, p) for p in parts[1:8]]
        camera_id = _parse(path, lineno, "camera id", int, parts[8])
        name = " ".join(parts[9:])  # names may contain spaces
        images[image_id] = ColmapImage(image_id, np.array(numbers[:4]), np.array(numbers[4:]), camera_id, name)
        i += 2  # skip the 2D points line (missing at the end of a file is fine)
    return images


def read_points3d_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for lineno, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 8:
            raise DataError(path, f"line {lineno}: expected POINT3D_ID X Y Z R G B ERROR TRACK…")
        xyz.append([_parse(path, lineno, "coordinate", float, p) for p in parts[1:4]])
        rgb.append([_parse(path, lineno, "colour", int, p) for p in parts[4:7]])
    if not xyz:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    return np.asarray(xyz, dtype=np.float64), np.clip(np.asarray(rgb), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------


def find_model_folder(root: Path) -> tuple[Path, str] | None:
    """The folder holding cameras/images/points3D (.bin preferred over .txt), or None."""
    for folder in (root / "sparse" / "0", root / "sparse", root):
        for ext in (".bin", ".txt"):
            if (folder / f"cameras{ext}").is_file() and (folder / f"images{ext}").is_file():
                return folder, ext
    return None


def read_model(folder: Path, ext: str) -> ColmapModel:
    """The model in ``folder`` (``.bin`` or ``.txt``); a missing points3D file means no points."""
    binary = ext == ".bin"
    cameras = (read_cameras_bin if binary else read_cameras_txt)(folder / f"cameras{ext}")
    images = (read_images_bin if binary else read_images_txt)(folder / f"images{ext}")
    points_path = folder / f"points3D{ext}"
    if points_path.exists():
        xyz, rgb = (read_points3d_bin if binary else read_points3d_txt)(points_path)
    else:
        xyz, rgb = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    return ColmapModel(cameras, images, xyz, rgb, folder, ext)


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """[3, 3] rotation from a (w, x, y, z) quaternion (normalised first)."""
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def opencv_w2c_to_opengl_c2w(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """[3, 4] OpenGL camera-to-world from an OpenCV world-to-camera (R, t)."""
    c2w = np.empty((3, 4))
    c2w[:, :3] = rotation.T
    c2w[:, 3] = -rotation.T @ translation
    c2w[:, 1:3] *= -1  # camera +Y down → up, +Z forward → backward
    return c2w


def intrinsics_of(camera: ColmapCamera, source: Path) -> tuple[float, float, float, float, list[float], CameraModel]:
    """(fx, fy, cx, cy, (k1, k2, k3, k4, p1, p2), model) of a supported COLMAP camera."""
    p = camera.params
    where = f"camera {camera.camera_id} ({camera.model})"
    if not (0 < camera.width <= MAX_IMAGE_SIDE and 0 < camera.height <= MAX_IMAGE_SIDE):
        raise DataError(source, f"{where}: image size {camera.width}x{camera.height} must be positive "
                                f"(and at most {MAX_IMAGE_SIDE} pixels a side)")
    if not all(math.isfinite(x) for x in p):
        raise DataError(source, f"{where}: parameters contain non-finite values")
    if camera.model not in SUPPORTED:
        raise DataError(source, f"camera {camera.camera_id} uses the {camera.model} model, which is not "
                                f"supported; supported: {', '.join(SUPPORTED)}")
    if len(p) != PARAM_COUNT[camera.model]:
        raise DataError(source, f"camera {camera.camera_id} ({camera.model}) has {len(p)} parameters, "
                                f"expected {PARAM_COUNT[camera.model]}")
    two_focals = camera.model in ("PINHOLE", "OPENCV", "OPENCV_FISHEYE")
    for focal in p[:2] if two_focals else p[:1]:
        if focal <= 0:
            raise DataError(source, f"{where}: focal length must be positive, found {focal:g}")
    zero = [0.0] * 6
    m = camera.model
    if m == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], zero, CameraModel.PERSPECTIVE
    if m == "PINHOLE":
        return p[0], p[1], p[2], p[3], zero, CameraModel.PERSPECTIVE
    if m == "SIMPLE_RADIAL":
        return p[0], p[0], p[1], p[2], [p[3], 0, 0, 0, 0, 0], CameraModel.PERSPECTIVE
    if m == "RADIAL":
        return p[0], p[0], p[1], p[2], [p[3], p[4], 0, 0, 0, 0], CameraModel.PERSPECTIVE
    if m == "OPENCV":
        return p[0], p[1], p[2], p[3], [p[4], p[5], 0, 0, p[6], p[7]], CameraModel.PERSPECTIVE
    if m == "OPENCV_FISHEYE":
        return p[0], p[1], p[2], p[3], [p[4], p[5], p[6], p[7], 0, 0], CameraModel.FISHEYE
    if m == "SIMPLE_RADIAL_FISHEYE":
        return p[0], p[0], p[1], p[2], [p[3], 0, 0, 0, 0, 0], CameraModel.FISHEYE
    # RADIAL_FISHEYE
    return p[0], p[0], p[1], p[2], [p[3], p[4], 0, 0, 0, 0], CameraModel.FISHEYE


def parse_colmap(root: Path) -> ParsedScene:
    root = Path(root)
    found = find_model_folder(root)
    if found is None:
        raise DataError(root, "no COLMAP model: looked for sparse/0/, sparse/ and the folder itself "
                              "with cameras.bin+images.bin or cameras.txt+images.txt")
    folder, ext = found
    model = read_model(folder, ext)
    cameras_file, images_file = folder / f"cameras{ext}", folder / f"images{ext}"
    points_path = folder / f"points3D{ext}"
    if not model.images:
        raise DataError(images_file, "the model has no images")
    if not model.cameras:
        raise DataError(cameras_file, f"the model has {len(model.images)} images but no cameras")

    # images/ lives beside sparse/ (root/images); when root is the model folder itself, look up.
    candidates = [root / "images", folder.parent / "images", folder.parent.parent / "images"]
    images_dir = next((c for c in candidates if c.is_dir()), root / "images")

    ordered = sorted(model.images.values(), key=lambda im: im.name)
    c2ws, fx, fy, cx, cy, ws, hs, dists, kinds, names = [], [], [], [], [], [], [], [], [], []
    for im in ordered:
        camera = model.cameras.get(im.camera_id)
        if camera is None:
            raise DataError(images_file, f"image '{im.name}' refers to camera {im.camera_id}, which "
                                         f"{cameras_file.name} does not define")
        if not (np.isfinite(im.qvec).all() and np.isfinite(im.tvec).all()) or np.linalg.norm(im.qvec) == 0:
            raise DataError(images_file, f"image '{im.name}' has a non-finite or zero pose")
        f_x, f_y, c_x, c_y, dist, kind = intrinsics_of(camera, cameras_file)
        c2ws.append(opencv_w2c_to_opengl_c2w(qvec_to_rotmat(im.qvec), im.tvec))
        fx.append(f_x)
        fy.append(f_y)
        cx.append(c_x)
        cy.append(c_y)
        ws.append(camera.width)
        hs.append(camera.height)
        dists.append(dist)
        kinds.append(int(kind))
        names.append(camera.model)

    cameras = Cameras.create(
        torch.tensor(np.stack(c2ws), dtype=torch.float32), torch.tensor(fx), torch.tensor(fy),
        torch.tensor(cx), torch.tensor(cy), torch.tensor(ws), torch.tensor(hs),
        torch.tensor(dists, dtype=torch.float32), torch.tensor(kinds),
    )
    points = torch.from_numpy(model.points.astype(np.float32)) if len(model.points) else None
    colors = torch.from_numpy(model.colors) if len(model.points) else None
    return ParsedScene(
        format="colmap", root=root, source=folder, cameras=cameras,
        image_paths=[images_dir / im.name for im in ordered], image_names=[im.name for im in ordered],
        camera_model_names=names, splits=holdout_splits(len(ordered)),
        points=points, point_colors=colors,
        point_source=None if points is None else (points_path.relative_to(root).as_posix()
                                                  if points_path.is_relative_to(root) else str(points_path)),
        metadata={"splits_from": "every 8th image held out (COLMAP has no splits)",
                  "world": "COLMAP's reconstruction frame (no known up direction)",
                  "model_folder": str(folder), "model_format": ext[1:]},
    )
