"""Radiance fields split into axis-aligned tiles: grids, heads, the shared decoder and the model.

- :class:`PlaneLineGrid` (TensoRF VM / GridNeRF ground plane) and :class:`HashGrid` (Instant-NGP),
  both over the normalised cube [-1, 1]^3 of one tile.
- :class:`DensityHead`, :class:`FeatureHead`: tile-local heads.
- :class:`ColourDecoder`, :class:`AppearanceEmbedding`, :class:`PoseCorrection`,
  :class:`Background` / :class:`SkyModel`: modules shared by every tile.
- :class:`TileField` (one tile) and :class:`RadianceField` (K tiles + shared modules).
- :class:`FieldConfig`, :class:`GridConfig`, :data:`FIELD_PRESETS`, :func:`build_radiance_field`.
"""

from .config import FIELD_PRESETS, FieldConfig, GridConfig, build_radiance_field, preset
from .decoder import ColourDecoder
from .embeddings import AppearanceEmbedding, PoseCorrection, compose, se3_exp, skew
from .encodings import DirectionEncoding, frequency_encoding, frequency_encoding_dim, spherical_harmonics
from .grid_hash import HashGrid
from .grid_plane_line import PlaneLineGrid
from .heads import DensityHead, FeatureHead, density_activation, trunc_exp
from .mlp import make_mlp
from .model import RadianceField
from .sky import Background, SkyModel
from .tile import TileField

__all__ = [
    "AppearanceEmbedding",
    "Background",
    "ColourDecoder",
    "DensityHead",
    "DirectionEncoding",
    "FIELD_PRESETS",
    "FeatureHead",
    "FieldConfig",
    "GridConfig",
    "HashGrid",
    "PlaneLineGrid",
    "PoseCorrection",
    "RadianceField",
    "SkyModel",
    "TileField",
    "build_radiance_field",
    "compose",
    "density_activation",
    "frequency_encoding",
    "frequency_encoding_dim",
    "make_mlp",
    "preset",
    "se3_exp",
    "skew",
    "spherical_harmonics",
    "trunc_exp",
]
