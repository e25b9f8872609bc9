"""The colour MLP shared by every tile (NeRF-XL: synchronised across devices)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .encodings import DirectionEncoding, DirectionEncodingKind, frequency_encoding, frequency_encoding_dim
from .mlp import make_mlp


class ColourDecoder(nn.Module):
    """Tile features + encoded view direction (+ appearance embedding) → rgb in (0, 1).

    The MLP input is ``[features, PE(features), enc(direction), appearance]`` where ``PE`` is a
    frequency encoding of the features (``feature_frequencies`` octaves, TensoRF's ``fea_pe``;
    0 = raw features only) and ``enc`` is spherical harmonics or a frequency encoding.

    Args:
        feature_dim: width of the tile features (the same for every tile).
        appearance_dim: width of the per-image appearance embedding (0 = none).
        direction_encoding: ``"sh"`` or ``"frequency"``.
        sh_levels: SH bands when ``direction_encoding="sh"`` (4 → 16 values).
        direction_frequencies: octaves when ``direction_encoding="frequency"``.
        feature_frequencies: octaves of the feature frequency encoding.
        width: hidden width.
        depth: number of hidden layers.

    Shapes: ``forward(features [N, feature_dim], directions [N, 3], appearance [N, A] | None) -> [N, 3]``.
    """

    def __init__(
        self,
        feature_dim: int,
        appearance_dim: int = 0,
        direction_encoding: DirectionEncodingKind = "sh",
        sh_levels: int = 4,
        direction_frequencies: int = 4,
        feature_frequencies: int = 2,
        width: int = 64,
        depth: int = 2,
    ):
        super().__init__()
        self.feature_dim = feature_dim
        self.appearance_dim = appearance_dim
        self.feature_frequencies = feature_frequencies
        self.direction_encoding = DirectionEncoding(direction_encoding, sh_levels, direction_frequencies)
        in_dim = (
            frequency_encoding_dim(feature_dim, feature_frequencies)
            + self.direction_encoding.out_dim
            + appearance_dim
        )
        self.in_dim = in_dim
        self.mlp = make_mlp(in_dim, 3, width, depth)

    def forward(self, features: Tensor, directions: Tensor, appearance: Tensor | None = None) -> Tensor:
        """Decode colours.

        Args:
            features: [N, feature_dim] tile features.
            directions: [N, 3] unit view directions (world frame).
            appearance: [N, appearance_dim] embeddings, or None for zeros (novel views).

        Returns:
            rgb [N, 3] in (0, 1).
        """
        parts = [
            frequency_encoding(features, self.feature_frequencies),
            self.direction_encoding(directions).to(features.dtype),
        ]
        if self.appearance_dim > 0:
            if appearance is None:
                appearance = features.new_zeros(*features.shape[:-1], self.appearance_dim)
            parts.append(appearance.to(features.dtype))
        return torch.sigmoid(self.mlp(torch.cat(parts, dim=-1)))
