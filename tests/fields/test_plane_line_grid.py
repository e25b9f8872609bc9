import pytest
import torch

from nerfxl.fields import PlaneLineGrid


def _node(i, j, k, res):
    return torch.tensor([[-1 + 2 * i / (res[0] - 1), -1 + 2 * j / (res[1] - 1), -1 + 2 * k / (res[2] - 1)]],
                        dtype=torch.float64)


def _bilinear(img, u, v):
    """Hand bilinear interpolation with align_corners=True: img [C, H, W], u along W, v along H."""
    H, W = img.shape[1:]
    px, py = (u + 1) / 2 * (W - 1), (v + 1) / 2 * (H - 1)
    x0, y0 = min(int(px), W - 2) if W > 1 else 0, min(int(py), H - 2) if H > 1 else 0
    fx, fy = px - x0, py - y0
    x1, y1 = min(x0 + 1, W - 1), min(y0 + 1, H - 1)
    return ((1 - fx) * (1 - fy) * img[:, y0, x0] + fx * (1 - fy) * img[:, y0, x1]
            + (1 - fx) * fy * img[:, y1, x0] + fx * fy * img[:, y1, x1])


def _reference(grid, planes, lines, p):
    comps = {"vm": [(0, 1, 2), (0, 2, 1), (1, 2, 0)], "ground": [(0, 1, 2)]}[grid.mode]
    out = []
    for level in range(grid.n_levels):
        acc = 0
        for j, (a, b, c) in enumerate(comps):
            i = level * len(comps) + j
            plane = _bilinear(planes[i][0], p[a], p[b])
            line = _bilinear(lines[i][0], -1.0, p[c])  # a [C, L, 1] "image" of width 1
            acc = acc + plane * line
        out.append(acc)
    return torch.cat(out)


@pytest.mark.parametrize("mode", ["vm", "ground"])
def test_shapes_and_dtypes(mode):
    g = PlaneLineGrid((8, 6, 4), scales=(1, 2, 4), density_channels=3, appearance_channels=5, mode=mode)
    x = torch.rand(11, 3) * 2 - 1
    d, a = g(x)
    assert d.shape == (11, 9) and a.shape == (11, 15)
    assert d.dtype == a.dtype == torch.float32
    assert g.density_dim == 9 and g.appearance_dim == 15
    assert g.level_resolutions == [(8, 6, 4), (16, 12, 8), (32, 24, 16)]
    n_comp = 3 if mode == "vm" else 1
    assert len(g.density_planes) == len(g.appearance_lines) == 3 * n_comp
    torch.testing.assert_close(g.density_features(x), d)
    torch.testing.assert_close(g.appearance_features(x), a)
    d2, a2 = g(x.view(1, 11, 3))
    assert d2.shape == (1, 11, 9) and a2.shape == (1, 11, 15)
    d0, a0 = g(torch.zeros(0, 3))
    assert d0.shape == (0, 9) and a0.shape == (0, 15)


def test_scale_z_off_keeps_z_resolution():
    g = PlaneLineGrid((8, 6, 4), scales=(1, 2), mode="ground", scale_z=False)
    assert g.level_resolutions == [(8, 6, 4), (16, 12, 4)]
    assert g.density_lines[1].shape[2] == 4


def test_ground_value_at_node_is_plane_times_line():
    res = (5, 4, 3)
    g = PlaneLineGrid(res, scales=(1,), density_channels=2, appearance_channels=3, mode="ground").double()
    i, j, k = 3, 1, 2
    d, a = g(_node(i, j, k, res))
    torch.testing.assert_close(d[0], g.density_planes[0][0, :, j, i] * g.density_lines[0][0, :, k, 0])
    torch.testing.assert_close(a[0], g.appearance_planes[0][0, :, j, i] * g.appearance_lines[0][0, :, k, 0])


def test_vm_value_at_node_sums_three_components():
    res = (5, 4, 3)
    g = PlaneLineGrid(res, scales=(1,), density_channels=2, appearance_channels=3, mode="vm").double()
    i, j, k = 1, 2, 0
    d, _ = g(_node(i, j, k, res))
    P, L = g.density_planes, g.density_lines
    expected = (P[0][0, :, j, i] * L[0][0, :, k, 0]      # xy plane × z line
                + P[1][0, :, k, i] * L[1][0, :, j, 0]    # xz plane × y line
                + P[2][0, :, k, j] * L[2][0, :, i, 0])   # yz plane × x line
    torch.testing.assert_close(d[0], expected)


@pytest.mark.parametrize("mode", ["vm", "ground"])
def test_random_points_match_hand_bilinear_all_levels(mode):
    torch.manual_seed(0)
    g = PlaneLineGrid((4, 5, 3), scales=(1, 3), density_channels=2, appearance_channels=2, mode=mode).double()
    x = torch.rand(6, 3, dtype=torch.float64) * 2 - 1
    d, a = g(x)
    for n in range(6):
        torch.testing.assert_close(d[n], _reference(g, g.density_planes, g.density_lines, x[n].tolist()))
        torch.testing.assert_close(a[n], _reference(g, g.appearance_planes, g.appearance_lines, x[n].tolist()))


def test_resize_is_exact_at_old_nodes():
    res = (5, 4, 3)
    g = PlaneLineGrid(res, scales=(1,), density_channels=2, appearance_channels=3, mode="vm").double()
    nodes = torch.cat([_node(i, j, k, res) for i in range(5) for j in range(4) for k in range(3)])
    before = g(nodes)
    g.resize((9, 7, 5))  # 2 (r - 1) + 1: every old node is a new node
    assert g.density_planes[0].shape == (1, 2, 7, 9)
    after = g(nodes)
    torch.testing.assert_close(after[0], before[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(after[1], before[1], atol=1e-12, rtol=0)


def test_resize_keeps_linear_content_everywhere():
    torch.manual_seed(1)
    g = PlaneLineGrid((4, 5, 3), scales=(1, 2), density_channels=2, appearance_channels=3, mode="vm")
    with torch.no_grad():
        for plist in (g.density_planes, g.appearance_planes):
            for p in plist:
                C, H, W = p.shape[1:]
                v = torch.linspace(-1, 1, H)[:, None]
                u = torch.linspace(-1, 1, W)[None, :]
                coef = torch.randn(C, 3)
                p.copy_((coef[:, 0, None, None] + coef[:, 1, None, None] * u + coef[:, 2, None, None] * v)[None])
        for llist in (g.density_lines, g.appearance_lines):
            for p in llist:
                C, L = p.shape[1:3]
                w = torch.linspace(-1, 1, L)
                coef = torch.randn(C, 2)
                p.copy_((coef[:, :1] + coef[:, 1:] * w)[None, :, :, None])
    x = torch.rand(500, 3) * 2 - 1
    before = g(x)
    old = list(g.parameters())
    new = g.resize((11, 7, 6))
    assert g.level_resolutions == [(11, 7, 6), (22, 14, 12)]
    assert new == list(g.parameters())
    assert not any(any(n is o for o in old) for n in new)  # fresh Parameters: rebuild the optimiser
    after = g(x)
    torch.testing.assert_close(after[0], before[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[1], before[1], atol=1e-5, rtol=1e-5)


def test_state_dict_of_resized_grid_loads_into_fresh_grid():
    g = PlaneLineGrid((4, 4, 4), scales=(1, 2), density_channels=2, appearance_channels=2)
    g.resize((6, 6, 5))
    fresh = PlaneLineGrid((4, 4, 4), scales=(1, 2), density_channels=2, appearance_channels=2)
    fresh.load_state_dict(g.state_dict())
    assert fresh.base_resolution == (6, 6, 5)
    x = torch.rand(20, 3) * 2 - 1
    torch.testing.assert_close(fresh(x)[0], g(x)[0])


def test_regularisers():
    g = PlaneLineGrid((6, 6, 6), scales=(1, 2), density_channels=2, appearance_channels=2)
    tv, l1 = g.total_variation(), g.density_l1()
    assert tv.dim() == 0 and tv > 0 and l1 > 0
    l1.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in list(g.density_planes) + list(g.density_lines))
    assert all(p.grad is None for p in list(g.appearance_planes) + list(g.appearance_lines))
    with torch.no_grad():
        for p in g.parameters():
            p.fill_(0.3)
    assert g.total_variation().item() == 0.0
    assert g.total_variation("density").item() == 0.0


def test_forward_gradients_reach_planes_and_lines():
    g = PlaneLineGrid((6, 6, 6), scales=(1,), density_channels=2, appearance_channels=2, mode="vm")
    d, a = g(torch.rand(50, 3) * 2 - 1)
    d.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.density_planes)
    assert all(p.grad is None for p in g.appearance_planes)


def test_bad_arguments():
    with pytest.raises(ValueError):
        PlaneLineGrid((4, 4), scales=(1,))
    with pytest.raises(ValueError):
        PlaneLineGrid((4, 4, 4), mode="cp")  # type: ignore[arg-type]
