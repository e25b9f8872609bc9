"""TiledRenderer: a tile no sample reaches costs no field evaluation and gets no gradient."""

from __future__ import annotations

import dataclasses

import torch

from nerfxl.data.rays import RayBundle
from nerfxl.fields.config import FieldConfig, GridConfig, build_radiance_field
from nerfxl.renderer import RenderConfig, TiledRenderer


def _two_tile_renderer(density_shift: float | None = None) -> TiledRenderer:
    boxes = torch.tensor([[[-1.0, -1.0, -1.0], [0.0, 1.0, 1.0]], [[0.0, -1.0, -1.0], [1.0, 1.0, 1.0]]])
    config = FieldConfig(grid=GridConfig(mode="vm", base_resolution=(8, 8, 8), scales=(1,), density_channels=2,
                                         appearance_channels=4), decoder_width=16, density_shift=density_shift)
    field = build_radiance_field(config, boxes, n_images=1, seed=0)
    return TiledRenderer(field, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), RenderConfig(samples_per_diagonal=64, prune_alpha_threshold=0.0))


def test_a_tile_no_ray_enters_is_not_evaluated_and_gets_no_gradient():
    renderer = _two_tile_renderer()
    asked = []
    density, colours = renderer.field.tile_density, renderer.field.colours_of_tiles
    renderer.field.tile_density = lambda k, *a, **kw: asked.append(k) or density(k, *a, **kw)
    renderer.field.colours_of_tiles = lambda tiles, *a, **kw: asked.extend(tiles) or colours(tiles, *a, **kw)
    # Rays along -y at x = -0.5 stay in tile 0 (x < 0).
    n = 16
    origins = torch.stack([torch.full((n,), -0.5), torch.full((n,), 2.0), torch.linspace(-0.9, 0.9, n)], dim=-1)
    rays = RayBundle(origins, torch.tensor([[0.0, -1.0, 0.0]]).expand(n, 3), torch.zeros(n, dtype=torch.long))
    out = renderer(rays, stratified=True, generators=lambda k: torch.Generator().manual_seed(k))
    out.rgb.sum().backward()
    assert asked == [0, 0]  # σ of the marched samples, colours of the kept ones
    assert all(p.grad is None for p in renderer.field.tile(1).grid_parameters())
    assert all(p.grad is not None for p in renderer.field.tile(0).grid_parameters())
    # The empty tile's generator advanced as if it had marched (a resumed run draws the same numbers).
    g, drawn = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    renderer.march_tiles([1], rays, stratified=True, generators=lambda _: g)
    torch.rand(n, generator=drawn)
    assert torch.equal(g.get_state(), drawn.get_state())


def rays_of_the_test() -> RayBundle:
    g = torch.Generator().manual_seed(0)
    origins = torch.rand(64, 3, generator=g, dtype=torch.float64) * 2 - 1
    origins[:, 1] = 2.0
    directions = torch.randn(64, 3, generator=g, dtype=torch.float64)
    directions[:, 1] = -directions[:, 1].abs() - 1.0
    return RayBundle(origins, directions, torch.zeros(64, dtype=torch.long))


def test_sigma_of_every_marched_sample_then_colours_of_the_kept_ones_is_the_joint_query(monkeypatch):
    """The plane-line path (σ rendered from the pass that decides which samples are kept, colours of the
    kept samples alone) gives the values and gradients of evaluating the kept samples whole (float64)."""
    from nerfxl.fields.model import RadianceField

    def render(separate: bool):
        monkeypatch.setattr(RadianceField, "density_is_separate", property(lambda self: separate))
        renderer = _two_tile_renderer(density_shift=0.5).double()
        renderer.config = dataclasses.replace(renderer.config, prune_alpha_threshold=0.02,
                                              prune_transmittance_threshold=0.5)
        out = renderer(rays_of_the_test(), stratified=True, generators=lambda k: torch.Generator().manual_seed(k))
        (out.rgb.square().sum() + out.depth.sum()).backward()
        grads = {n: p.grad for n, p in renderer.field.named_parameters() if p.grad is not None}
        return out, grads

    separate, separate_grads = render(True)
    joint, joint_grads = render(False)
    marched = _two_tile_renderer().march_tiles([0, 1], rays_of_the_test(), stratified=True,
                                               generators=lambda k: torch.Generator().manual_seed(k))
    assert 0 < separate.n_samples == joint.n_samples < sum(s.n_samples for s in marched)  # both rules dropped some
    torch.testing.assert_close(separate.rgb, joint.rgb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(separate.depth, joint.depth, rtol=1e-12, atol=1e-12)
    assert separate_grads.keys() == joint_grads.keys() and any(".density_" in n for n in separate_grads)
    for name in joint_grads:
        torch.testing.assert_close(separate_grads[name], joint_grads[name], rtol=1e-10, atol=1e-12)
