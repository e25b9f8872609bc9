"""Which process owns which tiles: K tiles over D processes, K/D consecutive tiles each.

Consecutive k-d leaves are spatial neighbours, so a process's tiles form a compact region, and the
rank-major order of gathered blocks is the global tile order (the compositor needs no re-indexing).
"""

from __future__ import annotations

from nerfxl.errors import ConfigError


def check_tiles_per_process(n_tiles: int, world_size: int, tiles: str | None = None) -> int:
    """K / D, or a ConfigError naming both numbers when D does not divide K.

    ``tiles`` says where K comes from in the message (default "--partitions K").
    """
    tiles = tiles or f"--partitions {n_tiles}"
    if n_tiles < 1:
        raise ConfigError(f"--partitions must be at least 1, got {n_tiles}")
    if world_size < 1:
        raise ConfigError(f"--devices must be at least 1, got {world_size}")
    if n_tiles % world_size != 0:
        divisors = [d for d in range(1, n_tiles + 1) if n_tiles % d == 0]
        raise ConfigError(f"--devices {world_size} does not divide {tiles}: every process owns "
                          f"the same number of tiles; use --devices in {divisors}")
    return n_tiles // world_size


def tiles_of_rank(n_tiles: int, world_size: int, rank: int) -> list[int]:
    """Global tile indices owned by ``rank``: [rank·K/D, (rank+1)·K/D)."""
    per = check_tiles_per_process(n_tiles, world_size)
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} outside 0..{world_size - 1}")
    return list(range(rank * per, (rank + 1) * per))
