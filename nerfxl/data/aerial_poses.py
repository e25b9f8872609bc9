"""Aerial camera sets without images: a MatrixCity-style flight over a square city, for planning.

NeRF-XL trained MatrixCity (258 003 aerial images of a 25 km² city) on 64 GPUs. Whether a job of that
size loads, plans and fits can be checked without the 2 TB of images: the cameras are all that
``nerfxl info`` and ``nerfxl plan`` read. :func:`aerial_poses` lays out such a flight (a jittered grid
of viewpoints at one altitude, each photographed in four headings, pitched down), and
:func:`write_matrixcity_poses` writes it in MatrixCity's pose-file format
(``transforms_{train,test}.json``, positions in units of 100 m, OpenGL camera axes, z-up), which
:mod:`nerfxl.data.formats.matrixcity` reads. No image is written: load the result with
``poses_only=True`` (``nerfxl plan`` does).

The layout is deterministic in its arguments (seeded jitter). Ground is z = 0, the city centred at
the origin, in metres.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from nerfxl.errors import ConfigError, NerfxlError
from nerfxl.fileio import atomic_path

HEADINGS = 4  # views per viewpoint, 90° apart (MatrixCity's aerial captures look in several directions)
POSITION_UNIT_M = 100.0  # MatrixCity pose files store positions in units of 100 m
MATRIXCITY_SIZE = (1920, 1080)  # default image size (W, H)
DEFAULT_FOV_DEG = 50.0  # default horizontal field of view
FRAME_FOLDER = "../../{split}/block_all"  # file_path prefix, as MatrixCity's pose/<block>/ files name images


def check_flight(frames: int, area_m2: float, altitude_m: float, pitch_deg: float) -> None:
    """One-line ConfigErrors for a flight that cannot be laid out."""
    if frames < 1:
        raise ConfigError(f"--frames must be at least 1, got {frames}")
    if not (math.isfinite(area_m2) and area_m2 > 0):
        raise ConfigError(f"--area-m2 must be a positive number of square metres, got {area_m2}")
    if not (math.isfinite(altitude_m) and altitude_m > 0):
        raise ConfigError(f"--altitude-m must be a positive number of metres, got {altitude_m}")
    if not 0 < pitch_deg <= 90:
        raise ConfigError(f"--pitch-deg must be in (0, 90] (degrees below the horizon), got {pitch_deg}")


def aerial_poses(frames: int, area_m2: float = 25e6, altitude_m: float = 200.0, pitch_deg: float = 45.0,
                 seed: int = 0) -> np.ndarray:
    """Camera-to-world matrices [frames, 3, 4] (float64, metres, OpenGL axes, z-up) of an aerial flight.

    ceil(frames / 4) viewpoints on a square grid over a square of ``area_m2`` centred at the origin,
    jittered by up to a quarter of the grid spacing horizontally and 5 % of ``altitude_m`` vertically;
    each viewpoint looks in four headings (0°, 90°, 180°, 270°, plus a per-viewpoint random offset),
    ``pitch_deg`` below the horizon. Frame i is viewpoint i // 4, heading i % 4; the last viewpoint may
    have fewer headings.
    """
    check_flight(frames, area_m2, altitude_m, pitch_deg)
    rng = np.random.default_rng(seed)
    n_views = math.ceil(frames / HEADINGS)
    per_side = math.ceil(math.sqrt(n_views))
    side = math.sqrt(area_m2)
    spacing = side / per_side
    index = np.arange(n_views)
    centres = (np.stack([index % per_side, index // per_side], axis=-1) + 0.5) * spacing - side / 2
    centres = centres + rng.uniform(-0.25, 0.25, size=(n_views, 2)) * spacing
    heights = altitude_m * (1.0 + rng.uniform(-0.05, 0.05, size=n_views))
    offsets = rng.uniform(0.0, 2 * math.pi, size=n_views)

    view = np.arange(frames) // HEADINGS
    yaw = offsets[view] + (np.arange(frames) % HEADINGS) * (math.pi / 2)
    pitch = math.radians(pitch_deg)
    forward = np.stack([math.cos(pitch) * np.cos(yaw), math.cos(pitch) * np.sin(yaw),
                        np.full(frames, -math.sin(pitch))], axis=-1)
    right = np.stack([np.sin(yaw), -np.cos(yaw), np.zeros(frames)], axis=-1)  # forward × z-up, normalised
    up = np.cross(right, forward)
    c2w = np.empty((frames, 3, 4))
    c2w[:, :, 0], c2w[:, :, 1], c2w[:, :, 2] = right, up, -forward  # OpenGL: the camera looks along −z
    c2w[:, :2, 3] = centres[view]
    c2w[:, 2, 3] = heights[view]
    return c2w


def aerial_scene_box(c2w: np.ndarray, altitude_m: float) -> np.ndarray:
    """[2, 3] box of what such a flight sees: the viewpoints' footprint widened by the altitude (a
    camera pitched down 45° looks at ground one altitude ahead), from 10 % of the altitude below the
    ground to 10 % above the highest camera."""
    positions = c2w[:, :, 3]
    lo, hi = positions.min(axis=0), positions.max(axis=0)
    return np.array([[lo[0] - altitude_m, lo[1] - altitude_m, -0.1 * altitude_m],
                     [hi[0] + altitude_m, hi[1] + altitude_m, hi[2] * 1.1]])


def focal_length(width: int, fov_deg: float) -> float:
    """Focal length in pixels of a pinhole camera ``width`` pixels wide with horizontal field of view ``fov_deg``."""
    if not 0 < fov_deg < 180:
        raise ConfigError(f"--fov-deg must be in (0, 180), got {fov_deg}")
    return 0.5 * width / math.tan(0.5 * math.radians(fov_deg))


def test_frames(frames: int, test_every: int) -> np.ndarray:
    """Mask [frames] of the frames held out for the test split: every ``test_every``-th (0 = none)."""
    if test_every < 0:
        raise ConfigError(f"--test-every must be ≥ 0, got {test_every}")
    mask = np.zeros(frames, dtype=bool)
    if test_every:
        mask[test_every - 1::test_every] = True
    return mask


def write_matrixcity_poses(out_dir: str | Path, frames: int = 258_000, width: int = MATRIXCITY_SIZE[0],
                           height: int = MATRIXCITY_SIZE[1], fov_deg: float = DEFAULT_FOV_DEG,
                           area_m2: float = 25e6, altitude_m: float = 200.0, pitch_deg: float = 45.0,
                           test_every: int = 100, seed: int = 0, overwrite: bool = False) -> Path:
    """Write an aerial flight (:func:`aerial_poses`) as a MatrixCity pose folder, without images.

    ``out_dir`` gets ``transforms_train.json`` and ``transforms_test.json`` (every ``test_every``-th
    frame), each with MatrixCity's top-level intrinsics (``camera_angle_x, fl_x, fl_y, cx, cy, w, h``
    and zero distortion) and ``frames[]`` of ``file_path`` + 4×4 ``transform_matrix`` with positions in
    units of 100 m. Frames are written one by one (memory does not grow with ``frames``), each file
    under a temporary name and renamed when complete.

    Returns:
        ``out_dir``.
    Raises:
        NerfxlError: ``out_dir`` is a file, or a non-empty folder without ``overwrite``.
        ConfigError: an impossible flight or camera.
    """
    out_dir = Path(out_dir)
    if width < 1 or height < 1:
        raise ConfigError(f"--width and --height must be positive, got {width}x{height}")
    focal = focal_length(width, fov_deg)
    if out_dir.exists() and not out_dir.is_dir():
        raise NerfxlError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise NerfxlError(f"{out_dir}: folder exists and is not empty; choose an empty or new folder, "
                              f"or pass --overwrite to replace it")
    c2w = aerial_poses(frames, area_m2, altitude_m, pitch_deg, seed)
    held_out = test_frames(frames, test_every)
    if overwrite and out_dir.is_dir():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"camera_angle_x": 2 * math.atan(0.5 * width / focal), "fl_x": focal, "fl_y": focal,
              "cx": width / 2, "cy": height / 2, "w": width, "h": height,
              "k1": 0.0, "k2": 0.0, "k3": 0.0, "k4": 0.0, "p1": 0.0, "p2": 0.0}
    for split, members in (("train", np.flatnonzero(~held_out)), ("test", np.flatnonzero(held_out))):
        if members.size:  # the reader takes a missing file for an empty split, not an empty "frames"
            _write_pose_file(out_dir / f"transforms_{split}.json", header, c2w, members, split)
    return out_dir


def _write_pose_file(path: Path, header: dict, c2w: np.ndarray, members: np.ndarray, split: str) -> None:
    """One MatrixCity transforms file, frame by frame (positions divided by 100: 100 m units)."""
    import json

    prefix = FRAME_FOLDER.format(split=split)
    head = json.dumps(header)[:-1]  # the header object, left open for "frames"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(head + ', "frames": [')
        for n, i in enumerate(members.tolist()):
            m = c2w[i].copy()
            m[:, 3] /= POSITION_UNIT_M
            rows = ", ".join("[" + ", ".join(f"{x:.9g}" for x in row) + "]" for row in m.tolist())
            f.write(("," if n else "") + f'\n{{"file_path": "{prefix}/{i:06d}.png", '
                    f'"transform_matrix": [{rows}, [0, 0, 0, 1]]}}')
        f.write("\n]}\n")
