"""Lazy image and depth sources with a bounded in-memory cache.

A dataset of 100 000 frames must not need 100 000 decoded images in RAM: images are decoded on
first use and kept in a least-recently-used cache bounded in bytes. Decoded images are cached as
uint8 (4× smaller than float) and converted on access.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from nerfxl.errors import DataError

DEFAULT_CACHE_BYTES = 2 * 1024**3


class LRUCache:
    """A thread-safe LRU cache of tensors bounded by their total size in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[int, Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: int, load: Callable[[], Tensor]) -> Tensor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load()  # decode outside the lock so several threads can decode at once
        size = value.numel() * value.element_size()
        with self._lock:
            if key not in self._items and size <= self.max_bytes:
                self._items[key] = value
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.numel() * old.element_size()
        return value


def read_image_file(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to uint8 [H, W, 3 or 4]; resize by area averaging to ``size`` = (W, H).

    Memory: a full-resolution uint8 decode at most (never float); JPEGs read at a smaller ``size``
    are decoded at a reduced scale to begin with.

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            if size is not None and im.format == "JPEG":
                # JPEG decodes straight at 1/2, 1/4 or 1/8 scale (the largest still ≥ size), so a
                # large photo read downscaled never exists at full resolution in memory.
                im.draft(None, tuple(size))
            im.load()
            if im.mode not in ("RGB", "RGBA"):
                has_alpha = "A" in im.getbands() or "transparency" in im.info
                im = im.convert("RGBA" if has_alpha else "RGB")
            if size is not None and im.size != tuple(size):
                im = im.resize(tuple(size), Image.Resampling.BOX)
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(path, f"image cannot be read ({e})") from None


class ImageSource:
    """N images read lazily from files.

    Args:
        paths: one file per image.
        sizes: [(W, H)] the size each image must have after ``downscale`` (the camera's size).
        downscale: the factor the files are larger than ``sizes`` by (1 = use as is). Files whose
            size, divided by this factor, does not round to ``sizes`` raise a :class:`DataError`.
        background: RGB in [0, 1] that images with alpha are composited onto in :meth:`rgb`.
        cache_bytes: bound of the decoded-image cache.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        sizes: Sequence[tuple[int, int]],
        downscale: float = 1.0,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        if len(paths) != len(sizes):
            raise ValueError("paths and sizes differ in length")
        self.paths = [Path(p) for p in paths]
        self.sizes = [(int(w), int(h)) for w, h in sizes]
        self.downscale = float(downscale)
        self.background = torch.tensor(background, dtype=torch.float32)
        self.cache = LRUCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, index: int) -> Tensor:
        path = self.paths[index]
        want = self.sizes[index]
        if self.downscale == 1.0:
            array = read_image_file(path)
            if (array.shape[1], array.shape[0]) != want:
                raise DataError(path, f"image is {array.shape[1]}x{array.shape[0]} but its camera says {want[0]}x{want[1]}")
        else:
            try:
                with Image.open(path) as im:
                    full = im.size
            except FileNotFoundError:
                raise DataError(path, "image file is missing") from None
            except (OSError, ValueError, SyntaxError) as e:
                raise DataError(path, f"image cannot be read ({e})") from None
            expect = (round(full[0] / self.downscale), round(full[1] / self.downscale))
            if expect != want:
                raise DataError(path, f"image is {full[0]}x{full[1]}; downscaled by {self.downscale:g} that is "
                                      f"{expect[0]}x{expect[1]}, but its camera says {want[0]}x{want[1]}")
            array = read_image_file(path, want)
        return torch.from_numpy(array)

    def get(self, index: int) -> Tensor:
        """uint8 [H, W, C], C = 3 or 4 (alpha kept), from the cache when possible."""
        return self.cache.get(index, lambda: self._decode(index))

    def rgb(self, index: int) -> Tensor:
        """float32 [H, W, 3] in [0, 1], alpha composited onto :attr:`background`."""
        return composite_on_background(self.get(index), self.background)


def composite_on_background(pixels: Tensor, background: Tensor) -> Tensor:
    """uint8 [..., 3 or 4] → float32 [..., 3]; straight alpha blended onto ``background`` [3]."""
    values = pixels.to(torch.float32) / 255.0
    if values.shape[-1] == 4:
        alpha = values[..., 3:4]
        return values[..., :3] * alpha + background.to(values) * (1.0 - alpha)
    return values[..., :3]


class PosesOnlyImages(ImageSource):
    """The images of a dataset loaded poses-only (``load_dataset(..., poses_only=True)``): sizes and
    file names are known, nothing is read. For planning (``nerfxl plan``, ``nerfxl info``) on camera
    sets whose images are absent or too many to touch; reading one is a :class:`DataError`."""

    def _decode(self, index: int) -> Tensor:
        raise DataError(self.paths[index], "this dataset was loaded poses-only (its images are not read); "
                                           "load it without poses_only to train on it")


class DepthSource:
    """N depth maps read lazily: float32 [H, W] z-depth in scene units, 0 where unknown.

    Files are ``.npy`` (float, multiplied by ``scale``) or 16-bit PNG (integer × ``scale``, the
    nerfstudio convention with ``depth_unit_scale_factor``).
    """

    def __init__(self, paths: Sequence[Path], sizes: Sequence[tuple[int, int]], scale: float = 1.0,
                 cache_bytes: int = DEFAULT_CACHE_BYTES // 4):
        self.paths = [Path(p) for p in paths]
        self.sizes = [(int(w), int(h)) for w, h in sizes]
        self.scale = float(scale)
        self.cache = LRUCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, index: int) -> Tensor:
        path = self.paths[index]
        try:
            if path.suffix == ".npy":
                depth = np.load(path, allow_pickle=False).astype(np.float32)
            else:
                with Image.open(path) as im:
                    depth = np.asarray(im).astype(np.float32)
        except FileNotFoundError:
            raise DataError(path, "depth file is missing") from None
        except (OSError, ValueError) as e:
            raise DataError(path, f"depth file cannot be read ({e})") from None
        if depth.ndim == 3:
            depth = depth[..., 0]
        want_w, want_h = self.sizes[index]
        if depth.shape != (want_h, want_w):
            # Nearest-neighbour resizing: averaging depths across an edge invents surfaces.
            t = torch.from_numpy(depth)[None, None]
            depth = torch.nn.functional.interpolate(t, size=(want_h, want_w), mode="nearest")[0, 0].numpy()
        depth = depth * self.scale
        depth[~np.isfinite(depth)] = 0.0
        return torch.from_numpy(np.ascontiguousarray(depth))

    def get(self, index: int) -> Tensor:
        return self.cache.get(index, lambda: self._decode(index))
