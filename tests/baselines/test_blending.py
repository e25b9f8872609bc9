"""3D per-sample and 2D per-image blend weights: non-negative, normalised, local."""

from __future__ import annotations

import pytest
import torch
from baseline_fixtures import SCENE_BOX, some_plan

from nerfxl.baselines.blending import blend_weights_2d, blend_weights_3d
from nerfxl.baselines.overlap import box_centres, expand_boxes
from nerfxl.data.boxes import points_in_boxes


def points_in_and_around_scene(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    lo, hi = SCENE_BOX[0], SCENE_BOX[1]
    pad = 0.2 * (hi - lo)
    return lo - pad + torch.rand(n, 3, generator=g, dtype=torch.float64) * (hi - lo + 2 * pad)


@pytest.mark.parametrize("k, power", [(2, 1.0), (4, 1.0), (8, 2.0), (8, 16.0)])
def test_3d_weights_are_normalised_and_zero_outside_boxes(k, power):
    plan = some_plan(k)
    boxes = expand_boxes(plan.boxes, 0.15, SCENE_BOX)
    points = points_in_and_around_scene()
    w = blend_weights_3d(points, boxes, box_centres(plan.boxes), power=power)
    assert w.shape == (points.shape[0], k) and w.dtype == torch.float64
    inside = points_in_boxes(points, boxes)
    assert bool((w >= 0).all()) and bool((w[~inside] == 0).all())
    covered = inside.any(dim=1)
    assert bool(covered.any()) and bool((~covered).any())
    assert torch.allclose(w[covered].sum(dim=1), torch.ones(int(covered.sum()), dtype=torch.float64))
    assert bool((w[~covered] == 0).all())
    # A point covered by one box only belongs wholly to that model.
    single = inside.sum(dim=1) == 1
    assert torch.equal(w[single], inside[single].double())


def test_3d_weights_favour_the_nearer_centroid():
    boxes = torch.tensor([[[0.0, 0, 0], [2.0, 1, 1]], [[1.0, 0, 0], [3.0, 1, 1]]], dtype=torch.float64)
    centroids = torch.tensor([[1.0, 0.5, 0.5], [2.0, 0.5, 0.5]], dtype=torch.float64)
    points = torch.tensor([[1.2, 0.5, 0.5], [1.5, 0.5, 0.5], [1.9, 0.5, 0.5], [1.0, 0.5, 0.5]], dtype=torch.float64)
    w = blend_weights_3d(points, boxes, centroids)
    assert w[0, 0] > w[0, 1] and torch.allclose(w[1], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert w[2, 1] > w[2, 0]
    assert torch.allclose(w[0], torch.tensor([0.8, 0.2], dtype=torch.float64))  # 1/0.2 : 1/0.8
    assert w[3, 0] == 1.0 and w[3, 1] < 1e-300  # on a centroid: (almost) all weight there, no inf / inf


def test_3d_weights_in_float32():
    plan = some_plan(4)
    boxes = expand_boxes(plan.boxes, 0.15, SCENE_BOX).float()
    w = blend_weights_3d(points_in_and_around_scene().float(), boxes, box_centres(boxes))
    assert w.dtype == torch.float32 and bool(torch.isfinite(w).all())


def test_2d_weights_sum_to_one_and_favour_the_nearest_cluster():
    g = torch.Generator().manual_seed(2)
    centroids = torch.randn(6, 3, generator=g, dtype=torch.float64) * 5
    cams = torch.randn(200, 3, generator=g, dtype=torch.float64) * 5
    for nearest in (1, 3, 6, 10):
        w = blend_weights_2d(cams, centroids, nearest=nearest, power=4.0)
        assert w.shape == (200, 6) and bool((w >= 0).all())
        assert torch.allclose(w.sum(dim=1), torch.ones(200, dtype=torch.float64))
        assert bool(((w > 0).sum(dim=1) <= min(nearest, 6)).all())
        dist = torch.cdist(cams, centroids)
        assert torch.equal(w.argmax(dim=1), dist.argmin(dim=1))
        # Among the chosen clusters, weights decrease with distance.
        for row, d in zip(w, dist):
            chosen = row > 0
            order = torch.argsort(d[chosen])
            assert bool((row[chosen][order].diff() <= 1e-15).all())


def test_2d_single_camera_and_ties():
    centroids = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [-2.0, 0, 0], [0.0, 5, 0]])
    w = blend_weights_2d(torch.tensor([0.0, 0, 0]), centroids, nearest=2)
    assert w.shape == (4,) and torch.equal(w, torch.tensor([1.0, 0, 0, 0]))
    assert blend_weights_2d(torch.tensor([[0.0, 0, 0]]), centroids, nearest=2).shape == (1, 4)
    # Clusters 1 and 2 are equidistant from (0, 0, 1): the lower index is taken when only one more fits.
    w = blend_weights_2d(torch.tensor([0.0, 0.0, 1.0]), centroids, nearest=2, power=1.0)
    assert (w > 0).tolist() == [True, True, False, False]
    assert torch.allclose(w, torch.tensor([5**0.5, 1.0, 0, 0]) / (1 + 5**0.5))
    w = blend_weights_2d(torch.tensor([0.0, 0.0, 1.0]), centroids, nearest=3, power=1.0)
    assert w[1] == w[2] and torch.allclose(w.sum(), torch.tensor(1.0))


def test_rejects_bad_parameters():
    c = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        blend_weights_2d(torch.zeros(3), c, nearest=0)
    with pytest.raises(ValueError):
        blend_weights_2d(torch.zeros(3), c, power=0.0)
    with pytest.raises(ValueError):
        blend_weights_3d(torch.zeros(1, 3), torch.zeros(2, 2, 3), c, power=-1.0)
