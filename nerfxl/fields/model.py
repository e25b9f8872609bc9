"""The whole radiance field: K tile fields plus the modules every tile shares.

Parameter ownership (NeRF-XL §3, §5):

- **tile parameters** (``tiles[k]``: grid, density head, feature head) live on the device that owns
  tile k and are never communicated;
- **shared parameters** (colour decoder, appearance embeddings, pose corrections, background)
  start identical everywhere and their gradients are all-reduced with **SUM** (each device only
  holds its partial gradient).

One caveat for the distributed trainer: a term computed identically on every device (for
example the background/sky colour composited after the last segment) gives every device the
*full* gradient, not a partial one; keep it differentiable on one rank only before summing.

A model may hold only some of the K tiles (``tile_ids``), so a device need not materialise the
others; every method takes the *global* tile index k.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import ColourDecoder
from .embeddings import AppearanceEmbedding, PoseCorrection
from .sky import Background, SkyModel
from .tile import TileField


class RadianceField(nn.Module):
    """Tiles + shared decoder (+ appearance embedding, pose correction, background).

    Args:
        tiles: the tile fields held by this model (all of them, or this device's).
        decoder: the shared colour decoder; its ``feature_dim`` must equal every tile's.
        appearance: optional shared per-image appearance embedding.
        pose: optional shared per-image pose correction.
        background: optional background (its learned colour / sky MLP is shared).
        tile_ids: global index of each entry of ``tiles`` (default ``0 .. len(tiles)-1``).
        tile_boxes: [K, 2, 3] boxes of *all* K tiles (default: the held tiles' boxes, which
            requires holding all of them). Stored as the buffer ``tile_boxes``.

    Attributes: ``tiles`` (``nn.ModuleList``), ``decoder``, ``appearance``, ``pose``, ``background``.
    """

    joint_evaluation = False
    """True for fields whose every tile is split over processes that evaluate each sample together
    (LandMark's plane and channel parallel): every process then renders every ray, and the field's own
    collectives combine the parts. False: each process renders the tiles it holds (NeRF-XL)."""

    def __init__(
        self,
        tiles: Sequence[TileField],
        decoder: ColourDecoder,
        appearance: AppearanceEmbedding | None = None,
        pose: PoseCorrection | None = None,
        background: Background | None = None,
        tile_ids: Sequence[int] | None = None,
        tile_boxes: Tensor | None = None,
    ):
        super().__init__()
        if len(tiles) == 0:
            raise ValueError("a RadianceField needs at least one tile")
        tile_ids = list(range(len(tiles))) if tile_ids is None else [int(k) for k in tile_ids]
        if len(tile_ids) != len(tiles) or len(set(tile_ids)) != len(tile_ids):
            raise ValueError(f"tile_ids must name each held tile once, got {tile_ids} for {len(tiles)} tiles")
        if tile_boxes is None:
            if sorted(tile_ids) != list(range(len(tiles))):
                raise ValueError("pass tile_boxes (all K boxes) when holding only some of the tiles")
            order = sorted(range(len(tiles)), key=lambda i: tile_ids[i])
            tile_boxes = torch.stack([tiles[i].box for i in order])
        tile_boxes = torch.as_tensor(tile_boxes).detach().to(torch.float32).clone()
        if tile_boxes.dim() != 3 or tile_boxes.shape[1:] != (2, 3):
            raise ValueError(f"tile_boxes must be [K, 2, 3], got {tuple(tile_boxes.shape)}")
        for slot, k in enumerate(tile_ids):
            if not 0 <= k < len(tile_boxes):
                raise ValueError(f"tile id {k} outside 0..{len(tile_boxes) - 1}")
            if not torch.equal(tiles[slot].box.cpu(), tile_boxes[k]):
                raise ValueError(f"tile {k}'s box does not match tile_boxes[{k}]")
        for tile in tiles:
            if tile.feature_dim != decoder.feature_dim:
                raise ValueError(f"tile feature width {tile.feature_dim} ≠ decoder feature_dim {decoder.feature_dim}")
        if appearance is not None and appearance.dim != decoder.appearance_dim:
            raise ValueError(f"appearance dim {appearance.dim} ≠ decoder appearance_dim {decoder.appearance_dim}")
        self.tiles = nn.ModuleList(tiles)
        self.tile_ids: tuple[int, ...] = tuple(tile_ids)
        self._slot = {k: slot for slot, k in enumerate(tile_ids)}
        self.register_buffer("tile_boxes", tile_boxes)
        self.decoder = decoder
        self.appearance = appearance
        self.pose = pose
        self.background = background

    # ------------------------------------------------------------------ structure
    @property
    def n_tiles(self) -> int:
        """K, the number of tiles in the whole scene (held or not)."""
        return self.tile_boxes.shape[0]

    @property
    def sky(self) -> SkyModel | None:
        """The sky model when the background is ``"sky"``, else None."""
        return None if self.background is None else self.background.sky

    def tile(self, k: int) -> TileField:
        """The tile field of global tile index k (KeyError if this model does not hold it)."""
        try:
            return self.tiles[self._slot[int(k)]]
        except KeyError:
            raise KeyError(f"tile {k} is not held by this model (holds {list(self.tile_ids)})") from None

    def hold_tiles(self, tiles: Sequence[TileField], tile_ids: Sequence[int]) -> None:
        """Hold ``tiles`` (global indices ``tile_ids``, possibly none) instead of the current ones: dynamic
        fetching swaps in the tiles around the camera. Their boxes must be the plan's."""
        tile_ids = [int(k) for k in tile_ids]
        if len(tile_ids) != len(tiles) or len(set(tile_ids)) != len(tile_ids):
            raise ValueError(f"tile_ids must name each held tile once, got {tile_ids} for {len(tiles)} tiles")
        for tile, k in zip(tiles, tile_ids):
            if not 0 <= k < self.n_tiles or not torch.equal(tile.box.cpu(), self.tile_boxes[k].cpu()):
                raise ValueError(f"tile {k} is not a tile of this model's plan")
        self.tiles = nn.ModuleList(tiles)
        self.tile_ids = tuple(tile_ids)
        self._slot = {k: slot for slot, k in enumerate(tile_ids)}

    # ------------------------------------------------------------------ queries
    def tile_density(self, k: int, positions: Tensor) -> Tensor:
        """σ [N] of world positions [N, 3] in tile k (for occupancy grids / sampling)."""
        return self.tile(k).density(positions)

    def appearance_embedding(self, image_indices: Tensor | None, n: int) -> Tensor | None:
        """[n, A] embeddings (zeros for None / -1), or None when the model has no embedding."""
        if self.appearance is None:
            return None
        return self.appearance(image_indices, n)

    def query(self, k: int, positions: Tensor, directions: Tensor,
              image_indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Density and colour of samples in tile k.

        Args:
            k: global tile index.
            positions: [N, 3] world positions (inside tile k's box).
            directions: [N, 3] view directions (normalised here).
            image_indices: [N] training-image index per sample, for the appearance embedding;
                None or -1 → zero embedding (novel views).

        Returns:
            sigmas [N] and rgbs [N, 3].
        """
        sigmas, features = self.tile(k)(positions)
        return sigmas, self.decode(features, directions, image_indices)

    def query_tiles(self, tiles: Sequence[int], positions: Sequence[Tensor], directions: Sequence[Tensor],
                    image_indices: Sequence[Tensor | None]) -> list[tuple[Tensor, Tensor]]:
        """:meth:`query` of several tiles' samples, with one decoder call for all of them.

        Args: one entry per tile in each sequence: global index, [N_i, 3] positions, [N_i, 3]
        directions, [N_i] image indices (None anywhere: the zero embedding for all).
        Returns ``[(sigmas [N_i], rgbs [N_i, 3]), ...]``.

        The decoder is shared, so K tiles' features are decoded as one batch instead of K small ones
        (its rows do not interact: the result is the per-tile one)."""
        if len(tiles) == 1:
            return [self.query(tiles[0], positions[0], directions[0], image_indices[0])]
        evaluated = [self.tile(k)(p) for k, p in zip(tiles, positions)]
        sizes = [p.shape[0] for p in positions]
        ids = None if any(i is None for i in image_indices) else torch.cat(list(image_indices))
        rgbs = self.decode(torch.cat([f for _, f in evaluated]), torch.cat(list(directions)), ids)
        return [(sigmas, colours) for (sigmas, _), colours in zip(evaluated, rgbs.split(sizes))]

    @property
    def density_is_separate(self) -> bool:
        """Every held tile evaluates σ apart from its colour features (:attr:`TileField.density_is_separate`):
        a renderer can then compute σ once for every marched sample and colours for the kept ones only."""
        return all(tile.density_is_separate for tile in self.tiles)

    def colours_of_tiles(self, tiles: Sequence[int], positions: Sequence[Tensor], directions: Sequence[Tensor],
                         image_indices: Sequence[Tensor | None]) -> list[Tensor]:
        """The rgbs [N_i, 3] of several tiles' samples (arguments as :meth:`query_tiles`), their σ not
        evaluated; one decoder call for all of them."""
        features = [self.tile(k).features(p) for k, p in zip(tiles, positions)]
        ids = None if any(i is None for i in image_indices) else torch.cat(list(image_indices))
        rgbs = self.decode(torch.cat(features), torch.cat(list(directions)), ids)
        return list(rgbs.split([p.shape[0] for p in positions]))

    def decode(self, features: Tensor, directions: Tensor, image_indices: Tensor | None = None) -> Tensor:
        """rgbs [N, 3] of tile features [N, F] seen along directions [N, 3] (normalised here)."""
        app = self.appearance_embedding(image_indices, features.shape[0])
        return self.decoder(features, F.normalize(directions, dim=-1), app)

    def background_colour(self, directions: Tensor, image_indices: Tensor | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
        """[N, 3] colour behind each ray ([N, 3] directions); white when there is no background module."""
        if self.background is None:
            return torch.ones_like(directions)
        app = self.appearance_embedding(image_indices, directions.shape[0]) if self.sky is not None else None
        return self.background(F.normalize(directions, dim=-1), app, generator)

    def correct_poses(self, camera_to_worlds: Tensor, image_indices: Tensor) -> Tensor:
        """Apply the pose correction ([B, 3, 4], [B] → [B, 3, 4]); identity without one."""
        if self.pose is None:
            return camera_to_worlds
        return self.pose.apply(camera_to_worlds, image_indices)

    # ------------------------------------------------------------------ parameters
    def shared_modules(self) -> dict[str, nn.Module]:
        """The modules shared by all tiles, by attribute name (absent ones left out)."""
        mods = {"decoder": self.decoder, "appearance": self.appearance, "pose": self.pose, "background": self.background}
        return {name: m for name, m in mods.items() if m is not None}

    def named_shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of every shared parameter, in a fixed order (for all-reduce/broadcast)."""
        for name, module in self.shared_modules().items():
            for pname, p in module.named_parameters():
                yield f"{name}.{pname}", p

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters to all-reduce (SUM) across devices."""
        for _, p in self.named_shared_parameters():
            yield p

    def named_tile_parameters(self, k: int) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of tile k (names relative to the tile)."""
        return self.tile(k).named_parameters()

    def tile_parameters(self, k: int) -> Iterator[nn.Parameter]:
        """Parameters local to tile k (never communicated)."""
        return self.tile(k).parameters()

    def parameter_groups(self, tiles: Sequence[int] | None = None) -> dict[str, list[nn.Parameter]]:
        """Parameters split for separate learning rates.

        Args:
            tiles: global tile indices to include (default: every held tile).

        Returns:
            ``{"grids": tile grids, "mlps": tile heads + decoder + background/sky,
            "appearance": embeddings, "pose": pose twists}``; groups with no parameters are left
            out. Every included parameter appears exactly once.
        """
        ids = self.tile_ids if tiles is None else tiles
        groups: dict[str, list[nn.Parameter]] = {"grids": [], "mlps": [], "appearance": [], "pose": []}
        for k in ids:
            tile = self.tile(k)
            groups["grids"] += list(tile.grid_parameters())
            groups["mlps"] += list(tile.mlp_parameters())
        groups["mlps"] += list(self.decoder.parameters())
        if self.background is not None:
            groups["mlps"] += list(self.background.parameters())
        if self.appearance is not None:
            groups["appearance"] += list(self.appearance.parameters())
        if self.pose is not None:
            groups["pose"] += list(self.pose.parameters())
        return {name: params for name, params in groups.items() if params}

    def extra_repr(self) -> str:
        return f"n_tiles={self.n_tiles}, tile_ids={list(self.tile_ids)}"
