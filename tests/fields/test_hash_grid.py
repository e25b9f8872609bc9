import itertools

import pytest
import torch
from torch.func import functional_call

from nerfxl.fields import HashGrid

PRIMES = (1, 2654435761, 805459861)


def _reference(grid: HashGrid, p):
    """Per-point, per-level, per-corner hand computation of the encoding."""
    T = 2**grid.log2_hashmap_size
    offset, out = 0, []
    for level, (R, size) in enumerate(zip(grid.resolutions, grid.level_sizes)):
        V = R + 1
        u = [min(max((c + 1) / 2, 0.0), 1.0) * R for c in p]
        cell = [min(int(c), R - 1) for c in u]
        frac = [c - i for c, i in zip(u, cell)]
        acc = torch.zeros(grid.features_per_level, dtype=grid.table.dtype)
        for bits in itertools.product((0, 1), repeat=3):
            c = [cell[a] + bits[a] for a in range(3)]
            if V**3 <= T:
                idx = c[0] + V * c[1] + V * V * c[2]
            else:
                idx = ((c[0] * PRIMES[0]) ^ (c[1] * PRIMES[1]) ^ (c[2] * PRIMES[2])) % T
            w = 1.0
            for a in range(3):
                w *= frac[a] if bits[a] else 1 - frac[a]
            acc = acc + w * grid.table[offset + idx]
        out.append(acc)
        offset += size
    return torch.cat(out)


def _small():
    # growth 2: resolutions 4, 8, 16, 32 → vertices 5, 9, 17, 33; table 1024 → 2 dense, 2 hashed levels.
    return HashGrid(n_levels=4, features_per_level=2, log2_hashmap_size=10, base_resolution=4, max_resolution=32)


def test_levels_sizes_and_shapes():
    g = _small()
    assert g.resolutions == [4, 8, 16, 32]
    assert g.n_dense_levels == 2
    assert g.level_sizes == [125, 729, 1024, 1024]
    assert g.table.shape == (125 + 729 + 2048, 2)
    x = torch.rand(13, 3) * 2 - 1
    y = g(x)
    assert y.shape == (13, 8) == (13, g.out_dim) and y.dtype == torch.float32
    assert g(x.view(13, 1, 3)).shape == (13, 1, 8)
    assert g(torch.zeros(0, 3)).shape == (0, 8)
    assert abs(g.table).max() <= 1e-4


def test_matches_hand_trilinear_on_dense_and_hashed_levels():
    torch.manual_seed(0)
    g = _small().double()
    with torch.no_grad():
        g.table.normal_()
    x = torch.rand(8, 3, dtype=torch.float64) * 2 - 1
    x[0] = torch.tensor([-1.0, 1.0, 0.25])  # on the faces of the cube
    y = g(x)
    for n in range(8):
        torch.testing.assert_close(y[n], _reference(g, x[n].tolist()))


def test_dense_level_is_exact_at_vertices():
    g = _small().double()
    with torch.no_grad():
        g.table.normal_()
    i, j, k = 3, 0, 4
    x = torch.tensor([[-1 + 2 * i / 4, -1 + 2 * j / 4, -1 + 2 * k / 4]], dtype=torch.float64)
    torch.testing.assert_close(g(x)[0, :2], g.table[i + 5 * j + 25 * k])


def test_deterministic_and_seeded():
    torch.manual_seed(3)
    a = _small()
    torch.manual_seed(3)
    b = _small()
    x = torch.rand(100, 3) * 2 - 1
    assert torch.equal(a(x), a(x))
    assert torch.equal(a(x), b(x))


def test_gradcheck_wrt_table_float64():
    # resolutions 2, 4: level 0 dense (27 ≤ 32 entries), level 1 hashed (125 > 32).
    g = HashGrid(n_levels=2, features_per_level=2, log2_hashmap_size=5, base_resolution=2, max_resolution=4).double()
    assert g.n_dense_levels == 1
    x = torch.rand(6, 3, dtype=torch.float64) * 2 - 1
    table = torch.randn_like(g.table).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: functional_call(g, {"table": t}, (x,)), (table,))


def test_gradient_touches_only_looked_up_rows():
    g = _small()
    x = torch.tensor([[0.1, 0.2, 0.3]])
    g(x).sum().backward()
    touched = (g.table.grad.abs().sum(-1) > 0).sum().item()
    assert 0 < touched <= 8 * g.n_levels
    # for each level the corner weights sum to 1
    torch.testing.assert_close(g.table.grad.sum(0), torch.full((2,), 4.0))


def test_bad_arguments():
    with pytest.raises(ValueError):
        HashGrid(base_resolution=64, max_resolution=32)
    with pytest.raises(ValueError):
        HashGrid(log2_hashmap_size=40)
