"""TilePlan: point ownership, JSON round trip, malformed files, planning from clouds and from rays."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from partition_checks import assert_tiles_box

from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.load import load_dataset
from nerfxl.errors import ConfigError, DataError
from nerfxl.partition import plan as plan_module
from nerfxl.partition.plan import (
    DEFAULT_RAY_SAMPLES, MIN_POINTS_PER_TILE, TilePlan, _tile_of_points_brute, plan_tiles, planning_points,
    ray_samples, tiling_problem,
)

BOX = torch.tensor([[0.0, 0.0, 0.0], [4.0, 2.0, 1.0]])


def some_plan(k: int = 4, method: str = "kd") -> TilePlan:
    g = torch.Generator().manual_seed(0)
    pts = BOX[0] + torch.rand(2000, 3, generator=g) ** 2 * (BOX[1] - BOX[0])
    return plan_tiles(pts, k, method, scene_box=BOX)


# -- point ownership --------------------------------------------------------------------------------


@pytest.mark.parametrize("k, method", [(1, "kd"), (3, "kd"), (8, "kd"), (6, "uniform")])
def test_every_point_of_the_box_has_exactly_one_tile(k, method):
    plan = some_plan(k, method)
    # Random points, plus every tile corner and face centre: the points most likely to be double- or un-owned.
    g = torch.Generator().manual_seed(1)
    random = BOX[0] + torch.rand(5000, 3, generator=g) * (BOX[1] - BOX[0])
    corners = torch.stack([torch.stack([plan.boxes[:, (i >> a) & 1, a] for a in range(3)], dim=-1) for i in range(8)]).reshape(-1, 3)
    centres = 0.5 * (plan.boxes[:, 0] + plan.boxes[:, 1])
    faces = torch.cat([torch.where(torch.arange(3) == a, plan.boxes[:, s], centres) for a in range(3) for s in (0, 1)])
    pts = torch.cat([random.double(), corners, faces])
    tile = plan.tile_of_points(pts)
    assert tile.dtype == torch.int64 and tile.shape == (pts.shape[0],)
    assert bool((tile >= 0).all()), "a point of the closed scene box has no tile"
    # The owner contains the point (closed box); half-open faces mean the owner is the max-side tile.
    owner = plan.boxes[tile]
    assert bool(((pts >= owner[:, 0]) & (pts <= owner[:, 1])).all())
    interior_face = (pts == owner[:, 1]) & (owner[:, 1] != plan.scene_box[1])
    assert not bool(interior_face.any()), "a point on an inner max face went to the lower tile"


@pytest.mark.parametrize("k, method", [(5, "kd"), (12, "uniform")])
def test_fast_ownership_lookup_matches_the_box_by_box_rule(k, method):
    plan = some_plan(k, method)
    g = torch.Generator().manual_seed(5)
    # Random points from slightly beyond the box, snapped half of the time onto face coordinates.
    pts = BOX[0].double() - 0.1 + torch.rand(20_000, 3, generator=g, dtype=torch.float64) * (BOX[1] - BOX[0] + 0.2).double()
    faces = plan.boxes.reshape(-1, 3)
    snap = torch.rand(20_000, 3, generator=g) < 0.5
    pts = torch.where(snap, faces[torch.randint(0, faces.shape[0], (20_000,), generator=g)], pts)
    pts[:3, 0] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=torch.float64)
    fast = plan.tile_of_points(pts)
    assert torch.equal(fast, _tile_of_points_brute(plan.boxes, plan.scene_box, pts))
    assert (fast == -1).any() and (fast >= 0).any()


def test_scene_max_corner_and_outside_points():
    plan = some_plan(4)
    pts = torch.tensor([[4.0, 2.0, 1.0], [0.0, 0.0, 0.0], [4.0001, 1.0, 0.5], [-1e-9, 1.0, 0.5],
                        [float("nan"), 1.0, 0.5], [float("inf"), 1.0, 0.5]])
    tile = plan.tile_of_points(pts)
    assert tile[0] >= 0 and bool((plan.boxes[tile[0], 1] == BOX[1]).all())
    assert tile[1] >= 0 and bool((plan.boxes[tile[1], 0] == BOX[0]).all())
    assert tile[2:].tolist() == [-1, -1, -1, -1]


def test_counts_are_the_planning_points_per_tile():
    g = torch.Generator().manual_seed(2)
    pts = BOX[0] + torch.rand(3000, 3, generator=g) * (BOX[1] - BOX[0])
    plan = plan_tiles(torch.cat([pts, torch.tensor([[9.0, 9.0, 9.0]])]), 5, scene_box=BOX)
    assert int(plan.points_per_tile.sum()) == 3000  # the outside point is nobody's
    assert torch.equal(plan.points_per_tile, torch.bincount(plan.tile_of_points(pts), minlength=5))
    assert torch.equal(plan.weight_per_tile, plan.points_per_tile.double())
    assert float(plan.shares.sum()) == pytest.approx(1.0)
    assert plan.imbalance == pytest.approx(1.0, abs=0.01)
    assert plan.source["kind"] == "given points"


def test_large_clouds_are_split_on_a_subset_but_counted_in_full(monkeypatch):
    monkeypatch.setattr(plan_module, "MAX_SPLIT_POINTS", 1000)
    g = torch.Generator().manual_seed(6)
    pts = BOX[0] + torch.rand(8000, 3, generator=g) * (BOX[1] - BOX[0])
    plan = plan_tiles(pts, 4, scene_box=BOX, seed=1)
    assert "subset of 1000" in plan.source["split_on"]
    assert int(plan.points_per_tile.sum()) == 8000
    assert plan.imbalance < 1.15  # a 1000-point subset still places the medians within a few percent
    assert torch.equal(plan_tiles(pts, 4, scene_box=BOX, seed=1).boxes, plan.boxes)


def test_points_without_a_box_use_their_bounding_box():
    pts = torch.tensor([[0.0, 0.0, 5.0], [1.0, 2.0, 5.0], [3.0, 1.0, 5.0], [2.0, 2.0, 5.0]])  # flat in z
    plan = plan_tiles(pts, 2)
    assert bool((plan.scene_box[0] <= pts.min(0).values.double()).all())
    assert bool((plan.scene_box[1] >= pts.max(0).values.double()).all())
    assert bool((plan.scene_box[1] > plan.scene_box[0]).all())
    assert int(plan.points_per_tile.sum()) == 4


def test_bad_plan_requests():
    pts = torch.rand(100, 3)
    with pytest.raises(ConfigError, match="k must be"):
        plan_tiles(pts, 0, scene_box=BOX)
    with pytest.raises(ConfigError, match="unknown partition method"):
        plan_tiles(pts, 2, "octree", scene_box=BOX)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nz"):
        plan_tiles(pts, 6, "uniform", scene_box=BOX, nz=4)
    with pytest.raises(ConfigError, match="grid shape"):
        plan_tiles(pts, 6, "uniform", scene_box=BOX, grid_shape=(2, 2, 1))


# -- construction checks and JSON ------------------------------------------------------------------


def test_constructor_rejects_boxes_that_do_not_tile():
    good = some_plan(2)
    gap = good.boxes.clone()
    gap[0, 1, 0] -= 0.1
    overlap = good.boxes.clone()
    overlap[0, 1, 0] += 0.1
    for boxes, fragment in ((gap, "gap"), (overlap, "overlap")):
        with pytest.raises(ValueError, match=fragment):
            replace(good, boxes=boxes)
    with pytest.raises(ValueError, match="entries for 2 tiles"):
        replace(good, points_per_tile=torch.zeros(3))
    with pytest.raises(ValueError, match="method"):
        replace(good, method="octree")
    assert tiling_problem(good.boxes, good.scene_box) is None


@pytest.mark.parametrize("method", ["kd", "uniform"])
def test_json_round_trip_is_exact(tmp_path, method):
    plan = some_plan(6, method)
    plan.source["note"] = "round trip"
    path = plan.save(tmp_path / "sub" / "plan.json")
    assert [p.name for p in path.parent.iterdir()] == ["plan.json"]  # no temporary left behind
    loaded = TilePlan.load(path)
    assert torch.equal(loaded.boxes, plan.boxes) and torch.equal(loaded.scene_box, plan.scene_box)
    assert torch.equal(loaded.points_per_tile, plan.points_per_tile)
    assert torch.equal(loaded.weight_per_tile, plan.weight_per_tile)
    assert loaded.method == method and loaded.source == plan.source and loaded.grid_shape == plan.grid_shape
    assert (loaded.grid_shape is None) == (method == "kd")
    # Readable by anyone: plain JSON with the documented fields.
    obj = json.loads(path.read_text())
    assert obj["format"] == "nerfxl-tile-plan" and obj["k"] == 6 and len(obj["boxes"]) == 6


def test_save_refuses_unserialisable_source_without_touching_the_file(tmp_path):
    plan = some_plan(2)
    path = tmp_path / "plan.json"
    plan.save(path)
    before = path.read_bytes()
    plan.source["bad"] = {1, 2}
    with pytest.raises(ConfigError, match="plan.json"):
        plan.save(path)
    plan.source["bad"] = float("nan")
    with pytest.raises(ConfigError):
        plan.save(path)
    assert path.read_bytes() == before


def _edit(obj: dict, key: str, value) -> dict:
    obj = json.loads(json.dumps(obj))
    if value is _DELETE:
        del obj[key]
    else:
        obj[key] = value
    return obj


_DELETE = object()


def malformed_cases(good: dict):
    boxes = good["boxes"]
    gap = json.loads(json.dumps(boxes))
    gap[0][1][0] -= 0.25
    overlap = json.loads(json.dumps(boxes))
    overlap[0][1][0] += 0.25
    outside = json.loads(json.dumps(boxes))
    outside[0][0][0] -= 1.0
    return [
        ("not json", "{ this is not json", "not valid JSON"),
        ("top-level list", json.dumps([1, 2]), "expected a JSON object"),
        ("other format", json.dumps(_edit(good, "format", "something-else")), "not a tile plan"),
        ("future version", json.dumps(_edit(good, "version", 99)), "version"),
        ("missing boxes", json.dumps(_edit(good, "boxes", _DELETE)), "missing field(s) boxes"),
        ("gap", json.dumps(_edit(good, "boxes", gap)), "gap"),
        ("overlap", json.dumps(_edit(good, "boxes", overlap)), "overlap"),
        ("outside", json.dumps(_edit(good, "boxes", outside)), "outside the scene box"),
        ("ragged", json.dumps(_edit(good, "boxes", [[[0, 0, 0], [1, 1]]])), "ragged"),
        ("wrong shape", json.dumps(_edit(good, "scene_box", [[0, 0, 0, 0], [1, 1, 1, 1]])), "scene_box must be [2, 3]"),
        ("strings", json.dumps(_edit(good, "scene_box", [["0", 0, 0], [1, 1, 1]])), "numbers"),
        ("NaN", json.dumps(good).replace(json.dumps(boxes[0][0][0]), "NaN", 1), "non-finite"),
        ("Infinity", json.dumps(_edit(good, "weight_per_tile", [float("inf")] * len(boxes))), "non-finite"),
        ("negative count", json.dumps(_edit(good, "points_per_tile", [-1] * len(boxes))), "non-negative"),
        ("fractional count", json.dumps(_edit(good, "points_per_tile", [0.5] * len(boxes))), "whole numbers"),
        ("count length", json.dumps(_edit(good, "points_per_tile", [1])), "entries"),
        ("k mismatch", json.dumps(_edit(good, "k", 3)), "\"k\" is 3"),
        ("method", json.dumps(_edit(good, "method", "octree")), "method"),
        ("grid shape", json.dumps(_edit(good, "grid_shape", [1, 1, 1])), "grid_shape"),
    ]


def test_malformed_files_raise_data_errors_naming_the_file(tmp_path):
    good = some_plan(2).to_dict()
    for name, text, fragment in malformed_cases(good):
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(text)
        with pytest.raises(DataError) as info:
            TilePlan.load(path)
        message = str(info.value)
        assert str(path) in message, (name, message)
        assert fragment in message, (name, message)
    with pytest.raises(DataError, match="does not exist"):
        TilePlan.load(tmp_path / "nope.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="binary.json"):
        TilePlan.load(tmp_path / "binary.json")


# -- planning from a dataset -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def city(tiny_city):
    return load_dataset(tiny_city)


def test_dataset_with_a_cloud_plans_on_it(city):
    assert city.points is not None and city.points.shape[0] >= MIN_POINTS_PER_TILE * 4
    plan = plan_tiles(city, 4)
    assert plan.source["kind"] == "point cloud"
    assert_tiles_box(plan.boxes, city.scene_box)
    n = plan.source["n_points"]
    assert int(plan.points_per_tile.sum()) == n
    assert float((plan.points_per_tile - n / 4).abs().max()) <= 0.02 * n / 4 + 2


def test_dataset_without_points_plans_on_ray_samples(city):
    no_points = replace(city, points=None)
    plan = plan_tiles(no_points, 4, n_ray_samples=20_000, seed=3)
    assert plan.source["kind"] == "ray samples" and plan.source["seed"] == 3
    assert plan.source["n_points"] == 20_000 and plan.source["rays_drawn"] >= 20_000
    assert_tiles_box(plan.boxes, city.scene_box)
    assert int(plan.points_per_tile.sum()) == 20_000
    # Balanced on the work estimate (in-box ray length), which is what the split equalises.
    assert torch.allclose(plan.shares, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)
    # Seeded: the same seed gives the same plan, another seed a (slightly) different one.
    assert torch.equal(plan_tiles(no_points, 4, n_ray_samples=20_000, seed=3).boxes, plan.boxes)
    assert not torch.equal(plan_tiles(no_points, 4, n_ray_samples=20_000, seed=4).boxes, plan.boxes)


def test_ray_samples_lie_on_training_rays_inside_the_box(city):
    pts, weights, drawn = ray_samples(city, 5000, seed=0)
    box = city.scene_box.double()
    assert pts.shape == (5000, 3) and weights.shape == (5000,) and drawn >= 5000
    assert bool(((pts >= box[0]) & (pts <= box[1])).all())
    diagonal = float((box[1] - box[0]).norm())
    assert bool((weights > 0).all() and (weights <= diagonal * (1 + 1e-9)).all())
    # Each weight is the in-box length of a training ray through its point: the ray from some
    # camera centre through the point has exactly that in-box segment.
    centres = city.cameras.camera_to_worlds[:, :3, 3].double()
    p = pts[:200]
    dirs = p[:, None] - centres[None]  # [200, C, 3]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    t_in, t_out, hit = intersect_rays_boxes(centres[None].expand_as(dirs).reshape(-1, 3), dirs.reshape(-1, 3), box)
    lengths = (t_out - t_in).reshape(200, -1)
    match = ((lengths - weights[:200, None]).abs() <= 1e-4 * diagonal) & hit.reshape(200, -1)
    assert bool(match.any(dim=1).all())


def test_point_source_choice(city):
    few = replace(city, points=city.points[: MIN_POINTS_PER_TILE * 4 - 1])
    points = planning_points(few, 4, "auto", n_ray_samples=1000)
    assert points.info["kind"] == "ray samples" and "why" in points.info
    assert planning_points(few, 4, "points").info["kind"] == "point cloud"
    assert planning_points(city, 4, "rays", n_ray_samples=1000).info["kind"] == "ray samples"
    with pytest.raises(ConfigError, match="no point cloud"):
        planning_points(replace(city, points=None), 4, "points")
    with pytest.raises(ConfigError, match="point source"):
        planning_points(city, 4, "sfm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ray samples"):
        ray_samples(city, 0)


def test_uniform_plan_on_a_dataset_reports_its_imbalance(city):
    plan = plan_tiles(city, 4, "uniform")
    assert plan.grid_shape == (2, 2, 1)
    assert_tiles_box(plan.boxes, city.scene_box)
    assert plan.imbalance >= plan_tiles(city, 4, "kd").imbalance


def test_default_sample_count_matches_the_cli():
    from nerfxl.partition import cli

    assert cli.DEFAULT_RAY_SAMPLES == DEFAULT_RAY_SAMPLES
