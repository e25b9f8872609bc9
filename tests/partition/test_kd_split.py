"""The recursive median split: exact tiling, balance for any K, the cube-like axis choice, degenerate input."""

from __future__ import annotations

import math

import pytest
import torch
from partition_checks import assert_tiles_box, counts_in

from nerfxl.partition.kd_split import aspect_ratio, cdf_plane, kd_split, split_score
from nerfxl.partition.plan import tiling_problem


def clustered_cloud(n: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A lumpy city-like cloud: a few dense gaussian blobs plus a uniform background, in a flat box."""
    g = torch.Generator().manual_seed(seed)
    box = torch.tensor([[-50.0, -30.0, 0.0], [50.0, 30.0, 20.0]])
    centres = torch.tensor([[-30.0, -10.0, 5.0], [10.0, 15.0, 8.0], [35.0, -20.0, 2.0]])
    blob = centres[torch.randint(0, 3, (n // 2,), generator=g)] + torch.randn(n // 2, 3, generator=g) * torch.tensor([4.0, 3.0, 2.0])
    background = box[0] + torch.rand(n - n // 2, 3, generator=g) * (box[1] - box[0])
    pts = torch.cat([blob, background])
    inside = ((pts >= box[0]) & (pts <= box[1])).all(dim=-1)
    return pts[inside], box


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
def test_leaves_tile_the_box_exactly(k):
    pts, box = clustered_cloud()
    boxes = kd_split(pts, box, k)
    assert boxes.shape == (k, 2, 3) and boxes.dtype == torch.float64
    assert_tiles_box(boxes, box)
    assert tiling_problem(boxes, box) is None
    # The model keeps boxes in float32: planes are float32 values, so the cast loses nothing.
    assert torch.equal(boxes.float().double(), boxes)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 8])
def test_each_tile_holds_its_share_of_points(k):
    pts, box = clustered_cloud()
    boxes = kd_split(pts, box, k)
    counts = counts_in(boxes, pts).double()
    # Every point of the (closed) box is owned; only max-face points escape the half-open count.
    assert int(counts.sum()) == pts.shape[0]
    expected = pts.shape[0] / k
    # Each split is exact to one point for distinct continuous coordinates; allow 1% for the tree depth.
    assert float((counts - expected).abs().max()) <= 0.01 * expected + 3, counts.tolist()


def test_uneven_k_cuts_mass_in_leaf_proportion():
    pts, box = clustered_cloud()
    boxes = kd_split(pts, box, 3)  # 3 = 1 + 2: first cut at CDF 1/3, then the right side in halves
    counts = counts_in(boxes, pts).double() / pts.shape[0]
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.005)


def test_uneven_k_puts_the_smaller_leaf_count_on_the_low_side():
    # Box 2 × 2 × 1, uniform points. K = 3 = 1 + 2: the first cut (x, at 1/3 of the mass) leaves
    # tile 0 as a full-depth slab; the 2-leaf side (4/3 × 2 × 1) is then halved along y.
    g = torch.Generator().manual_seed(7)
    box = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 1.0]])
    pts = box[0] + torch.rand(30_000, 3, generator=g) * (box[1] - box[0])
    boxes = kd_split(pts, box, 3)
    assert float(boxes[0, 1, 0]) == pytest.approx(2 / 3, abs=0.02)
    assert torch.equal(boxes[0, :, 1:], box[:, 1:].double()), "tile 0 should span the whole y and z"
    assert torch.equal(boxes[1, :, 0], boxes[2, :, 0]) and float(boxes[1, 1, 1]) == pytest.approx(1.0, abs=0.03)


def test_weights_are_balanced_not_counts():
    g = torch.Generator().manual_seed(1)
    box = torch.tensor([[0.0, 0.0, 0.0], [4.0, 1.0, 1.0]])  # long in x: the split is along x
    pts = box[0] + torch.rand(10_000, 3, generator=g) * (box[1] - box[0])
    weights = torch.where(pts[:, 0] < 2.0, 3.0, 1.0)  # the left half does 3× the work per point
    boxes = kd_split(pts, box, 2, weights)
    assert_tiles_box(boxes, box)
    plane = float(boxes[0, 1, 0])
    assert torch.equal(boxes[0, 1, 1:], box[1, 1:].double())
    left = pts[:, 0] < plane
    assert float(weights[left].sum()) == pytest.approx(float(weights.sum()) / 2, rel=0.01)
    # Equal work puts the plane where 3 · x/4 = 1/2 of the total weight 2: x = 4/3, not the count median 2.
    assert plane == pytest.approx(4 / 3, abs=0.05)


def test_split_score_definition():
    cube = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    assert aspect_ratio(cube) == 1.0
    assert split_score(cube, 0, 1.0) == 2.0  # halves 1 × 2 × 2
    assert split_score(cube, 2, 0.5) == 4.0  # worse child 0.5 × 2 × 2
    assert math.isinf(aspect_ratio(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])))


def test_flat_wide_cloud_is_split_along_x_and_y_not_z():
    g = torch.Generator().manual_seed(2)
    box = torch.tensor([[0.0, 0.0, 0.0], [100.0, 100.0, 10.0]])
    pts = box[0] + torch.rand(8000, 3, generator=g) * (box[1] - box[0])
    boxes = kd_split(pts, box, 4)
    assert_tiles_box(boxes, box)
    # No z split: every tile spans the full height; the footprint is cut in x and y.
    assert bool((boxes[:, 0, 2] == 0).all() and (boxes[:, 1, 2] == 10).all())
    assert len(torch.unique(boxes[:, 0, 0])) == 2 and len(torch.unique(boxes[:, :, 1])) > 2


def test_tall_cloud_is_split_along_z():
    g = torch.Generator().manual_seed(3)
    box = torch.tensor([[0.0, 0.0, 0.0], [10.0, 10.0, 100.0]])
    pts = box[0] + torch.rand(8000, 3, generator=g) * (box[1] - box[0])
    boxes = kd_split(pts, box, 2)
    assert torch.equal(boxes[:, :, :2], box[None, :, :2].double().expand(2, 2, 2))
    assert float(boxes[0, 1, 2]) == pytest.approx(50.0, abs=3.0)


def test_axis_choice_follows_the_points_not_only_the_box():
    """In a cube the box alone does not prefer an axis; the medians decide.

    x median ≈ 0.2 (children 0.2 and 1.8 wide → ratio 10), y median ≈ 1.0 (two 1 × 2 × 2 halves →
    ratio 2), z median ≈ 1.9 (a 0.1-thin child → ratio 20): the cube-like y split must win.
    """
    g = torch.Generator().manual_seed(4)
    n = 4001
    x = 0.2 + 0.02 * torch.randn(n, generator=g)
    y = 2.0 * torch.rand(n, generator=g)
    z = 1.9 + 0.02 * torch.randn(n, generator=g)
    pts = torch.stack([x, y, z], dim=-1).clamp(0.0, 2.0)
    box = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    boxes = kd_split(pts, box, 2)
    assert float(boxes[0, 1, 0]) == 2.0 and float(boxes[0, 1, 2]) == 2.0, "x or z was cut"
    assert float(boxes[0, 1, 1]) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_no_points_splits_the_box_geometrically(k):
    box = torch.tensor([[0.0, 0.0, 0.0], [8.0, 4.0, 2.0]])
    for points in (None, torch.zeros(0, 3)):
        boxes = kd_split(points, box, k)
        assert_tiles_box(boxes, box)
        volumes = (boxes[:, 1] - boxes[:, 0]).prod(dim=-1)
        # Cuts in the leaf proportion give every tile the same volume (up to float32 planes).
        assert torch.allclose(volumes, torch.full_like(volumes, 64.0 / k), rtol=1e-5)
    # The first cut of 2 is the middle of the longest side.
    assert torch.equal(kd_split(None, box, 2)[0, 1], torch.tensor([4.0, 4.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 4, 7])
def test_degenerate_point_sets_still_tile(k):
    box = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    same = torch.full((500, 3), 0.5)  # all on one spot: no plane can separate them
    corner = torch.cat([torch.zeros(300, 3), torch.full((1, 3), 1e-9)])  # piled into a corner
    outside = torch.tensor([[5.0, 5.0, 5.0], [-1.0, 0.5, 0.5], [float("nan"), 0.5, 0.5]])
    on_faces = torch.tensor([[0.0, 0.5, 0.5], [1.0, 1.0, 1.0], [0.5, 0.0, 1.0]])
    for pts in (same, corner, outside, on_faces, torch.cat([same, outside])):
        boxes = kd_split(pts, box, k)
        assert_tiles_box(boxes, box)
        sides = boxes[:, 1] - boxes[:, 0]
        assert bool((sides >= 1e-3 * 0.5 ** 3).all()), "a tile collapsed to a sliver"


def test_points_outside_the_box_are_ignored():
    pts, box = clustered_cloud()
    far = torch.full((5000, 3), 1e6)
    assert torch.equal(kd_split(pts, box, 4), kd_split(torch.cat([pts, far]), box, 4))


def test_deterministic():
    pts, box = clustered_cloud()
    assert torch.equal(kd_split(pts, box, 6), kd_split(pts.clone(), box, 6))


def test_cdf_plane_only_cuts_between_distinct_values():
    values = torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    ones = torch.ones(5, dtype=torch.float64)
    assert cdf_plane(values, ones, 0.5) == 1.5  # 3 | 2 is closer to half than 0 | 5
    assert cdf_plane(torch.ones(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), 0.5) is None
    assert cdf_plane(values, torch.zeros(5, dtype=torch.float64), 0.5) is None


def test_bad_arguments():
    box = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="k must be"):
        kd_split(None, box, 0)
    with pytest.raises(ValueError, match="min < max"):
        kd_split(None, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="weights"):
        kd_split(torch.rand(10, 3), box, 2, weights=torch.ones(9))
    with pytest.raises(ValueError, match="non-negative"):
        kd_split(torch.rand(10, 3), box, 2, weights=-torch.ones(10))
