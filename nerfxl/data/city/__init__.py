"""A deterministic procedural city with exact ground truth, written as a nerfstudio dataset.

Tests and the default demo need a large scene that can be generated offline and whose true
colour and depth are known exactly; city-sized scenes are what the distributed (tiled)
strategies exist for.

World: metres, z up; a finite ground plane z = 0 over [-H, H]² with a regular grid of roads
(asphalt, dashed centre lines and edge lines that stop short of junctions), sidewalks, and city
blocks of axis-aligned box buildings (window grids by storey and column computed analytically
from the facade coordinates, per-building colours, distinct roofs, setback towers, rooftop units),
parks and plazas, and trees (sphere crowns on box trunks). Shading is lambertian with a fixed sun
plus ambient and no shadows or specular, so radiance is view-independent and a true radiance
field exists. Rays that meet no geometry see the sky: a smooth colour that depends only on the
ray's elevation (pale horizon → blue zenith; grey haze below the horizon, past the ground's
edge) — the background a model must learn. See :mod:`nerfxl.data.city.shading` for the formulas.

Sizes (counts for seed 0; other seeds differ a little). Generation times are wall seconds on
2 CPU cores (one render process per core) while other jobs shared the machine (load 3–4):

======  ======  =======  =====================  =======  ================  ========  =======  ========  =======
size    blocks  ground   buildings/boxes/trees  image    views (tr + te)   rays (M)  points   altitude  time
======  ======  =======  =====================  =======  ================  ========  =======  ========  =======
tiny    2 × 2   140 m    9 / 75 / 61            96×72    24 + 6            1.9       3 000    40–52 m   ~2.5 s
small   4 × 4   260 m    55 / 281 / 199         160×120  100 + 12          19        10 000   58–76 m   ~27 s
medium  8 × 8   500 m    203 / 1 180 / 892      200×150  400 + 16 st + 32  121       30 000   76–97 m   ~200 s
large   16 × 16 980 m    762 / 5 033 / 3 916    200×150  576 + 32 st + 48  177       60 000   94–118 m  ~230 s
======  ======  =======  =====================  =======  ================  ========  =======  ========  =======

Every size: block pitch 60 m (10 m roads, 3 m sidewalks, 44 m lots); storeys 3.6–4.4 m; window
columns 3.6–5 m with windows 1.8–3.3 m wide (≥ ~3 px at the small city's 70–100 m viewing
distances); 3 × 3 regular supersampling per pixel; 60° horizontal field of view (50° for tiny);
aerial cameras pitched 40–68° below the horizon on four lawn-mower passes (lines along x and
along y, alternate lines flown in opposite directions, so every facade orientation is seen),
pulled inwards where needed so ≥ 75 % of every aerial view falls on the ground plane (the rest
is sky beyond its edge). "st" are low (12 m) views along streets (≥ ~60 % ground), in the
training split. Test views are at new positions: random look-at points and headings, altitudes
between the passes', ≥ 5 m from every training camera. Altitudes rise to clear the tallest roof
by 8 m when a seed builds taller than usual.

How hard the small city is: on its test views, a 2× box-downsampled-and-upsampled copy of each
image scores 29.0 dB PSNR against the original, a 3× one 26.7 dB (road markings, windows and tree
edges are deliberately moderate in contrast so that > 25 dB is within reach of a small model).

Public API:

- :func:`build_city` (size, seed) → :class:`CityScene`: the geometry and materials as tensors.
- :func:`cast_rays` (scene, origins, directions) → rgb, depth_t, normal, hit_id: exact analytic
  ray casting through a 2D uniform grid (a vectorised DDA), float64 geometry.
- :func:`render_view`: a supersampled image and z-depth map of one pinhole camera.
- :func:`generate_city` (out_dir, size, seed, overwrite, progress) → the dataset folder;
  :func:`default_city_path` and :func:`ensure_city` for the cache used by ``nerfxl train``.

Determinism: the same (size, seed) gives bit-identical files (seeded numpy generators, per-ray
arithmetic with fixed summation order, no thread-dependent reductions).
"""

from nerfxl.data.city.flights import Intrinsics, intrinsics_for, look_pose, plan_cameras
from nerfxl.data.city.generate import default_city_path, ensure_city, generate_city, is_complete_city
from nerfxl.data.city.layout import build_city
from nerfxl.data.city.raycast import cast_rays, trace_rays
from nerfxl.data.city.render import render_view
from nerfxl.data.city.scene import CityScene
from nerfxl.data.city.specs import CITY_FORMAT_VERSION, CITY_SIZES, CitySize, CitySpec, city_spec

__all__ = [
    "CITY_FORMAT_VERSION",
    "CITY_SIZES",
    "CityScene",
    "CitySize",
    "CitySpec",
    "Intrinsics",
    "build_city",
    "cast_rays",
    "city_spec",
    "default_city_path",
    "ensure_city",
    "generate_city",
    "intrinsics_for",
    "is_complete_city",
    "look_pose",
    "plan_cameras",
    "render_view",
    "trace_rays",
]
