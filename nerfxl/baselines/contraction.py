"""A per-axis scene contraction that spends a field's grid on one box of the scene (Mega-NeRF tiles).

A tile model of the ``independent-3d`` baseline has to model everything its training rays see, i.e.
the whole scene box (the *outer* box), yet its resolution should sit in its own expanded tile (the
*inner* box). :func:`contract_to_box` remaps each axis piecewise-linearly so that the inner interval
[a, b] covers at least ``inner_fraction`` of the outer interval [A, B]; the two shells [A, a] and
[b, B] are squeezed linearly into what is left, each keeping its share of the original shell length:

    a' = A + s·(a − A),   b' = B − s·(B − b),   s = min(1, (1 − f)·(B − A) / ((a − A) + (B − b)))

The map is continuous, strictly increasing, maps [A, B] onto itself and is the identity on an axis
where the inner interval already covers ``f`` of the outer (in particular when inner == outer).
Outside the outer box it continues with slope one (grids clamp there anyway), so it is invertible
on all of R³. Piecewise-linear rather than a 1/x (Mip-NeRF 360) contraction: the outer box is
bounded, so nothing needs to be squeezed from infinity, and the shells keep uniform resolution.

:class:`ContractedGrid` wraps a tile's feature grid so that the grid sees contracted coordinates;
:func:`contract_tile_grid` installs it on a tile of a ``RadianceField``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Share of the outer box (per axis) the inner box gets at least. Three quarters keeps a quarter of
# every axis for the rest of the scene, which a tile's rays still see and must explain.
DEFAULT_INNER_FRACTION = 0.75


def contraction_knots(inner_box: Tensor, outer_box: Tensor, inner_fraction: float = DEFAULT_INNER_FRACTION) -> tuple[Tensor, Tensor]:
    """The breakpoints of the per-axis piecewise-linear contraction.

    Args:
        inner_box: [2, 3] box to magnify; clamped to ``outer_box`` (must keep min < max per axis).
        outer_box: [2, 3] box mapped onto itself.
        inner_fraction: f in (0, 1], the least share of the outer extent the inner box gets.
    Returns:
        (x_knots [4, 3], y_knots [4, 3]): rows A, a, b, B before and after the map, in the dtype
        promoted from the two boxes.
    """
    if not 0.0 < inner_fraction <= 1.0:
        raise ValueError(f"inner_fraction must be in (0, 1], got {inner_fraction}")
    dtype = torch.promote_types(inner_box.dtype, outer_box.dtype)
    outer = outer_box.to(dtype)
    lo_out, hi_out = outer[0], outer[1]
    lo_in = torch.maximum(inner_box[0].to(dtype), lo_out)
    hi_in = torch.minimum(inner_box[1].to(dtype), hi_out)
    if not bool((hi_in > lo_in).all()) or not bool((hi_out > lo_out).all()):
        raise ValueError(f"inner box {inner_box.tolist()} must overlap outer box {outer_box.tolist()} with volume")
    shells = (lo_in - lo_out) + (hi_out - hi_in)
    room = (1.0 - inner_fraction) * (hi_out - lo_out)
    # Axes whose shells already fit in the room (or have none) stay as they are: s = 1.
    scale = torch.where(shells > room, room / shells.clamp_min(torch.finfo(dtype).tiny), torch.ones_like(shells))
    x = torch.stack([lo_out, lo_in, hi_in, hi_out])
    y = torch.stack([lo_out, lo_out + scale * (lo_in - lo_out), hi_out - scale * (hi_out - hi_in), hi_out])
    return x, y


def apply_piecewise_linear(points: Tensor, x_knots: Tensor, y_knots: Tensor) -> Tensor:
    """Per-axis map through knots (x_0 ≤ x_1 < x_2 ≤ x_3 → y likewise), slope one outside [x_0, x_3].

    Args:
        points: [N, 3].
        x_knots, y_knots: [4, 3]; zero-width end segments (inner face on the outer face) are allowed.
    Returns:
        [N, 3] in the dtype of ``points``.
    """
    x, y = x_knots.to(points), y_knots.to(points)
    # Segment slopes; a zero-width shell never receives a point strictly inside it, so any slope works.
    widths = x[1:] - x[:-1]  # [3, 3]
    slopes = torch.where(widths > 0, (y[1:] - y[:-1]) / widths.clamp_min(torch.finfo(points.dtype).tiny), torch.ones_like(widths))
    below, above = points < x[0], points > x[3]
    segment = (points >= x[1]).long() + (points > x[2]).long()  # 0 lower shell, 1 inner, 2 upper shell
    start_x = x[:3].gather(0, segment)
    start_y = y[:3].gather(0, segment)
    inside = start_y + (points - start_x) * slopes.gather(0, segment)
    out = torch.where(below, y[0] + (points - x[0]), inside)
    return torch.where(above, y[3] + (points - x[3]), out)


def contract_to_box(points: Tensor, inner_box: Tensor, outer_box: Tensor, inner_fraction: float = DEFAULT_INNER_FRACTION) -> Tensor:
    """Contract [N, 3] points so that ``inner_box`` fills the centre of ``outer_box``; see the module docstring."""
    return apply_piecewise_linear(points, *contraction_knots(inner_box, outer_box, inner_fraction))


def uncontract_from_box(points: Tensor, inner_box: Tensor, outer_box: Tensor, inner_fraction: float = DEFAULT_INNER_FRACTION) -> Tensor:
    """The inverse of :func:`contract_to_box` ([N, 3] → [N, 3])."""
    x, y = contraction_knots(inner_box, outer_box, inner_fraction)
    return apply_piecewise_linear(points, y, x)


class ContractedGrid(nn.Module):
    """A feature grid over the normalised cube [-1, 1]^3 that reads it through a contraction.

    Wraps a ``PlaneLineGrid`` or ``HashGrid`` (attribute ``inner``); inputs x [..., 3] in the tile's
    normalised cube are contracted towards ``inner_box`` (given in the same cube) before the grid.
    Anything else (``resize``, ``base_resolution``, ``total_variation``, ``table``, ...) is the
    wrapped grid's, so the trainer's grid handling works unchanged. The knots are buffers: a
    checkpoint records the contraction it was trained with. State-dict keys gain ``inner.``.
    """

    def __init__(self, grid: nn.Module, inner_box: Tensor, inner_fraction: float = DEFAULT_INNER_FRACTION):
        super().__init__()
        self.inner = grid
        cube = torch.tensor([[-1.0] * 3, [1.0] * 3], dtype=torch.float32)
        x, y = contraction_knots(inner_box.detach().float().cpu(), cube, inner_fraction)
        self.register_buffer("x_knots", x)
        self.register_buffer("y_knots", y)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):  # during construction / unpickling: never recurse
                raise
            # Delegation keeps ``hasattr(grid, "resize")`` true exactly when the wrapped grid resizes.
            return getattr(self._modules["inner"], name)

    def contract(self, x: Tensor) -> Tensor:
        """[..., 3] normalised positions → [..., 3] contracted ones."""
        return apply_piecewise_linear(x.reshape(-1, 3), self.x_knots, self.y_knots).reshape(x.shape)

    def forward(self, x: Tensor):
        return self.inner(self.contract(x))

    def density_features(self, x: Tensor) -> Tensor:
        return self.inner.density_features(self.contract(x))


def contract_tile_grid(field_module: nn.Module, k: int, inner_box: Tensor, inner_fraction: float = DEFAULT_INNER_FRACTION) -> ContractedGrid:
    """Make tile k of a ``RadianceField`` read its grid through a contraction towards ``inner_box``.

    Args:
        field_module: the field (its tile boxes and ``inner_box`` in the same, model, coordinates).
        k: global tile index (held by ``field_module``).
        inner_box: [2, 3] the region to concentrate resolution in (e.g. an expanded Mega-NeRF tile).
    Returns:
        The installed :class:`ContractedGrid`. The grid's parameters are the same objects, so an
        optimizer built before still steps them; install it *before* loading a checkpoint saved
        with it (the keys differ).
    """
    tile = field_module.tile(k)
    if isinstance(tile.grid, ContractedGrid):
        raise ValueError(f"tile {k} already reads its grid through a contraction")
    box = tile.box.detach().to(torch.float64).cpu()
    inner_normalised = (inner_box.detach().to(torch.float64).cpu() - box[0]) / (box[1] - box[0]) * 2.0 - 1.0
    wrapped = ContractedGrid(tile.grid, inner_normalised, inner_fraction).to(tile.box.device)
    tile.grid = wrapped
    return wrapped
