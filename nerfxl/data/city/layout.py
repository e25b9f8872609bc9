"""``build_city``: the seeded layout of roads, blocks, buildings and trees.

Roads run along a regular grid of lines every ``block_pitch`` metres (the first at
``road_origin = -blocks · pitch / 2``). Each block's lot (inside its sidewalk ring) is either a
park (grass and trees) or is cut into 1-3 × 1-3 parcels; a parcel holds a building (setback
1-3 m from the parcel edges, sometimes with a setback tower and a rooftop unit), or a small
plaza or lawn with trees. Buildings are taller towards the city centre. Street trees stand along
the sidewalks. All layout coordinates of the ground are whole metres, so the 1 m ground raster
represents them exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nerfxl.data.city.scene import (
    BUILDING,
    CROSSING,
    OTHER,
    ROAD_ALONG_X,
    ROAD_ALONG_Y,
    ROOF_UNIT,
    TRUNK,
    CityScene,
)
from nerfxl.data.city.specs import CITY_SIZES, CitySpec, city_spec

WALL_PALETTE = np.array([
    [0.78, 0.75, 0.70],  # light concrete
    [0.64, 0.63, 0.61],  # grey concrete
    [0.74, 0.62, 0.48],  # sandstone
    [0.62, 0.38, 0.30],  # brick
    [0.80, 0.72, 0.58],  # beige render
    [0.56, 0.61, 0.67],  # blue-grey panels
    [0.86, 0.84, 0.79],  # white render
])
ROOF_PALETTE = np.array([
    [0.42, 0.42, 0.44],  # grey membrane
    [0.60, 0.59, 0.56],  # gravel
    [0.55, 0.33, 0.26],  # terracotta
    [0.38, 0.47, 0.30],  # green roof
    [0.30, 0.31, 0.34],  # tar
])
GLASS = np.array([0.20, 0.26, 0.35])
GLASS_WALL_MIX = 0.45  # windows keep some of the wall colour: visible, but not harsh to learn
UNIT_COLORS = np.array([[0.72, 0.72, 0.70], [0.46, 0.47, 0.49]])
TREE_GREENS = np.array([[0.26, 0.46, 0.18], [0.20, 0.38, 0.16], [0.33, 0.50, 0.22]])
TRUNK_COLOR = np.array([0.36, 0.27, 0.18])
SIDEWALK = np.array([0.60, 0.59, 0.56])
PAVING = np.array([0.58, 0.55, 0.50])
GRASS = np.array([0.34, 0.50, 0.25])

MIN_PARCEL = 12  # metres
PARK_PROBABILITY = 0.1


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(color + rng.uniform(-amount, amount, size=3), 0.0, 1.0)


def _split(rng: np.random.Generator, start: int, stop: int, parts: int) -> list[int]:
    """Cut [start, stop] into ``parts`` whole-metre pieces of at least MIN_PARCEL; returns the edges."""
    extra = stop - start - parts * MIN_PARCEL
    cuts = np.sort(rng.integers(0, extra + 1, size=parts - 1))
    widths = np.diff(np.concatenate([[0], cuts, [extra]])) + MIN_PARCEL
    return [start] + list(start + np.cumsum(widths))


class _Builder:
    """Collects primitives and paints the ground raster while the layout is drawn."""

    def __init__(self, spec: CitySpec, rng: np.random.Generator):
        self.spec, self.rng = spec, rng
        h = spec.half_extent
        if h != int(h):
            raise ValueError("the ground plane must have a whole-metre half extent")
        self.h = int(h)
        g = 2 * self.h
        self.albedo = np.empty((g, g, 3))
        self.albedo[:] = GRASS
        self.cls = np.full((g, g), OTHER, dtype=np.uint8)
        self.boxes: list[tuple] = []  # (lo, hi, kind, wall, roof, glass, floor_h, floors, col_w, win_w, win_h)
        self.spheres: list[tuple] = []  # (centre, radius, colour)

    def paint(self, x0: float, x1: float, y0: float, y1: float, color=None, cls=None) -> None:
        """Paint the whole-metre rectangle [x0, x1) × [y0, y1) of the ground."""
        i0, i1, j0, j1 = (int(round(v + self.h)) for v in (x0, x1, y0, y1))
        if color is not None:
            self.albedo[i0:i1, j0:j1] = color
        if cls is not None:
            self.cls[i0:i1, j0:j1] = cls

    def box(self, lo, hi, kind, wall, roof, glass=None, floor_h=4.0, floors=0, col_w=4.0, win_w=0.5, win_h=0.5):
        glass = wall if glass is None else glass
        self.boxes.append((lo, hi, kind, wall, roof, glass, floor_h, floors, col_w, win_w, win_h))

    def tree(self, x: float, y: float, radius: float) -> None:
        rng = self.rng
        trunk = rng.uniform(1.8, 2.8)
        cz = trunk + radius
        green = _jitter(rng, TREE_GREENS[rng.integers(len(TREE_GREENS))], 0.04)
        self.spheres.append(((x, y, cz), radius, green))
        self.box((x - 0.25, y - 0.25, 0.0), (x + 0.25, y + 0.25, cz - 0.5 * radius), TRUNK, TRUNK_COLOR, TRUNK_COLOR)

    def trees_in(self, x0: float, x1: float, y0: float, y1: float, spacing: float, keep: float, rmin: float,
                 rmax: float) -> None:
        """Trees on a jittered grid inside a rectangle, each kept with probability ``keep``."""
        rng = self.rng
        nx, ny = max(1, int((x1 - x0) // spacing)), max(1, int((y1 - y0) // spacing))
        for i in range(nx):
            for j in range(ny):
                x = x0 + (i + 0.5) * (x1 - x0) / nx + rng.uniform(-0.2, 0.2) * spacing
                y = y0 + (j + 0.5) * (y1 - y0) / ny + rng.uniform(-0.2, 0.2) * spacing
                r = rng.uniform(rmin, rmax)
                if rng.random() < keep:
                    self.tree(x, y, r)

    def building(self, x0: int, x1: int, y0: int, y1: int, floors: int) -> None:
        rng = self.rng
        floor_h = float(rng.choice([3.6, 3.8, 4.0, 4.2, 4.4]))
        col_w = round(float(rng.uniform(3.6, 5.0)), 1)
        # Windows of 1.8-3.3 m × 1.8-2.7 m: at least ~3 px wide at the small city's viewing distances.
        win_w = round(float(rng.uniform(0.5, 0.65)), 2)
        win_h = round(float(rng.uniform(0.5, 0.62)), 2)
        parapet = float(rng.choice([0.6, 1.0, 1.4]))
        wall = _jitter(rng, WALL_PALETTE[rng.integers(len(WALL_PALETTE))], 0.035)
        glass = GLASS_WALL_MIX * wall + (1 - GLASS_WALL_MIX) * _jitter(rng, GLASS, 0.03)
        roof = _jitter(rng, ROOF_PALETTE[rng.integers(len(ROOF_PALETTE))], 0.03)
        top = floors * floor_h + parapet
        self.box((x0, y0, 0.0), (x1, y1, top), BUILDING, wall, roof, glass, floor_h, floors, col_w, win_w, win_h)
        rx0, rx1, ry0, ry1 = x0, x1, y0, y1
        if floors >= 5 and min(x1 - x0, y1 - y0) >= 16 and rng.random() < 0.4:
            inset = int(rng.integers(3, min(6, (min(x1 - x0, y1 - y0) - 8) // 2) + 1))
            extra = int(rng.integers(1, 4))
            rx0, rx1, ry0, ry1 = x0 + inset, x1 - inset, y0 + inset, y1 - inset
            self.box((rx0, ry0, top), (rx1, ry1, top + extra * floor_h + parapet), BUILDING, wall, roof, glass,
                     floor_h, extra, col_w, win_w, win_h)
            top = top + extra * floor_h + parapet
        if rng.random() < 0.5 and min(rx1 - rx0, ry1 - ry0) >= 7:
            ux, uy = rng.uniform(2.0, 4.0, size=2)
            px = rng.uniform(rx0 + 1.0, rx1 - 1.0 - ux)
            py = rng.uniform(ry0 + 1.0, ry1 - 1.0 - uy)
            c = UNIT_COLORS[rng.integers(len(UNIT_COLORS))]
            self.box((px, py, top), (px + ux, py + uy, top + rng.uniform(1.5, 3.0)), ROOF_UNIT, c, c)

    def block(self, x0: int, x1: int, y0: int, y1: int, downtown: float) -> None:
        """Fill one lot [x0, x1] × [y0, y1] (inside its sidewalk); ``downtown`` ∈ [0, 1]."""
        rng, spec = self.rng, self.spec
        if rng.random() < PARK_PROBABILITY:
            self.paint(x0, x1, y0, y1, color=_jitter(rng, GRASS, 0.03))
            self.trees_in(x0 + 2, x1 - 2, y0 + 2, y1 - 2, spacing=7.0, keep=0.6, rmin=2.0, rmax=3.2)
            return
        self.paint(x0, x1, y0, y1, color=_jitter(rng, PAVING, 0.02))
        cap = spec.min_floors + (spec.max_floors - spec.min_floors) * downtown
        xs = _split(rng, x0, x1, int(rng.choice([1, 2, 2, 3])))
        ys = _split(rng, y0, y1, int(rng.choice([1, 2, 2, 3])))
        for i in range(len(xs) - 1):
            for j in range(len(ys) - 1):
                px0, px1, py0, py1 = int(xs[i]), int(xs[i + 1]), int(ys[j]), int(ys[j + 1])
                r = rng.random()
                if r < 0.06:  # a lawn
                    self.paint(px0, px1, py0, py1, color=_jitter(rng, GRASS, 0.03))
                    self.trees_in(px0 + 2, px1 - 2, py0 + 2, py1 - 2, spacing=7.0, keep=0.7, rmin=1.8, rmax=2.8)
                elif r < 0.12:  # a plaza
                    self.paint(px0, px1, py0, py1, color=_jitter(rng, PAVING + 0.06, 0.02))
                    self.trees_in(px0 + 3, px1 - 3, py0 + 3, py1 - 3, spacing=9.0, keep=0.5, rmin=1.8, rmax=2.6)
                else:
                    s = rng.integers(1, 4, size=4)
                    floors = int(rng.integers(spec.min_floors, max(spec.min_floors, round(cap)) + 1))
                    self.building(px0 + int(s[0]), px1 - int(s[1]), py0 + int(s[2]), py1 - int(s[3]), floors)

    def street_trees(self, x0: int, x1: int, y0: int, y1: int) -> None:
        """Trees along the middle of the sidewalk around the lot [x0, x1] × [y0, y1]."""
        rng = self.rng
        off = self.spec.sidewalk_width / 2
        sides = ((x0, x1, y0 - off, 0), (x0, x1, y1 + off, 0), (y0, y1, x0 - off, 1), (y0, y1, x1 + off, 1))
        for along0, along1, fixed, axis in sides:
            for a in np.arange(along0 + 6.0, along1 - 5.0, 10.0):
                if rng.random() < 0.75:
                    a = a + rng.uniform(-1.0, 1.0)
                    r = rng.uniform(1.6, 2.3)
                    if axis == 0:
                        self.tree(a, fixed, r)
                    else:
                        self.tree(fixed, a, r)


def _tensor(x, dtype=torch.float64):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def build_city(size: str = "small", seed: int = 0) -> CityScene:
    """The procedural city of ``size`` ("tiny", "small", "medium", "large") for ``seed``.

    Deterministic: the same arguments give the same scene (a seeded numpy Generator).
    """
    spec = city_spec(size)
    rng = np.random.default_rng([int(seed), list(CITY_SIZES).index(size), 0xC17])
    b = _Builder(spec, rng)
    n, p, hw, sw = spec.blocks, spec.block_pitch, spec.road_half_width, spec.sidewalk_width
    origin = -n * p / 2
    lines = [origin + k * p for k in range(n + 1)]
    outer0, outer1 = lines[0] - hw - sw, lines[-1] + hw + sw

    b.paint(outer0, outer1, outer0, outer1, color=SIDEWALK)
    for i in range(n):
        for j in range(n):
            x0, x1 = lines[i] + hw + sw, lines[i + 1] - hw - sw
            y0, y1 = lines[j] + hw + sw, lines[j + 1] - hw - sw
            centre = math.hypot((x0 + x1) / 2, (y0 + y1) / 2) / (n * p / 2 * math.sqrt(2))
            b.block(int(x0), int(x1), int(y0), int(y1), downtown=max(0.0, 1.0 - centre) ** 1.5 if n > 2 else 1.0)
            b.street_trees(int(x0), int(x1), int(y0), int(y1))
    for g in lines:
        b.paint(g - hw, g + hw, lines[0] - hw, lines[-1] + hw, cls=ROAD_ALONG_Y)
        b.paint(lines[0] - hw, lines[-1] + hw, g - hw, g + hw, cls=ROAD_ALONG_X)
    for gx in lines:
        for gy in lines:
            b.paint(gx - hw, gx + hw, gy - hw, gy + hw, cls=CROSSING)

    boxes = b.boxes
    lo = _tensor([x[0] for x in boxes]).reshape(-1, 3)
    hi = _tensor([x[1] for x in boxes]).reshape(-1, 3)
    centers = _tensor([s[0] for s in b.spheres]).reshape(-1, 3)
    radii = _tensor([s[1] for s in b.spheres]).reshape(-1)
    top = max([0.0] + [float(v) for v in hi[:, 2]] + [float(c + r) for c, r in zip(centers[:, 2], radii)])
    h = float(b.h)
    return CityScene(
        size=size,
        seed=int(seed),
        half_extent=h,
        scene_box=_tensor([[-h, -h, -1.0], [h, h, math.ceil(top) + 2.0]]),
        boxes=torch.stack([lo, hi], dim=1),
        box_kind=_tensor([x[2] for x in boxes], torch.int64).reshape(-1),
        box_wall=_tensor([x[3] for x in boxes]).reshape(-1, 3),
        box_roof=_tensor([x[4] for x in boxes]).reshape(-1, 3),
        box_window=_tensor([x[5] for x in boxes]).reshape(-1, 3),
        box_floor_height=_tensor([x[6] for x in boxes]).reshape(-1),
        box_floors=_tensor([x[7] for x in boxes], torch.int64).reshape(-1),
        box_column_width=_tensor([x[8] for x in boxes]).reshape(-1),
        box_window_width=_tensor([x[9] for x in boxes]).reshape(-1),
        box_window_height=_tensor([x[10] for x in boxes]).reshape(-1),
        sphere_centers=centers,
        sphere_radii=radii,
        sphere_colors=_tensor([s[2] for s in b.spheres]).reshape(-1, 3),
        road_origin=origin,
        block_pitch=p,
        blocks=n,
        road_half_width=hw,
        sidewalk_width=sw,
        ground_albedo=torch.from_numpy(b.albedo.copy()),
        ground_class=torch.from_numpy(b.cls.copy()),
        grid_cell=spec.grid_cell,
    )
