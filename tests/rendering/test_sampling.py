"""march_rays_in_boxes: several boxes in one pass, the same samples as one march per box."""

import torch

from nerfxl.rendering.occupancy import OccupancyGrid
from nerfxl.rendering.sampling import march_rays_in_box, march_rays_in_boxes


def _boxes_and_grids():
    # Four tiles of a [-1, 1] x [-1, 1] x [-0.5, 0.5] scene, with grids of different resolutions and
    # random occupancy (one tile's grid all empty).
    edges = torch.tensor([-1.0, -0.2, 1.0])
    boxes, grids = [], []
    g = torch.Generator().manual_seed(3)
    for i in range(2):
        for j in range(2):
            box = torch.tensor([[edges[i], edges[j], -0.5], [edges[i + 1], edges[j + 1], 0.5]])
            grid = OccupancyGrid(box, (3 + i, 5 + j, 2 + i + j))
            grid.occupied.copy_(torch.rand(grid.resolution, generator=g) < (0.0 if (i, j) == (1, 0) else 0.6))
            boxes.append(box)
            grids.append(grid)
    return torch.stack(boxes), grids


def _rays(n=300):
    g = torch.Generator().manual_seed(0)
    origins = torch.rand(n, 3, generator=g) * 4 - 2
    directions = torch.randn(n, 3, generator=g)
    directions[::7, 2] = 0.0  # parallel to the z faces
    directions[5] = 0.0  # a degenerate ray
    origins[11] = torch.tensor([-0.2, 0.3, 0.0])  # starts on the face two tiles share
    directions[11] = torch.tensor([0.0, 1.0, 0.0])
    return origins, directions


def test_the_same_samples_bit_for_bit_as_one_march_per_box():
    boxes, grids = _boxes_and_grids()
    origins, directions = _rays()
    for stratified in (False, True):
        for cap in (3, 1024):
            for occupancies in (grids, None):
                batched = march_rays_in_boxes(
                    origins, directions, boxes, 0.05, occupancies, max_samples_per_ray=cap, stratified=stratified,
                    generators=[torch.Generator().manual_seed(10 + b) for b in range(len(boxes))])
                for b in range(len(boxes)):
                    one = march_rays_in_box(
                        origins, directions, boxes[b], 0.05, None if occupancies is None else grids[b],
                        max_samples_per_ray=cap, stratified=stratified, generator=torch.Generator().manual_seed(10 + b))
                    assert torch.equal(batched[b].ray_indices, one.ray_indices), (b, stratified, cap)
                    assert torch.equal(batched[b].t_starts, one.t_starts)
                    assert torch.equal(batched[b].t_ends, one.t_ends)
    with_grids = march_rays_in_boxes(origins, directions, boxes, 0.05, grids)
    assert with_grids[2].n_samples == 0 and all(s.n_samples > 0 for i, s in enumerate(with_grids) if i != 2)


def test_each_boxs_generator_advances_as_one_march_would():
    boxes, grids = _boxes_and_grids()
    origins, directions = _rays(40)
    far_away = origins + 100.0  # no ray meets any box: nothing marched, jitter still drawn
    gens = [torch.Generator().manual_seed(b) for b in range(len(boxes))]
    out = march_rays_in_boxes(far_away, directions.abs(), boxes, 0.05, grids, stratified=True, generators=gens)
    assert all(s.n_samples == 0 for s in out)
    for b, g in enumerate(gens):
        drawn = torch.Generator().manual_seed(b)
        torch.rand(len(origins), generator=drawn)
        assert torch.equal(g.get_state(), drawn.get_state())
