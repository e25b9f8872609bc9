"""Host block stores: where a model's blocks wait until a window around the camera needs them.

- :class:`MemoryBlockStore`: every block copied once into host memory, each block's planes contiguous
  (pinned when the rendering device is a GPU, so host → device copies run asynchronously).
- :class:`MappedBlockStore`: nothing held; each request reads just that block's rows and columns from
  the checkpoint's safetensors files, which are memory-mapped — for models larger than host memory.

Both serve ``block(ix, iy) -> {plane name: [1, C, h, w]}``, and both read from either kind of checkpoint:
a single-model run (the block is cut out of its whole planes) or a plane-parallel / split run (one
shard per block: ``tile-000-window-NNN``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from nerfxl.errors import CheckpointError

from .window import BlockLayout


class BlockSource:
    """Where the blocks are in a checkpoint: one whole-plane shard, or one shard per block."""

    def __init__(self, checkpoint: Path, layout: BlockLayout, per_block_shards: bool):
        self.checkpoint = Path(checkpoint)
        self.layout = layout
        self.per_block_shards = per_block_shards

    def file_of(self, block: tuple[int, int]) -> Path:
        if self.per_block_shards:
            index = block[0] * self.layout.split.ny + block[1]  # PlaneSplit's region order, x outermost
            return self.checkpoint / f"tile-000-window-{index:03d}.safetensors"
        return self.checkpoint / "tile-000.safetensors"

    def read(self, block: tuple[int, int], handle) -> dict[str, Tensor]:
        """The block's planes from an open safetensors ``handle`` of :meth:`file_of` (only its bytes)."""
        out = {}
        for spec in self.layout.planes:
            piece = handle.get_slice(spec.name)
            if self.per_block_shards:
                t = piece[:]
            else:
                rows, cols = self.layout.block_slice(spec, block)
                t = piece[:, :, rows, cols]
            if tuple(t.shape) != (1, spec.channels, spec.block_rows, spec.block_cols):
                raise CheckpointError(f"{self.file_of(block)}: {spec.name} of block {block} is {list(t.shape)}, "
                                      f"expected {[1, spec.channels, spec.block_rows, spec.block_cols]}")
            out[spec.name] = t.contiguous()
        return out

    def open(self, block: tuple[int, int]):
        path = self.file_of(block)
        try:
            return safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: cannot be read ({e})") from None


class MemoryBlockStore:
    """All blocks in host memory (pinned with ``pin``), read once from ``source``."""

    def __init__(self, source: BlockSource, pin: bool = False):
        self.layout = source.layout
        self._blocks: dict[tuple[int, int], dict[str, Tensor]] = {}
        split = self.layout.split
        handles = {}
        try:
            for ix in range(split.nx):
                for iy in range(split.ny):
                    path = source.file_of((ix, iy))
                    if path not in handles:
                        handles[path] = source.open((ix, iy))
                    tensors = source.read((ix, iy), handles[path])
                    self._blocks[(ix, iy)] = {n: t.pin_memory() if pin else t for n, t in tensors.items()}
        finally:
            handles.clear()

    def block(self, ix: int, iy: int) -> dict[str, Tensor]:
        return self._blocks[(ix, iy)]


class MappedBlockStore:
    """No block held: each :meth:`block` reads that block's bytes from the memory-mapped files."""

    def __init__(self, source: BlockSource):
        self.layout = source.layout
        self.source = source
        with self.source.open((0, 0)):  # fail now, with the file's name, if it cannot be read
            pass

    def block(self, ix: int, iy: int) -> dict[str, Tensor]:
        with self.source.open((ix, iy)) as handle:
            return self.source.read((ix, iy), handle)


def block_device_bytes(layout: BlockLayout, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one block's planes on the device."""
    return layout.block_numel * torch.empty((), dtype=dtype).element_size()
