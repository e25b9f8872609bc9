"""Dynamic fetching with whole NeRF-XL tiles as the unit: explore any K-tile run on one small device.

LandMark streams blocks of one ground plane. A NeRF-XL run's tiles come from an irregular k-d plan and
may hold any grid (3D plane-line, ground plane, hash), so here the unit is a whole tile: its field and
its occupancy grid. Windows are placed as for blocks: the scene's x-y is divided into a regular grid of
*cells* (a :class:`.window.BlockLayout` without planes), the window is the N × N cells around the
camera, and the camera limits keep every frame's footprint inside it. A window loads the tiles whose
x-y boxes overlap it, so every sample of a frame lies in a loaded tile; the tiles not loaded render as
empty segments, which compositing passes through, and the frame equals the fully loaded model's.

On the device: two :class:`TileSlots` (compute and prefetch), each S slots as large as the largest
tile, where S is the most tiles any window overlaps (counted over every window position at load time),
and one flat tensor per dtype. A tile in a slot is a *shell* module (built once per tile, on the CPU)
whose parameters and buffers are re-pointed at views of its slot, so a swap copies nothing.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from nerfxl.checkpoint import OPTIMIZER_PREFIX
from nerfxl.errors import CheckpointError
from nerfxl.fields.config import build_tile
from nerfxl.data.boxes import union_box
from nerfxl.renderer import tile_occupancy_resolution
from nerfxl.rendering.occupancy import OccupancyGrid

from .buffers import FillTiming, copy_stream, run_copies
from .window import BlockLayout, Window

OCCUPANCY_PREFIX = "occupancy."
"""A tile shard's occupancy-grid tensors carry this prefix; the rest belong to the tile field."""


# ---------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class TileLayout:
    """Where each tensor of one tile sits in a slot: the tensors of one dtype packed one after another.

    Attributes:
        entries: (name, shape, dtype, offset) of every tensor, names as in the tile's shard.
        numel: values per dtype.
    """

    entries: tuple[tuple[str, tuple[int, ...], torch.dtype, int], ...]
    numel: dict[torch.dtype, int]

    @classmethod
    def of_state(cls, state: dict[str, Tensor]) -> "TileLayout":
        entries, numel = [], {}
        for name in sorted(state):
            t = state[name]
            offset = numel.get(t.dtype, 0)
            entries.append((name, tuple(t.shape), t.dtype, offset))
            numel[t.dtype] = offset + t.numel()
        return cls(tuple(entries), numel)

    def pack(self, tensors: dict[str, Tensor]) -> dict[torch.dtype, Tensor]:
        """{dtype: flat tensor} holding ``tensors`` (a shard's, already checked) in this layout."""
        flat = {dtype: torch.empty(n, dtype=dtype) for dtype, n in self.numel.items()}
        for name, shape, dtype, offset in self.entries:
            flat[dtype][offset: offset + tensors[name].numel()].copy_(tensors[name].reshape(-1))
        return flat

    def views(self, rows: dict[torch.dtype, Tensor]) -> dict[str, Tensor]:
        """{name: view} of the tensors inside ``rows`` ({dtype: flat slot row})."""
        return {name: rows[dtype][offset: offset + math.prod(shape)].view(shape)
                for name, shape, dtype, offset in self.entries}

    @property
    def nbytes(self) -> int:
        return sum(n * torch.empty((), dtype=d).element_size() for d, n in self.numel.items())


def build_tile_shell(config, state: dict, boxes: Tensor, k: int) -> tuple[nn.Module, nn.Module]:
    """Tile k's field and occupancy grid as a run (``config``, a checkpoint's ``state``, the [K, 2, 3]
    ``boxes``) has them — shapes only: the values are freshly initialised on the CPU, never read."""
    res = state.get("tiles", {}).get(str(k), {}).get("grid_resolution")
    field_config = config.field
    if res:
        field_config = dataclasses.replace(field_config, grid=dataclasses.replace(field_config.grid,
                                                                                  base_resolution=tuple(res)))
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        tile = build_tile(field_config, boxes[k])
    return tile, OccupancyGrid(boxes[k], tile_occupancy_resolution(boxes[k], union_box(boxes), config.render))


def tile_state(tile: nn.Module, occupancy: nn.Module) -> dict[str, Tensor]:
    """A tile's persistent state under its shard's names (field tensors, then ``occupancy.*``)."""
    return {**tile.state_dict(), **{OCCUPANCY_PREFIX + k: v for k, v in occupancy.state_dict().items()}}


# ---------------------------------------------------------------------------------------- windows
def tiles_meeting(boxes: Tensor, layout: BlockLayout, window: Window) -> list[int]:
    """Indices of the tiles whose x-y boxes ([K, 2, 3], model units) overlap ``window`` with positive
    area (a tile touching only its edge holds no sample of a frame inside it)."""
    bx, by = layout.block_size
    x0, x1 = layout.xy_min[0] + window.x0 * bx, layout.xy_min[0] + (window.x0 + window.n) * bx
    y0, y1 = layout.xy_min[1] + window.y0 * by, layout.xy_min[1] + (window.y0 + window.n) * by
    eps = 1e-6 * max(bx, by)
    b = boxes.detach().double().cpu()
    meets = (b[:, 0, 0] < x1 - eps) & (b[:, 1, 0] > x0 + eps) & (b[:, 0, 1] < y1 - eps) & (b[:, 1, 1] > y0 + eps)
    return meets.nonzero().flatten().tolist()


def most_tiles_meeting_a_window(boxes: Tensor, layout: BlockLayout, n: int) -> int:
    """S: the most tiles any N × N window of ``layout`` overlaps (every position is counted)."""
    split = layout.split
    return max(len(tiles_meeting(boxes, layout, Window(x0, y0, n)))
               for x0 in range(split.nx - n + 1) for y0 in range(split.ny - n + 1))


# ---------------------------------------------------------------------------------------- host stores
class TileSource:
    """The tile shards of one checkpoint (``tile-KKK.safetensors``) and each tile's layout."""

    def __init__(self, checkpoint: Path, layouts: dict[int, TileLayout], shard_name: Callable[[int], str]):
        self.checkpoint = Path(checkpoint)
        self.layouts = layouts
        self.shard_name = shard_name

    def path(self, k: int) -> Path:
        return self.checkpoint / f"{self.shard_name(k)}.safetensors"

    def read(self, k: int) -> dict[torch.dtype, Tensor]:
        """Tile k's tensors packed in its layout (optimizer moments are not read)."""
        path = self.path(k)
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors = {name: handle.get_tensor(name) for name, *_ in self.layouts[k].entries}
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: cannot be read ({e})") from None
        return self.layouts[k].pack(tensors)


class MemoryTileStore:
    """Every tile packed once into host memory (pinned with ``pin``)."""

    def __init__(self, source: TileSource, pin: bool = False):
        self._tiles = {k: {d: t.pin_memory() if pin else t for d, t in source.read(k).items()}
                       for k in sorted(source.layouts)}

    def tile(self, k: int) -> dict[torch.dtype, Tensor]:
        return self._tiles[k]


class MappedTileStore:
    """Nothing held: each request reads that tile's shard (memory-mapped) — for runs larger than RAM."""

    def __init__(self, source: TileSource):
        self.source = source

    def tile(self, k: int) -> dict[torch.dtype, Tensor]:
        return self.source.read(k)


# ---------------------------------------------------------------------------------------- device slots
class TileSlots:
    """S tile slots on the device: one [S, largest tile] tensor per dtype; ``slot_of`` maps the tiles of
    ``window`` to their slots."""

    def __init__(self, layouts: dict[int, TileLayout], n_slots: int, device: torch.device):
        self.layouts = layouts
        widths: dict[torch.dtype, int] = {}
        for layout in layouts.values():
            for dtype, n in layout.numel.items():
                widths[dtype] = max(widths.get(dtype, 0), n)
        self.flat = {dtype: torch.zeros(n_slots, n, dtype=dtype, device=device) for dtype, n in widths.items()}
        self.n_slots = n_slots
        self.slot_of: dict[int, int] = {}
        self.window: Window | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.flat.values())

    def rows(self, k: int, slot: int | None = None) -> dict[torch.dtype, Tensor]:
        """{dtype: tile k's part of its slot row} (``slot``: the one it is being copied into)."""
        slot = self.slot_of[k] if slot is None else slot
        return {dtype: self.flat[dtype][slot, :n] for dtype, n in self.layouts[k].numel.items()}

    def views(self, k: int) -> dict[str, Tensor]:
        """{name: view} of held tile k's tensors."""
        return self.layouts[k].views(self.rows(k))


def copy_kept_tiles(src: TileSlots, dst: TileSlots, slots: dict[int, int], tiles: list[int]) -> float:
    """Device → device copies of ``tiles`` from their slots in ``src`` into ``slots`` of ``dst``."""
    t0 = time.perf_counter()
    stream, selected = copy_stream(next(iter(dst.flat.values())).device)
    with selected:
        for k in tiles:
            for dtype, row in dst.rows(k, slots[k]).items():
                row.copy_(src.rows(k)[dtype], non_blocking=True)
    if stream is not None:
        stream.synchronize()
    return time.perf_counter() - t0


def copy_new_tiles(store, dst: TileSlots, slots: dict[int, int], tiles: list[int], ctx=None) -> tuple[float, int]:
    """Host → device copies of ``tiles`` from ``store`` into ``slots`` of ``dst``; (seconds, host bytes).
    With ``ctx`` (several processes) rank 0 alone reads the host and broadcasts each slot row right after
    its copy; the others receive them."""
    from nerfxl.parallel.distributed import broadcast_async

    shared = ctx is not None and ctx.world_size > 1
    t0 = time.perf_counter()
    device = next(iter(dst.flat.values())).device
    stream, selected = copy_stream(device)
    nbytes, handles = 0, []
    with selected:
        for k in tiles:
            rows = dst.rows(k, slots[k])
            if not shared or ctx.rank == 0:
                host = store.tile(k)
                for dtype, row in rows.items():
                    row.copy_(host[dtype], non_blocking=True)
                    nbytes += row.numel() * row.element_size()
            if shared:
                if stream is not None:
                    stream.synchronize()  # the bytes are on the device before they travel
                for row in rows.values():  # bool travels as bytes (not every backend sends bool)
                    handles.append(broadcast_async(row.view(torch.uint8) if row.dtype == torch.bool else row, ctx,
                                                   src=0, name="fetch_broadcast"))
    for handle in handles:
        if handle is not None:
            handle.wait()
    if stream is not None:
        stream.synchronize()
    return time.perf_counter() - t0, nbytes


def fill_tiles(store, src: TileSlots | None, dst: TileSlots, window: Window, tiles: list[int], overlap: bool = True,
               pool: ThreadPoolExecutor | None = None, ctx=None) -> FillTiming:
    """Fill ``dst`` with ``tiles`` (the tiles ``window`` meets): those ``src`` holds device → device, the
    others from ``store``, side by side with ``overlap`` (see :func:`.buffers.run_copies`)."""
    if len(tiles) > dst.n_slots:
        raise ValueError(f"window {window} meets {len(tiles)} tiles; the buffers have {dst.n_slots} slots")
    kept = [k for k in tiles if src is not None and k in src.slot_of]
    new = [k for k in tiles if k not in kept]
    slots = {k: i for i, k in enumerate(kept + new)}  # the same on every process
    timing = run_copies(lambda: copy_kept_tiles(src, dst, slots, kept),
                        lambda: copy_new_tiles(store, dst, slots, new, ctx), len(kept), len(new), overlap, pool)
    dst.slot_of, dst.window = slots, window
    return timing


# ---------------------------------------------------------------------------------------- the target
def point_module_at(module: nn.Module, views: dict[str, Tensor]) -> None:
    """Make ``module``'s parameters and buffers named in ``views`` *be* those views (frozen)."""
    for name, view in views.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(view, requires_grad=False)
        elif attr in owner._buffers:
            owner._buffers[attr] = view
        else:
            raise KeyError(f"{type(module).__name__} has no parameter or buffer {name}")


def move_constant_buffers(module: nn.Module, device: torch.device) -> None:
    """Move the buffers a state dict leaves out (index tables and such) to ``device``."""
    for sub in module.modules():
        for name in sub._non_persistent_buffers_set:
            if sub._buffers.get(name) is not None:
                sub._buffers[name] = sub._buffers[name].to(device)


class TileTarget:
    """Whole tiles as the fetch unit (see :class:`.fetcher.FetchTarget`).

    Args:
        renderer: a :class:`nerfxl.renderer.TiledRenderer` with the shared modules on the device; it is
            made to hold the compute buffer's tiles.
        layout: the cells windows are made of (no planes).
        n: window side in cells.
        layouts: every tile's slot layout.
        n_slots: S, slots per buffer (:func:`most_tiles_meeting_a_window`).
        make_shell: k → (tile field, occupancy grid) of tile k's shapes, on the CPU (values unread).
    """

    def __init__(self, renderer, layout: BlockLayout, n: int, layouts: dict[int, TileLayout], n_slots: int,
                 make_shell: Callable[[int], tuple[nn.Module, nn.Module]]):
        self.renderer = renderer
        self.layout = layout
        self.n = n
        self.layouts = layouts
        self.n_slots = n_slots
        self.boxes = renderer.tile_boxes().detach().cpu()
        self.device = renderer.scene_box.device
        self._make_shell = make_shell
        self._shells: dict[int, tuple[nn.Module, nn.Module]] = {}

    def tiles_of(self, window: Window) -> list[int]:
        return tiles_meeting(self.boxes, self.layout, window)

    def new_buffer(self) -> TileSlots:
        return TileSlots(self.layouts, self.n_slots, self.device)

    def fill(self, store, src: TileSlots | None, dst: TileSlots, window: Window, overlap: bool, pool,
             ctx) -> FillTiming:
        return fill_tiles(store, src, dst, window, self.tiles_of(window), overlap, pool, ctx)

    def shell(self, k: int) -> tuple[nn.Module, nn.Module]:
        if k not in self._shells:
            tile, occupancy = self._make_shell(k)
            for module in (tile, occupancy):
                move_constant_buffers(module, self.device)
                module.eval()
            self._shells[k] = tile, occupancy
        return self._shells[k]

    def show(self, buffer: TileSlots) -> None:
        ids = sorted(buffer.slot_of)
        tiles, grids = [], []
        for k in ids:
            tile, occupancy = self.shell(k)
            views = buffer.views(k)
            point_module_at(tile, {n: v for n, v in views.items() if not n.startswith(OCCUPANCY_PREFIX)})
            point_module_at(occupancy, {n[len(OCCUPANCY_PREFIX):]: v for n, v in views.items()
                                        if n.startswith(OCCUPANCY_PREFIX)})
            tiles.append(tile)
            grids.append(occupancy)
        self.renderer.hold_tiles(tiles, grids, ids)


def read_tile_layout(path: Path, expected: dict[str, Tensor]) -> TileLayout:
    """The layout of the tile shard at ``path``, checked against a shell's state (one-line error)."""
    from nerfxl.run.state import describe_state_mismatch

    try:
        with safe_open(str(path), framework="pt") as handle:
            found = {k: torch.empty(handle.get_slice(k).get_shape(), device="meta")
                     for k in handle.keys() if not k.startswith(OPTIMIZER_PREFIX)}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from None
    mismatch = describe_state_mismatch(expected, found)
    if mismatch:
        raise CheckpointError(f"{path}: {mismatch}")
    return TileLayout.of_state(expected)
