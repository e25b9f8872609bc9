"""Ray selection against a brute-force intersection, seeded tile batches, and the outside fraction."""

from __future__ import annotations

import math

import pytest
import torch
from baseline_fixtures import SCENE_BOX, some_cameras, some_plan

from nerfxl.baselines.overlap import expand_boxes
from nerfxl.baselines.ray_selection import (
    draw_tile_pixels, fraction_outside_tile, pixels_hitting_box, pixels_hitting_boxes,
)
from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.rays import generate_image_rays


def brute_force_masks(cameras, box, near=0.0, far=math.inf) -> list[torch.Tensor]:
    """[H, W] bool per camera: one ray at a time against the box (no chunking, no packing)."""
    masks = []
    for i in range(len(cameras)):
        rays = generate_image_rays(cameras, i)
        t0, t1, hit = intersect_rays_boxes(rays.origins, rays.directions, box.to(rays.origins))
        hit = hit[:, 0] & (t1[:, 0].clamp_max(far) > t0[:, 0].clamp_min(near))
        masks.append(hit.reshape(int(cameras.height[i]), int(cameras.width[i])))
    return masks


def selection_masks(selected, cameras) -> list[torch.Tensor]:
    out = [torch.zeros(int(cameras.height[i]), int(cameras.width[i]), dtype=torch.bool) for i in range(len(cameras))]
    for m, i in enumerate(selected.image_indices.tolist()):
        out[i] = selected.image_mask(m, int(cameras.height[i]))
    return out


@pytest.mark.parametrize("chunk", [37, 1 << 18])
def test_selection_matches_brute_force(chunk):
    cameras = some_cameras()
    boxes = expand_boxes(some_plan(4).boxes, 0.15, SCENE_BOX)
    selections = pixels_hitting_boxes(cameras, boxes, chunk=chunk)
    assert len(selections) == 4
    for box, selected in zip(boxes, selections):
        expected = brute_force_masks(cameras, box)
        got = selection_masks(selected, cameras)
        for e, g in zip(expected, got):
            assert torch.equal(e, g)
        assert len(selected) == sum(int(e.sum()) for e in expected)
        assert selected.pixels_examined == 5 * 24 * 16
    # Not trivial: some tile misses some pixels, and every tile is hit.
    assert all(0 < s.fraction_selected < 1 for s in selections)


def test_near_far_and_image_subset():
    cameras = some_cameras()
    box = SCENE_BOX
    full = pixels_hitting_box(cameras, box, near=1.0, far=3.0)
    expected = brute_force_masks(cameras, box.reshape(1, 2, 3), near=1.0, far=3.0)
    for e, g in zip(expected, selection_masks(full, cameras)):
        assert torch.equal(e, g)
    subset = pixels_hitting_box(cameras, box, image_indices=torch.tensor([3, 1, 3]), near=1.0, far=3.0)
    assert subset.image_indices.tolist() == [i for i in (1, 3) if bool(expected[i].any())]
    assert subset.pixels_examined == 2 * 24 * 16


def test_box_nobody_sees_gives_empty_selection():
    cameras = some_cameras()
    far_box = torch.tensor([[50.0, 50.0, 50.0], [51.0, 51.0, 51.0]])
    selected = pixels_hitting_box(cameras, far_box)
    assert len(selected) == 0 and selected.image_indices.numel() == 0
    with pytest.raises(ValueError, match="no selected pixels"):
        draw_tile_pixels(selected, 8, seed=0, step=0)


def test_draws_are_deterministic_and_only_selected():
    cameras = some_cameras()
    box = expand_boxes(some_plan(4).boxes, 0.15, SCENE_BOX)[1]
    selected = pixels_hitting_box(cameras, box)
    masks = brute_force_masks(cameras, box)
    images, pixels = draw_tile_pixels(selected, 4096, seed=3, step=7, tile=1)
    again = draw_tile_pixels(selected, 4096, seed=3, step=7, tile=1)
    assert torch.equal(images, again[0]) and torch.equal(pixels, again[1])
    assert images.dtype == torch.int64 and pixels.shape == (4096, 2)
    for i, (u, v) in zip(images.tolist(), pixels.tolist()):
        assert masks[i][v, u]
    other_step = draw_tile_pixels(selected, 4096, seed=3, step=8, tile=1)
    other_tile = draw_tile_pixels(selected, 4096, seed=3, step=7, tile=2)
    assert not torch.equal(pixels, other_step[1]) and not torch.equal(pixels, other_tile[1])


def test_draws_are_uniform_over_selected_pixels():
    cameras = some_cameras()
    selected = pixels_hitting_box(cameras, expand_boxes(some_plan(2).boxes, 0.15, SCENE_BOX)[0])
    n = len(selected)
    draws = 200 * n
    images, pixels = draw_tile_pixels(selected, draws, seed=0, step=0)
    keys = images * 10_000 + pixels[:, 1] * 24 + pixels[:, 0]
    counts = torch.unique(keys, return_counts=True)[1]
    assert counts.numel() == n  # every selected pixel is reachable
    # Each count is Binomial(draws, 1/n), mean 200, sd ≈ 14: all within 6 sd.
    assert int(counts.min()) > 200 - 6 * 14 and int(counts.max()) < 200 + 6 * 14


def test_fraction_outside_tile():
    tile = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    points = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0], [1.5, 0.5, 0.5], [-0.1, 0.2, 0.3]], dtype=torch.float64)
    assert fraction_outside_tile(points, tile) == 0.5
    assert fraction_outside_tile(points, tile, weights=torch.tensor([3.0, 0.0, 1.0, 0.0])) == 0.25
    assert math.isnan(fraction_outside_tile(points[:0], tile))


def test_selection_agrees_with_dense_points_along_rays():
    # Independent of the slab test: march each ray in small steps and look for points strictly inside.
    cameras = some_cameras()
    box = expand_boxes(some_plan(4).boxes, 0.15, SCENE_BOX)[2]
    got = selection_masks(pixels_hitting_box(cameras, box), cameras)
    t = torch.linspace(0.0, 12.0, 6001, dtype=torch.float64)
    for i in range(len(cameras)):
        rays = generate_image_rays(cameras, i)
        points = rays.origins.double()[:, None] + t[None, :, None] * rays.directions.double()[:, None]
        strictly_inside = ((points > box[0]) & (points < box[1])).all(dim=-1).any(dim=-1)
        # Marching can only miss grazing hits, never invent one.
        assert bool((strictly_inside <= got[i].flatten()).all())
        assert int(strictly_inside.sum()) >= int(got[i].sum()) - 2
