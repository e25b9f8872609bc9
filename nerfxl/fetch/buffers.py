"""Window buffers on the rendering device and the copy pipeline that fills them (landmark.md §6–7).

A :class:`WindowBuffer` holds the N × N blocks of one window, every plane of the grid, as views of one
contiguous tensor. Dynamic fetching keeps two: the *compute* buffer the renderer reads and the
*prefetch* buffer the next window is copied into; they swap roles when a fetch completes.

:func:`fill_window` fills a buffer with a new window: blocks the previous window also held are copied
device → device from the compute buffer, the others host → device from the block store. The two
streams of copies have no data dependency, so with ``overlap`` they run at the same time (two threads;
on CUDA each with its own stream, so the copy engines work in parallel with each other and with
rendering). Neighbouring blocks share a border row/column, which both write with the same values.

With several processes (``ctx``), only rank 0 reads the host: it copies each new block to the device and
starts broadcasting it at once, then copies the next while that one travels; the other processes
receive the blocks and place them (:func:`copy_new_blocks_shared`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from .window import BlockLayout, Window


class WindowBuffer:
    """The planes of an N × N window as views of one contiguous device tensor."""

    def __init__(self, layout: BlockLayout, n: int, device: torch.device, dtype: torch.dtype = torch.float32):
        self.layout = layout
        self.n = n
        self.flat = torch.zeros(layout.window_numel(n), device=device, dtype=dtype)
        self.planes: dict[str, Tensor] = {}
        offset = 0
        for spec in layout.planes:
            shape = spec.window_shape(n)
            numel = shape[1] * shape[2] * shape[3]
            self.planes[spec.name] = self.flat[offset: offset + numel].view(shape)
            offset += numel
        self.window: Window | None = None
        self._specs = {spec.name: spec for spec in layout.planes}

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def slot(self, name: str, block: tuple[int, int], window: Window | None = None) -> Tensor:
        """The view of ``block``'s nodes of plane ``name`` (``window``: the one being filled)."""
        window = window or self.window
        spec = self._specs[name]
        rows, cols = self.layout.block_slice(spec, block, (window.x0, window.y0))
        return self.planes[name][:, :, rows, cols]


@dataclass
class FillTiming:
    """What one fill did and how long each part took (seconds); with tiles as the fetch unit
    (:mod:`.tiles`) the blocks counted are tiles."""

    kept_blocks: int = 0
    new_blocks: int = 0
    device_copy_s: float = 0.0
    host_copy_s: float = 0.0
    total_s: float = 0.0
    new_bytes: int = 0
    overlapped: bool = True


def copy_stream(device: torch.device):
    """A fresh CUDA stream for this thread's copies (None on CPU) and the context that selects it. The
    stream first waits for the work queued on the device's default stream, where frames are rendered: the
    buffer being filled was read by the last frames before the swap."""
    if device.type != "cuda":
        return None, nullcontext()
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.default_stream(device))
    return stream, torch.cuda.stream(stream)


def copy_kept_blocks(src: WindowBuffer, dst: WindowBuffer, window: Window, blocks: list[tuple[int, int]]) -> float:
    """Device → device copies of ``blocks`` from ``src`` (its current window) into ``dst`` at ``window``."""
    t0 = time.perf_counter()
    stream, selected = copy_stream(dst.flat.device)
    with selected:
        for block in blocks:
            for spec in dst.layout.planes:
                dst.slot(spec.name, block, window).copy_(src.slot(spec.name, block), non_blocking=True)
    if stream is not None:
        stream.synchronize()
    return time.perf_counter() - t0


def copy_new_blocks(store, dst: WindowBuffer, window: Window, blocks: list[tuple[int, int]]) -> tuple[float, int]:
    """Host → device copies of ``blocks`` from ``store`` into ``dst`` at ``window``; (seconds, bytes)."""
    t0 = time.perf_counter()
    nbytes = 0
    stream, selected = copy_stream(dst.flat.device)
    with selected:
        for block in blocks:
            for name, t in store.block(*block).items():
                dst.slot(name, block, window).copy_(t, non_blocking=True)
                nbytes += t.numel() * t.element_size()
    if stream is not None:
        stream.synchronize()
    return time.perf_counter() - t0, nbytes


def _block_planes(row: Tensor, layout: BlockLayout):
    """(plane name, [1, C, h, w] view) of one block packed flat in ``row`` (planes in layout order)."""
    offset = 0
    for spec in layout.planes:
        yield spec.name, row[offset: offset + spec.block_numel].view(1, spec.channels, spec.block_rows,
                                                                     spec.block_cols)
        offset += spec.block_numel


def copy_new_blocks_shared(store, dst: WindowBuffer, window: Window, blocks: list[tuple[int, int]],
                           ctx) -> tuple[float, int]:
    """:func:`copy_new_blocks` on every process of ``ctx``: rank 0 reads ``store`` and broadcasts each
    block right after its host → device copy; the others receive them (their store is not read).
    Every process must call it with the same blocks. Returns (seconds, bytes copied from the host)."""
    from nerfxl.parallel.distributed import broadcast_async

    t0 = time.perf_counter()
    layout, device = dst.layout, dst.flat.device
    staging = torch.empty(len(blocks), layout.block_numel, dtype=dst.flat.dtype, device=device)
    handles, nbytes = [], 0
    for i, block in enumerate(blocks):
        if ctx.rank == 0:
            tensors = store.block(*block)
            for name, piece in _block_planes(staging[i], layout):
                piece.copy_(tensors[name])
            nbytes += staging[i].numel() * staging.element_size()
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()  # the bytes are on the device before they travel
        handles.append(broadcast_async(staging[i], ctx, src=0, name="fetch_broadcast"))
    for i, (block, handle) in enumerate(zip(blocks, handles)):
        if handle is not None:
            handle.wait()
        for name, piece in _block_planes(staging[i], layout):
            dst.slot(name, block, window).copy_(piece)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return time.perf_counter() - t0, nbytes


def fill_window(store, src: WindowBuffer | None, dst: WindowBuffer, window: Window, overlap: bool = True,
                pool: ThreadPoolExecutor | None = None, ctx=None) -> FillTiming:
    """Fill ``dst`` with ``window``: kept blocks from ``src`` (device → device), the rest from ``store``.

    Args:
        src: the buffer the renderer reads (its ``window`` is the current one), or None (all blocks new).
        overlap: run the device copies on a worker of ``pool`` while this thread copies from the host;
            False: one after the other (the reference the benchmark compares against).
        pool: a thread pool for the overlapped device copies (one is made for the call if None).
        ctx: with several processes, the context the new blocks are broadcast on (rank 0 alone reads
            ``store``); every process must fill the same windows in the same order.
    Returns:
        The timing; ``dst.window`` is set to ``window`` once every copy has finished.
    """
    held = src.window if src is not None else None
    kept = [b for b in window.blocks() if held is not None and held.holds(b)]
    new = [b for b in window.blocks() if held is None or not held.holds(b)]
    if ctx is not None and ctx.world_size > 1:
        def copy_new():
            return copy_new_blocks_shared(store, dst, window, new, ctx)
    else:
        def copy_new():
            return copy_new_blocks(store, dst, window, new)
    timing = run_copies(lambda: copy_kept_blocks(src, dst, window, kept), copy_new, len(kept), len(new), overlap, pool)
    dst.window = window
    return timing


def run_copies(copy_kept, copy_new, kept: int, new: int, overlap: bool, pool: ThreadPoolExecutor | None) -> FillTiming:
    """Run a fill's two kinds of copies — ``copy_kept()`` → seconds (device → device, skipped when
    ``kept`` is 0) and ``copy_new()`` → (seconds, bytes) (host → device) — side by side on ``pool`` and
    this thread with ``overlap``, else one after the other."""
    timing = FillTiming(kept_blocks=kept, new_blocks=new, overlapped=overlap)
    t0 = time.perf_counter()
    if overlap and kept:
        own_pool = pool is None
        pool = pool or ThreadPoolExecutor(max_workers=1)
        try:
            device_copies = pool.submit(copy_kept)
            try:
                timing.host_copy_s, timing.new_bytes = copy_new()
            finally:  # never leave the other copy writing into the buffer behind a raised error
                timing.device_copy_s = device_copies.result()
        finally:
            if own_pool:
                pool.shutdown()
    else:
        if kept:
            timing.device_copy_s = copy_kept()
        timing.host_copy_s, timing.new_bytes = copy_new()
    timing.total_s = time.perf_counter() - t0
    return timing
