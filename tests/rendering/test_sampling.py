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


class _Unbounded:
    """An occupancy query with no known box of occupied cells: the march checks every step."""

    def __init__(self, grid: OccupancyGrid):
        self.grid = grid

    def query(self, positions):
        return self.grid.query(positions)


def test_marching_only_through_the_occupied_cells_box_keeps_exactly_the_same_samples():
    # Sparse occupancy (a few cells, often in one corner) is where the bound cuts most steps.
    boxes, grids = _boxes_and_grids()
    g = torch.Generator().manual_seed(5)
    for trial in range(6):
        for grid in grids:
            grid.occupied.copy_(torch.rand(grid.resolution, generator=g) < (0.05, 0.2, 0.6)[trial % 3])
        if trial == 4:
            grids[0].occupied.fill_(False)
            grids[0].occupied[-1, -1, -1] = True
        origins, directions = _rays(400)
        for stratified in (False, True):
            for cap in (2, 1024):
                kwargs = dict(max_samples_per_ray=cap, stratified=stratified)
                bounded = march_rays_in_boxes(origins, directions, boxes, 0.05, grids,
                                              generators=[torch.Generator().manual_seed(b) for b in range(4)], **kwargs)
                full = march_rays_in_boxes(origins, directions, boxes, 0.05, [_Unbounded(q) for q in grids],
                                           generators=[torch.Generator().manual_seed(b) for b in range(4)], **kwargs)
                for a, b in zip(bounded, full):
                    assert torch.equal(a.ray_indices, b.ray_indices)
                    assert torch.equal(a.t_starts, b.t_starts)
                    assert torch.equal(a.t_ends, b.t_ends)


def test_occupied_box_is_the_tight_box_of_occupied_cells_and_follows_updates():
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 3.0, 1.0]]), (4, 8, 2))
    torch.testing.assert_close(grid.occupied_box(), grid.box)
    grid.occupied.fill_(False)
    assert grid.occupied_box() is None
    grid.occupied[1, 2, 1] = True
    grid.occupied[2, 5, 1] = True
    torch.testing.assert_close(grid.occupied_box(), torch.tensor([[-0.5, 0.0, 0.0], [0.5, 2.0, 1.0]]))
    grid.load_state_dict({**grid.state_dict(), "occupied": torch.ones(4, 8, 2, dtype=torch.bool)})
    torch.testing.assert_close(grid.occupied_box(), grid.box)
