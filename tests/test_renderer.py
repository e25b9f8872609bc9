"""TiledRenderer: a tile no sample reaches costs no field evaluation and gets no gradient."""

from __future__ import annotations

import torch

from nerfxl.data.rays import RayBundle
from nerfxl.fields.config import FieldConfig, GridConfig, build_radiance_field
from nerfxl.renderer import RenderConfig, TiledRenderer


def _two_tile_renderer() -> TiledRenderer:
    boxes = torch.tensor([[[-1.0, -1.0, -1.0], [0.0, 1.0, 1.0]], [[0.0, -1.0, -1.0], [1.0, 1.0, 1.0]]])
    config = FieldConfig(grid=GridConfig(mode="vm", base_resolution=(8, 8, 8), scales=(1,), density_channels=2,
                                         appearance_channels=4), decoder_width=16)
    field = build_radiance_field(config, boxes, n_images=1, seed=0)
    return TiledRenderer(field, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), RenderConfig(samples_per_diagonal=64, prune_alpha_threshold=0.0))


def test_a_tile_no_ray_enters_is_not_evaluated_and_gets_no_gradient():
    renderer = _two_tile_renderer()
    asked = []
    query = renderer.field.query
    renderer.field.query = lambda k, *a, **kw: asked.append(k) or query(k, *a, **kw)
    # Rays along -y at x = -0.5 stay in tile 0 (x < 0).
    n = 16
    origins = torch.stack([torch.full((n,), -0.5), torch.full((n,), 2.0), torch.linspace(-0.9, 0.9, n)], dim=-1)
    rays = RayBundle(origins, torch.tensor([[0.0, -1.0, 0.0]]).expand(n, 3), torch.zeros(n, dtype=torch.long))
    out = renderer(rays, stratified=True, generators=lambda k: torch.Generator().manual_seed(k))
    out.rgb.sum().backward()
    assert asked == [0]
    assert all(p.grad is None for p in renderer.field.tile(1).grid_parameters())
    assert all(p.grad is not None for p in renderer.field.tile(0).grid_parameters())
    # The empty tile's generator advanced as if it had marched (a resumed run draws the same numbers).
    g, drawn = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    renderer.contributing_samples_of_tiles([1], rays, stratified=True, generators=lambda _: g)
    torch.rand(n, generator=drawn)
    assert torch.equal(g.get_state(), drawn.get_state())
