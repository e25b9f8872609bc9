"""Parsers for the dataset formats users bring; each returns a :class:`ParsedScene` of all frames.

Use :func:`nerfxl.data.load.load_dataset` rather than these directly: it detects the format and cuts
one split out of the parsed scene.
"""

from __future__ import annotations

from nerfxl.data.formats.blender import parse_blender
from nerfxl.data.formats.colmap import parse_colmap
from nerfxl.data.formats.common import ALL_SPLITS, SPLITS, ParsedScene, PrescaledImages
from nerfxl.data.formats.llff import parse_llff
from nerfxl.data.formats.matrixcity import parse_matrixcity
from nerfxl.data.formats.meganerf import parse_meganerf
from nerfxl.data.formats.nerfstudio import parse_nerfstudio

PARSERS = {
    "nerfstudio": parse_nerfstudio,
    "blender": parse_blender,
    "colmap": parse_colmap,
    "mega-nerf": parse_meganerf,
    "matrixcity": parse_matrixcity,
    "llff": parse_llff,
}
FORMAT_NAMES = tuple(PARSERS)

__all__ = ["ALL_SPLITS", "FORMAT_NAMES", "PARSERS", "SPLITS", "ParsedScene", "PrescaledImages", "parse_blender",
           "parse_colmap", "parse_llff", "parse_matrixcity", "parse_meganerf", "parse_nerfstudio"]
