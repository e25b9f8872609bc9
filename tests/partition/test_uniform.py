"""Uniform block grids: squarish shapes for a given K, exact tiling, block order."""

from __future__ import annotations

import pytest
import torch
from partition_checks import assert_tiles_box

from nerfxl.partition.uniform import grid_shape_for, uniform_grid, uniform_tiles


def box_of(sx: float, sy: float, sz: float = 10.0) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, 0.0], [sx, sy, sz]])


@pytest.mark.parametrize("k, size, nz, expected", [
    (1, (100, 100), 1, (1, 1, 1)),
    (4, (100, 100), 1, (2, 2, 1)),
    (6, (300, 200), 1, (3, 2, 1)),
    (6, (200, 300), 1, (2, 3, 1)),
    (8, (100, 100), 1, (2, 4, 1)),   # 2 × 4 and 4 × 2 are equally square: fewer columns along x wins
    (16, (400, 100), 1, (8, 2, 1)),  # 50 × 50 blocks
    (9, (300, 100), 1, (3, 3, 1)),   # 100 × 33 and 33 × 100 tie at ratio 3 (1 × 9: 27): fewer x columns
    (7, (100, 300), 1, (1, 7, 1)),   # prime: the long side gets the cuts
    (7, (300, 100), 1, (7, 1, 1)),
    (8, (100, 100), 2, (2, 2, 2)),
    (12, (200, 100), 3, (2, 2, 3)),
])
def test_grid_shapes(k, size, nz, expected):
    assert grid_shape_for(k, box_of(*size), nz) == expected


def test_grid_shape_is_the_squarest_factorisation():
    # Brute force over all factorisations for many K and box shapes.
    for k in range(1, 40):
        for sx, sy in ((1.0, 1.0), (3.0, 1.0), (1.0, 2.5), (10.0, 7.0)):
            nx, ny, nz = grid_shape_for(k, box_of(sx, sy))
            assert nx * ny == k and nz == 1

            def ratio(a, b):
                wx, wy = sx / a, sy / b
                return max(wx, wy) / min(wx, wy)

            best = min(ratio(a, k // a) for a in range(1, k + 1) if k % a == 0)
            assert ratio(nx, ny) == pytest.approx(best)


def test_bad_grid_requests():
    with pytest.raises(ValueError):
        grid_shape_for(0, box_of(1, 1))
    with pytest.raises(ValueError):
        grid_shape_for(6, box_of(1, 1), nz=4)
    with pytest.raises(ValueError):
        uniform_grid(box_of(1, 1), (2, 0, 1))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 1), (3, 3, 2), (5, 1, 4)])
def test_uniform_grid_tiles_the_box_in_equal_blocks(shape):
    box = torch.tensor([[-7.0, 1.0, -2.0], [13.0, 4.0, 5.0]])
    blocks = uniform_grid(box, shape)
    nx, ny, nz = shape
    assert blocks.shape == (nx * ny * nz, 2, 3)
    assert_tiles_box(blocks, box)
    volumes = (blocks[:, 1] - blocks[:, 0]).prod(dim=-1)
    assert torch.allclose(volumes, volumes.mean().expand_as(volumes), rtol=1e-5)
    # id = (ix · ny + iy) · nz + iz: the block's min corner sits at the matching grid position.
    step = (box[1] - box[0]).double() / torch.tensor(shape, dtype=torch.float64)
    for ix in range(nx):
        for iy in range(ny):
            for iz in range(nz):
                corner = box[0].double() + step * torch.tensor([ix, iy, iz], dtype=torch.float64)
                assert torch.allclose(blocks[(ix * ny + iy) * nz + iz, 0], corner, atol=1e-5)


def test_uniform_tiles_uses_the_chosen_shape():
    box = box_of(400, 100)
    blocks, shape = uniform_tiles(box, 16)
    assert shape == (8, 2, 1)
    assert torch.allclose(blocks[0, 1] - blocks[0, 0], torch.tensor([50.0, 50.0, 10.0], dtype=torch.float64))
