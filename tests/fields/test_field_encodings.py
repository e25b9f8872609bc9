import math

import numpy as np
import pytest
import torch

from nerfxl.fields import DirectionEncoding, frequency_encoding, frequency_encoding_dim, spherical_harmonics


def _sphere_quadrature(n_theta: int = 24, n_phi: int = 48):
    """Gauss-Legendre in cos(theta) × uniform phi: exact for polynomials of degree < 2 n_theta."""
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    z = np.repeat(nodes, n_phi)
    w = np.repeat(weights, n_phi) * (2 * np.pi / n_phi)
    r = np.sqrt(1 - z**2)
    p = np.tile(phi, n_theta)
    dirs = np.stack([r * np.cos(p), r * np.sin(p), z], axis=-1)
    return torch.tensor(dirs), torch.tensor(w)


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
def test_spherical_harmonics_are_orthonormal(levels):
    dirs, w = _sphere_quadrature()
    y = spherical_harmonics(dirs, levels)
    assert y.shape == (dirs.shape[0], levels**2)
    gram = (y * w[:, None]).T @ y
    torch.testing.assert_close(gram, torch.eye(levels**2, dtype=gram.dtype), atol=1e-10, rtol=0)


def test_spherical_harmonics_low_bands_by_hand():
    d = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64), dim=-1)
    x, y, z = d[0]
    out = spherical_harmonics(d, 2)[0]
    c0, c1 = 0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(out, torch.stack([torch.tensor(c0, dtype=torch.float64), -c1 * y, c1 * z, -c1 * x]))


def test_spherical_harmonics_rejects_bad_levels():
    with pytest.raises(ValueError):
        spherical_harmonics(torch.zeros(1, 3), 6)


def test_frequency_encoding_layout_and_values():
    x = torch.tensor([[0.5, -1.0]])
    out = frequency_encoding(x, 3)
    assert out.shape == (1, frequency_encoding_dim(2, 3)) == (1, 14)
    torch.testing.assert_close(out[0, :2], x[0])
    freqs = torch.tensor([1.0, 2.0, 4.0])
    scaled = (x[0][None, :] * freqs[:, None]).flatten()  # frequency-major
    torch.testing.assert_close(out[0, 2:8], torch.sin(scaled))
    torch.testing.assert_close(out[0, 8:], torch.cos(scaled))
    assert frequency_encoding(x, 0).shape == (1, 2)
    assert frequency_encoding(x, 0, include_input=False).shape == (1, 0)
    assert frequency_encoding(torch.zeros(4, 5, 3), 2).shape == (4, 5, 15)


def test_direction_encoding_dims():
    d = torch.nn.functional.normalize(torch.randn(7, 3), dim=-1)
    sh = DirectionEncoding("sh", sh_levels=4)
    fr = DirectionEncoding("frequency", n_frequencies=4)
    assert sh(d).shape == (7, sh.out_dim) == (7, 16)
    assert fr(d).shape == (7, fr.out_dim) == (7, 27)
    with pytest.raises(ValueError):
        DirectionEncoding("nope")  # type: ignore[arg-type]
