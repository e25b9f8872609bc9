"""Dynamic fetching on several processes, for tests/fetch/test_dynamic_fetch.py (spawn imports this module)."""

from __future__ import annotations

from pathlib import Path

import torch

from nerfxl.parallel.images import render_image, render_image_by_rows
from nerfxl.fetch.load import load_for_fetching
from nerfxl.parallel.distributed import DistContext
from nerfxl.run.trained import load_trained


def fly_on_every_rank(ctx: DistContext, run_dir: str, blocks: str, n: int, poses: torch.Tensor, intrinsics: tuple) -> dict:
    """Every rank: the same flyover with one shared window per frame; rank 0 compares the gathered frames
    with the fully loaded model's."""
    from nerfxl.data.cameras import Cameras

    torch.set_num_threads(1)
    fetching = load_for_fetching(Path(run_dir), n, blocks, device="cpu", ctx=ctx)
    full = load_trained(Path(run_dir), device="cpu") if ctx.is_main else None
    cameras = Cameras.create(poses, *intrinsics)
    windows, worst = [], 0.0
    try:
        for i in range(len(cameras)):
            cameras, report = fetching.fetcher.prepare(cameras, i)
            windows.append(report.window)
            got = render_image_by_rows(fetching.trained.renderer, cameras, i, ctx)
            if full is not None:
                want = render_image(full.renderer, cameras, i)
                worst = max(worst, float((got["rgb"] - want["rgb"]).abs().max()),
                            float((got["depth"] - want["depth"]).abs().max()))
    finally:
        fetching.fetcher.close()
    fills = fetching.fetcher.log.fills
    return {"rank": ctx.rank, "windows": windows, "worst": worst, "host_bytes": sum(f.new_bytes for f in fills),
            "broadcast_bytes": fetching.fetcher.fetch_ctx.stats.get("fetch_broadcast", {}).get("bytes", 0),
            "fetches": len(fills)}
