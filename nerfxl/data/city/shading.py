"""Albedos, lambertian lighting and the sky: the city's radiance, view-independent by design.

Lighting is ``rgb = albedo · (AMBIENT + SUN · max(0, n · SUN_DIRECTION))`` with no shadows and no
specular term, so the radiance leaving a surface point is the same from every direction and a true
radiance field exists. Only +, −, ×, ÷, floor and sqrt are used (all correctly rounded in IEEE
arithmetic), so renders are bit-reproducible.

Sky (the background a model must learn): rays that meet no geometry get a colour that depends on
their elevation only. With e = d_z of the unit direction,
    e ≥ 0:  SKY_HORIZON + (SKY_ZENITH − SKY_HORIZON) · e (2 − e)
    e < 0:  SKY_HORIZON + (SKY_NADIR − SKY_HORIZON) · (−e) (2 + e)
i.e. a gradient from a pale horizon up to a blue zenith, and down to a grey haze for rays that
pass beside the finite ground plane. It is continuous, and smooth away from the horizon.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfxl.data.city.scene import BUILDING, CROSSING, ROAD_ALONG_X, ROAD_ALONG_Y, CityScene

_sun = torch.tensor([0.4, 0.25, 0.88], dtype=torch.float64)
SUN_DIRECTION = _sun / _sun.norm()  # unit vector towards the sun (from the south-east-ish, high)
AMBIENT = 0.55
SUN = 0.5

SKY_ZENITH = torch.tensor([0.36, 0.56, 0.86], dtype=torch.float64)
SKY_HORIZON = torch.tensor([0.80, 0.86, 0.93], dtype=torch.float64)
SKY_NADIR = torch.tensor([0.60, 0.62, 0.63], dtype=torch.float64)

# Contrasts are moderate on purpose: the small city must be learnable to > 25 dB by a small
# model, and thin high-contrast stripes (zebra crossings, bright lines on black asphalt) cost
# several dB of high-frequency error while adding little to what the scene teaches.
ASPHALT = torch.tensor([0.36, 0.36, 0.38], dtype=torch.float64)
MARKING = torch.tensor([0.72, 0.72, 0.70], dtype=torch.float64)

# Road markings (metres): a dashed centre line and solid edge lines, which stop short of every
# junction.
CENTRE_HALF_WIDTH = 0.2
DASH_PERIOD = 6.0  # dash 3 m, gap 3 m
EDGE_LINE = (0.35, 0.65)  # distance in from the road edge
LINE_STOP = 3.5  # lines end this far from the junction's edge


def lambert(normals: Tensor) -> Tensor:
    """[R, 3] unit normals → [R] shading factor AMBIENT + SUN · max(0, n · sun)."""
    s = SUN_DIRECTION.to(normals)
    cos = normals[:, 0] * s[0] + normals[:, 1] * s[1] + normals[:, 2] * s[2]
    return AMBIENT + SUN * cos.clamp_min(0.0)


def sky_color(directions: Tensor) -> Tensor:
    """[R, 3] unit directions → [R, 3] sky colour by elevation (see module docstring)."""
    e = directions[:, 2:3].clamp(-1.0, 1.0)
    up = e * (2.0 - e)
    down = -e * (2.0 + e)
    h = SKY_HORIZON.to(directions)
    return torch.where(e >= 0, h + (SKY_ZENITH.to(directions) - h) * up, h + (SKY_NADIR.to(directions) - h) * down)


def _frac(x: Tensor) -> Tensor:
    return x - torch.floor(x)


def ground_albedo(scene: CityScene, xy: Tensor) -> Tensor:
    """[R, 2] points on the ground plane (inside [-H, H]²) → [R, 3] albedo."""
    h = scene.half_extent
    g = scene.ground_class.shape[0]
    i = torch.floor(xy[:, 0] + h).long().clamp(0, g - 1)
    j = torch.floor(xy[:, 1] + h).long().clamp(0, g - 1)
    albedo = scene.ground_albedo[i, j].to(xy.dtype)
    cls = scene.ground_class[i, j].long()

    # Coordinates relative to the nearest road centre lines (road lines repeat every block_pitch).
    p = scene.block_pitch
    lx = xy[:, 0] - (scene.road_origin + torch.round((xy[:, 0] - scene.road_origin) / p) * p)
    ly = xy[:, 1] - (scene.road_origin + torch.round((xy[:, 1] - scene.road_origin) / p) * p)
    hw = scene.road_half_width

    def markings(across: Tensor, along: Tensor, other_across: Tensor) -> Tensor:
        """Marking mask on a road; ``across`` is the offset from its centre line, ``along`` the
        coordinate along it, ``other_across`` the offset from the crossing road's centre line."""
        beyond = other_across.abs() - hw >= LINE_STOP
        centre = (across.abs() < CENTRE_HALF_WIDTH) & (_frac(along / DASH_PERIOD) < 0.5)
        edge_d = hw - across.abs()
        edge = (edge_d >= EDGE_LINE[0]) & (edge_d < EDGE_LINE[1])
        return beyond & (centre | edge)

    mark = ((cls == ROAD_ALONG_Y) & markings(lx, xy[:, 1], ly)) | ((cls == ROAD_ALONG_X) & markings(ly, xy[:, 0], lx))
    road = (cls == ROAD_ALONG_Y) | (cls == ROAD_ALONG_X) | (cls == CROSSING)
    albedo = torch.where(road[:, None], ASPHALT.to(albedo), albedo)
    albedo = torch.where(mark[:, None], MARKING.to(albedo), albedo)
    return albedo


def box_albedo(scene: CityScene, box: Tensor, points: Tensor, normals: Tensor) -> Tensor:
    """Albedo of points on box faces.

    Walls of BUILDING boxes carry a window grid computed from the point's facade coordinates:
    u along the wall from its min corner, z up from the box bottom. Each wall holds a whole number
    of window columns (so windows are centred), floors count up from the box bottom and the
    topmost part above the last floor is a window-less parapet; a box standing on the ground has
    taller shop windows on its ground floor.

    Args:
        box: [R] int64 box indices.
        points: [R, 3] hit points on the boxes.
        normals: [R, 3] axis-aligned outward face normals.
    Returns:
        [R, 3] albedo.
    """
    lo, hi = scene.boxes[box, 0].to(points), scene.boxes[box, 1].to(points)
    wall = scene.box_wall[box].to(points)
    roof = scene.box_roof[box].to(points)
    glass = scene.box_window[box].to(points)

    x_wall = normals[:, 0].abs() > 0.5  # ±x faces: u runs along y
    u = torch.where(x_wall, points[:, 1] - lo[:, 1], points[:, 0] - lo[:, 0])
    length = torch.where(x_wall, hi[:, 1] - lo[:, 1], hi[:, 0] - lo[:, 0])
    columns = torch.round(length / scene.box_column_width[box].to(points)).clamp_min(1.0)
    fu = _frac(u / (length / columns)) - 0.5

    storey = scene.box_floor_height[box].to(points)
    zl = (points[:, 2] - lo[:, 2]) / storey
    floor = torch.floor(zl)
    fz = zl - floor
    in_floors = floor < scene.box_floors[box].to(points)
    ww = scene.box_window_width[box].to(points)
    wh = scene.box_window_height[box].to(points)
    sill = 0.5 * (1.0 - wh) + 0.05  # windows sit a little above the storey's middle
    window = in_floors & (fu.abs() < 0.5 * ww) & (fz >= sill) & (fz < sill + wh)
    shop = (floor == 0) & (lo[:, 2] <= 0.0) & (fu.abs() < 0.42) & (fz >= 0.1) & (fz < 0.8)
    on_wall = (scene.box_kind[box] == BUILDING) & (normals[:, 2].abs() < 0.5)
    is_window = on_wall & torch.where(floor == 0, shop | (window & (lo[:, 2] > 0)), window)

    albedo = torch.where(is_window[:, None], glass, wall)
    return torch.where((normals[:, 2] > 0.5)[:, None], roof, albedo)


def shade(scene: CityScene, origins: Tensor, directions: Tensor, t: Tensor, normals: Tensor, hit_id: Tensor) -> Tensor:
    """Radiance of R rays given their first hits (from :func:`nerfxl.data.city.raycast.trace_rays`).

    Args:
        origins, directions: [R, 3] float64, unit directions.
        t: [R] hit distance (inf for sky); normals: [R, 3]; hit_id: [R] int64 (see scene ids).
    Returns:
        [R, 3] float64 rgb in [0, 1].
    """
    rgb = sky_color(directions)
    hit = hit_id >= 0
    if not bool(hit.any()):
        return rgb
    idx = hit.nonzero().squeeze(1)
    hid = hit_id[idx]
    p = origins[idx] + t[idx, None] * directions[idx]
    n = normals[idx]
    albedo = torch.zeros_like(p)
    nb = scene.num_boxes
    on_ground = hid == 0
    on_box = (hid >= 1) & (hid <= nb)
    on_sphere = hid > nb
    if bool(on_ground.any()):
        albedo[on_ground] = ground_albedo(scene, p[on_ground, :2])
    if bool(on_box.any()):
        albedo[on_box] = box_albedo(scene, hid[on_box] - 1, p[on_box], n[on_box])
    if bool(on_sphere.any()):
        albedo[on_sphere] = scene.sphere_colors[hid[on_sphere] - 1 - nb].to(p)
    rgb[idx] = (albedo * lambert(n)[:, None]).clamp(0.0, 1.0)
    return rgb
