"""Tile plans: which axis-aligned box each of the K devices owns, how they were chosen, and I/O.

A :class:`TilePlan` holds K boxes that tile the scene box exactly (shared faces only, union = the
box; checked on construction and on load), the per-tile point counts and work estimates the plan
was balanced on, and where those points came from. :func:`plan_tiles` builds one from a dataset (its
point cloud, or samples along random training rays) or from a bare point tensor.

All coordinates are the dataset's world units (the same frame as ``Dataset.scene_box``). A trainer
that normalises the scene (``SceneTransform``) must map the boxes through the same elementwise
affine map; because equal inputs give equal outputs, shared faces stay shared.

Ownership rule (also used by the k-d split): boxes are half-open [min, max) on every axis, except
that faces lying on the scene box's max faces are closed, so every point of the closed scene box
belongs to exactly one tile.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.dataset import Dataset
from nerfxl.data.rays import generate_rays
from nerfxl.data.sampler import generator_for
from nerfxl.errors import ConfigError, DataError
from nerfxl.fileio import write_text_atomic
from nerfxl.partition.kd_split import kd_split
from nerfxl.partition.uniform import grid_shape_for, uniform_grid

Method = Literal["kd", "uniform"]
PointSource = Literal["auto", "points", "rays"]
METHODS: tuple[str, ...] = get_args(Method)

PLAN_FORMAT = "nerfxl-tile-plan"
PLAN_VERSION = 1

# Ray samples drawn when a dataset has no usable point cloud. 2^18 pins a median plane to well
# under 1% of the mass (binomial noise ~ 1/sqrt(N / K)) and costs ~0.1 s of ray generation.
DEFAULT_RAY_SAMPLES = 1 << 18
# "auto" uses the dataset's cloud only if it gives every tile at least this many points on average;
# a handful of SfM points says little about where the work is.
MIN_POINTS_PER_TILE = 8
# The k-d split sorts its points once per axis and tree level; beyond this many, a seeded random
# subset places the medians within ~0.1% of the mass at a fraction of the cost (the per-tile counts
# are still taken over all points).
MAX_SPLIT_POINTS = 1 << 21
_RAY_SAMPLE_STREAM = 0x7113  # generator stream of the planning samples, apart from training's streams
_SUBSAMPLE_STREAM = 0x7114


# ----------------------------------------------------------------------------------------------
# Tiling check


def tiling_problem(boxes: Tensor, scene_box: Tensor) -> str | None:
    """Why ``boxes`` [K, 2, 3] do not tile ``scene_box`` [2, 3] exactly, or None if they do.

    Exact for axis-aligned boxes: the distinct face coordinates cut the scene box into a grid of
    cells, and every cell must be covered by exactly one box (0 = gap, 2+ = overlap). Adjacent
    tiles must therefore share *identical* face values, which is what the renderer needs too (a
    sliver of gap or overlap would drop or double-count a piece of every ray crossing it).
    """
    boxes = boxes.to(torch.float64)
    scene_box = scene_box.to(torch.float64)
    if boxes.dim() != 3 or boxes.shape[1:] != (2, 3) or boxes.shape[0] < 1:
        return f"boxes must be [K, 2, 3] with K ≥ 1, got {list(boxes.shape)}"
    if scene_box.shape != (2, 3):
        return f"scene_box must be [2, 3], got {list(scene_box.shape)}"
    if not bool(torch.isfinite(boxes).all()) or not bool(torch.isfinite(scene_box).all()):
        return "boxes and scene_box must be finite numbers"
    if not bool((scene_box[1] > scene_box[0]).all()):
        return f"scene_box needs min < max on every axis, got {scene_box.tolist()}"
    flat = (~(boxes[:, 1] > boxes[:, 0]).all(dim=-1)).nonzero().flatten().tolist()
    if flat:
        return f"tile {flat[0]} has min ≥ max on some axis: {boxes[flat[0]].tolist()}"
    outside = (~((boxes[:, 0] >= scene_box[0]) & (boxes[:, 1] <= scene_box[1])).all(dim=-1)).nonzero().flatten().tolist()
    if outside:
        return f"tile {outside[0]} {boxes[outside[0]].tolist()} extends outside the scene box {scene_box.tolist()}"

    cuts = [torch.unique(torch.cat([boxes[:, :, a].flatten(), scene_box[:, a]])) for a in range(3)]
    n_cells = math.prod(len(c) - 1 for c in cuts)
    if n_cells > 20_000_000:  # only for absurd K; volumes + pairwise overlaps say the same up to round-off
        return _tiling_problem_by_volume(boxes, scene_box)
    count = torch.zeros([len(c) - 1 for c in cuts], dtype=torch.int32)
    index = [torch.searchsorted(cuts[a], boxes[:, :, a].contiguous()) for a in range(3)]  # [K, 2] exact matches
    for k in range(boxes.shape[0]):
        (x0, x1), (y0, y1), (z0, z1) = (index[a][k].tolist() for a in range(3))
        count[x0:x1, y0:y1, z0:z1] += 1
    if bool((count == 1).all()):
        return None
    over = (count > 1).nonzero()
    if over.shape[0]:
        i, j = _first_overlapping_pair(boxes)
        return f"tiles {i} and {j} overlap"
    gap = (count == 0).nonzero()[0].tolist()
    where = [0.5 * float(cuts[a][gap[a]] + cuts[a][gap[a] + 1]) for a in range(3)]
    return f"the tiles leave a gap in the scene box (around {[round(w, 6) for w in where]})"


def _overlap_volumes(boxes: Tensor) -> Tensor:
    """[K, K] volume of pairwise intersections (diagonal zeroed)."""
    lo = torch.maximum(boxes[:, None, 0], boxes[None, :, 0])
    hi = torch.minimum(boxes[:, None, 1], boxes[None, :, 1])
    vol = (hi - lo).clamp_min(0).prod(dim=-1)
    vol.fill_diagonal_(0)
    return vol


def _first_overlapping_pair(boxes: Tensor) -> tuple[int, int]:
    i, j = (_overlap_volumes(boxes) > 0).nonzero()[0].tolist()
    return i, j


def _tiling_problem_by_volume(boxes: Tensor, scene_box: Tensor) -> str | None:
    if bool((_overlap_volumes(boxes) > 0).any()):
        i, j = _first_overlapping_pair(boxes)
        return f"tiles {i} and {j} overlap"
    total = float((boxes[:, 1] - boxes[:, 0]).prod(dim=-1).sum())
    volume = float((scene_box[1] - scene_box[0]).prod())
    if abs(total - volume) > 1e-9 * volume:
        return f"the tiles cover {total:.6g} of the scene box's volume {volume:.6g}"
    return None


# ----------------------------------------------------------------------------------------------
# The plan


@dataclass
class TilePlan:
    """K tiles over a scene box.

    Attributes:
        boxes: [K, 2, 3] float64 (min, max) per tile; they tile ``scene_box`` exactly.
        method: "kd" (NeRF-XL median split) or "uniform" (grid of equal blocks).
        scene_box: [2, 3] float64 box that was partitioned.
        points_per_tile: [K] int64 planning points that fell in each tile.
        weight_per_tile: [K] float64 work estimate per tile — the points' summed weights (equal to
            the counts for an unweighted cloud; in-box ray length for ray samples, see
            :func:`ray_samples`). The k-d split balances this quantity.
        source: where the planning points came from (kind, counts, dataset, seed, ...); free-form
            JSON-compatible dict, recorded for reports.
        grid_shape: (nx, ny, nz) of a uniform plan; None for k-d plans.

    Raises ValueError on construction if the boxes do not tile the scene box or the shapes disagree.
    """

    boxes: Tensor
    method: Method
    scene_box: Tensor
    points_per_tile: Tensor
    weight_per_tile: Tensor
    source: dict[str, Any] = field(default_factory=dict)
    grid_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes).detach().to(torch.float64).cpu()
        self.scene_box = torch.as_tensor(self.scene_box).detach().to(torch.float64).cpu()
        self.points_per_tile = torch.as_tensor(self.points_per_tile).detach().to(torch.int64).cpu().reshape(-1)
        self.weight_per_tile = torch.as_tensor(self.weight_per_tile).detach().to(torch.float64).cpu().reshape(-1)
        if self.grid_shape is not None:
            self.grid_shape = tuple(int(n) for n in self.grid_shape)
        problem = self._problem()
        if problem is not None:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if self.method not in METHODS:
            return f"method must be one of {', '.join(METHODS)}, got {self.method!r}"
        problem = tiling_problem(self.boxes, self.scene_box)
        if problem is not None:
            return problem
        k = self.k
        for name, values in (("points_per_tile", self.points_per_tile), ("weight_per_tile", self.weight_per_tile)):
            if values.shape[0] != k:
                return f"{name} has {values.shape[0]} entries for {k} tiles"
            if bool((values < 0).any()) or not bool(torch.isfinite(values.double()).all()):
                return f"{name} must be finite and non-negative"
        if self.grid_shape is not None:
            if len(self.grid_shape) != 3 or any(n < 1 for n in self.grid_shape) or math.prod(self.grid_shape) != k:
                return f"grid_shape {list(self.grid_shape)} must be three positive integers multiplying to {k}"
        if not isinstance(self.source, dict):
            return "source must be a JSON object"
        return None

    # -- derived ---------------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def shares(self) -> Tensor:
        """[K] fraction of the total work estimate in each tile (uniform 1/K if there is none)."""
        total = float(self.weight_per_tile.sum())
        if total <= 0:
            return torch.full((self.k,), 1.0 / self.k, dtype=torch.float64)
        return self.weight_per_tile / total

    @property
    def imbalance(self) -> float:
        """Largest tile's work / the mean (1 = perfectly balanced; the slowest device sets the pace)."""
        return float(self.shares.max()) * self.k

    def tile_of_points(self, points: Tensor) -> Tensor:
        """Owning tile of each point: [N, 3] → [N] int64, −1 for points outside the scene box.

        Half-open [min, max) per tile so a point on a shared face belongs to exactly one tile (the
        one on its max side); faces on the scene box's max faces are closed so the box's own
        boundary is owned too. Non-finite points get −1.
        """
        p = torch.as_tensor(points).detach().to(torch.float64).cpu().reshape(-1, 3)
        lookup = self._cell_lookup()
        if lookup is None:
            return _tile_of_points_brute(self.boxes, self.scene_box, p)
        cuts, table = lookup
        index, valid = [], torch.isfinite(p).all(dim=-1)
        for a in range(3):
            n_cells = len(cuts[a]) - 1
            # right=True: x in [c_i, c_{i+1}) → i, the half-open rule; x == the scene max → the last cell.
            i = torch.searchsorted(cuts[a], p[:, a].contiguous(), right=True) - 1
            i = torch.where(p[:, a] == cuts[a][-1], torch.full_like(i, n_cells - 1), i)
            valid &= (i >= 0) & (i < n_cells)
            index.append(i.clamp(0, n_cells - 1))
        tile = table[index[0], index[1], index[2]].to(torch.int64)
        return torch.where(valid, tile, torch.full_like(tile, -1))

    def _cell_lookup(self) -> tuple[list[Tensor], Tensor] | None:
        """(per-axis sorted cut coordinates, [cells] int32 tile id) — the compressed grid of
        :func:`tiling_problem`, so that ownership is a searchsorted + gather, O(N log K) instead of
        O(N · K). None if the grid would be too large (then the brute-force test is used)."""
        cuts = [torch.unique(self.boxes[:, :, a].flatten()) for a in range(3)]  # holds the scene faces: exact tiling
        shape = [len(c) - 1 for c in cuts]
        if math.prod(shape) > 8_000_000:
            return None
        table = torch.full(shape, -1, dtype=torch.int32)
        index = [torch.searchsorted(cuts[a], self.boxes[:, :, a].contiguous()) for a in range(3)]
        for k in range(self.k):
            (x0, x1), (y0, y1), (z0, z1) = (index[a][k].tolist() for a in range(3))
            table[x0:x1, y0:y1, z0:z1] = k
        return cuts, table

    def table(self) -> str:
        """A small text table: tile, box, points, work share; then the imbalance."""
        def vec(v: Tensor) -> str:
            return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"

        rows = [("tile", "min (x, y, z)", "max (x, y, z)", "points", "share")]
        shares = self.shares
        for i in range(self.k):
            rows.append((str(i), vec(self.boxes[i, 0]), vec(self.boxes[i, 1]), str(int(self.points_per_tile[i])),
                         f"{100 * float(shares[i]):.1f}%"))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        align = ["right", "left", "left", "right", "right"]
        lines = ["  ".join(cell.rjust(w) if a == "right" else cell.ljust(w)
                           for cell, w, a in zip(row, widths, align)).rstrip() for row in rows]
        total = int(self.points_per_tile.sum())
        lines.append(f"{self.method} plan, {self.k} tiles, {total} points from {self.source.get('kind', '?')}; "
                     f"imbalance (largest share × K) {self.imbalance:.3f}")
        return "\n".join(lines)

    # -- I/O -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "method": self.method,
            "k": self.k,
            "scene_box": self.scene_box.tolist(),
            "boxes": self.boxes.tolist(),
            "points_per_tile": self.points_per_tile.tolist(),
            "weight_per_tile": self.weight_per_tile.tolist(),
            "grid_shape": None if self.grid_shape is None else list(self.grid_shape),
            "source": self.source,
        }

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON, atomically (Python float repr: the boxes round-trip bit-exactly)."""
        path = Path(path)
        try:  # serialise first: a bad ``source`` entry must fail before the file is touched
            text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: cannot save the tile plan ({e})") from None
        write_text_atomic(path, text + "\n")
        return path

    @classmethod
    def from_dict(cls, obj: Any) -> "TilePlan":
        """Parse :meth:`to_dict` output; ValueError with the problem on malformed content."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
        if obj.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a tile plan (\"format\" should be {PLAN_FORMAT!r}, found {obj.get('format')!r})")
        if obj.get("version") != PLAN_VERSION:
            raise ValueError(f"unsupported tile plan version {obj.get('version')!r} (this nerfxl reads {PLAN_VERSION})")
        missing = [key for key in ("method", "scene_box", "boxes", "points_per_tile", "weight_per_tile") if key not in obj]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        boxes = _number_tensor(obj["boxes"], "boxes", (-1, 2, 3))
        scene_box = _number_tensor(obj["scene_box"], "scene_box", (2, 3))
        counts = _number_tensor(obj["points_per_tile"], "points_per_tile", (-1,))
        if bool((counts != counts.round()).any()):
            raise ValueError("points_per_tile must be whole numbers")
        weights = _number_tensor(obj["weight_per_tile"], "weight_per_tile", (-1,))
        if "k" in obj and obj["k"] != boxes.shape[0]:
            raise ValueError(f"\"k\" is {obj['k']!r} but there are {boxes.shape[0]} boxes")
        grid_shape = obj.get("grid_shape")
        if grid_shape is not None:
            if not (isinstance(grid_shape, list) and len(grid_shape) == 3
                    and all(isinstance(n, int) and not isinstance(n, bool) for n in grid_shape)):
                raise ValueError(f"grid_shape must be null or three integers, got {grid_shape!r}")
        source = obj.get("source", {})
        return cls(boxes=boxes, method=obj["method"], scene_box=scene_box, points_per_tile=counts,
                   weight_per_tile=weights, source=source, grid_shape=grid_shape)

    @classmethod
    def load(cls, path: str | Path) -> "TilePlan":
        """Read a plan written by :meth:`save`.

        Raises:
            DataError: the file is missing, not JSON, or its content is malformed (wrong shapes,
                non-finite numbers, boxes that do not tile the scene box), naming the file.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "tile plan file does not exist")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DataError(path, "tile plan is not a UTF-8 text file") from None
        except json.JSONDecodeError as e:
            raise DataError(path, f"tile plan is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        try:
            return cls.from_dict(obj)
        except ValueError as e:
            raise DataError(path, f"malformed tile plan: {e}") from None


def _tile_of_points_brute(boxes: Tensor, scene_box: Tensor, p: Tensor) -> Tensor:
    """:meth:`TilePlan.tile_of_points` by testing every point against every box (the reference rule)."""
    lo, hi = boxes[:, 0], boxes[:, 1]  # [K, 3]
    closed_max = hi == scene_box[1]  # [K, 3]
    out = torch.full((p.shape[0],), -1, dtype=torch.int64)
    chunk = max(1, 4_000_000 // (3 * boxes.shape[0]))  # bound the [n, K, 3] temporaries
    for start in range(0, p.shape[0], chunk):
        q = p[start:start + chunk, None, :]
        inside = ((q >= lo) & ((q < hi) | (closed_max & (q == hi)))).all(dim=-1)  # [n, K]
        found = inside.any(dim=-1)
        first = inside.to(torch.uint8).argmax(dim=-1)
        out[start:start + chunk] = torch.where(found, first, torch.full_like(first, -1))
    return out


def _number_tensor(value: Any, name: str, shape: tuple[int, ...]) -> Tensor:
    """A float64 tensor of ``shape`` (−1 = any positive length) from nested JSON lists of numbers."""
    def numbers_only(v: Any) -> bool:
        if isinstance(v, list):
            return all(numbers_only(x) for x in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(value, list) or not numbers_only(value):
        raise ValueError(f"{name} must be nested lists of numbers")
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (ValueError, TypeError):
        raise ValueError(f"{name} is ragged (rows of different lengths)") from None
    want = "[" + ", ".join("K" if n == -1 else str(n) for n in shape) + "]"
    if t.dim() != len(shape) or any(n != -1 and n != m for n, m in zip(shape, t.shape)) or t.numel() == 0:
        raise ValueError(f"{name} must be {want}, got shape {list(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite numbers (NaN or Infinity)")
    return t


# ----------------------------------------------------------------------------------------------
# Planning points


@dataclass
class PlanningPoints:
    """The points a plan is balanced on.

    Attributes:
        points: [N, 3] float64 world points inside ``scene_box``.
        weights: [N] float64 work per point, or None for 1 each.
        scene_box: [2, 3] float64.
        info: JSON-compatible description, stored as :attr:`TilePlan.source`.
    """

    points: Tensor
    weights: Tensor | None
    scene_box: Tensor
    info: dict[str, Any]


def ray_samples(dataset: Dataset, n: int = DEFAULT_RAY_SAMPLES, seed: int = 0, max_rounds: int = 8) -> tuple[Tensor, Tensor, int]:
    """Points along random training rays, for scenes without a point cloud (nerf-xl.md §2).

    Pixels are drawn uniformly over all training pixels (images weighted by pixel count, a uniform
    position inside the pixel), exactly the distribution the trainer's ray batches follow; only
    cameras are used, no image is decoded. Each ray that meets the scene box gives one point at a
    uniformly random t within its in-box segment [t_enter, t_exit], weighted by the segment's
    length.

    Why this choice: uniform t samples empty space too (air above a city, the inside of the box seen
    by many cameras), not surfaces — unlike an SfM cloud. With the length weight, a tile's total
    weight is proportional to the expected number of fixed-step marching samples that training
    rays place inside it before occupancy skipping — the work each device does early in training,
    and a reasonable proxy later. Where the dataset has an SfM cloud it is preferred, because with
    an occupancy grid the converged work concentrates near surfaces.

    Rays that miss the box are redrawn, up to ``max_rounds`` rounds; the result may therefore hold
    fewer than ``n`` points (none if no ray meets the box).

    Returns:
        (points [M, 3] float64 inside the box, weights [M] float64 in-box ray lengths, rays drawn).
    """
    n = int(n)
    if n < 1:
        raise ConfigError(f"the number of ray samples must be ≥ 1, got {n}")
    cams = dataset.cameras.to("cpu")
    box = dataset.scene_box.detach().to(torch.float64).cpu()
    g = generator_for(seed, _RAY_SAMPLE_STREAM)
    pixel_counts = (cams.width * cams.height).to(torch.float64)
    points, weights, drawn = [], [], 0
    have = 0
    for _ in range(max_rounds):
        m = n - have
        image = torch.multinomial(pixel_counts, m, replacement=True, generator=g)
        uv = torch.rand(m, 2, generator=g, dtype=torch.float64)
        size = torch.stack([cams.width[image], cams.height[image]], dim=-1).to(torch.float64)
        # Float pixel coordinates are used as given by generate_rays: a uniform point in the pixel.
        rays = generate_rays(cams, image, (uv * size).to(torch.float32))
        s = torch.rand(m, generator=g, dtype=torch.float64)
        drawn += m
        origins, directions = rays.origins.to(torch.float64), rays.directions.to(torch.float64)
        t_enter, t_exit, hit = intersect_rays_boxes(origins, directions, box)
        hit = hit[:, 0]
        t0, t1 = t_enter[hit, 0], t_exit[hit, 0]
        t = t0 + s[hit] * (t1 - t0)
        # Clamp: o + t·d can round a hair past a face, and points outside the box would be dropped.
        p = (origins[hit] + t[:, None] * directions[hit]).clamp(box[0], box[1])
        points.append(p)
        weights.append(t1 - t0)
        have += p.shape[0]
        if have >= n:
            break
    return torch.cat(points)[:n], torch.cat(weights)[:n], drawn


def planning_points(
    dataset: Dataset,
    k: int = 1,
    source: PointSource = "auto",
    n_ray_samples: int = DEFAULT_RAY_SAMPLES,
    seed: int = 0,
) -> PlanningPoints:
    """The points to balance ``k`` tiles on, from ``dataset``.

    ``source``: "points" = the dataset's point cloud (ConfigError if it has none inside the box);
    "rays" = :func:`ray_samples`; "auto" = the cloud when it has at least
    :data:`MIN_POINTS_PER_TILE` · k points inside the scene box, else ray samples.
    """
    if source not in get_args(PointSource):
        raise ConfigError(f"point source must be one of {', '.join(get_args(PointSource))}, got {source!r}")
    box = dataset.scene_box.detach().to(torch.float64).cpu()
    cloud = None
    if dataset.points is not None and dataset.points.shape[0] > 0:
        pts = dataset.points.detach().to(torch.float64).cpu().reshape(-1, 3)
        inside = torch.isfinite(pts).all(dim=-1) & ((pts >= box[0]) & (pts <= box[1])).all(dim=-1)
        cloud = pts[inside]
        n_total = pts.shape[0]
    base = {"dataset": str(dataset.root), "split": dataset.split}
    if source == "points" and (cloud is None or cloud.shape[0] == 0):
        raise ConfigError(f"{dataset.root}: the dataset has no point cloud inside its scene box; "
                          f"plan from ray samples instead")
    if source == "points" or (source == "auto" and cloud is not None and cloud.shape[0] >= MIN_POINTS_PER_TILE * k):
        info = {**base, "kind": "point cloud", "n_points": int(cloud.shape[0]),
                "n_outside_box": int(n_total - cloud.shape[0]), "weighting": "one per point"}
        return PlanningPoints(cloud, None, box, info)
    pts, w, drawn = ray_samples(dataset, n_ray_samples, seed)
    info = {**base, "kind": "ray samples", "n_points": int(pts.shape[0]), "rays_drawn": drawn, "seed": int(seed),
            "weighting": "in-box ray length (uniform t along each ray's in-box segment)"}
    if cloud is not None:
        info["why"] = f"the point cloud has only {int(cloud.shape[0])} points inside the box"
    return PlanningPoints(pts, w, box, info)


def _bounding_box(points: Tensor) -> Tensor:
    """[2, 3] min/max box of ``points``, widened on flat axes so that it has volume."""
    finite = points[torch.isfinite(points).all(dim=-1)]
    if finite.shape[0] == 0:
        raise ConfigError("cannot derive a scene box from no finite points; pass scene_box")
    lo, hi = finite.min(dim=0).values, finite.max(dim=0).values
    pad = torch.where(hi > lo, torch.zeros_like(lo), torch.full_like(lo, max(float((hi - lo).max()) * 1e-3, 0.5)))
    return torch.stack([lo - pad, hi + pad])


def _subsample(points: Tensor, weights: Tensor | None, limit: int, seed: int) -> tuple[Tensor, Tensor | None]:
    if points.shape[0] <= limit:
        return points, weights
    keep = torch.randperm(points.shape[0], generator=generator_for(seed, _SUBSAMPLE_STREAM))[:limit]
    return points[keep], None if weights is None else weights[keep]


def plan_tiles(
    data: Dataset | Tensor | PlanningPoints,
    k: int,
    method: Method = "kd",
    *,
    scene_box: Tensor | None = None,
    weights: Tensor | None = None,
    source: PointSource = "auto",
    n_ray_samples: int = DEFAULT_RAY_SAMPLES,
    seed: int = 0,
    nz: int = 1,
    grid_shape: tuple[int, int, int] | None = None,
) -> TilePlan:
    """Partition a scene into ``k`` tiles.

    Args:
        data: a :class:`Dataset` (its point cloud, or ray samples — see :func:`planning_points`), a
            [P, 3] point tensor, or ready :class:`PlanningPoints`.
        k: number of tiles (devices), ≥ 1.
        method: "kd" (NeRF-XL median split, balanced on the points) or "uniform" (equal blocks;
            the points only fill in the per-tile counts).
        scene_box: [2, 3] box for a point tensor (default: the points' bounding box); ignored for
            a dataset, which brings its own.
        weights: [P] per-point work for a point tensor (default 1 each).
        source, n_ray_samples: how a dataset's planning points are chosen.
        seed: seeds the ray samples and, past :data:`MAX_SPLIT_POINTS` points, the split's subset.
        nz, grid_shape: uniform layout; ``grid_shape`` (nx, ny, nz) overrides
            :func:`grid_shape_for` (k, box, nz).
    Raises:
        ConfigError: bad k / method / layout.
    """
    k = int(k)
    if k < 1:
        raise ConfigError(f"the number of tiles k must be ≥ 1, got {k}")
    if method not in METHODS:
        raise ConfigError(f"unknown partition method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(data, Dataset):
        planning = planning_points(data, k, source, n_ray_samples, seed)
    elif isinstance(data, PlanningPoints):
        planning = data
    else:
        pts = torch.as_tensor(data).detach().to(torch.float64).cpu().reshape(-1, 3)
        box = _bounding_box(pts) if scene_box is None else torch.as_tensor(scene_box).detach().to(torch.float64).cpu()
        w = None if weights is None else torch.as_tensor(weights).detach().to(torch.float64).cpu().reshape(-1)
        planning = PlanningPoints(pts, w, box, {"kind": "given points", "n_points": int(pts.shape[0])})
    box = planning.scene_box.reshape(2, 3)

    try:
        if method == "kd":
            split_points, split_weights = _subsample(planning.points, planning.weights, MAX_SPLIT_POINTS, seed)
            boxes = kd_split(split_points, box, k, split_weights)
            shape = None
        else:
            shape = grid_shape if grid_shape is not None else grid_shape_for(k, box, nz)
            if math.prod(shape) != k:
                raise ValueError(f"grid shape {list(shape)} does not hold {k} tiles")
            boxes = uniform_grid(box, shape)
    except ValueError as e:
        raise ConfigError(f"cannot partition into {k} tiles: {e}") from None

    info = dict(planning.info)
    if method == "kd" and planning.points.shape[0] > MAX_SPLIT_POINTS:
        info["split_on"] = f"a random subset of {MAX_SPLIT_POINTS} points (seed {seed})"
    plan = TilePlan(boxes=boxes, method=method, scene_box=box, points_per_tile=torch.zeros(k, dtype=torch.int64),
                    weight_per_tile=torch.zeros(k), source=info, grid_shape=shape)
    tile = plan.tile_of_points(planning.points)
    owned = tile >= 0
    plan.points_per_tile = torch.bincount(tile[owned], minlength=k)
    w = torch.ones(planning.points.shape[0], dtype=torch.float64) if planning.weights is None else planning.weights
    if w.shape[0] != planning.points.shape[0]:
        raise ConfigError(f"weights has {w.shape[0]} entries for {planning.points.shape[0]} points")
    plan.weight_per_tile = torch.bincount(tile[owned], weights=w[owned], minlength=k).to(torch.float64)
    return plan
