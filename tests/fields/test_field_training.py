"""A few optimiser steps on a toy target: the assembled field really learns (both grid types)."""

import pytest
import torch

from nerfxl.fields import FieldConfig, GridConfig, build_radiance_field


def _target(x, d):
    sigma = 3.0 * torch.exp(-4.0 * (x**2).sum(-1))
    rgb = torch.sigmoid(torch.stack([2 * x[:, 0], x[:, 1] - x[:, 2], d[:, 2]], dim=-1))
    return sigma, rgb


@pytest.fixture
def one_thread():
    # Tiny batches: one intra-op thread is as fast and immune to a busy machine's oversubscription.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("kind", ["plane-line", "hash"])
def test_field_fits_a_smooth_target(kind, one_thread):
    torch.manual_seed(0)
    if kind == "hash":
        cfg = FieldConfig(grid=GridConfig(type="hash", hash_levels=6, hash_log2_size=12, hash_base_resolution=4,
                                          hash_max_resolution=64), feature_dim=8, feature_frequencies=0,
                          head_width=32, decoder_width=32, appearance_embedding_dim=2)
        lrs = {"grids": 3e-2, "mlps": 1e-2, "appearance": 1e-2}
        steps = 250  # colour only starts to move once the tiny (1e-4) hash features have grown
    else:
        cfg = FieldConfig(grid=GridConfig(base_resolution=(12, 12, 12), scales=(1, 2), density_channels=4,
                                          appearance_channels=8), feature_dim=12, decoder_width=32,
                          density_activation="relu", appearance_embedding_dim=2)
        lrs = {"grids": 2e-2, "mlps": 5e-3, "appearance": 1e-2}
        steps = 100
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    model = build_radiance_field(cfg, box, n_images=3, seed=0)
    opt = torch.optim.Adam([{"params": p, "lr": lrs[name]} for name, p in model.parameter_groups().items()])

    def loss_on(x, d, idx):
        sigma, rgb = model.query(0, x, d, idx)
        t_sigma, t_rgb = _target(x, d)
        return (sigma - t_sigma).square().mean() + (rgb - t_rgb).square().mean()

    gen = torch.Generator().manual_seed(1)
    xe, de = torch.rand(2048, 3, generator=gen) * 2 - 1, torch.nn.functional.normalize(torch.randn(2048, 3, generator=gen), dim=-1)
    with torch.no_grad():
        start = loss_on(xe, de, None).item()
    for _ in range(steps):
        x = torch.rand(512, 3, generator=gen) * 2 - 1
        d = torch.nn.functional.normalize(torch.randn(512, 3, generator=gen), dim=-1)
        opt.zero_grad()
        loss_on(x, d, torch.randint(0, 3, (512,), generator=gen)).backward()
        opt.step()
    with torch.no_grad():
        end = loss_on(xe, de, None).item()
    assert end < 0.1 * start, (start, end)
