"""The numbers behind each city size (see the table in :mod:`nerfxl.data.city`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nerfxl.errors import NerfxlError

CitySize = Literal["tiny", "small", "medium", "large"]

# Bump when anything that changes the generated files changes, so cached cities get regenerated.
CITY_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CitySpec:
    """Layout, capture and output parameters of one city size.

    Lengths are metres. ``passes`` lists (altitude, line axis) of the aerial lawn-mower flights:
    axis 0 flies lines along x (headings ±x), axis 1 along y (headings ±y); alternate lines fly in
    opposite directions, so every facade orientation is seen.
    """

    blocks: int  # blocks per side; the city is blocks × blocks
    max_floors: int  # tallest base building (downtown); a setback tower adds up to 3 floors
    min_floors: int
    image_wh: tuple[int, int]
    fov_x_deg: float
    supersample: int  # regular n × n sub-pixel samples per pixel (odd: the middle one is the pixel centre)
    passes: tuple[tuple[float, int], ...]
    lines_per_pass: int
    views_per_line: int
    pitch_deg: tuple[float, float]  # camera pitch below the horizon, drawn uniformly
    test_views: int
    street_views: int  # low (12 m) views along streets, added to the training split
    points: int  # surface points in points.ply
    block_pitch: float = 60.0  # road centre line to road centre line
    road_half_width: float = 5.0  # two 4.4 m lanes plus edge lines
    sidewalk_width: float = 3.0
    verge: float = 2.0  # grass strip outside the outer ring road, to the end of the ground plane
    grid_cell: float = 8.0  # acceleration grid cell (metres)

    @property
    def n_train(self) -> int:
        return len(self.passes) * self.lines_per_pass * self.views_per_line + self.street_views

    @property
    def half_extent(self) -> float:
        """Half the side of the square ground plane, centred on the origin."""
        return self.blocks * self.block_pitch / 2 + self.road_half_width + self.sidewalk_width + self.verge


CITY_SIZES: dict[str, CitySpec] = {
    "tiny": CitySpec(
        blocks=2, min_floors=2, max_floors=5, image_wh=(96, 72), fov_x_deg=50.0, supersample=3,
        passes=((40.0, 0), (48.0, 1), (44.0, 1), (52.0, 0)), lines_per_pass=3, views_per_line=2,
        pitch_deg=(55.0, 68.0), test_views=6, street_views=0, points=3000,
    ),
    "small": CitySpec(
        blocks=4, min_floors=2, max_floors=8, image_wh=(160, 120), fov_x_deg=60.0, supersample=3,
        passes=((58.0, 0), (70.0, 1), (64.0, 1), (76.0, 0)), lines_per_pass=5, views_per_line=5,
        pitch_deg=(45.0, 58.0), test_views=12, street_views=0, points=10000,
    ),
    "medium": CitySpec(
        blocks=8, min_floors=2, max_floors=12, image_wh=(200, 150), fov_x_deg=60.0, supersample=3,
        passes=((76.0, 0), (90.0, 1), (83.0, 1), (97.0, 0)), lines_per_pass=10, views_per_line=10,
        pitch_deg=(42.0, 58.0), test_views=32, street_views=16, points=30000,
    ),
    "large": CitySpec(
        blocks=16, min_floors=2, max_floors=16, image_wh=(200, 150), fov_x_deg=60.0, supersample=3,
        passes=((94.0, 0), (110.0, 1), (102.0, 1), (118.0, 0)), lines_per_pass=12, views_per_line=12,
        pitch_deg=(40.0, 58.0), test_views=48, street_views=32, points=60000,
    ),
}


def city_spec(size: str) -> CitySpec:
    if size not in CITY_SIZES:
        raise NerfxlError(f"unknown city size {size!r}; choose one of {', '.join(CITY_SIZES)}")
    return CITY_SIZES[size]
