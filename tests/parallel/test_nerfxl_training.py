"""NeRF-XL training on D gloo processes computes what one process computes (nerf-xl.md §5).

K tiles over D processes, identical ray batches, per-ray segment blocks (or per-sample values)
exchanged, the same loss everywhere and a SUM all-reduce of shared gradients: the loss of every
step, every tile's parameters and every shared parameter must equal the single-process (D = 1)
run's, up to float round-off.

Cost: process start-up (a torch and an optimizer import each) dominates on two cores, so a single
launch of 4 processes trains every multi-process job one after another (``nerfxl_workers.run_jobs``;
a job on D = 2 or 3 processes runs on a sub-group of ranks 0..D-1, through the same ``DistContext``
and collectives as the world group), and the D = 1 references train in this process.

The model is the tiny preset with a few changes that make the comparison meaningful:
- ``density_shift=1.0``: tiles are visibly opaque from step 0 (with the preset's σ ≈ softplus(−10)
  the first steps render ~0 opacity, the loss is all sky and tile bugs would hardly show);
- an appearance embedding and pose corrections, so all four kinds of shared module (decoder,
  appearance, pose, background) are trained and all-reduced;
- occupancy refreshes every 4 steps past a 4-step warm-up (random cells from per-tile generators),
  alpha pruning from step 2, and a total-variation regulariser (a per-tile term of each process).

Tolerances, against what these runs show (float32; all-reduce and compositing orders differ):
- losses: relative 1e-6 (seen ≤ 2e-7);
- parameters after 10 steps (Adam, lr up to 0.02): absolute 1e-5 (seen ≤ 7e-7 with the sample
  exchange, ≤ 2e-7 partition-based); a tile or shared tensor missing one step's gradient moves by
  ~lr = 2e-3..2e-2 instead;
- gradients: elementwise within 1e-4·max|reference| + 1e-4·|reference| (seen ≤ 5e-6 of the max).
  Adam is invariant to a constant gradient scale, so parameters alone cannot reveal a shared
  gradient off by a factor (op="mean", a background summed D times): the gradients are compared
  directly, where such a factor is an error of 50–100 % of the max.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import nerfxl_workers as W
import pytest
import torch

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.rays import RayBundle
from nerfxl.fields.config import FieldConfig, GridConfig, build_radiance_field
from nerfxl.parallel.distributed import single_process_context
from nerfxl.parallel.launch import launch
from nerfxl.parallel.partition_based import render_partition_based
from nerfxl.parallel.sample_based import render_sample_based
from nerfxl.parallel.tiles import tiles_of_rank
from nerfxl.partition.plan import tiling_problem
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.renderer import RenderConfig, TiledRenderer
from nerfxl.rendering.segments import composite_segments
from nerfxl.run.config import TrainConfig

WORLD = 4  # processes of the one launch
LOSS_RTOL = 1e-6
PARAM_ATOL = 1e-5
GRAD_TOL = 1e-4
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RUN_ID")


class Job(NamedTuple):
    k: int  # tiles
    d: int  # processes
    exchange: str = "partition"
    batch_rays: int = 256
    steps: int = 10
    grad_steps: tuple[int, ...] = (0, 5, 9)
    reference: str | None = None  # the D = 1 job it must reproduce


FEW = dict(steps=5, grad_steps=(0, 4))
# batch_rays=4: most steps leave some tile without a single sample (checked in the test).
SPARSE = dict(batch_rays=4, steps=12, grad_steps=(0, 2, 9))
JOBS = {
    # D = 1 references (this process).
    "K4_D1": Job(4, 1),
    "K4_D1_sample": Job(4, 1, "sample", reference="K4_D1"),
    "K3_D1": Job(3, 1, **FEW),
    "K5_D1": Job(5, 1, **FEW),
    "K6_D1": Job(6, 1, **FEW),
    "sparse_D1": Job(4, 1, **SPARSE),
    # Multi-process jobs (one launch, in this order).
    "K4_D4": Job(4, 4, reference="K4_D1"),
    "sparse_D4": Job(4, 4, **SPARSE, reference="sparse_D1"),
    "sparse_D4_sample": Job(4, 4, "sample", **SPARSE, reference="sparse_D1"),
    "K4_D2": Job(4, 2, reference="K4_D1"),
    "K4_D2_sample": Job(4, 2, "sample", reference="K4_D1"),
    "K6_D3": Job(6, 3, **FEW, reference="K6_D1"),
    "K3_D3_sample": Job(3, 3, "sample", **FEW, reference="K3_D1"),
}
MULTI = [name for name, job in JOBS.items() if job.d > 1]


def training_config(data: Path, output: Path, job: Job) -> TrainConfig:
    base = TRAIN_PRESETS["tiny"][1]
    return dataclasses.replace(
        base, data=data, output=output, progress=False, device="cpu", downscale=2.0, steps=100,
        batch_rays=job.batch_rays, partitions=job.k, devices=job.d, exchange=job.exchange,
        field=dataclasses.replace(base.field, density_shift=1.0, appearance_embedding_dim=4, pose_correction=True),
        render=dataclasses.replace(base.render, occupancy_update_every=4, occupancy_warmup_steps=4,
                                   prune_alpha_after=2),
        loss=dataclasses.replace(base.loss, total_variation=1e-4),
    )


def job_spec(name: str, data: Path, out: Path) -> dict:
    job = JOBS[name]
    return {"name": name, "config": training_config(data, out / "output", job), "run_dir": str(out / name),
            "steps": job.steps, "grad_steps": job.grad_steps, "ranks": list(range(job.d))}


@pytest.fixture(scope="module")
def runs(tiny_city, tmp_path_factory) -> dict[str, list[dict]]:
    """Job name → nerfxl_workers.train_and_record's result of each rank, in rank order."""
    out = tmp_path_factory.mktemp("nerfxl-training")
    with pytest.MonkeyPatch.context() as mp:
        for name in LAUNCHER_ENV:  # launch() must spawn, not think it runs under torchrun
            mp.delenv(name, raising=False)
        # A hung collective fails after timeout_s; the whole launch is bounded too.
        per_rank = launch(W.run_jobs, WORLD, args=([job_spec(n, tiny_city, out) for n in MULTI],), device="cpu",
                          timeout_s=120, max_runtime_s=400)
    results = {name: [per_rank[r][name] for r in range(JOBS[name].d)] for name in MULTI}
    for name, job in JOBS.items():
        if job.d == 1:
            results[name] = [W.train_here(job_spec(name, tiny_city, out))]
    return results


# -- comparison helpers (also used to check that broken variants fail) -----------------------------


def _grad_or_zeros(g, like):
    return torch.zeros_like(like) if g is None else g


def assert_grad_close(got, want, msg: str) -> None:
    """Gradients equal up to GRAD_TOL of the reference's largest entry (None = no gradient = zeros)."""
    if got is None and want is None:
        return
    like = want if want is not None else got
    got, want = _grad_or_zeros(got, like), _grad_or_zeros(want, like)
    torch.testing.assert_close(got, want, rtol=GRAD_TOL, atol=GRAD_TOL * float(want.abs().max()), msg=msg)


def assert_same_losses(ranks: list[dict], ref: dict, what: str) -> None:
    want = torch.tensor(ref["losses"], dtype=torch.float64)
    assert all(math.isfinite(x) for x in ref["losses"])
    for r in ranks:
        torch.testing.assert_close(torch.tensor(r["losses"], dtype=torch.float64), want, rtol=LOSS_RTOL, atol=0,
                                   msg=lambda m: f"{what}, rank {r['rank']}: losses differ\n{m}")


def assert_same_parameters(ranks: list[dict], ref: dict, what: str) -> None:
    """Every rank's tiles against the reference's same tiles, every rank's shared modules against its."""
    for r in ranks:
        for k, params in r["tiles"].items():
            for n, p in params.items():
                torch.testing.assert_close(p, ref["tiles"][k][n], rtol=0, atol=PARAM_ATOL,
                                           msg=lambda m: f"{what}, rank {r['rank']}, tile {k}, {n}\n{m}")
        assert r["shared"].keys() == ref["shared"].keys()
        for n, p in r["shared"].items():
            torch.testing.assert_close(p, ref["shared"][n], rtol=0, atol=PARAM_ATOL,
                                       msg=lambda m: f"{what}, rank {r['rank']}, shared {n}\n{m}")


def assert_same_gradients(ranks: list[dict], ref: dict, what: str) -> None:
    """Tile gradients and all-reduced shared gradients at every recorded step equal the reference's."""
    for r in ranks:
        assert r["grads"].keys() == ref["grads"].keys()
        for step, grads in r["grads"].items():
            want = ref["grads"][step]
            for k, tile in grads["tiles"].items():
                for n, g in tile.items():
                    assert_grad_close(g, want["tiles"][k][n], f"{what}, rank {r['rank']}, step {step}, tile {k} {n}")
            assert grads["shared"].keys() == want["shared"].keys()
            for n, g in grads["shared"].items():
                assert_grad_close(g, want["shared"][n], f"{what}, rank {r['rank']}, step {step}, shared {n}")


def assert_tiles_partitioned(ranks: list[dict], k: int) -> None:
    """Rank r trained tiles_of_rank(K, D, r), and together the ranks trained each tile once."""
    d = len(ranks)
    for r in ranks:
        assert r["world"] == d and r["tile_ids"] == tiles_of_rank(k, d, r["rank"]) == sorted(r["tiles"])
    assert sorted(t for r in ranks for t in r["tile_ids"]) == list(range(k))


def assert_sum_semantics(ranks: list[dict], ref: dict, what: str) -> None:
    """After the all-reduce every rank holds the single-process gradient, and it is the SUM of the
    ranks' partial gradients: each partial is a real share (not a copy of the whole, so "mean" or a
    term counted on every rank would be off), and the background, computed identically everywhere,
    carries gradient on rank 0 only."""
    for step in ref["grads"]:
        reduced = [r["grads"][step]["shared"] for r in ranks]
        partial = [r["grads"][step]["partial"] for r in ranks]
        for n in reduced[0]:
            for r, red in zip(ranks, reduced):
                g = red[n]
                assert_grad_close(g, ref["grads"][step]["shared"][n], f"{what}, step {step}, rank {r['rank']}, {n}")
                # Every rank received the same reduced buffer: identical bits.
                assert (g is None) == (reduced[0][n] is None) and (g is None or torch.equal(g, reduced[0][n])), n
            if reduced[0][n] is None:
                continue
            total = sum(_grad_or_zeros(p[n], reduced[0][n]).double() for p in partial)
            torch.testing.assert_close(total, reduced[0][n].double(), rtol=1e-5,
                                       atol=1e-6 * float(reduced[0][n].abs().max()),
                                       msg=lambda m: f"{what}, step {step}, {n}: partials do not sum to it\n{m}")
        for r, p in zip(ranks, partial):
            for n, g in p.items():
                if n.startswith("background."):
                    assert (g is not None) == (r["rank"] == 0), f"{what}: background grad on rank {r['rank']}: {n}"
        # The decoder's gradient is shared between the ranks whose tiles had samples (≥ 2 here).
        holders = [r["rank"] for r, p in zip(ranks, partial)
                   if p["decoder.mlp.0.weight"] is not None and bool(p["decoder.mlp.0.weight"].abs().max() > 0)]
        assert len(holders) >= 2, (what, step, holders)


# -- 1. D = 1, 2, 4 train the same model -------------------------------------------------------------


@pytest.mark.parametrize("name", ["K4_D2", "K4_D4"])
def test_training_on_2_and_4_processes_reproduces_one_process(runs, name):
    ranks, ref = runs[name], runs[JOBS[name].reference][0]
    assert_tiles_partitioned(ranks, JOBS[name].k)
    assert_same_losses(ranks, ref, name)
    for r in ranks:
        # Identical batches, jitter and occupancy: the very same samples at step 0 (same parameters).
        # Later, pruning compares densities that differ by round-off with thresholds, so a rare
        # sample could flip (none does today); allow 0.1 %.
        assert r["samples"][0] == ref["samples"][0]
        torch.testing.assert_close(torch.tensor(r["samples"]), torch.tensor(ref["samples"]), rtol=1e-3, atol=0)
        for k, counts in r["tile_samples"].items():
            assert counts[0] == ref["tile_samples"][k][0], (name, k)
            torch.testing.assert_close(torch.tensor(counts, dtype=torch.float64),
                                       torch.tensor(ref["tile_samples"][k], dtype=torch.float64), rtol=1e-3, atol=0)
    assert_same_parameters(ranks, ref, name)
    assert_same_gradients(ranks, ref, name)


# -- 2. partition-based and sample-based exchanges ------------------------------------------------------


@pytest.mark.parametrize("name", ["K4_D1_sample", "K4_D2_sample"])
def test_sample_exchange_gives_the_partition_based_loss_and_gradients(runs, name):
    ranks, ref = runs[name], runs[JOBS[name].reference][0]  # the reference is partition-based
    assert JOBS[name].exchange == "sample" and JOBS[JOBS[name].reference].exchange == "partition"
    assert_same_losses(ranks, ref, name)
    assert_same_gradients(ranks, ref, name)  # steps 0 (same parameters), 5 and 9
    assert_same_parameters(ranks, ref, name)


# -- 3. shared gradients: SUM of partial ones, identical shared modules everywhere --------------------------


@pytest.mark.parametrize("name", ["K4_D2", "K4_D4", "K4_D2_sample", "K6_D3", "sparse_D4"])
def test_shared_gradients_are_summed_into_the_single_process_gradient(runs, name):
    assert_sum_semantics(runs[name], runs[JOBS[name].reference][0], name)


@pytest.mark.parametrize("name", MULTI)
def test_shared_parameters_stay_identical_on_every_rank(runs, name):
    first = runs[name][0]["shared"]
    for r in runs[name][1:]:
        for n, p in r["shared"].items():
            assert torch.equal(p, first[n]), (name, r["rank"], n)


# -- 4. a tile without samples ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sparse_D4", "sparse_D4_sample"])
def test_a_tile_without_samples_neither_hangs_nor_diverges(runs, name):
    ranks, ref = runs[name], runs[JOBS[name].reference][0]
    steps = JOBS[name].steps
    assert all(len(r["losses"]) == steps for r in ranks)  # every rank ran every step
    # One tile per rank: the tile's samples are the rank's samples.
    per_rank = torch.tensor([r["tile_samples"][r["tile_ids"][0]] for r in ranks])  # [D, steps]
    for r in ranks:
        assert r["samples"] == per_rank.sum(0).double().tolist()
        assert r["samples_max_rank"] == per_rank.amax(0).double().tolist()
        assert r["tile_samples"] == {k: ref["tile_samples"][k] for k in r["tile_ids"]}
    idle = (per_rank == 0).any(0)
    assert int(idle.sum()) >= steps // 3, per_rank  # it really happens, and often
    assert bool((per_rank.sum(0) > 0).all())  # while other tiles do have samples
    assert bool((per_rank == 0).any(1).sum() >= 2)  # on more than one rank
    assert any(bool(idle[s]) for s in JOBS[name].grad_steps)  # also at a step whose gradients are compared
    assert_same_losses(ranks, ref, name)
    assert_same_gradients(ranks, ref, name)
    assert_same_parameters(ranks, ref, name)


# -- 5. K = 3, 5, 6 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["K3_D1", "K5_D1", "K6_D1", "K6_D3", "K3_D3_sample"])
def test_planned_non_power_of_two_tile_counts_train(runs, name):
    job, ranks = JOBS[name], runs[name]
    assert_tiles_partitioned(ranks, job.k)
    boxes, scene = ranks[0]["tile_boxes"], ranks[0]["scene_box"]
    assert boxes.shape == (job.k, 2, 3) and tiling_problem(boxes, scene) is None
    assert all(torch.equal(r["tile_boxes"], boxes) for r in ranks)  # rank 0's plan reached everyone
    for r in ranks:
        assert len(r["losses"]) == job.steps and all(math.isfinite(x) for x in r["losses"])
        for k in r["tile_ids"]:  # every tile is rendered and trained
            assert sum(r["tile_samples"][k]) > 0, (name, k)
            grid = r["grads"][0]["tiles"][k]["grid.density_planes.0"]
            assert grid is not None and bool(grid.abs().max() > 0), (name, k)
    if job.reference is not None:
        ref = runs[job.reference][0]
        assert_same_losses(ranks, ref, name)
        assert_same_gradients(ranks, ref, name)
        assert_same_parameters(ranks, ref, name)


# -- 6. the renderer: K composited segments = one pass over all samples ----------------------------------


@pytest.fixture
def one_thread():
    with W.one_thread():  # small float64 kernels: threads only add synchronisation on two busy cores
        yield


def test_tiled_renderer_composites_like_one_pass_over_all_samples(one_thread):
    """TiledRenderer.forward (segments per tile, composited in each ray's tile order) against
    render_sample_based (all tiles' samples merged per ray, one volume-rendering pass) in float64:
    values and gradients of every parameter, for rays crossing 1 to 4 tiles and rays missing all.
    (tests/rendering/test_segments.py checks the compositing maths on an analytic field; this checks
    the renderer that training uses: per-tile generators, pruning, field queries, tile order.)"""
    f64 = torch.float64
    xs, ys = [-1.0, -0.2, 0.3, 1.0], [-1.0, 0.1, 1.0]  # 3 × 2 tiles of unequal size
    boxes = torch.tensor([[[xs[i], ys[j], -0.5], [xs[i + 1], ys[j + 1], 0.5]] for i in range(3) for j in range(2)])
    config = FieldConfig(grid=GridConfig(mode="vm", base_resolution=(8, 8, 4), scales=(1, 2), density_channels=4,
                                         appearance_channels=8),
                         decoder_width=16, background="sky", sky_width=8, sky_depth=1, appearance_embedding_dim=4,
                         density_shift=1.0)
    field = build_radiance_field(config, boxes, n_images=3, seed=3)
    scene = torch.tensor([[-1.0, -1.0, -0.5], [1.0, 1.0, 0.5]])
    renderer = TiledRenderer(field, scene, RenderConfig(samples_per_diagonal=64, occupancy_resolution=8)).double()
    renderer.update_occupancy(0, lambda k: torch.Generator().manual_seed(10 + k))

    # Near-horizontal rays from a circle around the scene through random points of it (crossing
    # up to 4 tiles); the first tenth point upwards and miss every tile.
    g = torch.Generator().manual_seed(0)
    n = 200
    angle = torch.rand(n, generator=g, dtype=f64) * 2 * math.pi
    origins = torch.stack([2.5 * angle.cos(), 2.5 * angle.sin(), torch.rand(n, generator=g, dtype=f64) * 0.8 - 0.4], 1)
    targets = torch.cat([torch.rand(n, 2, generator=g, dtype=f64) * 1.6 - 0.8,
                         torch.rand(n, 1, generator=g, dtype=f64) * 0.8 - 0.4], 1)
    targets[: n // 10, 2] = 3.0
    rays = RayBundle(origins, torch.nn.functional.normalize(targets - origins, dim=-1),
                     torch.randint(0, 3, (n,), generator=g))
    background = torch.rand(n, 3, generator=g, dtype=f64)
    _, _, hit = intersect_rays_boxes(rays.origins, rays.directions, renderer.tile_boxes().double())
    crossed = hit.sum(1)
    assert int((crossed >= 3).sum()) >= 50 and int((crossed == 4).sum()) >= 20
    assert int((crossed == 0).sum()) >= n // 10 and int((crossed == 6).sum()) == 0  # every ray misses some tile

    def generators(k):  # a fresh generator per call: both renderings draw the same jitter
        return torch.Generator().manual_seed(100 + int(k))

    params = list(renderer.parameters())
    probes = [torch.randn(n, 3, generator=g, dtype=f64)] + [torch.randn(n, generator=g, dtype=f64) for _ in range(3)]

    def render_and_grads(fn):
        out = fn(rays, stratified=True, generators=generators, background=background)
        loss = sum((p * x).sum() for p, x in zip(probes, (out.rgb, out.opacity, out.depth, out.distortion)))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return out, grads

    ctx = single_process_context("cpu")
    tiled, tiled_grads = render_and_grads(renderer)
    merged, merged_grads = render_and_grads(lambda *a, **kw: render_sample_based(renderer, *a, ctx=ctx, **kw))
    assert tiled.n_samples == merged.n_samples > 1000
    assert float(tiled.opacity.detach().mean()) > 0.5  # segments really occlude each other
    tight = dict(rtol=1e-10, atol=1e-12)
    for name in ("rgb", "opacity", "depth", "distortion"):
        torch.testing.assert_close(getattr(tiled, name), getattr(merged, name), **tight, msg=name)
    for p, a, b in zip(params, tiled_grads, merged_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **tight)
    assert sum(a is not None and bool(a.abs().max() > 0) for a in tiled_grads) > 0.9 * len(params)
    missed = crossed == 0
    assert torch.equal(tiled.opacity[missed], torch.zeros_like(tiled.opacity[missed]))
    torch.testing.assert_close(tiled.rgb[missed], background[missed], rtol=0, atol=0)

    # The partition-based strategy on one process is exactly forward().
    same = render_partition_based(renderer, rays, ctx, stratified=True, generators=generators, background=background)
    for name in ("rgb", "opacity", "depth", "distortion"):
        assert torch.equal(getattr(same, name), getattr(tiled, name)), name

    # The order matters: compositing the same segments in tile-index order is visibly wrong (in depth
    # and distortion; colours of an untrained field are nearly uniform).
    with torch.no_grad():
        blocks, _ = renderer.render_local_tiles(rays, True, generators)
        unordered = composite_segments(blocks.transpose(0, 1), background=background)
        assert float((unordered.depth - tiled.depth * tiled.opacity).abs().max()) > 0.1
        assert float((unordered.distortion - tiled.distortion).abs().max()) > 0.1
