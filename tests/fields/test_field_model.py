import dataclasses

import pytest
import torch

from nerfxl.errors import ConfigError
from nerfxl.fields import (
    FIELD_PRESETS,
    FieldConfig,
    GridConfig,
    RadianceField,
    build_radiance_field,
    preset,
)


def _boxes(k=3):
    """K boxes splitting [-1, 1] x [0, 2] x [0, 1] along x."""
    xs = torch.linspace(-1, 1, k + 1)
    return torch.stack([torch.tensor([[xs[i], 0.0, 0.0], [xs[i + 1], 2.0, 1.0]]) for i in range(k)])


def _tiny(kind="plane-line", **kw):
    if kind == "hash":
        grid = GridConfig(type="hash", hash_levels=4, hash_log2_size=10, hash_base_resolution=4, hash_max_resolution=32)
        return FieldConfig(grid=grid, feature_dim=7, feature_frequencies=0, head_width=16, decoder_width=16, **kw)
    grid = GridConfig(base_resolution=(6, 6, 4), scales=(1, 2), density_channels=2, appearance_channels=4)
    return FieldConfig(grid=grid, feature_dim=5, decoder_width=16, **kw)


def _points_in(box, n):
    return box[0] + (box[1] - box[0]) * torch.rand(n, 3)


@pytest.mark.parametrize("kind", ["plane-line", "hash"])
def test_build_k3_and_query_shapes(kind):
    boxes = _boxes(3)
    m = build_radiance_field(_tiny(kind, appearance_embedding_dim=3, pose_correction=True), boxes, n_images=5, seed=0)
    assert isinstance(m, RadianceField) and m.n_tiles == 3 and len(m.tiles) == 3
    torch.testing.assert_close(m.tile_boxes, boxes)
    for k in range(3):
        torch.testing.assert_close(m.tiles[k].box, boxes[k])
        x = _points_in(boxes[k], 20)
        sig, rgb = m.query(k, x, torch.randn(20, 3), torch.randint(-1, 5, (20,)))
        assert sig.shape == (20,) and rgb.shape == (20, 3)
        assert sig.dtype == rgb.dtype == torch.float32
        assert (sig >= 0).all() and ((rgb > 0) & (rgb < 1)).all()
        torch.testing.assert_close(m.tile_density(k, x), sig)
    tv, l1 = m.tiles[0].total_variation(), m.tiles[0].density_l1()
    assert tv.dim() == l1.dim() == 0
    assert (tv > 0 and l1 > 0) if kind == "plane-line" else (tv == 0 and l1 == 0)
    corners = boxes[1]
    torch.testing.assert_close(m.tiles[1].normalize(corners), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert m.tiles[1].contains(corners).all()


@pytest.mark.parametrize("kind", ["plane-line", "hash"])
def test_query_gradients_reach_only_own_tile_and_shared(kind):
    boxes = _boxes(3)
    m = build_radiance_field(_tiny(kind, appearance_embedding_dim=3, background="learned"), boxes, n_images=4, seed=1)
    k = 1
    sig, rgb = m.query(k, _points_in(boxes[k], 50), torch.randn(50, 3), torch.randint(0, 4, (50,)))
    (sig.sum() + rgb.sum()).backward()
    for j in range(3):
        for name, p in m.named_tile_parameters(j):
            if j == k:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
            else:
                assert p.grad is None or p.grad.abs().sum() == 0, name
    assert sum(p.grad.abs().sum() for p in m.tile_parameters(k) if p.grad is not None) > 0
    for name, p in m.named_shared_parameters():
        if name.startswith("decoder") or name.startswith("appearance"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert m.background.colour_logits.grad is None  # not used by a tile query


@pytest.mark.parametrize("kind", ["plane-line", "hash"])
def test_gradients_flow_to_positions(kind):
    # Pose correction moves the samples, so σ and rgb must be differentiable w.r.t. positions.
    boxes = _boxes(1)
    m = build_radiance_field(_tiny(kind), boxes, 1, seed=0)
    x = _points_in(boxes[0], 30).requires_grad_(True)
    sig, rgb = m.query(0, x, torch.randn(30, 3))
    (sig.sum() + rgb.sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_zero_and_minus_one_image_indices_give_same_colour_as_none():
    boxes = _boxes(1)
    m = build_radiance_field(_tiny(appearance_embedding_dim=3), boxes, n_images=2, seed=0)
    with torch.no_grad():
        m.appearance.weight.normal_()
    x, d = _points_in(boxes[0], 10), torch.randn(10, 3)
    _, a = m.query(0, x, d, None)
    _, b = m.query(0, x, d, torch.full((10,), -1))
    _, c = m.query(0, x, d, torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_empty_query_still_backpropagates():
    boxes = _boxes(2)
    for kind in ("plane-line", "hash"):
        m = build_radiance_field(_tiny(kind), boxes, n_images=1, seed=0)
        sig, rgb = m.query(0, torch.zeros(0, 3), torch.zeros(0, 3))
        assert sig.shape == (0,) and rgb.shape == (0, 3)
        (sig.sum() + rgb.sum()).backward()
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.parameters())


def test_parameter_partitions():
    m = build_radiance_field(_tiny(appearance_embedding_dim=2, pose_correction=True, background="sky"), _boxes(3), 3, seed=0)
    all_ids = {id(p) for p in m.parameters()}
    shared = [id(p) for p in m.shared_parameters()]
    tiles = [id(p) for k in range(3) for p in m.tile_parameters(k)]
    assert len(set(shared)) == len(shared) and len(set(tiles)) == len(tiles)
    assert not set(shared) & set(tiles)
    assert set(shared) | set(tiles) == all_ids
    assert m.sky is not None and {id(p) for p in m.sky.parameters()} <= set(shared)
    groups = m.parameter_groups()
    assert set(groups) == {"grids", "mlps", "appearance", "pose"}
    flat = [id(p) for ps in groups.values() for p in ps]
    assert len(flat) == len(set(flat)) and set(flat) == all_ids
    assert {id(p) for p in groups["grids"]} == {id(p) for k in range(3) for p in m.tiles[k].grid.parameters()}
    one = m.parameter_groups(tiles=[2])
    assert {id(p) for p in one["grids"]} == {id(p) for p in m.tiles[2].grid.parameters()}
    plain = build_radiance_field(_tiny(), _boxes(1), 0)
    assert set(plain.parameter_groups()) == {"grids", "mlps"}
    names = [n for n, _ in m.named_shared_parameters()]
    assert names[0].startswith("decoder.") and any(n.startswith("pose.") for n in names)


@pytest.mark.parametrize("kind", ["plane-line", "hash"])
def test_state_dict_round_trip(kind):
    cfg = _tiny(kind, appearance_embedding_dim=2, pose_correction=True)
    a = build_radiance_field(cfg, _boxes(3), 4, seed=0)
    b = build_radiance_field(cfg, _boxes(3), 4, seed=1)
    x, d, idx = _points_in(_boxes(3)[2], 30), torch.randn(30, 3), torch.randint(-1, 4, (30,))
    assert not torch.allclose(a.query(2, x, d, idx)[1], b.query(2, x, d, idx)[1])
    b.load_state_dict(a.state_dict())
    for out_a, out_b in zip(a.query(2, x, d, idx), b.query(2, x, d, idx)):
        torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)
    assert "tile_boxes" in a.state_dict() and "tiles.0.box" in a.state_dict()


def test_state_dict_after_resize_loads_into_fresh_model():
    cfg = _tiny()
    a = build_radiance_field(cfg, _boxes(2), 1, seed=0)
    a.tiles[1].grid.resize((9, 8, 5))
    b = build_radiance_field(cfg, _boxes(2), 1, seed=1)
    b.load_state_dict(a.state_dict())
    x, d = _points_in(_boxes(2)[1], 10), torch.randn(10, 3)
    torch.testing.assert_close(a.query(1, x, d)[0], b.query(1, x, d)[0])


def test_seeded_subset_build_matches_full_build():
    cfg = _tiny(appearance_embedding_dim=2)
    full = build_radiance_field(cfg, _boxes(3), 2, seed=7)
    part = build_radiance_field(cfg, _boxes(3), 2, tile_ids=[2], seed=7)
    assert part.tile_ids == (2,) and len(part.tiles) == 1 and part.n_tiles == 3
    for (n1, p1), (n2, p2) in zip(full.named_tile_parameters(2), part.named_tile_parameters(2)):
        assert n1 == n2 and torch.equal(p1, p2)
    for (n1, p1), (n2, p2) in zip(full.named_shared_parameters(), part.named_shared_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    with pytest.raises(KeyError):
        part.tile(0)
    state = torch.random.get_rng_state()
    build_radiance_field(cfg, _boxes(3), 2, seed=7)
    assert torch.equal(state, torch.random.get_rng_state())  # seeded build leaves the global RNG alone


def test_single_box_and_bad_inputs():
    m = build_radiance_field(_tiny(), torch.tensor([[0.0, 0, 0], [1, 1, 1]]), 0)
    assert m.n_tiles == 1
    with pytest.raises(ConfigError):
        build_radiance_field(_tiny(), torch.tensor([[[0.0, 0, 0], [1, 0, 1]]]), 0)
    with pytest.raises(ConfigError):
        build_radiance_field(_tiny(appearance_embedding_dim=4), _boxes(1), 0)
    with pytest.raises(ConfigError):
        build_radiance_field(_tiny(), _boxes(2), 0, tile_ids=[2])
    with pytest.raises(ConfigError):
        build_radiance_field(dataclasses.replace(_tiny(), sh_levels=7), _boxes(1), 0)


def test_background_colour_and_pose_passthrough():
    m = build_radiance_field(_tiny(appearance_embedding_dim=2, background="sky"), _boxes(1), 3, seed=0)
    d = torch.randn(4, 3)
    assert m.background_colour(d, torch.tensor([0, 1, -1, 2])).shape == (4, 3)
    c2w = torch.randn(4, 3, 4)
    assert m.correct_poses(c2w, torch.zeros(4, dtype=torch.long)) is c2w


@pytest.mark.parametrize("name", sorted(FIELD_PRESETS))
def test_presets_build_and_stay_small(name):
    cfg = preset(name)
    m = build_radiance_field(cfg, _boxes(1), n_images=3, seed=0)
    n = sum(p.numel() for p in m.parameters())
    assert 5e5 < n < 4e6
    sig, rgb = m.query(0, _points_in(_boxes(1)[0], 64), torch.randn(64, 3), torch.randint(-1, 3, (64,)))
    assert sig.shape == (64,) and rgb.shape == (64, 3)
    assert cfg.resolved_density_activation() == ("trunc_exp" if cfg.grid.type == "hash" else "softplus")
    cfg.grid.scales = (7,)  # preset() returns a copy
    cfg.feature_dim = 99
    assert FIELD_PRESETS[name].grid.scales != (7,) and FIELD_PRESETS[name].feature_dim != 99


def test_config_density_defaults():
    assert FieldConfig().resolved_density_shift() == -10.0
    assert FieldConfig(grid=GridConfig(type="hash")).resolved_density_shift() == -1.0
    assert FieldConfig(density_activation="relu").resolved_density_shift() == 0.0
    assert FieldConfig(density_shift=2.0).resolved_density_shift() == 2.0


def test_config_works_with_tyro(capsys):
    import tyro

    cfg = tyro.cli(FieldConfig, args=["--grid.type", "hash", "--grid.scales", "1", "2", "--appearance-embedding-dim", "8",
                                       "--background", "sky"])
    assert cfg.grid.type == "hash" and cfg.grid.scales == (1, 2) and cfg.appearance_embedding_dim == 8
    with pytest.raises(SystemExit):
        tyro.cli(FieldConfig, args=["--help"])
    helptext = capsys.readouterr().out
    assert "Per-image appearance embedding width" in helptext  # field docstrings reach --help
    assert "plane" in helptext and "hash" in helptext


@pytest.mark.parametrize("kind", ["plane-line", "hash"])
def test_whole_model_converts_to_float64(kind):
    m = build_radiance_field(_tiny(kind, appearance_embedding_dim=2, background="sky"), _boxes(2), 2, seed=0).double()
    x = _points_in(_boxes(2)[1], 8).double()
    sig, rgb = m.query(1, x, torch.randn(8, 3, dtype=torch.float64), torch.tensor([0, 1, -1, 0, 1, 1, 0, -1]))
    assert sig.dtype == rgb.dtype == torch.float64
    assert m.background_colour(torch.randn(8, 3, dtype=torch.float64)).dtype == torch.float64
