"""Open a trained ground-plane run for dynamic fetching: resident modules on the device, blocks on the host.

The renderer is the run's own (heads, z lines, decoder, appearance, sky and occupancy grid are loaded
whole: they do not grow with the ground area) except that the tile's grid is a
:class:`.field.FetchWindowGrid` of N × N blocks. The blocks come from the checkpoint: a single-model run
cut into ``--blocks NXxNY`` (the model is never assembled whole), or a plane-parallel / split run whose
shards already are the blocks (``nerfxl split RUN --blocks NXxNY``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from nerfxl.checkpoint import OPTIMIZER_PREFIX, load_checkpoint
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import CheckpointError, ConfigError
from nerfxl.fields.config import build_radiance_field
from nerfxl.fields.grid_plane_window import PlaneSplit
from nerfxl.renderer import TiledRenderer

from .fetcher import DynamicFetcher
from .field import FetchWindowGrid, WindowedTile
from .store import BlockSource, MappedBlockStore, MemoryBlockStore
from .window import BlockLayout


@dataclass
class FetchingRun:
    """A run opened for dynamic fetching: ``trained`` (a TrainedRun whose renderer reads the window) and
    its ``fetcher``."""

    trained: object
    fetcher: DynamicFetcher
    layout: BlockLayout


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

    Args:
        blocks: "NXxNY", how to cut a single-model run (a plane-parallel run is already cut; passing
            another cut is an error naming both).
        store: "memory" (all blocks in host memory, pinned for a GPU) or "mmap" (read on demand).
        ctx: several processes rendering together: rank 0 alone keeps ``store`` (and broadcasts the
            blocks), the others read nothing from the host.
    """
    from nerfxl.train import (
        describe_state_mismatch,
        load_shared_state,
        load_strict,
        resolve_device,
        saved_strategy,
        tile_shard_name,
    )
    from nerfxl.trained import TrainedRun, run_checkpoint

    config, ckpt, state = run_checkpoint(run_dir, checkpoint)
    g = config.field.grid
    if g.type != "plane-line" or g.mode != "ground":
        raise ConfigError(f"{run_dir}: dynamic fetching streams blocks of a ground plane; this run's grid is "
                          f"{g.type} ({g.mode}) — train with --field.grid.mode ground")
    if int(state["n_tiles"]) != 1:
        raise ConfigError(f"{run_dir}: dynamic fetching streams the blocks of one ground-plane model; this run has "
                          f"{state['n_tiles']} tiles")
    strategy = saved_strategy(state)
    if strategy["name"] == "plane":
        split = PlaneSplit.parse(strategy["blocks"])
        if blocks is not None and PlaneSplit.parse(blocks) != split:
            raise ConfigError(f"{run_dir}: the run is cut into {split} blocks, not {PlaneSplit.parse(blocks)}; "
                              f"`nerfxl merge` it first to cut it another way")
        tile_shard, per_block = tile_shard_name(0, "plane", 0), True
    elif strategy["name"] == "tiles":
        if blocks is None:
            raise ConfigError(f"{run_dir}: pass --blocks NXxNY to cut the model into blocks for fetching")
        split = PlaneSplit.parse(blocks)
        tile_shard, per_block = tile_shard_name(0), False
    else:
        raise ConfigError(f"{run_dir}: a {strategy['name']}-parallel run; `nerfxl merge` it first")
    if store not in ("memory", "mmap"):
        raise ConfigError(f"--block-store {store!r}: expected 'memory' or 'mmap'")

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
    fetcher = DynamicFetcher(grid, host, z_range, overlap=overlap, camera_limits=camera_limits, ctx=ctx)
    trained = TrainedRun(Path(run_dir), config, renderer, SceneTransform.from_dict(state["scene_transform"]),
                         int(state["step"]), ckpt)
    return FetchingRun(trained, fetcher, layout)
