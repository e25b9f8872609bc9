"""Field configuration (tyro-friendly dataclasses), presets, and the model builder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import Tensor

from nerfxl.errors import ConfigError

from .decoder import ColourDecoder
from .embeddings import AppearanceEmbedding, PoseCorrection
from .grid_hash import HashGrid
from .grid_plane_line import PlaneLineGrid
from .heads import DensityHead, FeatureHead
from .model import RadianceField
from .sky import Background, SkyModel
from .tile import TileField


@dataclass
class GridConfig:
    """The feature grid of every tile."""

    type: Literal["plane-line", "hash"] = "plane-line"
    """Grid family: plane×line factorisation (TensoRF / GridNeRF) or Instant-NGP hash grid."""
    mode: Literal["vm", "ground"] = "vm"
    """Plane-line only: 'vm' = planes xy, xz, yz × lines z, y, x; 'ground' = one xy plane × one z line."""
    base_resolution: tuple[int, int, int] = (32, 32, 32)
    """Plane-line only: grid nodes (x, y, z) per tile at the coarsest level."""
    scales: tuple[int, ...] = (1, 2, 4)
    """Plane-line only: resolution multiple of each level (levels are concatenated)."""
    scale_z: bool = True
    """Plane-line only: also multiply the z resolution by the level scale (off for flat city scenes)."""
    level_scaling: Literal["nodes", "cells"] = "nodes"
    """Plane-line only: level s has R·s nodes per axis ('nodes') or (R − 1)·s + 1 ('cells': s times the
    cells, every coarse node also a fine node; lets plane parallel cut every level)."""
    density_channels: int = 8
    """Plane-line only: density channels per level."""
    appearance_channels: int = 24
    """Plane-line only: appearance channels per level."""
    init_std: float = 0.1
    """Plane-line only: std of the normal initialisation of planes and lines."""
    hash_levels: int = 16
    """Hash only: number of resolution levels."""
    hash_features_per_level: int = 2
    """Hash only: features stored per table entry."""
    hash_log2_size: int = 16
    """Hash only: log2 of the hash table size per level."""
    hash_base_resolution: int = 16
    """Hash only: cells per axis of the coarsest level (per tile)."""
    hash_max_resolution: int = 1024
    """Hash only: cells per axis of the finest level (per tile)."""
    hash_init_scale: float = 1e-4
    """Hash only: table entries start uniform in [-scale, scale]."""


@dataclass
class FieldConfig:
    """The radiance field: per-tile grid and heads, shared decoder and per-image parameters."""

    grid: GridConfig = field(default_factory=GridConfig)
    """Feature grid of each tile."""
    density_reduction: Literal["sum", "linear"] = "sum"
    """Plane-line density features → one value: channel sum or a learned linear layer."""
    density_activation: Literal["auto", "softplus", "trunc_exp", "relu"] = "auto"
    """σ activation; 'auto' = softplus for plane-line, trunc_exp for hash."""
    density_shift: float | None = None
    """Added before the σ activation; None = auto (-10 softplus, -1 trunc_exp, 0 relu)."""
    feature_dim: int = 27
    """Width of the per-tile features fed to the shared decoder (appearance basis / geometry MLP output)."""
    head_width: int = 64
    """Hash only: hidden width of the geometry MLP (hash features → density + features)."""
    head_depth: int = 1
    """Hash only: hidden layers of the geometry MLP."""
    decoder_width: int = 64
    """Hidden width of the shared colour MLP."""
    decoder_depth: int = 2
    """Hidden layers of the shared colour MLP."""
    direction_encoding: Literal["sh", "frequency"] = "sh"
    """View-direction encoding: spherical harmonics or sinusoids."""
    sh_levels: int = 4
    """Spherical-harmonic bands (4 = degree 4, 16 values)."""
    direction_frequencies: int = 4
    """Octaves of the frequency direction encoding."""
    feature_frequencies: int = 2
    """Octaves of the frequency encoding of the tile features fed to the decoder (0 = raw only)."""
    appearance_embedding_dim: int = 0
    """Per-image appearance embedding width (0 = off); novel views use the zero embedding."""
    appearance_init_std: float = 0.01
    """Std of the initial appearance embeddings."""
    pose_correction: bool = False
    """Learn a per-image SE(3) correction of the camera poses."""
    background: Literal["white", "black", "random", "learned", "sky"] = "white"
    """Colour behind the scene: constant, random per ray in training, one learned rgb, or a sky MLP."""
    sky_width: int = 64
    """Hidden width of the sky MLP (background 'sky')."""
    sky_depth: int = 2
    """Hidden layers of the sky MLP (background 'sky')."""

    def resolved_density_activation(self) -> Literal["softplus", "trunc_exp", "relu"]:
        """The σ activation after resolving 'auto'."""
        if self.density_activation != "auto":
            return self.density_activation
        return "trunc_exp" if self.grid.type == "hash" else "softplus"

    def resolved_density_shift(self) -> float:
        """The σ shift after resolving None."""
        if self.density_shift is not None:
            return float(self.density_shift)
        return {"softplus": -10.0, "trunc_exp": -1.0, "relu": 0.0}[self.resolved_density_activation()]

    def validate(self) -> None:
        """Raise :class:`ConfigError` for impossible combinations."""
        g = self.grid
        problems = []
        if g.type not in ("plane-line", "hash"):
            problems.append(f"grid.type {g.type!r} is not 'plane-line' or 'hash'")
        if g.type == "plane-line":
            if len(g.base_resolution) != 3 or min(g.base_resolution) < 2:
                problems.append(f"grid.base_resolution needs three values ≥ 2, got {g.base_resolution}")
            if not g.scales or min(g.scales) < 1:
                problems.append(f"grid.scales must be positive, got {g.scales}")
            if g.density_channels < 1 or g.appearance_channels < 1:
                problems.append("grid.density_channels and grid.appearance_channels must be ≥ 1")
        else:
            if g.hash_levels < 1 or g.hash_features_per_level < 1:
                problems.append("grid.hash_levels and grid.hash_features_per_level must be ≥ 1")
            if not 4 <= g.hash_log2_size <= 30:
                problems.append(f"grid.hash_log2_size must be in [4, 30], got {g.hash_log2_size}")
            if not 1 <= g.hash_base_resolution <= g.hash_max_resolution:
                problems.append("need 1 ≤ grid.hash_base_resolution ≤ grid.hash_max_resolution")
        if self.feature_dim < 1:
            problems.append(f"feature_dim must be ≥ 1, got {self.feature_dim}")
        if self.direction_encoding == "sh" and not 1 <= self.sh_levels <= 5:
            problems.append(f"sh_levels must be 1 to 5, got {self.sh_levels}")
        if self.appearance_embedding_dim < 0:
            problems.append("appearance_embedding_dim must be ≥ 0")
        if min(self.decoder_width, self.head_width, self.sky_width) < 1 or min(self.decoder_depth, self.head_depth, self.sky_depth) < 0:
            problems.append("MLP widths must be ≥ 1 and depths ≥ 0")
        if problems:
            raise ConfigError("field config: " + "; ".join(problems))


FIELD_PRESETS: dict[str, FieldConfig] = {
    # TensoRF-VM-like, small enough to train on a CPU: ~2.1M parameters per tile.
    "plane-line-small": FieldConfig(),
    # GridNeRF / LandMark ground plane (xy plane × z line), 16 + 48 channels per level; ~1.4M per tile.
    "ground-plane": FieldConfig(
        grid=GridConfig(mode="ground", base_resolution=(32, 32, 16), density_channels=16, appearance_channels=48),
        appearance_embedding_dim=16,
        background="sky",
    ),
    # Instant-NGP: 16 levels × 2 features, 2^16 entries per level, geometry MLP → 1 + 15.
    "hash": FieldConfig(
        grid=GridConfig(type="hash"),
        feature_dim=15,
        feature_frequencies=0,
    ),
}


def _derived_seed(seed: int, stream: int) -> int:
    return (int(seed) * 1_000_003 + 7919 * (stream + 1)) % (2**63 - 1)


def build_tile(config: FieldConfig, box: Tensor) -> TileField:
    """One tile field over ``box`` [2, 3] (on the CPU, initialised from the global RNG)."""
    g = config.grid
    activation, shift = config.resolved_density_activation(), config.resolved_density_shift()
    if g.type == "plane-line":
        grid = PlaneLineGrid(g.base_resolution, g.scales, g.density_channels, g.appearance_channels, g.mode,
                             g.scale_z, g.init_std, g.level_scaling)
        density_head = DensityHead(grid.density_dim, config.density_reduction, activation, shift)
        feature_head = FeatureHead(grid.appearance_dim, config.feature_dim, "linear")
    else:
        grid = HashGrid(g.hash_levels, g.hash_features_per_level, g.hash_log2_size, g.hash_base_resolution,
                        g.hash_max_resolution, g.hash_init_scale)
        density_head = DensityHead(1, "sum", activation, shift)
        feature_head = FeatureHead(grid.out_dim, config.feature_dim, "mlp", config.head_width, config.head_depth)
    return TileField(box, grid, density_head, feature_head)


def build_radiance_field(
    config: FieldConfig,
    tile_boxes: Tensor,
    n_images: int,
    tile_ids: Sequence[int] | None = None,
    seed: int | None = None,
) -> RadianceField:
    """Build the model for K tiles on the CPU (move it with ``.to(device)`` afterwards).

    Args:
        config: the field configuration.
        tile_boxes: [K, 2, 3] (or [2, 3] for K = 1) world boxes (min, max) of the tiles.
        n_images: number of training images (appearance embeddings / pose corrections).
        tile_ids: global indices of the tiles to materialise (default: all K). A device in
            NeRF-XL training builds only its own tile(s).
        seed: if given, tile k is initialised from a seed derived from ``(seed, k)`` and the
            shared modules from ``seed``, so every device builds identical shared modules and the
            same tile weights whichever subset it holds (the global RNG is left untouched).
            If None the global RNG is used in order (shared modules first, then the tiles).
    """
    config.validate()
    boxes = torch.as_tensor(tile_boxes, dtype=torch.float32)
    if boxes.dim() == 2:
        boxes = boxes[None]
    if boxes.dim() != 3 or boxes.shape[1:] != (2, 3) or boxes.shape[0] < 1:
        raise ConfigError(f"tile_boxes must be [K, 2, 3], got {tuple(boxes.shape)}")
    bad = (~(boxes[:, 1] > boxes[:, 0]).all(dim=-1)).nonzero().flatten().tolist()
    if bad:
        raise ConfigError(f"tile boxes {bad} have min ≥ max on some axis")
    ids = list(range(boxes.shape[0])) if tile_ids is None else [int(k) for k in tile_ids]
    if not ids or any(not 0 <= k < boxes.shape[0] for k in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"tile_ids {ids} must be distinct indices in 0..{boxes.shape[0] - 1}")
    needs_images = config.appearance_embedding_dim > 0 or config.pose_correction
    if needs_images and n_images < 1:
        raise ConfigError("appearance embeddings / pose correction need n_images ≥ 1")

    def shared():
        decoder = ColourDecoder(
            config.feature_dim, config.appearance_embedding_dim, config.direction_encoding, config.sh_levels,
            config.direction_frequencies, config.feature_frequencies, config.decoder_width, config.decoder_depth,
        )
        appearance = (AppearanceEmbedding(n_images, config.appearance_embedding_dim, config.appearance_init_std)
                      if config.appearance_embedding_dim > 0 else None)
        pose = PoseCorrection(n_images) if config.pose_correction else None
        sky = None
        if config.background == "sky":
            sky = SkyModel(config.appearance_embedding_dim, config.direction_encoding, config.sh_levels,
                           config.direction_frequencies, config.sky_width, config.sky_depth)
        return decoder, appearance, pose, Background(config.background, sky)

    if seed is None:
        decoder, appearance, pose, background = shared()
        tiles = [build_tile(config, boxes[k]) for k in ids]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(seed, -1))
            decoder, appearance, pose, background = shared()
            tiles = []
            for k in ids:
                torch.manual_seed(_derived_seed(seed, k))
                tiles.append(build_tile(config, boxes[k]))
    return RadianceField(tiles, decoder, appearance, pose, background, tile_ids=ids, tile_boxes=boxes)


def preset(name: str) -> FieldConfig:
    """A fresh copy of ``FIELD_PRESETS[name]`` (safe to modify)."""
    if name not in FIELD_PRESETS:
        raise ConfigError(f"unknown field preset {name!r}; choose one of {sorted(FIELD_PRESETS)}")
    return dataclasses.replace(FIELD_PRESETS[name], grid=dataclasses.replace(FIELD_PRESETS[name].grid))
