"""Fixed (parameter-free) input encodings: frequency encoding and real spherical harmonics.

Both work on any leading shape ``[..., D]`` and return ``[..., D_out]``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

DirectionEncodingKind = Literal["sh", "frequency"]


def frequency_encoding(x: Tensor, n_frequencies: int, include_input: bool = True) -> Tensor:
    """NeRF-style sinusoidal encoding with octave frequencies ``2^k``, ``k = 0 .. n_frequencies-1``.

    Args:
        x: [..., D] values (positions, directions or features; no π factor is applied, as in
            TensoRF's feature encoding — scale the input if a different base frequency is wanted).
        n_frequencies: number of octaves L (0 gives the identity or an empty tensor).
        include_input: prepend ``x`` itself.

    Returns:
        [..., D * (include_input + 2 L)] laid out as ``[x, sin(2^0 x) .. sin(2^{L-1} x), cos(...)]``,
        where each block is [..., D] (frequency-major, then input dimension).
    """
    parts = [x] if include_input else []
    if n_frequencies > 0:
        freqs = 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)  # [L]
        scaled = (x[..., None, :] * freqs[:, None]).flatten(-2)  # [..., L*D]
        parts += [torch.sin(scaled), torch.cos(scaled)]
    if not parts:
        return x.new_zeros(*x.shape[:-1], 0)
    return torch.cat(parts, dim=-1)


def frequency_encoding_dim(in_dim: int, n_frequencies: int, include_input: bool = True) -> int:
    """Output width of :func:`frequency_encoding`."""
    return in_dim * (int(include_input) + 2 * n_frequencies)


# Real spherical-harmonic normalisation constants, band l = 0..4 (orthonormal on the unit sphere).
_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
_C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
_C2 = (1.0925484305920792, 0.31539156525252005, 0.5462742152960396)
_C3 = (0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154, 1.445305721320277)
_C4 = (2.5033429417967046, 1.7701307697799304, 0.9461746957575601, 0.6690465435572892,
       0.10578554691520431, 0.47308734787878004, 0.6258357354491761)


def spherical_harmonics(directions: Tensor, levels: int = 4) -> Tensor:
    """Real spherical harmonics of unit vectors, bands ``l = 0 .. levels-1``.

    ``levels = 4`` is Instant-NGP's "degree 4" encoding (16 outputs). The basis is orthonormal
    over the sphere (∫ Y_i Y_j dΩ = δ_ij).

    Args:
        directions: [..., 3] unit vectors (x, y, z).
        levels: 1 to 5.

    Returns:
        [..., levels**2] ordered by band l, then m = -l .. l.
    """
    if not 1 <= levels <= 5:
        raise ValueError(f"spherical_harmonics supports 1 to 5 levels, got {levels}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if levels > 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if levels > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            -_C2[0] * y * z,
            _C2[1] * (3.0 * zz - 1.0),
            -_C2[0] * x * z,
            _C2[2] * (xx - yy),
        ]
    if levels > 3:
        out += [
            -_C3[0] * y * (3.0 * xx - yy),
            _C3[1] * x * y * z,
            -_C3[2] * y * (5.0 * zz - 1.0),
            _C3[3] * z * (5.0 * zz - 3.0),
            -_C3[2] * x * (5.0 * zz - 1.0),
            _C3[4] * z * (xx - yy),
            -_C3[0] * x * (xx - 3.0 * yy),
        ]
    if levels > 4:
        out += [
            _C4[0] * x * y * (xx - yy),
            -_C4[1] * y * z * (3.0 * xx - yy),
            _C4[2] * x * y * (7.0 * zz - 1.0),
            -_C4[3] * y * z * (7.0 * zz - 3.0),
            _C4[4] * (35.0 * zz * zz - 30.0 * zz + 3.0),
            -_C4[3] * x * z * (7.0 * zz - 3.0),
            _C4[5] * (xx - yy) * (7.0 * zz - 1.0),
            -_C4[1] * x * z * (xx - 3.0 * yy),
            _C4[6] * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy)),
        ]
    return torch.stack(out, dim=-1)


class DirectionEncoding(nn.Module):
    """Encoding of unit view directions: spherical harmonics or a frequency encoding.

    Args:
        kind: ``"sh"`` (real spherical harmonics, ``levels**2`` outputs) or ``"frequency"``
            (``3 * (1 + 2 * n_frequencies)`` outputs, the raw direction included).
        sh_levels: SH bands for ``"sh"`` (1-5; 4 = Instant-NGP's degree-4 encoding).
        n_frequencies: octaves for ``"frequency"``.
    """

    def __init__(self, kind: DirectionEncodingKind = "sh", sh_levels: int = 4, n_frequencies: int = 4):
        super().__init__()
        if kind not in ("sh", "frequency"):
            raise ValueError(f"unknown direction encoding {kind!r}")
        if kind == "sh" and not 1 <= sh_levels <= 5:
            raise ValueError(f"sh_levels must be 1 to 5, got {sh_levels}")
        self.kind = kind
        self.sh_levels = sh_levels
        self.n_frequencies = n_frequencies

    @property
    def out_dim(self) -> int:
        if self.kind == "sh":
            return self.sh_levels**2
        return frequency_encoding_dim(3, self.n_frequencies)

    def forward(self, directions: Tensor) -> Tensor:
        """[..., 3] unit directions → [..., out_dim]."""
        if self.kind == "sh":
            return spherical_harmonics(directions, self.sh_levels)
        return frequency_encoding(directions, self.n_frequencies)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, out_dim={self.out_dim}"
