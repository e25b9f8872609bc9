"""A dataset restricted to some of its images, without copying or re-decoding them.

The ``independent-2d`` baseline (Block-NeRF style) trains each cluster model on its cluster's
images only. The subset shares the full dataset's image and depth sources (and so their decoded
image caches): subset image i is full image ``indices[i]``. The scene box, point cloud and
background stay those of the full dataset, since every cluster model covers the whole scene.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import Tensor

from nerfxl.data.dataset import Dataset
from nerfxl.data.images import DepthSource, ImageSource


def as_index_list(indices: Sequence[int] | Tensor, n: int) -> list[int]:
    """Validated indices into ``n`` items as a list of ints (bool masks of length n allowed).

    Raises:
        ValueError: an index outside [0, n), a repeated index, or no index at all.
    """
    t = torch.as_tensor(indices)
    if t.dtype == torch.bool:
        if t.shape != (n,):
            raise ValueError(f"a mask must have {n} entries, got {list(t.shape)}")
        t = t.nonzero().flatten()
    out = [int(i) for i in t.reshape(-1).tolist()]
    if not out:
        raise ValueError("a subset needs at least one image")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"image index {bad[0]} is outside the dataset's {n} images")
    if len(set(out)) != len(out):
        raise ValueError("image indices must not repeat")  # a repeat would silently weight that image twice
    return out


class _SubsetView:
    """Items ``indices`` of a lazily loading source, re-indexed 0..M−1: ``len``, ``get``, the
    parent's ``cache`` (its keys are parent indices), and the mapped ``paths`` and ``sizes``."""

    def __init__(self, source, indices: Sequence[int]):
        self.source = source
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def cache(self):
        return self.source.cache

    @property
    def paths(self) -> list:
        return [self.source.paths[i] for i in self.indices]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [self.source.sizes[i] for i in self.indices]

    def get(self, index: int) -> Tensor:
        """The parent's item ``indices[index]`` (uint8 [H, W, C] images, float32 [H, W] depths)."""
        return self.source.get(self.indices[index])


class ImageSubset(_SubsetView):
    """Images ``indices`` of an :class:`ImageSource`, re-indexed 0..M−1.

    Implements what :class:`~nerfxl.data.sampler.RayBatchSampler` and evaluation use: ``len``,
    ``get``, ``rgb``, ``background``, ``cache``, plus ``paths`` and ``sizes`` for reports.
    """

    def __init__(self, source: ImageSource | "ImageSubset", indices: Sequence[int]):
        super().__init__(source, indices)

    @property
    def background(self) -> Tensor:
        return self.source.background

    @property
    def downscale(self) -> float:
        return self.source.downscale

    def rgb(self, index: int) -> Tensor:
        """float32 [H, W, 3] of subset image ``index``."""
        return self.source.rgb(self.indices[index])


class DepthSubset(_SubsetView):
    """Depth maps ``indices`` of a :class:`DepthSource`, re-indexed 0..M−1 (``len``, ``get``)."""

    def __init__(self, source: DepthSource | "DepthSubset", indices: Sequence[int]):
        super().__init__(source, indices)

    @property
    def scale(self) -> float:
        return self.source.scale


def subset_dataset(dataset: Dataset, indices: Sequence[int] | Tensor) -> Dataset:
    """The images ``indices`` of ``dataset`` (in that order) as a dataset of their own.

    Args:
        dataset: N images.
        indices: [M] distinct ints in [0, N), or an [N] bool mask.
    Returns:
        A :class:`Dataset` of M images: cameras, images, depths and names selected; scene box,
        points, format, root and split shared with ``dataset``; ``metadata["subset_of"]`` records
        the parent indices.
    """
    chosen = as_index_list(indices, len(dataset))
    index = torch.tensor(chosen, dtype=torch.int64)
    return dataclasses.replace(
        dataset,
        cameras=dataset.cameras[index],
        images=ImageSubset(dataset.images, chosen),
        depths=None if dataset.depths is None else DepthSubset(dataset.depths, chosen),
        image_names=[dataset.image_names[i] for i in chosen] if dataset.image_names else [],
        metadata={**dataset.metadata, "subset_of": chosen},
    )
