"""A training run's configuration: :class:`TrainConfig`, saved as the run's ``config.yaml``, its
optimiser and loss parts, the names of its choices, and what follows from the config alone.

``config.yaml`` records fields by name only (no module or class paths), so where these classes live
does not change what a saved run means.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from nerfxl.fields.config import FieldConfig
from nerfxl.parallel.distributed import DEFAULT_TIMEOUT_S
from nerfxl.renderer import RenderConfig

CitySize = Literal["tiny", "small", "medium", "large"]
Exchange = Literal["partition", "sample"]
Method = Literal["nerfxl", "ddp", "independent-2d", "independent-3d"]
Strategy = Literal["tiles", "branch", "plane", "channel"]


@dataclass
class OptimConfig:
    """Adam with separate learning rates for feature grids and MLPs, decayed exponentially."""

    lr_grid: float = 0.02
    """Learning rate of feature-grid parameters (planes, lines, hash tables)."""
    lr_mlp: float = 2e-3
    """Learning rate of MLPs, heads, embeddings and the background model."""
    lr_pose: float = 1e-4
    """Learning rate of per-image pose corrections (when enabled)."""
    lr_final_fraction: float = 0.1
    """Learning rates decay exponentially to this fraction of their start by the last step."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up at the start."""
    eps: float = 1e-15
    """Adam epsilon (small, as in Instant-NGP: sparse grid gradients)."""
    grid_updates: Literal["dense", "sparse"] = "dense"
    """"dense": plain Adam over every grid entry. "sparse": grid nodes that got no gradient this step
    keep their value and Adam moments (Instant-NGP's rule, :mod:`nerfxl.optim`); the optimizer then
    touches only the nodes the samples reach, at the price of a Python loop over the grid tensors."""


@dataclass
class LossConfig:
    """Weights of the loss terms (0 switches a term off)."""

    distortion: float = 1e-3
    """Mip-NeRF 360 distortion loss (mean over rays)."""
    total_variation: float = 0.0
    """Total variation of plane-line grids."""
    density_l1: float = 0.0
    """L1 of density grid features (plane-line grids)."""
    depth: float = 0.0
    """L1 between rendered and dataset depth, where the dataset has depth."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.yaml`` in the run folder."""

    data: Optional[Path] = None
    """Dataset folder or JSON file; none = the built-in procedural city (generated on first use)."""
    data_format: Optional[Literal["nerfstudio", "blender", "colmap", "mega-nerf", "matrixcity", "llff"]] = None
    """Dataset format; none = detected from the folder's layout."""
    scene_box: Optional[tuple[float, float, float, float, float, float]] = None
    """Scene bounds xmin ymin zmin xmax ymax zmax in dataset units; none = the dataset's own box
    (from its points or cameras; worth setting for Mega-NeRF / MatrixCity captures)."""
    city_size: CitySize = "small"
    """Size of the built-in city when no --data is given."""
    output: Path = Path("outputs")
    """Runs land in OUTPUT/NAME/TIMESTAMP/."""
    name: Optional[str] = None
    """Experiment name (default: the dataset folder's name)."""
    steps: int = 3000
    """Training steps (with --plateau-window: the most steps; the learning-rate schedule spans them)."""
    plateau_window: int = 0
    """Stop early once training has plateaued: when the training PSNR over the last this-many steps is
    less than --plateau-min-gain above that of the window before (0 = always train --steps). The run
    folder's convergence.json says where and whether it stopped."""
    plateau_min_gain: float = 0.05
    """Gain in dB between consecutive --plateau-window windows below which a run has plateaued."""
    seed: int = 0
    """Seed of ray batches, sample jitter and initialisation: a seed makes a run repeatable."""
    batch_rays: int = 4096
    """Rays per step (with --method ddp: per process, so the global batch is D × batch_rays)."""
    downscale: float = 1.0
    """Train on images downscaled by this factor."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour that transparent dataset pixels are composited onto (Blender scenes)."""
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    """The radiance field."""
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    """Sampling and rendering."""
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    """Loss weights."""
    grid_upsample_steps: tuple[int, ...] = ()
    """Steps at which plane-line grids grow in resolution (the optimizer restarts for grids)."""
    grid_final_resolution: tuple[int, int, int] = (0, 0, 0)
    """Base resolution reached at the last upsample step (0 = unchanged)."""
    eval_every: int = 1000
    """Steps between evaluations on held-out views (0 = only at the end)."""
    eval_views: int = 4
    """Held-out views rendered at each periodic evaluation."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (and one at the end)."""
    keep_checkpoints: int = 3
    """Complete checkpoints kept on disk."""
    log_every: int = 25
    """Steps between TensorBoard scalars."""
    device: str = "auto"
    """"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"."""
    image_cache_mb: int = 2048
    """Bound of the decoded-image cache per split."""
    progress: bool = True
    """Show a progress bar."""
    resume: Optional[Path] = None
    """Continue this run folder from its newest sound checkpoint, with its saved configuration."""
    run_dir: Optional[Path] = None
    """Train into exactly this folder instead of OUTPUT/NAME/TIMESTAMP; when it already holds a
    checkpoint the run continues from it with its saved configuration, so a restarted command
    (torchrun --max-restarts) resumes."""
    max_restarts: int = 0
    """With --devices D > 1: when a process dies or loses contact with the others, restart the job from
    the newest sound checkpoint, up to this many times (under torchrun: torchrun's own --max-restarts,
    with --run-dir)."""
    viewer: bool = False
    """Serve the model in the browser while it trains (rank 0; `nerfxl view` explains the page).
    Rendering runs between steps and takes at most --viewer-fraction of the time."""
    viewer_port: int = 7007
    """With --viewer: the port (the next free one is taken if it is busy)."""
    viewer_host: str = "127.0.0.1"
    """With --viewer: the address to listen on (loopback: this machine only)."""
    viewer_allow_remote: bool = False
    """With --viewer: required for a non-loopback --viewer-host (anyone reaching the port sees the model)."""
    viewer_fraction: float = 0.25
    """With --viewer: the largest share of wall time rendering may take from training."""
    viewer_resolution: int = 640
    """With --viewer: pixels of the refined frame's longer side."""
    method: Method = "nerfxl"
    """How D processes share the work. nerfxl: K tiles over D processes, every process renders its
    tiles' segments of the same rays. ddp: the data-parallel baseline (PyTorch DDP semantics): one
    model (--partitions 1) replicated on every process, each renders its own batch_rays of a global
    batch of D × batch_rays rays, and the gradients of all parameters are averaged.
    independent-2d: the Block-NeRF-style baseline: --partitions K camera clusters, one whole-scene
    model trained alone per cluster (same steps and batch each), views blended as images.
    independent-3d: the Mega-NeRF-style baseline: NeRF-XL's K tiles, each grown by an overlap and
    modelled alone (contracted around its box) from the rays that hit it, samples blended in 3D."""
    baseline_overlap: Optional[float] = None
    """Overlap of the independent baselines. independent-3d: tile boxes grow by this fraction of
    their size (default 0.15); independent-2d: a camera joins every cluster within (1 + overlap) ×
    its distance to the nearest centroid (default 0.5)."""
    partitions: int = 1
    """K, the number of tiles the scene is split into (NeRF-XL). Each tile has its own grid, so
    more tiles = more model capacity."""
    devices: int = 1
    """D, processes to train on (one GPU each, or CPU processes); must divide --partitions. D = 1
    trains all K tiles in this process. Under torchrun the world size decides."""
    partition_method: Literal["kd", "uniform"] = "kd"
    """kd: NeRF-XL's recursive median split of the point cloud (or of samples on training rays);
    uniform: a grid of equal blocks (Mega-NeRF / LandMark)."""
    tile_plan: Optional[Path] = None
    """Use this tile plan (JSON from `nerfxl partition -o`) instead of planning; it must split the
    dataset's scene box into --partitions tiles."""
    exchange: Exchange = "partition"
    """partition: exchange a few numbers per ray and tile (NeRF-XL); sample: exchange every sample's
    density and colour (the paper's baseline; same result, more traffic)."""
    collective_timeout_s: float = DEFAULT_TIMEOUT_S
    """A process waiting longer than this for the others in a collective fails (a dead peer never
    hangs the run)."""
    strategy: Strategy = "tiles"
    """How the model is spread over the D processes (with --method nerfxl). tiles: NeRF-XL, K tiles
    over D processes. The LandMark strategies (docs/landmark.md): branch: a uniform --blocks NXxNY
    grid of ground blocks, each its own sub-grid, K/D blocks per process, per-sample values exchanged;
    plane: one ground plane (--partitions 1) cut into --blocks NXxNY sub-planes, one per process;
    channel: every plane and line of one grid split along its channels over the D processes."""
    blocks: Optional[str] = None
    """NXxNY (e.g. 2x2): branch parallel's block grid (sets --partitions) or plane parallel's
    sub-planes (NX·NY = D / replicas); default: laid out as square as possible over the scene."""
    replicas: int = 1
    """Hybrid model × data parallel: the D processes form this many replicas of the model, each
    spread over D / replicas processes by --strategy (ranks r·M … r·M + M − 1 form replica r). Each
    replica renders its own batch_rays rays of a global batch of replicas × batch_rays, and the
    gradients of the processes holding the same part are averaged. --method ddp is the case of a
    one-process model (replicas = D)."""


def upsample_resolutions(config: TrainConfig) -> list[tuple[int, ...]]:
    """The base resolutions the grid grows to at --grid-upsample-steps, in order (geometric growth in
    voxel count from the starting to the final resolution)."""
    c = config
    if not c.grid_upsample_steps or not any(c.grid_final_resolution):
        return []
    n = len(c.grid_upsample_steps)
    start = c.field.grid.base_resolution
    return [tuple(int(round(s * (f / s) ** (i / n))) for s, f in zip(start, c.grid_final_resolution))
            for i in range(1, n + 1)]
