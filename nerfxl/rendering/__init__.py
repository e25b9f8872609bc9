"""Volume rendering over packed samples, segment compositing (NeRF-XL), occupancy and marching."""

from nerfxl.rendering.occupancy import OccupancyGrid
from nerfxl.rendering.sampling import PackedSamples, march_rays_in_box
from nerfxl.rendering.segments import (
    CompositedRays,
    composite_segments,
    render_segments,
    segment_order_from_entry,
)
from nerfxl.rendering.volume import (
    accumulate_along_rays,
    distortion_loss,
    render_weight_from_alpha,
    render_weight_from_density,
)

__all__ = [
    "CompositedRays",
    "OccupancyGrid",
    "PackedSamples",
    "accumulate_along_rays",
    "composite_segments",
    "distortion_loss",
    "march_rays_in_box",
    "render_segments",
    "render_weight_from_alpha",
    "render_weight_from_density",
    "segment_order_from_entry",
]
