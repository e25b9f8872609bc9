from pathlib import Path

import numpy as np
import torch

from fixture_writers import write_image
from nerfxl.data.cameras import Cameras
from nerfxl.data.dataset import Dataset
from nerfxl.data.images import DepthSource, ImageSource
from nerfxl.data.sampler import RayBatchSampler


def make_dataset(tmp_path: Path, n: int, w: int = 16, h: int = 12, cache_bytes: int = 1 << 30, alpha=None,
                 depth: bool = False) -> tuple[Dataset, list[np.ndarray]]:
    paths, pixels, depth_paths = [], [], []
    for i in range(n):
        has_alpha = bool(alpha(i)) if alpha else False
        path = tmp_path / f"img_{i:03d}.png"
        pixels.append(write_image(path, w, h, seed=i, alpha=has_alpha))
        paths.append(path)
        if depth:
            d = np.full((h, w), float(i + 1), dtype=np.float32)
            d[0, 0] = 0.0
            np.save(tmp_path / f"depth_{i:03d}.npy", d)
            depth_paths.append(tmp_path / f"depth_{i:03d}.npy")
    cams = Cameras.create(torch.eye(4)[:3].expand(n, 3, 4), 10.0, 10.0, w / 2, h / 2, w, h)
    sizes = [(w, h)] * n
    ds = Dataset(
        cameras=cams, images=ImageSource(paths, sizes, background=(0.0, 0.5, 1.0), cache_bytes=cache_bytes),
        split="train", scene_box=torch.tensor([[-1.0] * 3, [1.0] * 3]), format="test", root=tmp_path,
        depths=DepthSource(depth_paths, sizes, cache_bytes=cache_bytes) if depth else None,
    )
    return ds, pixels


def expected_rgb(pixels, batch, background=(0.0, 0.5, 1.0)):
    out = []
    for i, (u, v) in zip(batch.image_indices.tolist(), batch.pixels.tolist()):
        px = pixels[i][v, u].astype(np.float64) / 255.0
        if px.shape[0] == 4:
            px = px[:3] * px[3] + np.asarray(background) * (1 - px[3])
        out.append(px[:3])
    return torch.tensor(np.stack(out), dtype=torch.float32)


def test_same_seed_and_step_give_identical_batches(tmp_path):
    ds, _ = make_dataset(tmp_path, 5)
    a = RayBatchSampler(ds, 256, seed=7).sample(3)
    b = RayBatchSampler(ds, 256, seed=7).sample(3)  # a fresh sampler: nothing carried over
    assert torch.equal(a.image_indices, b.image_indices) and torch.equal(a.pixels, b.pixels)
    assert torch.equal(a.rgb, b.rgb)
    c = RayBatchSampler(ds, 256, seed=7).sample(4)
    d = RayBatchSampler(ds, 256, seed=8).sample(3)
    assert not torch.equal(a.pixels, c.pixels)
    assert not torch.equal(a.pixels, d.pixels)


def test_colours_match_image_pixels_and_alpha_is_composited(tmp_path):
    ds, pixels = make_dataset(tmp_path, 4, alpha=lambda i: i % 2)  # RGB and RGBA images mixed
    sampler = RayBatchSampler(ds, 512, seed=0)
    for step in range(3):
        batch = sampler.sample(step)
        torch.testing.assert_close(batch.rgb, expected_rgb(pixels, batch), atol=1e-6, rtol=0)
        alpha = torch.tensor([pixels[i][v, u][3] / 255.0 if pixels[i].shape[-1] == 4 else 1.0
                              for i, (u, v) in zip(batch.image_indices.tolist(), batch.pixels.tolist())])
        torch.testing.assert_close(batch.alpha, alpha.float())
        assert set(batch.image_indices.tolist()) == {0, 1, 2, 3}


def test_pool_mode_with_dataset_larger_than_the_cache(tmp_path):
    w, h = 16, 12
    per_image = w * h * 3
    ds, pixels = make_dataset(tmp_path, 30, w, h, cache_bytes=per_image * 6 + 10)
    sampler = RayBatchSampler(ds, 128, seed=3, pool_steps=5)
    assert sampler.pool_size < len(ds)
    seen = set()
    for step in range(20):
        batch = sampler.sample(step)
        pool = set(sampler.pool(step).tolist())
        assert set(batch.image_indices.tolist()) <= pool
        seen |= pool
        torch.testing.assert_close(batch.rgb, expected_rgb(pixels, batch), atol=1e-6, rtol=0)
        assert ds.images.cache.nbytes <= ds.images.cache.max_bytes
    assert sampler.pool(0).tolist() == sampler.pool(4).tolist()  # the pool holds for pool_steps
    assert sampler.pool(0).tolist() != sampler.pool(5).tolist()
    assert len(seen) > sampler.pool_size  # and it moves over the dataset
    again = RayBatchSampler(ds, 128, seed=3, pool_steps=5).sample(17)
    assert torch.equal(again.pixels, sampler.sample(17).pixels)


def test_depth_targets_come_from_the_depth_maps(tmp_path):
    ds, _ = make_dataset(tmp_path, 3, depth=True)
    batch = RayBatchSampler(ds, 300, seed=1).sample(0)
    expected = (batch.image_indices + 1).float()
    corner = (batch.pixels == 0).all(dim=-1)
    expected[corner] = 0.0
    torch.testing.assert_close(batch.depth, expected)
