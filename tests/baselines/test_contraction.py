"""The per-axis box contraction and its installation on a tile's grid."""

from __future__ import annotations

import copy

import pytest
import torch

from nerfxl.baselines.contraction import (
    ContractedGrid,
    contract_tile_grid,
    contract_to_box,
    contraction_knots,
    uncontract_from_box,
)
from nerfxl.fields.config import FieldConfig, GridConfig, build_radiance_field

OUTER = torch.tensor([[-1.0, -2.0, 0.0], [3.0, 2.0, 1.0]], dtype=torch.float64)
INNER = torch.tensor([[0.0, -0.5, 0.1], [1.0, 0.5, 0.3]], dtype=torch.float64)


def random_points(box: torch.Tensor, n: int = 2000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return box[0] + torch.rand(n, 3, generator=g, dtype=box.dtype) * (box[1] - box[0])


def test_maps_outer_box_onto_itself_and_magnifies_the_inner_box():
    y = contract_to_box(random_points(OUTER), INNER, OUTER, inner_fraction=0.75)
    assert bool(((y >= OUTER[0]) & (y <= OUTER[1])).all())
    corners = contract_to_box(torch.stack([OUTER[0], OUTER[1]]), INNER, OUTER)
    torch.testing.assert_close(corners, OUTER)
    image = contract_to_box(INNER, INNER, OUTER, inner_fraction=0.75)
    share = (image[1] - image[0]) / (OUTER[1] - OUTER[0])
    torch.testing.assert_close(share, torch.full((3,), 0.75, dtype=torch.float64))


def test_continuous_at_the_inner_faces():
    eps = 1e-9
    for axis in range(3):
        for face in INNER[:, axis]:
            p = INNER.mean(0).repeat(3, 1)
            p[:, axis] = torch.stack([face - eps, face, face + eps])
            y = contract_to_box(p, INNER, OUTER)[:, axis]
            assert float((y[2] - y[0]).abs()) < 1e-8


def test_strictly_increasing_per_axis_and_invertible():
    t = torch.linspace(-3.0, 5.0, 4001, dtype=torch.float64)
    p = t[:, None].repeat(1, 3)
    y = contract_to_box(p, INNER, OUTER)
    assert bool((torch.diff(y, dim=0) > 0).all())
    torch.testing.assert_close(uncontract_from_box(y, INNER, OUTER), p)


def test_identity_when_inner_is_outer_or_already_large():
    p = random_points(OUTER.double() * 1.5)
    torch.testing.assert_close(contract_to_box(p, OUTER, OUTER), p)
    big = OUTER.clone()
    big[0, 0] = -0.5  # covers 87.5% of x: no contraction along x at f = 0.75
    y = contract_to_box(p, big, OUTER)
    torch.testing.assert_close(y[:, 0], p[:, 0])


def test_inner_on_an_outer_face_keeps_that_face():
    inner = OUTER.clone()
    inner[1] = OUTER[0] + 0.1 * (OUTER[1] - OUTER[0])  # a corner box touching the min faces
    x, y = contraction_knots(inner, OUTER, 0.5)
    torch.testing.assert_close(y[1], OUTER[0])
    torch.testing.assert_close(y[2], OUTER[0] + 0.5 * (OUTER[1] - OUTER[0]))
    pts = random_points(OUTER)
    torch.testing.assert_close(uncontract_from_box(contract_to_box(pts, inner, OUTER, 0.5), inner, OUTER, 0.5), pts)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        contract_to_box(torch.zeros(1, 3), INNER, OUTER, inner_fraction=0.0)
    with pytest.raises(ValueError):
        contract_to_box(torch.zeros(1, 3), OUTER + 10.0, OUTER)


@pytest.mark.parametrize("grid_type", ["plane-line", "hash"])
def test_contracted_tile_grid_reads_contracted_positions(grid_type):
    grid = GridConfig(type=grid_type, base_resolution=(8, 8, 8), scales=(1,), density_channels=2, appearance_channels=4) \
        if grid_type == "plane-line" else GridConfig(type="hash", hash_levels=2, hash_log2_size=8)
    config = FieldConfig(grid=grid, decoder_width=16)
    box = torch.tensor([[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]])
    field = build_radiance_field(config, box, n_images=2, seed=0)
    reference = copy.deepcopy(field)
    params_before = [id(p) for p in field.parameters()]
    inner = torch.tensor([[0.0, 0.0, -0.5], [0.5, 0.5, 0.5]])
    wrapped = contract_tile_grid(field, 0, inner, inner_fraction=0.5)
    assert isinstance(field.tile(0).grid, ContractedGrid)
    assert [id(p) for p in field.parameters()] == params_before  # an optimizer built before still applies
    assert hasattr(field.tile(0).grid, "resize") == (grid_type == "plane-line")
    pts = random_points(box[0].double()).float()[:50]
    contracted = contract_to_box(pts, inner, box[0], 0.5)  # the tile box is [-1, 1]^3: normalised = world
    sigma, _ = field.tile(0)(pts)
    sigma_ref, _ = reference.tile(0)(contracted)
    torch.testing.assert_close(sigma, sigma_ref)
    torch.testing.assert_close(field.tile(0).density(pts), reference.tile(0).density(contracted))
    field.tile(0).total_variation()  # delegated to the wrapped grid
    assert "tiles.0.grid.x_knots" in field.state_dict()
    copy.deepcopy(wrapped)
    with pytest.raises(ValueError):
        contract_tile_grid(field, 0, inner)
