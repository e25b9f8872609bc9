"""Ray batches of one Mega-NeRF tile: training pixels drawn only among those whose rays hit its box.

:class:`TilePixelSampler` is a drop-in for the trainer's ``RayBatchSampler`` (``sample(step) ->
RayBatch``): the pixel positions come from :func:`~nerfxl.baselines.ray_selection.draw_tile_pixels`
(a pure function of (seed, tile, step), so a resumed run redraws the same batches) and the targets
are read from the dataset the same way the shared sampler reads them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerfxl.baselines.ray_selection import SelectedPixels, draw_tile_pixels
from nerfxl.data.dataset import Dataset
from nerfxl.data.images import composite_on_background
from nerfxl.data.sampler import RayBatch


class TilePixelSampler:
    """Draws RayBatches of ``batch_size`` pixels uniformly among one tile's selected pixels.

    Args:
        dataset: the training split the selection was made on (same camera order).
        selected: the tile's selected pixels.
        batch_size: pixels per batch.
        seed: the run's seed.
        tile: the tile's index (its own random stream).
    """

    def __init__(self, dataset: Dataset, selected: SelectedPixels, batch_size: int, seed: int, tile: int):
        if len(selected) == 0:
            raise ValueError(f"tile {tile}: no training ray hits its box, nothing to train on")
        self.dataset = dataset
        self.selected = selected
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.tile = int(tile)

    def sample(self, step: int) -> RayBatch:
        image_indices, pixels = draw_tile_pixels(self.selected, self.batch_size, self.seed, step, self.tile)
        rgb, alpha, depth = gather_targets(self.dataset, image_indices, pixels)
        return RayBatch(image_indices, pixels, rgb, alpha, depth)


def gather_targets(dataset: Dataset, image_indices: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Target colour, alpha and depth of B pixels.

    Args:
        image_indices: [B] int64; pixels: [B, 2] int64 (u, v).
    Returns:
        rgb [B, 3] float32 composited onto the dataset background, alpha [B] float32 (1 for images
        without alpha), depth [B] float32 (None when the dataset has no depth maps).
    """
    n = image_indices.shape[0]
    u, v = pixels[:, 0], pixels[:, 1]
    rgb = torch.empty(n, 3)
    alpha = torch.ones(n)
    depth = None if dataset.depths is None else torch.empty(n)
    # One read per distinct image: a batch touches few images compared with its pixels.
    images, inverse = torch.unique(image_indices, return_inverse=True)
    for j, i in enumerate(images.tolist()):
        sel = (inverse == j).nonzero()[:, 0]
        raw = dataset.images.get(i)[v[sel], u[sel]]
        rgb[sel] = composite_on_background(raw, dataset.background)
        if raw.shape[-1] == 4:
            alpha[sel] = raw[:, 3].float() / 255.0
        if depth is not None:
            depth[sel] = dataset.depths.get(i)[v[sel], u[sel]]
    return rgb, alpha, depth
