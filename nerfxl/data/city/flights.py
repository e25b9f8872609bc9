"""Camera poses of the city capture: aerial lawn-mower passes, street views and test views.

Each aerial pass flies parallel lines at one altitude with the camera pitched down (oblique, like a
drone survey); consecutive lines fly in opposite directions, and passes alternate between lines
along x and along y, so every facade orientation is seen. Cameras are placed from their look-at
point: the ground point at the image centre is laid out on a regular grid over the city, and the
camera sits behind it, which keeps most of every view on the ground plane. Test views use random
look-at points, headings and in-between altitudes, away from every training camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nerfxl.data.city.scene import CityScene
from nerfxl.data.city.specs import CitySpec

CLEARANCE = 8.0  # metres the aerial cameras keep above the tallest roof
MIN_INSIDE = 0.75  # aerial views are pulled towards the centre until this much of them is ground
STREET_HEIGHT = 12.0
MIN_TEST_DISTANCE = 5.0  # test cameras are at least this far from every training camera


@dataclass
class Intrinsics:
    """Pinhole intrinsics shared by every frame (pixels; OpenGL axes, pixel centres at +0.5)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float


def intrinsics_for(spec: CitySpec) -> Intrinsics:
    w, h = spec.image_wh
    f = (w / 2) / math.tan(math.radians(spec.fov_x_deg) / 2)
    return Intrinsics(width=w, height=h, fx=f, fy=f, cx=w / 2, cy=h / 2)


def look_pose(position: np.ndarray, heading: float, pitch: float) -> np.ndarray:
    """[4, 4] OpenGL camera-to-world: at ``position``, facing compass ``heading`` (radians from +x
    towards +y), tilted ``pitch`` radians below the horizon; the image's right stays horizontal."""
    h = np.array([math.cos(heading), math.sin(heading), 0.0])
    forward = math.cos(pitch) * h - math.sin(pitch) * np.array([0.0, 0.0, 1.0])
    right = np.array([h[1], -h[0], 0.0])
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


def ground_fraction(c2w: np.ndarray, intr: Intrinsics, half_extent: float, n: int = 12) -> float:
    """Share of an n × n grid of the view's rays that meet the ground plane [-H, H]² (buildings
    stand on it, so this is the share of the view inside the scene footprint)."""
    k = (np.arange(n) + 0.5) / n
    u, v = np.meshgrid(k * intr.width, k * intr.height)
    dirs = np.stack([(u - intr.cx) / intr.fx, -(v - intr.cy) / intr.fy, -np.ones_like(u)], axis=-1).reshape(-1, 3)
    r = c2w[:3, :3]
    d = dirs[:, :1] * r[:, 0] + dirs[:, 1:2] * r[:, 1] + dirs[:, 2:] * r[:, 2]  # no BLAS: same bits everywhere
    o = c2w[:3, 3]
    down = d[:, 2] < 0
    t = np.where(down, -o[2] / np.where(down, d[:, 2], -1.0), 0.0)
    p = o[:2] + t[:, None] * d[:, :2]
    return float((down & (np.abs(p) <= half_extent).all(axis=1)).mean())


def _pose_at(target: np.ndarray, heading: float, pitch: float, altitude: float) -> np.ndarray:
    """Camera at ``altitude`` whose optical axis meets the ground at ``target``."""
    back = altitude / math.tan(pitch)
    pos = np.array([target[0] - back * math.cos(heading), target[1] - back * math.sin(heading), altitude])
    return look_pose(pos, heading, pitch)


def _inside_pose(target: np.ndarray, heading: float, pitch: float, altitude: float, intr: Intrinsics,
                 half_extent: float) -> np.ndarray:
    """Like _pose_at, with the target pulled towards the centre until MIN_INSIDE of the view is
    on the ground plane (views near the edges would otherwise look out of the city)."""
    for _ in range(40):
        c2w = _pose_at(target, heading, pitch, altitude)
        if ground_fraction(c2w, intr, half_extent) >= MIN_INSIDE:
            break
        target = target * 0.93
    return c2w


def _aerial(scene: CityScene, spec: CitySpec, rng: np.random.Generator,
            altitude_floor: float) -> list[np.ndarray]:
    """The lawn-mower passes: a grid of look-at points per pass, jittered, flown line by line."""
    intr = intrinsics_for(spec)
    reach = spec.blocks * spec.block_pitch / 2 - spec.block_pitch / 4  # look-at points stay inside this
    across = np.linspace(-reach, reach, spec.lines_per_pass)
    along = np.linspace(-reach, reach, spec.views_per_line)
    gap = (2 * reach / max(1, spec.views_per_line - 1)) * 0.15
    poses = []
    for altitude, axis in spec.passes:
        altitude = max(altitude, altitude_floor)
        for line, c in enumerate(across):
            forwards = line % 2 == 0
            heading = (0.0 if axis == 0 else math.pi / 2) + (0.0 if forwards else math.pi)
            for a in along if forwards else along[::-1]:
                target = np.array([a, c] if axis == 0 else [c, a]) + rng.uniform(-gap, gap, size=2)
                psi = heading + math.radians(rng.uniform(-10.0, 10.0))
                pitch = math.radians(rng.uniform(*spec.pitch_deg))
                z = altitude + rng.uniform(-1.5, 1.5)
                poses.append(_inside_pose(target, psi, pitch, z, intr, scene.half_extent))
    return poses


def _street(spec: CitySpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Low views from above road centre lines, looking along the road towards the city centre."""
    n, p = spec.blocks, spec.block_pitch
    origin = -n * p / 2
    poses = []
    for _ in range(spec.street_views):
        road = origin + p * int(rng.integers(1, n))  # an inner road line
        along = origin + p * (int(rng.integers(0, n)) + rng.uniform(0.3, 0.7))  # mid-block
        axis = int(rng.integers(2))
        pos = np.array([road, along, STREET_HEIGHT] if axis == 0 else [along, road, STREET_HEIGHT])
        toward_centre = -math.copysign(1.0, along) if along != 0 else 1.0
        heading = (math.pi / 2 if axis == 0 else 0.0) + (0.0 if toward_centre > 0 else math.pi)
        heading += math.radians(rng.uniform(-5.0, 5.0))
        poses.append(look_pose(pos, heading, math.radians(rng.uniform(8.0, 15.0))))
    return poses


def _test(scene: CityScene, spec: CitySpec, rng: np.random.Generator, train: np.ndarray,
          altitude_floor: float) -> list[np.ndarray]:
    """Held-out aerial views: random look-at point, heading, pitch and altitude (within the
    passes' range), kept only if no training camera is within MIN_TEST_DISTANCE."""
    intr = intrinsics_for(spec)
    reach = 0.9 * (spec.blocks * spec.block_pitch / 2 - spec.block_pitch / 4)
    alts = [max(a, altitude_floor) for a, _ in spec.passes]
    lo, hi = min(alts), max(alts)
    poses = []
    while len(poses) < spec.test_views:
        target = rng.uniform(-reach, reach, size=2)
        psi = rng.uniform(0.0, 2 * math.pi)
        pitch = math.radians(rng.uniform(*spec.pitch_deg))
        z = rng.uniform(lo, hi)
        c2w = _inside_pose(target, psi, pitch, z, intr, scene.half_extent)
        if np.linalg.norm(train[:, :3, 3] - c2w[:3, 3], axis=1).min() >= MIN_TEST_DISTANCE:
            poses.append(c2w)
    return poses


def plan_cameras(scene: CityScene, spec: CitySpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and test camera-to-world matrices, [N_train, 4, 4] and [N_test, 4, 4] float64."""
    rng = np.random.default_rng([int(seed), 0xF11])
    floor = scene.max_height + CLEARANCE
    train = np.stack(_aerial(scene, spec, rng, floor) + _street(spec, rng))
    test = np.stack(_test(scene, spec, rng, train, floor))
    return train, test
