"""Which training pixels a Mega-NeRF-style tile trains on, seeded batches among them, and how much
of a tile's sampling lands outside the tile.

A tile of the ``independent-3d`` baseline is trained alone on the pixels whose rays cross its
(expanded) box within the renderer's [near, far] limits: the same segment
[max(t_enter, near), min(t_exit, far)] that ``rendering.sampling`` places samples on, so a selected
ray always yields at least one sample in the box and an unselected one never does.

Selections are stored per image in a compressed (CSR) layout of flat pixel indices instead of one
boolean mask per image: a tile typically sees a small part of a large scene, and int32 indices of
the hits cost less than a byte per pixel of every image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nerfxl.data.boxes import intersect_rays_boxes, points_in_boxes
from nerfxl.data.cameras import Cameras
from nerfxl.data.rays import generate_rays
from nerfxl.data.sampler import generator_for

# Rays generated and intersected at once: bounds the working memory (~100 B per ray) independently
# of image size; 2^18 rays keep per-chunk overhead negligible.
DEFAULT_CHUNK = 1 << 18
_TILE_PIXEL_STREAM = 0xB15E  # generator stream of tile batches, apart from the shared sampler's streams


@dataclass
class SelectedPixels:
    """The pixels of a camera set whose rays hit one box, grouped by image.

    Attributes:
        image_indices: [M] int64 camera indices with at least one selected pixel, ascending.
        offsets: [M + 1] int64; the pixels of ``image_indices[m]`` are
            ``flat_pixels[offsets[m]:offsets[m + 1]]``.
        flat_pixels: [S] int32 (int64 for images of 2^31 pixels or more) row-major flat pixel
            indices v · W + u, ascending within each image.
        widths: [M] int64 image widths, to turn flat indices back into (u, v).
        pixels_examined: number of pixels tested (all pixels of the examined images).
    """

    image_indices: Tensor
    offsets: Tensor
    flat_pixels: Tensor
    widths: Tensor
    pixels_examined: int

    def __len__(self) -> int:
        return int(self.flat_pixels.shape[0])

    @property
    def fraction_selected(self) -> float:
        """Selected pixels / examined pixels (nan when nothing was examined)."""
        return len(self) / self.pixels_examined if self.pixels_examined else math.nan

    def pixels_at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Positions [B] int64 in 0..S-1 of the selection → (image_indices [B] int64, pixels [B, 2] int64 (u, v))."""
        group = torch.searchsorted(self.offsets[1:], positions, right=True)
        flat = self.flat_pixels[positions].to(torch.int64)
        w = self.widths[group]
        return self.image_indices[group], torch.stack([flat % w, flat // w], dim=-1)

    def image_mask(self, m: int, height: int) -> Tensor:
        """[H, W] bool mask of the selected pixels of the m-th selected image (``image_indices[m]``)."""
        w = int(self.widths[m])
        mask = torch.zeros(height * w, dtype=torch.bool)
        mask[self.flat_pixels[self.offsets[m]:self.offsets[m + 1]].to(torch.int64)] = True
        return mask.reshape(height, w)


def pixels_hitting_boxes(
    cameras: Cameras,
    boxes: Tensor,
    image_indices: Tensor | None = None,
    near: float = 0.0,
    far: float = math.inf,
    chunk: int = DEFAULT_CHUNK,
) -> list[SelectedPixels]:
    """For each of K boxes, the pixels whose rays cross it within [near, far]; one ray pass for all boxes.

    Args:
        cameras: the training cameras (pixel rays as :func:`nerfxl.data.rays.generate_rays` makes them).
        boxes: [K, 2, 3] boxes (e.g. expanded tiles), or [2, 3] for one box; any float dtype.
        image_indices: optional [N'] int64 subset of cameras to examine (duplicates ignored); default all.
        near, far: limits on the ray parameter t (unit directions, so world units).
        chunk: rays generated and intersected at once (memory bound).
    Returns:
        K :class:`SelectedPixels`, in the order of ``boxes``.
    """
    if boxes.dim() == 2:
        boxes = boxes.unsqueeze(0)
    if boxes.dim() != 3 or boxes.shape[1:] != (2, 3):
        raise ValueError(f"boxes must be [K, 2, 3], got {list(boxes.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be ≥ 1, got {chunk}")
    boxes = boxes.to(cameras.device)
    k = boxes.shape[0]
    # Sorted and deduplicated: the packed selection lists each image once, in ascending order.
    images = torch.arange(len(cameras)) if image_indices is None else torch.unique(torch.as_tensor(image_indices, dtype=torch.int64))
    hits: list[list[tuple[int, Tensor]]] = [[] for _ in range(k)]  # per box: (image, flat indices)
    examined = 0
    for i in images.tolist():
        w, h = int(cameras.width[i]), int(cameras.height[i])
        index_dtype = torch.int32 if w * h < 2**31 else torch.int64
        examined += w * h
        per_box: list[list[Tensor]] = [[] for _ in range(k)]
        for start in range(0, w * h, chunk):
            flat = torch.arange(start, min(start + chunk, w * h), device=cameras.device)
            pixels = torch.stack([flat % w, flat // w], dim=-1)
            rays = generate_rays(cameras, torch.full_like(flat, i), pixels)
            hit = _hits_within(rays.origins, rays.directions, boxes, near, far)  # [R, K]
            for b in range(k):
                per_box[b].append(flat[hit[:, b]].to(index_dtype).cpu())
        for b in range(k):
            selected = torch.cat(per_box[b])
            if selected.numel():
                hits[b].append((i, selected))
    widths = cameras.width.cpu()
    return [_pack(box_hits, widths, examined) for box_hits in hits]


def pixels_hitting_box(
    cameras: Cameras,
    box: Tensor,
    image_indices: Tensor | None = None,
    near: float = 0.0,
    far: float = math.inf,
    chunk: int = DEFAULT_CHUNK,
) -> SelectedPixels:
    """The pixels whose rays cross ``box`` [2, 3] within [near, far]; see :func:`pixels_hitting_boxes`."""
    return pixels_hitting_boxes(cameras, box.reshape(1, 2, 3), image_indices, near, far, chunk)[0]


def draw_tile_pixels(selected: SelectedPixels, batch_size: int, seed: int, step: int, tile: int = 0) -> tuple[Tensor, Tensor]:
    """A batch of pixels drawn uniformly (with replacement) among one tile's selected pixels.

    A pure function of (seed, tile, step), like the shared sampler's batches, so a resumed run
    redraws the same batches; ``tile`` gives every tile its own stream so tiles trained from one
    seed do not draw correlated positions.

    Returns:
        image_indices: [B] int64 camera indices.
        pixels: [B, 2] int64 (u, v).
    """
    if len(selected) == 0:
        raise ValueError(f"tile {tile} has no selected pixels to draw from (no training ray hits its box)")
    g = generator_for(seed, _TILE_PIXEL_STREAM, tile, step)
    positions = torch.randint(len(selected), (int(batch_size),), generator=g)
    return selected.pixels_at(positions)


def fraction_outside_tile(sample_positions: Tensor, tile_box: Tensor, weights: Tensor | None = None) -> float:
    """Share of a tile's training samples that lie outside its own (unexpanded) tile.

    Args:
        sample_positions: [S, 3] sample points (e.g. interval midpoints) of the tile's model.
        tile_box: [2, 3] the tile's box; closed, as the boundary has measure zero.
        weights: optional [S] non-negative weights (e.g. interval lengths); default one per sample.
    Returns:
        A float in [0, 1]; nan when there are no samples (or all weights are zero).
    """
    inside = points_in_boxes(sample_positions, tile_box.to(sample_positions.dtype))[:, 0]
    if weights is None:
        total = inside.numel()
        return (total - int(inside.sum())) / total if total else math.nan
    weights = weights.to(torch.float64)
    total = float(weights.sum())
    return float(weights[~inside].sum()) / total if total > 0 else math.nan


def _hits_within(origins: Tensor, directions: Tensor, boxes: Tensor, near: float, far: float) -> Tensor:
    """[R, K] bool: the ray's segment inside the box, clipped to [near, far], has positive length.

    The boxes are cast to the rays' dtype exactly as ``rendering.sampling`` does, so a face lying
    within round-off of a ray is decided the same way here and at training time (and float32 rays
    against float64 boxes would cost twice the time for no gain).
    """
    t_enter, t_exit, hit = intersect_rays_boxes(origins, directions, boxes.to(origins))
    t0 = t_enter.clamp_min(near)
    t1 = t_exit.clamp_max(far) if math.isfinite(far) else t_exit
    return hit & (t1 > t0)


def _pack(box_hits: list[tuple[int, Tensor]], widths: Tensor, examined: int) -> SelectedPixels:
    counts = torch.tensor([len(f) for _, f in box_hits], dtype=torch.int64)
    images = torch.tensor([i for i, _ in box_hits], dtype=torch.int64)
    flat = torch.cat([f for _, f in box_hits]) if box_hits else torch.zeros(0, dtype=torch.int32)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return SelectedPixels(images, offsets, flat, widths[images], examined)
