"""The procedural city as plain arrays: boxes, spheres and a ground layout.

World: metres, z up, ground plane z = 0 over the square [-H, H]² (H = ``half_extent``).

Primitive ids used everywhere in this package (``hit_id``):
    -1      sky (the ray left the scene)
     0      ground plane
     1 + b  box b (buildings, setback towers, rooftop units, tree trunks)
     1 + B + s  sphere s (tree crowns), B = number of boxes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from nerfxl.data.city.grid import CellGrid

# Box kinds: what the facade shader draws on them.
BUILDING = 0  # window grid on the walls, roof colour on top
ROOF_UNIT = 1  # plain walls (lift housings, air conditioning)
TRUNK = 2  # plain, tree trunk under a crown

# Ground classes (one byte per 1 m cell); markings are drawn analytically on the road classes.
ROAD_ALONG_Y = 0  # a road running along y: centre line at constant x
ROAD_ALONG_X = 1
CROSSING = 2  # where two roads meet: plain asphalt
OTHER = 3  # sidewalks, plazas, grass: the albedo raster alone

SKY_ID = -1
GROUND_ID = 0


@dataclass
class CityScene:
    """Everything needed to ray-cast and shade the city. float64 geometry, float64 albedos in [0, 1].

    Attributes:
        size, seed: what :func:`build_city` was called with ("custom" for hand-built scenes).
        half_extent: H; the ground plane is [-H, H]² at z = 0.
        scene_box: [2, 3] (min, max) bounds of all content (ground included, small margins).
        boxes: [B, 2, 3] axis-aligned boxes as (min corner, max corner).
        box_kind: [B] int64, BUILDING / ROOF_UNIT / TRUNK.
        box_wall, box_roof, box_window: [B, 3] albedos of walls, top face and window glass.
        box_floor_height: [B] storey height; floors count from the box's own bottom.
        box_floors: [B] int64 storeys with windows (above them is a window-less parapet).
        box_column_width: [B] nominal window column pitch; each wall fits a whole number of columns.
        box_window_width, box_window_height: [B] window size as a fraction of column / storey.
        sphere_centers: [S, 3], sphere_radii: [S], sphere_colors: [S, 3] (tree crowns).
        road_origin: x (and y) of the first road centre line; roads repeat every ``block_pitch``.
        blocks: number of blocks per side (roads: blocks + 1 lines per axis).
        road_half_width, sidewalk_width: metres.
        ground_albedo: [G, G, 3] albedo of 1 m ground cells, cell (i, j) covers
            x ∈ [-H + i, -H + i + 1), y ∈ [-H + j, -H + j + 1); G = 2H (H is a whole number).
        ground_class: [G, G] uint8 ground classes (ROAD_ALONG_Y, ...).
        grid_cell: side of the acceleration grid's cells (metres).
        grid: the acceleration grid, built from the primitives on construction (so build a new
            scene rather than editing the primitive tensors of an existing one).
    """

    size: str
    seed: int
    half_extent: float
    scene_box: Tensor
    boxes: Tensor
    box_kind: Tensor
    box_wall: Tensor
    box_roof: Tensor
    box_window: Tensor
    box_floor_height: Tensor
    box_floors: Tensor
    box_column_width: Tensor
    box_window_width: Tensor
    box_window_height: Tensor
    sphere_centers: Tensor
    sphere_radii: Tensor
    sphere_colors: Tensor
    road_origin: float
    block_pitch: float
    blocks: int
    road_half_width: float
    sidewalk_width: float
    ground_albedo: Tensor
    ground_class: Tensor
    grid_cell: float = 8.0
    grid: CellGrid = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from nerfxl.data.city.grid import build_grid  # grid imports this module

        self.grid = build_grid(self.boxes, self.sphere_centers, self.sphere_radii, self.half_extent, self.grid_cell)

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def num_spheres(self) -> int:
        return int(self.sphere_centers.shape[0])

    @property
    def max_height(self) -> float:
        """Highest point of any box or sphere (0 for an empty city)."""
        tops = [torch.zeros((), dtype=torch.float64)]
        if self.num_boxes:
            tops.append(self.boxes[:, 1, 2].max())
        if self.num_spheres:
            tops.append((self.sphere_centers[:, 2] + self.sphere_radii).max())
        return float(torch.stack(tops).max())
