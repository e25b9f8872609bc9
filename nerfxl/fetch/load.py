"""Open a trained ground-plane run for dynamic fetching: resident modules on the device, blocks on the host.

The renderer is the run's own (heads, z lines, decoder, appearance, sky and occupancy grid are loaded
whole: they do not grow with the ground area) except that the tile's grid is a
:class:`.field.FetchWindowGrid` of N × N blocks. The blocks come from the checkpoint: a single-model run
cut into ``--blocks NXxNY`` (the model is never assembled whole), or a plane-parallel / split run whose
shards already are the blocks (``nerfxl split RUN --blocks NXxNY``).

A run of K > 1 tiles (NeRF-XL, branch parallel) is opened with whole tiles as the unit (:mod:`.tiles`):
the shared modules are resident, the tiles' fields and occupancy grids are fetched.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from safetensors import SafetensorError, safe_open

from nerfxl.checkpoint import OPTIMIZER_PREFIX, load_checkpoint
from nerfxl.data.boxes import union_box
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import CheckpointError, ConfigError
from nerfxl.fields.config import build_radiance_field
from nerfxl.fields.grid_plane_window import PlaneSplit
from nerfxl.parallel.distributed import resolve_device
from nerfxl.renderer import TiledRenderer
from nerfxl.run.layout import checkpoint_strategy, saved_strategy, tile_shard_name
from nerfxl.run.load import run_checkpoint
from nerfxl.run.state import describe_state_mismatch, load_shared_state, load_strict
from nerfxl.run.trained import TrainedRun

from .fetcher import DynamicFetcher
from .field import BlockTarget, FetchWindowGrid, WindowedTile
from .store import BlockSource, MappedBlockStore, MemoryBlockStore
from .tiles import (
    MappedTileStore,
    MemoryTileStore,
    TileSource,
    TileTarget,
    build_tile_shell,
    most_tiles_meeting_a_window,
    read_tile_layout,
    tile_state,
)
from .window import BlockLayout


@dataclass
class FetchingRun:
    """A run opened for dynamic fetching: ``trained`` (a TrainedRun whose renderer reads the window) and
    its ``fetcher``."""

    trained: object
    fetcher: DynamicFetcher
    layout: BlockLayout
    summary: str = ""
    """What is fetched, e.g. "3×3 of 8x8 blocks" or "3×3 of 8x8 cells, up to 5 of 8 tiles"."""


def _read_header(path: Path) -> tuple[dict[str, tuple[int, ...]], object]:
    try:
        handle = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from None
    return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}, handle


def load_for_fetching(run_dir: Path, neighbourhood: int = 3, blocks: str | None = None, device: str = "auto",
                      store: str = "memory", overlap: bool = True, camera_limits: str = "error",
                      checkpoint: Path | None = None, ctx=None) -> FetchingRun:
    """Open ``run_dir``'s checkpoint for rendering with an N × N window of blocks (N = ``neighbourhood``).

    A run of one ground-plane model streams blocks of its plane; a run of K > 1 tiles (NeRF-XL, branch
    parallel) streams whole tiles (:mod:`.tiles`): the window is N × N cells of the scene's x-y and
    holds every tile it overlaps.

    Args:
        blocks: "NXxNY", how to cut a single-model run (a plane-parallel run is already cut; passing
            another cut is an error naming both); for a tiled run, the cells windows are made of
            (default: :func:`default_cells`).
        store: "memory" (all blocks in host memory, pinned for a GPU) or "mmap" (read on demand).
        ctx: several processes rendering together: rank 0 alone keeps ``store`` (and broadcasts the
            blocks), the others read nothing from the host.
    """
    if store not in ("memory", "mmap"):
        raise ConfigError(f"--block-store {store!r}: expected 'memory' or 'mmap'")
    config, ckpt, state = run_checkpoint(run_dir, checkpoint)
    g = config.field.grid
    if int(state["n_tiles"]) == 1 and (g.type != "plane-line" or g.mode != "ground"):
        raise ConfigError(f"{run_dir}: dynamic fetching streams blocks of a ground plane; this run's grid is "
                          f"{g.type} ({g.mode}) — train with --field.grid.mode ground")
    strategy = checkpoint_strategy(state)
    if int(state["n_tiles"]) > 1 and not strategy.joint:  # whole tiles are the unit
        return _load_tiles_for_fetching(run_dir, config, ckpt, state, neighbourhood, blocks, device, store, overlap,
                                        camera_limits, ctx)
    # One tile cut into blocks: a plane-parallel run's windows, or a one-tile run cut by --blocks.
    split, tile_shard, per_block = strategy.fetch_blocks(saved_strategy(state), blocks, str(run_dir))

    shapes, handle = _read_header(ckpt / f"{tile_shard}.safetensors")
    plane_names = [k for k in shapes if k.startswith(("grid.density_planes.", "grid.appearance_planes."))]
    if per_block:  # a shard is one block: the whole plane has (h − 1)·NY + 1 rows, (w − 1)·NX + 1 columns
        whole = {k: (1, shapes[k][1], (shapes[k][2] - 1) * split.ny + 1, (shapes[k][3] - 1) * split.nx + 1)
                 for k in plane_names}
    else:
        whole = {k: shapes[k] for k in plane_names}
    box = torch.tensor(state["tile_boxes"], dtype=torch.float32)[0]
    try:
        layout = BlockLayout.from_plane_shapes(whole, split, box)
    except ConfigError as e:
        raise ConfigError(f"{run_dir}: {e}") from None
    layout.check_neighbourhood(neighbourhood)

    # Build the field with window-sized planes only: the whole plane is never allocated.
    resolution = state.get("tiles", {}).get("0", {}).get("grid_resolution") or list(g.base_resolution)
    rx, ry, rz = (int(r) for r in resolution)
    window_res = ((rx - 1) // split.nx * neighbourhood + 1, (ry - 1) // split.ny * neighbourhood + 1, rz)
    small = dataclasses.replace(config.field, grid=dataclasses.replace(g, base_resolution=window_res))
    field_module = build_radiance_field(small, box[None], n_images=int(state["n_train_images"]), tile_ids=[0])
    tile = field_module.tile(0)
    grid = FetchWindowGrid(layout, neighbourhood, (rx, ry, rz), g.scales, g.density_channels, g.appearance_channels,
                           g.scale_z, g.level_scaling)
    field_module.tiles[0] = windowed = WindowedTile(tile, grid)
    renderer = TiledRenderer(field_module, box, config.render)

    where = ckpt / f"{tile_shard}.safetensors"
    resident = {k: handle.get_tensor(k) for k in shapes if k not in plane_names and not k.startswith(OPTIMIZER_PREFIX)}
    tile_part = {k: v for k, v in resident.items() if not k.startswith("occupancy.")}
    from_buffers = set(grid.plane_names())  # the planes come from the window buffers, not from the file
    expected = {k: v for k, v in windowed.state_dict().items() if k not in from_buffers}
    mismatch = describe_state_mismatch(expected, tile_part)
    if mismatch:
        raise CheckpointError(f"{where}: {mismatch}")
    windowed.load_state_dict({**windowed.state_dict(), **tile_part})
    occupancy = {k[len("occupancy."):]: v for k, v in resident.items() if k.startswith("occupancy.")}
    load_strict(renderer.occupancy_grid(0), occupancy, f"{where} (occupancy)")
    shards, _ = load_checkpoint(ckpt, shard_names=["shared"])
    load_shared_state(field_module, shards["shared"], ckpt / "shared.safetensors")

    dev = resolve_device(device)
    renderer = renderer.to(dev).eval()
    source = BlockSource(ckpt, layout, per_block)
    reads_host = ctx is None or ctx.rank == 0
    if store == "memory" and reads_host:
        host = MemoryBlockStore(source, pin=dev.type == "cuda")
    else:
        host = MappedBlockStore(source)  # holds nothing (and, off rank 0, is never read)
    z_range = (float(box[0, 2]), float(box[1, 2]))
    fetcher = DynamicFetcher(BlockTarget(grid), host, z_range, overlap=overlap, camera_limits=camera_limits, ctx=ctx)
    trained = TrainedRun(Path(run_dir), config, renderer, SceneTransform.from_dict(state["scene_transform"]),
                         int(state["step"]), ckpt)
    return FetchingRun(trained, fetcher, layout, f"{neighbourhood}×{neighbourhood} of {split} blocks")


def default_cells(boxes: Tensor, scene_box: Tensor, n: int) -> PlaneSplit:
    """Cells for fetching the tiles ``boxes`` [K, 2, 3]: as wide as the narrowest tile along each axis (so
    a window of N cells is about N tiles across), at least N."""
    extent = (scene_box[1] - scene_box[0]).double()
    narrowest = (boxes[:, 1] - boxes[:, 0]).double().amin(dim=0)
    nx, ny = (max(n, round(float(extent[a] / narrowest[a]))) for a in (0, 1))
    return PlaneSplit(nx, ny)


def _load_tiles_for_fetching(run_dir: Path, config, ckpt: Path, state: dict, n: int, blocks: str | None,
                             device: str, store: str, overlap: bool, camera_limits: str, ctx) -> FetchingRun:
    """:func:`load_for_fetching` for a run of K tiles: whole tiles are the fetch unit."""
    boxes = torch.tensor(state["tile_boxes"], dtype=torch.float32)
    scene_box = union_box(boxes)
    split = PlaneSplit.parse(blocks) if blocks is not None else default_cells(boxes, scene_box, n)
    layout = BlockLayout(split, (), (float(scene_box[0, 0]), float(scene_box[0, 1])),
                         (float(scene_box[1, 0]), float(scene_box[1, 1])))
    layout.check_neighbourhood(n)

    make_shell = functools.partial(build_tile_shell, config, state, boxes)
    layouts = {k: read_tile_layout(ckpt / f"{tile_shard_name(k)}.safetensors", tile_state(*make_shell(k)))
               for k in range(boxes.shape[0])}
    field_module = build_radiance_field(config.field, boxes, n_images=int(state["n_train_images"]), tile_ids=[0])
    renderer = TiledRenderer(field_module, scene_box, config.render)
    shards, _ = load_checkpoint(ckpt, shard_names=["shared"])
    load_shared_state(field_module, shards["shared"], ckpt / "shared.safetensors")
    renderer.hold_tiles([], [], [])  # the fetcher shows the window's tiles
    renderer.unheld_tiles_are_empty = True
    dev = resolve_device(device)
    renderer = renderer.to(dev).eval()

    source = TileSource(ckpt, layouts, tile_shard_name)
    if store == "memory" and (ctx is None or ctx.rank == 0):
        host = MemoryTileStore(source, pin=dev.type == "cuda")
    else:
        host = MappedTileStore(source)  # holds nothing (and, off rank 0, is never read)
    target = TileTarget(renderer, layout, n, layouts, most_tiles_meeting_a_window(boxes, layout, n), make_shell)
    z_range = (float(scene_box[0, 2]), float(scene_box[1, 2]))
    fetcher = DynamicFetcher(target, host, z_range, overlap=overlap, camera_limits=camera_limits, ctx=ctx)
    trained = TrainedRun(Path(run_dir), config, renderer, SceneTransform.from_dict(state["scene_transform"]),
                         int(state["step"]), ckpt)
    return FetchingRun(trained, fetcher, layout,
                       f"{n}×{n} of {split} cells, up to {target.n_slots} of {boxes.shape[0]} tiles")
