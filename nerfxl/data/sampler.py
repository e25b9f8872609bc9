"""Seeded random ray batches drawn across many images.

Every rank of a distributed job must draw the *identical* batch at a step without talking to the
others, and a resumed run must draw the batches it would have drawn: the batch of step ``s`` is a
pure function of (seed, s).

For datasets larger than the image cache, rays are drawn from a *pool* of images that changes every
``pool_steps`` steps (the pool fits the cache), so a step touches cached images only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nerfxl.data.dataset import Dataset
from nerfxl.data.images import composite_on_background
from nerfxl.data.rays import RayBundle, generate_rays


def generator_for(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``seed`` and the ``stream`` integers."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(s) & 0xFFFFFFFF for s in stream]])
    return torch.Generator().manual_seed(int(state.generate_state(1, dtype=np.uint64)[0] >> 1))


@dataclass
class RayBatch:
    """B sampled pixels.

    Attributes:
        image_indices: [B] int64.
        pixels: [B, 2] int64 (u, v).
        rgb: [B, 3] float32 target colour (alpha composited onto the dataset background).
        alpha: [B] float32 target alpha (1 for images without alpha).
        depth: [B] float32 target z-depth, 0 where unknown; None without depth maps.
    """

    image_indices: Tensor
    pixels: Tensor
    rgb: Tensor
    alpha: Tensor
    depth: Tensor | None = None

    def __len__(self) -> int:
        return self.image_indices.shape[0]

    def to(self, device) -> "RayBatch":
        return RayBatch(
            self.image_indices.to(device), self.pixels.to(device), self.rgb.to(device), self.alpha.to(device),
            None if self.depth is None else self.depth.to(device),
        )

    def rays(self, dataset: Dataset, camera_to_worlds: Tensor | None = None) -> RayBundle:
        cameras = dataset.cameras.to(self.pixels.device)
        return generate_rays(cameras, self.image_indices, self.pixels, camera_to_worlds)


class RayBatchSampler:
    """Draws :class:`RayBatch` es of ``batch_size`` pixels, uniformly over all pixels of the pool.

    Args:
        dataset: the training split.
        batch_size: pixels per batch.
        seed: the run's seed.
        pool_size: images in the active pool; None = as many as the image cache holds (all of a
            small dataset, in which case the pool never changes).
        pool_steps: steps between pool changes when the pool is smaller than the dataset.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, pool_size: int | None = None, pool_steps: int = 500):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        n = len(dataset)
        if n == 0:
            raise ValueError("cannot sample rays from an empty dataset")
        cams = dataset.cameras
        self.pixel_counts = (cams.width * cams.height).to(torch.float64)
        if pool_size is None:
            per_image = int(self.pixel_counts.max().item()) * 4
            pool_size = max(1, dataset.images.cache.max_bytes // max(per_image, 1))
        self.pool_size = int(min(pool_size, n))
        self.pool_steps = int(pool_steps)
        self._stack: Tensor | None = None  # all images stacked, when they are equal-sized and fit

    def pool(self, step: int) -> Tensor:
        """[P] int64 image indices the batch of ``step`` draws from."""
        n = len(self.dataset)
        if self.pool_size >= n:
            return torch.arange(n)
        g = generator_for(self.seed, 0x9001, step // self.pool_steps)
        return torch.randperm(n, generator=g)[: self.pool_size].sort().values

    def sample(self, step: int) -> RayBatch:
        g = generator_for(self.seed, step)
        pool = self.pool(step)
        weights = self.pixel_counts[pool]
        choice = torch.multinomial(weights, self.batch_size, replacement=True, generator=g)
        image_indices = pool[choice]
        u01 = torch.rand(self.batch_size, 2, generator=g, dtype=torch.float64)
        w = self.dataset.cameras.width[image_indices]
        h = self.dataset.cameras.height[image_indices]
        u = (u01[:, 0] * w).long().clamp_max(w - 1)
        v = (u01[:, 1] * h).long().clamp_max(h - 1)
        pixels = torch.stack([u, v], dim=-1)
        raw = self._gather(image_indices, u, v)
        rgb = composite_on_background(raw, self.dataset.background)
        alpha = raw[:, 3].float() / 255.0 if raw.shape[-1] == 4 else torch.ones(self.batch_size)
        depth = None
        if self.dataset.depths is not None:
            depth = torch.empty(self.batch_size)
            for i, sel in _groups(image_indices):
                depth[sel] = self.dataset.depths.get(i)[v[sel], u[sel]]
        return RayBatch(image_indices, pixels, rgb, alpha, depth)

    def _gather(self, image_indices: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """uint8 [B, C] pixel values."""
        stack = self._all_images_stacked()
        if stack is not None:
            return stack[image_indices, v, u]
        images = self.dataset.images
        out: Tensor | None = None
        for i, sel in _groups(image_indices):
            px = images.get(i)[v[sel], u[sel]]
            if out is None:
                out = torch.empty(len(image_indices), px.shape[-1], dtype=torch.uint8)
            if px.shape[-1] != out.shape[-1]:
                # RGB and RGBA images mixed in one batch: every pixel gets an alpha (opaque where
                # its image has none) so transparent pixels are still composited.
                out, px = _with_alpha(out), _with_alpha(px)
            out[sel] = px
        return out

    def _all_images_stacked(self) -> Tensor | None:
        """One [N, H, W, C] tensor for small equal-sized datasets: vectorised gathers, no loop."""
        if self._stack is not None:
            return self._stack
        cams = self.dataset.cameras
        n = len(cams)
        same_size = bool((cams.width == cams.width[0]).all() and (cams.height == cams.height[0]).all())
        if not same_size or self.pool_size < n:
            return None
        first = self.dataset.images.get(0)
        if first.numel() * n > self.dataset.images.cache.max_bytes:
            return None
        images = [self.dataset.images.get(i) for i in range(n)]
        if len({img.shape[-1] for img in images}) > 1:
            images = [_with_alpha(img) for img in images]
        self._stack = torch.stack(images)
        return self._stack


def _groups(image_indices: Tensor):
    """Yield (image index, positions in the batch) per distinct image, in O(B log B).

    A boolean mask per image would cost O(B) each, O(B · images) per batch: with a pool of
    thousands of images that dominated the step time.
    """
    order = torch.argsort(image_indices, stable=True)
    values, counts = torch.unique_consecutive(image_indices[order], return_counts=True)
    for i, positions in zip(values.tolist(), torch.split(order, counts.tolist())):
        yield i, positions


def _with_alpha(pixels: Tensor) -> Tensor:
    """uint8 [..., 3 or 4] → [..., 4]; an added alpha is 255 (opaque)."""
    if pixels.shape[-1] == 4:
        return pixels
    return torch.cat([pixels, torch.full_like(pixels[..., :1], 255)], dim=-1)
