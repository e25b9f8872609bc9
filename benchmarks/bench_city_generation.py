"""Time procedural-city generation (tiny and small; medium / large with flags) and print JSON.

    python benchmarks/bench_city_generation.py [--medium] [--large] [--workers N] [--seed S]

Each size is generated into a temporary folder (deleted afterwards) exactly as ``generate_city``
does it. Reported per size: wall seconds, frames, pixels, rays cast for the images (pixels ×
supersample²) and rays per second. The load average is printed too: the renderer uses one thread
per process, so other work on the machine shows up directly in the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from nerfxl.data.city import CITY_SIZES, generate_city
from nerfxl.data.city.generate import auto_workers


def bench(size: str, seed: int, workers: int | None, root: Path) -> dict:
    out = root / f"city-{size}"
    start = time.perf_counter()
    generate_city(out, size, seed=seed, progress=False, workers=workers)
    seconds = time.perf_counter() - start
    meta = json.loads((out / "transforms.json").read_text())
    spec = CITY_SIZES[size]
    frames = len(meta["frames"])
    pixels = frames * meta["w"] * meta["h"]
    rays = pixels * spec.supersample**2
    return {
        "size": size,
        "seconds": round(seconds, 2),
        "frames": frames,
        "image": f"{meta['w']}x{meta['h']}",
        "pixels": pixels,
        "image_rays": rays,
        "rays_per_s": round(rays / seconds),
        "workers": workers if workers is not None else auto_workers(size),
        "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medium", action="store_true", help="also time the medium city")
    parser.add_argument("--large", action="store_true", help="also time the large city")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: auto)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = ["tiny", "small"] + (["medium"] if args.medium else []) + (["large"] if args.large else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="nerfxl-bench-city-") as tmp:
        for size in sizes:
            results.append(bench(size, args.seed, args.workers, Path(tmp)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "city_generation",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":  # worker processes are spawned: they must not rerun this
    main()
