import dataclasses
import math

import pytest
import torch

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.rendering import OccupancyGrid, PackedSamples, march_rays_in_box

F64 = dict(dtype=torch.float64)
UNIT_BOX = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], **F64)


# --- OccupancyGrid -------------------------------------------------------------------------------


def test_fresh_grid_is_all_occupied_and_saved_in_state_dict():
    grid = OccupancyGrid(UNIT_BOX, (4, 5, 6))
    assert grid.occupied.shape == grid.density.shape == (4, 5, 6)
    assert grid.occupied_fraction == 1.0 and not grid.density.any()
    assert set(grid.state_dict()) == {"box", "density", "occupied"}

    grid.occupied[1, 2, 3] = False
    grid.density[0, 0, 0] = 7.0
    clone = OccupancyGrid(UNIT_BOX, (4, 5, 6))
    clone.load_state_dict(grid.state_dict())
    assert torch.equal(clone.occupied, grid.occupied) and torch.equal(clone.density, grid.density)
    assert clone.occupied_fraction == pytest.approx(1.0 - 1.0 / 120.0)
    clone.mark_all_occupied()
    assert clone.occupied_fraction == 1.0


def test_query_maps_positions_to_their_cell():
    box = torch.tensor([[-1.0, 0.0, 2.0], [1.0, 4.0, 3.0]], **F64)
    grid = OccupancyGrid(box, (2, 4, 4))  # cells of 1 × 1 × 0.25
    grid.occupied.fill_(False)
    grid.occupied[1, 2, 3] = True  # x ∈ [0, 1], y ∈ [2, 3], z ∈ [2.75, 3]
    points = torch.tensor(
        [
            [0.5, 2.5, 2.875],  # centre of the cell
            [1.0, 2.99, 3.0],  # points on the box's max faces belong to the last cells ...
            [0.0, 2.0, 2.75],  # ... and the cell's min corner to the cell
            [-0.5, 2.5, 2.875],  # neighbour in x
            [0.5, 1.5, 2.875],  # neighbour in y
            [0.5, 2.5, 2.7],  # neighbour in z
            [1.5, 2.5, 2.875],  # outside the box, would clamp into the cell
            [0.5, 2.5, float("nan")],
        ],
        **F64,
    )
    assert grid.query(points).tolist() == [True, True, True, False, False, False, False, False]
    assert grid.query(points.float()).tolist() == [True, True, True, False, False, False, False, False]


def test_update_decays_every_cell_and_takes_the_max():
    grid = OccupancyGrid(UNIT_BOX, 8)
    constant = lambda value: (lambda x: torch.full(x.shape[:1], value, **F64))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    assert grid.update(0, constant(2.0), generator=g)
    assert torch.equal(grid.density, torch.full((8, 8, 8), 2.0, **F64))
    assert grid.update(16, constant(0.0), generator=g)  # still warming up: all cells evaluated
    torch.testing.assert_close(grid.density, torch.full((8, 8, 8), 2.0 * 0.95, **F64))
    # After warmup only some cells are evaluated, but every cell decays.
    assert grid.update(256, constant(0.0), generator=g)
    torch.testing.assert_close(grid.density, torch.full((8, 8, 8), 2.0 * 0.95**2, **F64))
    assert grid.occupied.all()
    # Calls off the update period change nothing.
    before = grid.density.clone()
    assert not grid.update(257, constant(100.0), generator=g)
    assert torch.equal(grid.density, before)


def test_occupancy_threshold_is_capped_by_the_mean():
    grid = OccupancyGrid(UNIT_BOX, 8)

    def faint(x):  # everywhere far below occ_thre, slightly brighter for x > 0.75
        return torch.where(x[:, 0] > 0.75, 0.004, 0.001).to(x.dtype)

    grid.update(0, faint, occ_thre=0.01, generator=torch.Generator().manual_seed(1))
    # mean ≈ 0.00175 < occ_thre, so exactly the brighter quarter is above the threshold.
    assert grid.occupied[6:].all() and not grid.occupied[:6].any()

    def bright(x):  # everywhere above occ_thre except one slab
        return torch.where(x[:, 0] < 0.125, 0.005, 5.0).to(x.dtype)

    grid = OccupancyGrid(UNIT_BOX, 8)
    grid.update(0, bright, occ_thre=0.01, generator=torch.Generator().manual_seed(1))
    assert grid.occupied[1:].all() and not grid.occupied[0].any()


def test_update_after_warmup_samples_a_quarter_plus_occupied_cells():
    grid = OccupancyGrid(UNIT_BOX, 8)  # 512 cells, a quarter is 128
    seen = []

    def counting(x):
        seen.append(x)
        return torch.zeros(x.shape[0], **F64)

    grid.occupied.fill_(False)
    grid.occupied.view(-1)[:40] = True
    grid.update(256, counting, generator=torch.Generator().manual_seed(2))
    assert sum(x.shape[0] for x in seen) == 128 + 40
    # Points are inside the box and the 40 occupied cells are each visited at least once.
    points = torch.cat(seen)
    assert ((points >= 0) & (points <= 1)).all()
    ijk = torch.floor(points * 8).long().clamp(0, 7)
    visited = torch.zeros(512, dtype=torch.bool)
    visited[(ijk[:, 0] * 8 + ijk[:, 1]) * 8 + ijk[:, 2]] = True
    assert visited[:40].all()

    seen.clear()
    grid.occupied.fill_(True)
    grid.update(272, counting, generator=torch.Generator().manual_seed(2))
    assert sum(x.shape[0] for x in seen) == 128 + 128


def test_update_is_reproducible_with_a_generator():
    def field(x):
        return torch.exp(-20.0 * ((x - 0.3) ** 2).sum(-1))

    grids = [OccupancyGrid(UNIT_BOX, 16) for _ in range(2)]
    for grid in grids:
        g = torch.Generator().manual_seed(3)
        for step in (0, 256, 272):
            grid.update(step, field, generator=g)
    assert torch.equal(grids[0].density, grids[1].density)
    assert torch.equal(grids[0].occupied, grids[1].occupied)
    assert 0.0 < grids[0].occupied_fraction < 1.0


# --- march_rays_in_box ---------------------------------------------------------------------------


def reference_march(origins, directions, box, step, occupancy, near, far, max_samples):
    """Per-ray Python loop over the step grid b_j = near + j · step (non-stratified)."""
    t_enter, t_exit, hit = intersect_rays_boxes(origins, directions, box)
    rays, starts, ends = [], [], []
    for r in range(origins.shape[0]):
        t0, t1 = max(float(t_enter[r, 0]), near), min(float(t_exit[r, 0]), far)
        if not bool(hit[r, 0]) or t1 <= t0:
            continue
        j, kept = math.floor((t0 - near) / step), 0
        while near + j * step < t1 and kept < max_samples:
            s, e = max(near + j * step, t0), min(near + (j + 1) * step, t1)
            mid = origins[r] + directions[r] * (0.5 * (s + e))
            mid = torch.clamp(mid, box[0], box[1])
            if e > s and (occupancy is None or bool(occupancy.query(mid[None])[0])):
                rays.append(r)
                starts.append(s)
                ends.append(e)
                kept += 1
            j += 1
    return rays, starts, ends


def random_rays(n_rays, generator):
    origins = torch.rand(n_rays, 3, generator=generator, **F64) * 6.0 - 3.0
    # Aimed at random points near the boxes so that most rays hit.
    directions = torch.rand(n_rays, 3, generator=generator, **F64) * 3.0 - 1.5 - origins
    # Some axis-parallel rays: zero direction components must be handled.
    directions[: n_rays // 8, 1:] = 0.0
    directions[n_rays // 8 : n_rays // 4, 0] = 0.0
    return origins, directions


def random_box(generator):
    lo = torch.rand(3, generator=generator, **F64) * 2.0 - 1.0
    return torch.stack([lo, lo + 0.2 + torch.rand(3, generator=generator, **F64) * 1.5])


def test_march_matches_per_ray_loop():
    g = torch.Generator().manual_seed(20)
    origins, directions = random_rays(300, g)
    box = torch.tensor([[-1.0, -0.5, -1.0], [1.0, 1.5, 0.5]], **F64)
    grid = OccupancyGrid(box, 6)
    grid.occupied.copy_(torch.rand(6, 6, 6, generator=g) < 0.4)
    for occupancy, near, far, cap in [(None, 0.0, math.inf, 1000), (grid, 0.5, 3.0, 1000), (grid, 0.0, math.inf, 7)]:
        samples = march_rays_in_box(
            origins, directions, box, 0.07, occupancy=occupancy, near=near, far=far, max_samples_per_ray=cap
        )
        rays, starts, ends = reference_march(origins, directions, box, 0.07, occupancy, near, far, cap)
        assert len(rays) > 100
        assert samples.ray_indices.tolist() == rays
        torch.testing.assert_close(samples.t_starts, torch.tensor(starts, **F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(samples.t_ends, torch.tensor(ends, **F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("stratified", [False, True])
def test_marched_intervals_stay_inside_the_box(stratified):
    g = torch.Generator().manual_seed(21 + stratified)
    origins, directions = random_rays(500, g)
    step = 0.05
    for _ in range(25):
        box = random_box(g)
        near = float(torch.rand((), generator=g)) * 2.0
        far = near + 0.5 + float(torch.rand((), generator=g)) * 4.0
        grid = OccupancyGrid(box, 5)
        grid.occupied.copy_(torch.rand(5, 5, 5, generator=g) < 0.5)
        occupancy = grid if bool(torch.rand((), generator=g) < 0.5) else None
        samples = march_rays_in_box(
            origins, directions, box, step, occupancy=occupancy, near=near, far=far,
            max_samples_per_ray=40, stratified=stratified, generator=g,
        )
        t_enter, t_exit, hit = (x[:, 0] for x in intersect_rays_boxes(origins, directions, box))
        t0, t1 = t_enter.clamp_min(near), t_exit.clamp_max(far)
        r, s, e = samples.ray_indices, samples.t_starts, samples.t_ends
        assert hit[r].all()
        assert (s >= t0[r]).all() and (e <= t1[r]).all()  # exact: intervals are clamped
        assert (s < e).all() and (e - s <= step * (1 + 1e-12)).all()
        for t in (s, e):
            p = origins[r] + directions[r] * t[:, None]
            assert ((p >= box[0] - 1e-9) & (p <= box[1] + 1e-9)).all()
        # Sorted by ray, then t, not overlapping, and capped.
        same_ray = r[1:] == r[:-1]
        assert (r[1:] >= r[:-1]).all() and (s[1:][same_ray] >= e[:-1][same_ray]).all()
        assert torch.bincount(r, minlength=500).max() <= 40
        if occupancy is None:
            # Nothing skipped: each ray's intervals tile [t0, t1] without gaps (unless capped).
            assert (s[1:][same_ray] == e[:-1][same_ray]).all()
            counts = torch.bincount(r, minlength=500)
            length = torch.zeros(500, **F64).index_add(0, r, e - s)
            full = counts < 40
            torch.testing.assert_close(length[full], (t1 - t0).clamp_min(0)[full], rtol=0, atol=1e-12)


def test_step_grid_is_anchored_at_near_and_jittered_per_ray():
    origins = torch.tensor([[-1.0, 0.5, 0.5]], **F64).repeat(64, 1)
    directions = torch.tensor([[1.0, 0.0, 0.0]], **F64).repeat(64, 1)
    step = 0.1
    plain = march_rays_in_box(origins, directions, UNIT_BOX, step, near=0.03)
    inner = plain.t_starts[1:][plain.ray_indices[1:] == plain.ray_indices[:-1]]
    torch.testing.assert_close((inner - 0.03) / step, torch.round((inner - 0.03) / step))

    def jittered():
        seeded = torch.Generator().manual_seed(4)
        return march_rays_in_box(origins, directions, UNIT_BOX, step, stratified=True, generator=seeded)

    a, b = jittered(), jittered()
    assert torch.equal(a.t_starts, b.t_starts) and torch.equal(a.ray_indices, b.ray_indices)
    # Within a ray the boundaries share one fractional offset; across rays the offsets differ.
    frac = torch.remainder(a.t_starts / step, 1.0)
    inner = a.ray_indices[1:] == a.ray_indices[:-1]
    per_ray = torch.full((64,), float("nan"), **F64)
    per_ray[a.ray_indices[1:][inner]] = frac[1:][inner]
    torch.testing.assert_close(frac[1:][inner], per_ray[a.ray_indices[1:][inner]])
    assert per_ray.std() > 0.2


def test_rays_missing_the_box_give_no_samples():
    origins = torch.tensor([[-1.0, 2.0, 0.5], [2.0, 2.0, 2.0], [0.5, 0.5, 0.5]])
    directions = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    samples = march_rays_in_box(origins, directions, UNIT_BOX.float(), 0.01)
    assert isinstance(samples, PackedSamples) and samples.n_samples == 0
    assert samples.ray_indices.dtype == torch.long and samples.t_starts.dtype == torch.float32
    assert march_rays_in_box(origins[:0], directions[:0], UNIT_BOX.float(), 0.01).n_samples == 0


def test_occupancy_finds_a_thin_slab_and_skips_empty_space():
    resolution = 32
    lo, hi = 16 / resolution, 17 / resolution  # one cell thick in x

    def slab(x):
        return torch.where((x[:, 0] >= lo) & (x[:, 0] < hi), 50.0, 0.0).to(x.dtype)

    grid = OccupancyGrid(UNIT_BOX, resolution)
    g = torch.Generator().manual_seed(24)
    for step in (0, 16, 256, 272, 288):
        grid.update(step, slab, generator=g)
    assert grid.occupied[16].all() and grid.occupied.sum() == resolution**2

    n_rays = 256
    across = 0.25 + 0.5 * torch.rand(n_rays, 2, generator=g, **F64)
    origins = torch.cat([torch.full((n_rays, 1), -0.5, **F64), across], 1)
    directions = torch.cat([torch.ones(n_rays, 1, **F64), 0.3 * torch.rand(n_rays, 2, generator=g, **F64) - 0.15], 1)
    step = 1.0 / 256
    samples = march_rays_in_box(origins, directions, UNIT_BOX, step, occupancy=grid, stratified=True, generator=g)
    everything = march_rays_in_box(origins, directions, UNIT_BOX, step, stratified=True, generator=g)
    assert samples.n_samples < everything.n_samples / 20

    r = samples.ray_indices
    mids_x = origins[r, 0] + directions[r, 0] * 0.5 * (samples.t_starts + samples.t_ends)
    assert ((mids_x >= lo) & (mids_x <= hi)).all()  # nothing kept in empty space
    # Every ray crosses the slab, and its kept intervals cover it up to half a step at each face.
    t_in, t_out = (lo + 0.5) / directions[:, 0], (hi + 0.5) / directions[:, 0]
    assert torch.equal(torch.unique(r), torch.arange(n_rays))
    first = torch.full((n_rays,), math.inf, **F64).scatter_reduce(0, r, samples.t_starts, "amin")
    last = torch.full((n_rays,), -math.inf, **F64).scatter_reduce(0, r, samples.t_ends, "amax")
    assert (first <= t_in + step / 2 + 1e-12).all() and (last >= t_out - step / 2 - 1e-12).all()
    same_ray = r[1:] == r[:-1]
    assert (samples.t_starts[1:][same_ray] == samples.t_ends[:-1][same_ray]).all()  # no holes

    # A ray parallel to the slab, away from it, sees only empty space.
    side = march_rays_in_box(
        torch.tensor([[0.2, -0.5, 0.5]], **F64), torch.tensor([[0.0, 1.0, 0.0]], **F64), UNIT_BOX, step, occupancy=grid
    )
    assert side.n_samples == 0


def test_tiles_share_the_scenes_cell_size_so_k_tiles_hold_about_one_grid_of_cells():
    from nerfxl.partition.uniform import uniform_grid
    from nerfxl.renderer import RenderConfig, tile_occupancy_resolution

    scene = torch.tensor([[-1.0, -1.0, -0.25], [1.0, 1.0, 0.25]])
    config = RenderConfig(occupancy_resolution=64)
    one = math.prod(tile_occupancy_resolution(scene, scene, config))
    assert tile_occupancy_resolution(scene, scene, config) == (64, 64, 16)
    for shape in [(2, 2, 1), (4, 4, 1), (8, 8, 1), (3, 5, 2)]:
        boxes = uniform_grid(scene, shape)
        cells = sum(math.prod(tile_occupancy_resolution(b, scene, config)) for b in boxes)
        assert one <= cells <= 1.3 * one, (shape, cells)
    # Per tile (runs saved before the option): 64 cells along each tile's own longest side, 16× the cells.
    per_tile = dataclasses.replace(config, occupancy_cells_over="tile")
    boxes = uniform_grid(scene, (4, 4, 1))
    assert sum(math.prod(tile_occupancy_resolution(b, scene, per_tile)) for b in boxes) == 16 * 64**3
