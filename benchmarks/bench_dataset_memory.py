"""Peak memory of a large dataset follows the image cache, not the frame count.

Writes a nerfstudio dataset of many small frames into a temporary folder, then, for each cache size,
in a fresh process (peak RSS is per process): loads it, draws sampler batches for some steps and
reports load time, batches/s, the cache's fill and the process's peak RSS. Prints one JSON object.

    python benchmarks/bench_dataset_memory.py [--frames 10000] [--size 64] [--steps 300]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE_MIB = (16, 64, 256)


def write_dataset(root: Path, frames: int, size: int) -> None:
    """A ring of cameras around the origin; images cycle through 256 distinct PNGs (fast to write)."""
    rng = np.random.default_rng(0)
    from PIL import Image

    encoded = []
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(256):
        base = np.stack([xx * 4 + k, yy * 4 + 2 * k, (xx + yy) * 2 + 3 * k], axis=-1) % 256
        noise = rng.integers(0, 32, size=base.shape)
        buf = io.BytesIO()
        Image.fromarray(((base + noise) % 256).astype(np.uint8)).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    (root / "images").mkdir(parents=True)
    out = []
    for i in range(frames):
        name = f"images/frame_{i:05d}.png"
        (root / name).write_bytes(encoded[i % 256])
        angle = 2 * np.pi * i / frames
        eye = np.array([4 * np.cos(angle), 4 * np.sin(angle), 1.0])
        back = eye / np.linalg.norm(eye)
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
        c2w[:3, 3] = eye
        out.append({"file_path": name, "transform_matrix": np.round(c2w, 6).tolist()})
    meta = {"camera_model": "PINHOLE", "fl_x": size, "fl_y": size, "cx": size / 2, "cy": size / 2,
            "w": size, "h": size, "frames": out}
    (root / "transforms.json").write_text(json.dumps(meta))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_child(root: Path, cache_mib: int, steps: int, batch: int) -> dict:
    import torch

    from nerfxl.data.load import load_dataset
    from nerfxl.data.sampler import RayBatchSampler

    torch.set_num_threads(1)
    rss_start = peak_rss_mib()
    t0 = time.perf_counter()
    ds = load_dataset(root, "train", cache_bytes=cache_mib * 1024**2)
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mib()
    sampler = RayBatchSampler(ds, batch, seed=0, pool_steps=50)
    t0 = time.perf_counter()
    for step in range(steps):
        b = sampler.sample(step)
        assert b.rgb.shape == (batch, 3)
    sample_s = time.perf_counter() - t0
    return {
        "cache_mib": cache_mib,
        "train_frames": len(ds),
        "load_s": round(load_s, 3),
        "steps": steps,
        "batch_size": batch,
        "batches_per_s": round(steps / sample_s, 1),
        "pool_size": sampler.pool_size,
        "cached_images": len(ds.images.cache),
        "cache_used_mib": round(ds.images.cache.nbytes / 1024**2, 1),
        "rss_after_imports_mib": round(rss_start, 1),
        "rss_after_load_mib": round(rss_loaded, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-mib", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(Path(args.child), args.cache_mib, args.steps, args.batch)))
        return
    with tempfile.TemporaryDirectory(prefix="nerfxl_bench_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_dataset(root, args.frames, args.size)
        write_s = time.perf_counter() - t0
        runs = []
        for cache_mib in CACHE_MIB:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root), "--cache-mib", str(cache_mib),
                 "--steps", str(args.steps), "--batch", str(args.batch)],
                check=True, capture_output=True, text=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    decoded = args.frames * args.size * args.size * 3 / 1024**2
    print(json.dumps({
        "frames": args.frames,
        "image_size": [args.size, args.size],
        "all_images_decoded_mib": round(decoded, 1),
        "write_s": round(write_s, 2),
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
