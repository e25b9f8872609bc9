"""What a ray sees after it leaves the scene: a constant, random or learned colour, or a sky MLP."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .encodings import DirectionEncoding, DirectionEncodingKind
from .mlp import make_mlp

BackgroundKind = Literal["white", "black", "random", "learned", "sky"]


class SkyModel(nn.Module):
    """Direction-conditioned colour at infinity: enc(direction) (+ appearance) → MLP → rgb (sigmoid).

    Args:
        appearance_dim: width of the optional per-image appearance embedding (0 = none).
        direction_encoding: ``"sh"`` or ``"frequency"``.
        sh_levels: SH bands for ``"sh"``.
        direction_frequencies: octaves for ``"frequency"``.
        width: hidden width.
        depth: hidden layers.

    Shapes: ``forward(directions [N, 3], appearance [N, A] | None) -> rgb [N, 3]``.
    """

    def __init__(self, appearance_dim: int = 0, direction_encoding: DirectionEncodingKind = "sh", sh_levels: int = 4,
                 direction_frequencies: int = 4, width: int = 64, depth: int = 2):
        super().__init__()
        self.appearance_dim = appearance_dim
        self.encoding = DirectionEncoding(direction_encoding, sh_levels, direction_frequencies)
        self.mlp = make_mlp(self.encoding.out_dim + appearance_dim, 3, width, depth)

    def forward(self, directions: Tensor, appearance: Tensor | None = None) -> Tensor:
        x = self.encoding(directions)
        if self.appearance_dim > 0:
            if appearance is None:
                appearance = x.new_zeros(*x.shape[:-1], self.appearance_dim)
            x = torch.cat([x, appearance.to(x.dtype)], dim=-1)
        return torch.sigmoid(self.mlp(x))


class Background(nn.Module):
    """The colour composited behind every ray, weighted by its remaining transmittance.

    Kinds:
        - ``"white"`` / ``"black"``: constant 1 / 0.
        - ``"random"``: in training mode a uniform random colour per ray, so the field cannot
          paint the background into the volume; the caller must blend the target's alpha onto the
          *same* colours (:attr:`is_random`). In eval mode the constant ``eval_colour``.
          With several devices pass the same ``generator`` state on each, or broadcast the colours.
        - ``"learned"``: one learnable rgb (sigmoid of a 3-vector, starts at grey 0.5).
        - ``"sky"``: a :class:`SkyModel` of the view direction (+ appearance embedding).

    Args:
        kind: one of the kinds above.
        sky: the sky model (required for, and only used by, ``"sky"``).
        eval_colour: colour of ``"random"`` outside training (normally the dataset's background).

    Shapes: ``forward(directions [N, 3], appearance [N, A] | None, generator=None) -> rgb [N, 3]``.
    """

    def __init__(self, kind: BackgroundKind = "white", sky: SkyModel | None = None,
                 eval_colour: Sequence[float] = (1.0, 1.0, 1.0)):
        super().__init__()
        if kind not in ("white", "black", "random", "learned", "sky"):
            raise ValueError(f"unknown background {kind!r}")
        if kind == "sky" and sky is None:
            raise ValueError("background 'sky' needs a SkyModel")
        self.kind: BackgroundKind = kind
        self.sky = sky if kind == "sky" else None
        self.colour_logits = nn.Parameter(torch.zeros(3)) if kind == "learned" else None
        self.register_buffer("eval_colour", torch.tensor(list(eval_colour), dtype=torch.float32), persistent=False)

    @property
    def is_random(self) -> bool:
        """True when training targets must be blended onto the colours this module returns."""
        return self.kind == "random" and self.training

    def forward(self, directions: Tensor, appearance: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        n, dtype, device = directions.shape[0], directions.dtype, directions.device
        if self.kind == "white":
            return torch.ones(n, 3, dtype=dtype, device=device)
        if self.kind == "black":
            return torch.zeros(n, 3, dtype=dtype, device=device)
        if self.kind == "random":
            if self.training:
                return torch.rand(n, 3, dtype=dtype, device=device, generator=generator)
            return self.eval_colour.to(dtype).expand(n, 3).clone()
        if self.kind == "learned":
            return torch.sigmoid(self.colour_logits).to(dtype).expand(n, 3)
        return self.sky(directions, appearance).to(dtype)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
