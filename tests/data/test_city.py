"""The procedural city: exact geometry and colours, the dataset it writes, and safe generation."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData

import nerfxl.data.city.generate as city_generate
from nerfxl.data.boxes import intersect_rays_boxes
from nerfxl.data.city import (
    CITY_FORMAT_VERSION,
    CITY_SIZES,
    CityScene,
    Intrinsics,
    build_city,
    cast_rays,
    default_city_path,
    ensure_city,
    generate_city,
    look_pose,
    render_view,
)
from nerfxl.data.city.scene import BUILDING, OTHER
from nerfxl.data.city.shading import AMBIENT, ASPHALT, SKY_ZENITH, SUN, SUN_DIRECTION
from nerfxl.data.load import load_dataset
from nerfxl.data.rays import generate_rays, image_pixels
from nerfxl.errors import DataError, NerfxlError

TINY = CITY_SIZES["tiny"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("city") / "tiny"
    generate_city(out, "tiny", seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_scene() -> CityScene:
    return build_city("tiny", 0)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def shading(normal) -> float:
    """The documented lambertian factor, written out independently of the shader."""
    cos = sum(float(a) * float(b) for a, b in zip(normal, SUN_DIRECTION))
    return AMBIENT + SUN * max(0.0, cos)


def to_u8(rgb) -> np.ndarray:
    return np.floor(np.clip(np.asarray(rgb, dtype=np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)


# --- geometry --------------------------------------------------------------------------------


def brute_force_t(scene: CityScene, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Nearest hit against every box, sphere and the ground: the oracle for the grid walk."""
    t_box, _, hit = intersect_rays_boxes(o, d, scene.boxes)
    t_box = torch.where(hit & (t_box > 1e-6), t_box, torch.full_like(t_box, math.inf)).amin(1)
    oc = o[:, None] - scene.sphere_centers[None]
    b = (oc * d[:, None]).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - scene.sphere_radii**2)
    t_s = -b - disc.clamp_min(0).sqrt()
    t_s = torch.where((disc >= 0) & (t_s > 1e-6), t_s, torch.full_like(t_s, math.inf)).amin(1)
    t_g = -o[:, 2] / d[:, 2]
    p = o + t_g[:, None] * d
    on_plane = (d[:, 2] < 0) & (p[:, :2].abs() <= scene.half_extent).all(-1)
    t_g = torch.where(on_plane, t_g, torch.full_like(t_g, math.inf))
    return torch.stack([t_box, t_s, t_g], 1).amin(1)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_grid_walk_finds_the_same_hits_as_testing_everything(size):
    scene = build_city(size, seed=3)
    g = torch.Generator().manual_seed(0)
    n = 3000
    h = scene.half_extent
    aerial = torch.cat([(torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * h * 1.2,
                        30 + 60 * torch.rand(n, 1, generator=g, dtype=torch.float64)], 1)
    street = torch.cat([(torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * h,
                        0.5 + 12 * torch.rand(n, 1, generator=g, dtype=torch.float64)], 1)
    o = torch.cat([aerial, street])
    d = torch.randn(2 * n, 3, generator=g, dtype=torch.float64)
    d[:n, 2] = -d[:n, 2].abs()
    d[n:n + 50, :2] = 0.0  # some exactly vertical rays
    d[n + 50:n + 100, 1:] = 0.0  # and some along +-x
    d = d / d.norm(dim=-1, keepdim=True)
    # Rays that start inside a primitive have no meaningful first hit; leave them out.
    inside = ((o[:, None] >= scene.boxes[None, :, 0]) & (o[:, None] <= scene.boxes[None, :, 1])).all(-1).any(1)
    inside |= ((o[:, None] - scene.sphere_centers[None]).norm(dim=-1) < scene.sphere_radii).any(1)
    o, d = o[~inside], d[~inside]

    _, t, normal, hit_id = cast_rays(scene, o, d)
    expected = brute_force_t(scene, o, d)
    assert torch.equal(torch.isinf(t), torch.isinf(expected))
    finite = torch.isfinite(t)
    torch.testing.assert_close(t[finite], expected[finite], rtol=0, atol=1e-7)
    assert (hit_id[finite] >= 0).all() and (hit_id[~finite] == -1).all()
    assert int(((hit_id >= 1) & (hit_id <= scene.num_boxes)).sum()) > 100
    assert int((hit_id > scene.num_boxes).sum()) > 20
    torch.testing.assert_close(normal[finite].norm(dim=-1), torch.ones(int(finite.sum())))


def test_cast_rays_bits_do_not_depend_on_chunking_or_threads(tiny_scene):
    g = torch.Generator().manual_seed(1)
    o = torch.cat([torch.rand(4000, 2, generator=g, dtype=torch.float64) * 120 - 60,
                   torch.full((4000, 1), 50.0, dtype=torch.float64)], 1)
    d = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    d[:, 2] = -d[:, 2].abs()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cast_rays(tiny_scene, o, d)
        torch.set_num_threads(2)
        two = cast_rays(tiny_scene, o, d, chunk=777)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_ray_hits_a_known_box_face_at_the_known_distance(tiny_scene):
    s = tiny_scene
    heights = torch.where(s.box_kind == BUILDING, s.boxes[:, 1, 2] - s.boxes[:, 0, 2],
                          torch.zeros(s.num_boxes, dtype=torch.float64))
    b = int(heights.argmax())
    lo, hi = s.boxes[b]
    # Above the trees, 0.5 m in front of the -x face (neighbours stand at least 2 m away).
    z = float(lo[2] + hi[2]) / 2
    assert z > 10
    y = float(lo[1] + hi[1]) / 2
    o = torch.tensor([[float(lo[0]) - 0.5, y, z], [float(hi[0]) + 2.0, y, z]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    _, t, normal, hit_id = cast_rays(s, o, d)
    assert hit_id.tolist() == [b + 1, b + 1]
    torch.testing.assert_close(t, torch.tensor([0.5, 2.0], dtype=torch.float64), rtol=0, atol=1e-12)
    assert normal.tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    # An oblique ray aimed at a point on the roof arrives there at exactly the distance travelled.
    target = torch.tensor([float(lo[0] + hi[0]) / 2, y, float(hi[2])], dtype=torch.float64)
    direction = torch.tensor([0.3, -0.2, -1.0], dtype=torch.float64)
    direction = direction / direction.norm()
    _, t, normal, hit_id = cast_rays(s, (target - 25.0 * direction)[None], direction[None])
    top_box = int(hit_id[0]) - 1
    assert s.boxes[top_box, 1, 2] >= hi[2]  # the building itself, or a tower / unit on its roof
    if top_box == b:
        assert abs(float(t[0]) - 25.0) < 1e-9 and normal[0].tolist() == [0.0, 0.0, 1.0]


def test_camera_straight_down_over_a_junction_sees_flat_asphalt_at_its_altitude(tiny_scene):
    altitude = 30.0
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, 0.0, altitude]  # identity rotation: looks down -z; (0, 0) is a road junction
    intr = Intrinsics(width=16, height=12, fx=120.0, fy=120.0, cx=8.0, cy=6.0)  # ±2 m on the ground
    image, depth = render_view(tiny_scene, c2w, intr, supersample=3)
    # The ground is parallel to the image plane: z-depth is the altitude at every pixel.
    np.testing.assert_allclose(depth, altitude, rtol=0, atol=1e-5)
    expected = to_u8(ASPHALT.numpy() * shading((0.0, 0.0, 1.0)))
    assert (image == expected).all()
    _, t, normal, hit_id = cast_rays(tiny_scene, torch.tensor([[0.0, 0.0, altitude]]),
                                     torch.tensor([[0.0, 0.0, -1.0]]))
    assert hit_id.tolist() == [0] and float(t[0]) == altitude and normal[0].tolist() == [0.0, 0.0, 1.0]


# --- colours ---------------------------------------------------------------------------------


def one_building_scene() -> CityScene:
    """A 20 × 12 m building of five 4 m storeys (+1 m parapet) on a plain 100 m ground."""
    h = 50
    f64 = torch.float64
    return CityScene(
        size="custom", seed=0, half_extent=float(h),
        scene_box=torch.tensor([[-h, -h, -1.0], [h, h, 25.0]], dtype=f64),
        boxes=torch.tensor([[[0.0, 0.0, 0.0], [20.0, 12.0, 21.0]]], dtype=f64),
        box_kind=torch.tensor([BUILDING]),
        box_wall=torch.tensor([[0.7, 0.6, 0.5]], dtype=f64),
        box_roof=torch.tensor([[0.4, 0.4, 0.45]], dtype=f64),
        box_window=torch.tensor([[0.2, 0.25, 0.35]], dtype=f64),
        box_floor_height=torch.tensor([4.0], dtype=f64),
        box_floors=torch.tensor([5]),
        # The 12 m wall has 3 columns: windows at y ∈ [1, 3], [5, 7], [9, 11].
        box_column_width=torch.tensor([4.0], dtype=f64),
        box_window_width=torch.tensor([0.5], dtype=f64),
        box_window_height=torch.tensor([0.5], dtype=f64),  # sill 0.3: windows at z ∈ [1.2, 3.2) + 4 k
        sphere_centers=torch.zeros(0, 3, dtype=f64), sphere_radii=torch.zeros(0, dtype=f64),
        sphere_colors=torch.zeros(0, 3, dtype=f64),
        road_origin=-1000.0, block_pitch=2000.0, blocks=1, road_half_width=5.0, sidewalk_width=3.0,
        ground_albedo=torch.full((2 * h, 2 * h, 3), 0.5, dtype=f64),
        ground_class=torch.full((2 * h, 2 * h), OTHER, dtype=torch.uint8),
    )


def centre_pixel(scene, position, heading, pitch) -> np.ndarray:
    intr = Intrinsics(width=9, height=9, fx=400.0, fy=400.0, cx=4.5, cy=4.5)  # 2.5 cm pixels at 10 m
    image, _ = render_view(scene, look_pose(np.array(position, dtype=np.float64), heading, pitch), intr, 3)
    return image[4, 4]


def test_facade_window_wall_roof_and_sky_have_the_lambertian_colours():
    s = one_building_scene()
    wall, glass, roof = s.box_wall[0].numpy(), s.box_window[0].numpy(), s.box_roof[0].numpy()
    east = shading((1.0, 0.0, 0.0))  # the +x face, seen from a camera looking towards -x
    # Storey 2, column 0: the middle of a window.
    assert (centre_pixel(s, [30.0, 2.0, 10.2], math.pi, 0.0) == to_u8(glass * east)).all()
    # The same storey at a column boundary (y = 4) is wall between two windows.
    assert (centre_pixel(s, [30.0, 4.0, 10.2], math.pi, 0.0) == to_u8(wall * east)).all()
    # Between storeys (z = 8.6, below the sill of storey 2) is wall too.
    assert (centre_pixel(s, [30.0, 2.0, 8.6], math.pi, 0.0) == to_u8(wall * east)).all()
    # The parapet above the top storey has no windows.
    assert (centre_pixel(s, [30.0, 2.0, 20.5], math.pi, 0.0) == to_u8(wall * east)).all()
    # The -x face is turned away from the sun: ambient light only.
    assert (centre_pixel(s, [-10.0, 6.0, 9.0], 0.0, 0.0) == to_u8(wall * AMBIENT)).all()
    # The roof, from straight above.
    assert (centre_pixel(s, [10.0, 6.0, 40.0], 0.0, math.pi / 2) == to_u8(roof * shading((0.0, 0.0, 1.0)))).all()
    # Straight up is the zenith colour of the sky.
    assert (centre_pixel(s, [-30.0, -30.0, 5.0], 0.0, -math.pi / 2) == to_u8(SKY_ZENITH.numpy())).all()
    assert shading((1.0, 0.0, 0.0)) > AMBIENT  # the sun does light the +x faces


def test_a_window_of_the_tiny_city_is_darker_than_its_wall(tiny_scene):
    s = tiny_scene
    buildings = [b for b in range(s.num_boxes) if s.box_kind[b] == BUILDING and s.box_floors[b] >= 3]
    checked = 0
    for b in buildings:
        lo, hi = s.boxes[b, 0].numpy(), s.boxes[b, 1].numpy()
        length = hi[1] - lo[1]
        columns = max(1.0, round(length / float(s.box_column_width[b])))
        storey = float(s.box_floor_height[b])
        sill = 0.5 * (1 - float(s.box_window_height[b])) + 0.05
        z_window = lo[2] + 2 * storey + (sill + float(s.box_window_height[b]) / 2) * storey
        y_window = lo[1] + 0.5 * length / columns
        position = [hi[0] + 6.0, y_window, z_window]
        _, _, _, hit = cast_rays(s, torch.tensor([position]), torch.tensor([[-1.0, 0.0, 0.0]]))
        if int(hit[0]) != b + 1:  # something stands in front of this facade
            continue
        east = shading((1.0, 0.0, 0.0))
        window = centre_pixel(s, position, math.pi, 0.0)
        assert (window == to_u8(s.box_window[b].numpy() * east)).all()
        z_wall = lo[2] + 2.1 * storey  # low in the same storey, under the sill
        wall = centre_pixel(s, [hi[0] + 6.0, y_window, z_wall], math.pi, 0.0)
        assert (wall == to_u8(s.box_wall[b].numpy() * east)).all()
        assert int(window.sum()) < int(wall.sum())
        checked += 1
    assert checked >= 1


# --- the dataset -----------------------------------------------------------------------------


def test_dataset_has_the_nerfstudio_layout(tiny_dir):
    meta = json.loads((tiny_dir / "transforms.json").read_text())
    w, h = TINY.image_wh
    assert meta["camera_model"] == "PINHOLE" and (meta["w"], meta["h"]) == (w, h)
    assert meta["fl_x"] == meta["fl_y"] == pytest.approx((w / 2) / math.tan(math.radians(TINY.fov_x_deg) / 2))
    assert (meta["cx"], meta["cy"]) == (w / 2, h / 2)
    assert meta["depth_unit_scale_factor"] == 1.0 and meta["ply_file_path"] == "points.ply"
    assert meta["nerfxl_city"] == {"size": "tiny", "seed": 0, "version": CITY_FORMAT_VERSION}
    frames = meta["frames"]
    assert len(frames) == TINY.n_train + TINY.test_views
    names = [f["file_path"] for f in frames]
    assert names == [f"images/frame_{k:05d}.png" for k in range(len(frames))]
    assert meta["train_filenames"] + meta["test_filenames"] == names
    assert len(meta["test_filenames"]) == TINY.test_views
    box = np.array(meta["scene_box"])
    assert box.shape == (2, 3) and (box[1] > box[0]).all()
    for f in frames:
        c2w = np.array(f["transform_matrix"])
        assert c2w.shape == (4, 4) and np.allclose(c2w[3], [0, 0, 0, 1])
        np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)
        assert c2w[2, 2] > 0  # the camera's -Z (its view) points downwards: an aerial view
        with Image.open(tiny_dir / f["file_path"]) as im:
            assert im.mode == "RGB" and im.size == (w, h)
        depth = np.load(tiny_dir / f["depth_file_path"])
        assert depth.dtype == np.float32 and depth.shape == (h, w)
        assert (depth >= 0).all() and (depth > 0).mean() > 0.7  # mostly inside the footprint
    ply = PlyData.read(str(tiny_dir / "points.ply"))
    assert not ply.text
    vertex = ply["vertex"].data
    assert [(n, vertex.dtype[n].str[1:]) for n in vertex.dtype.names] == [
        ("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    assert len(vertex) == TINY.points


def test_points_lie_on_surfaces(tiny_dir, tiny_scene):
    s = tiny_scene
    ply = PlyData.read(str(tiny_dir / "points.ply"))["vertex"].data
    p = torch.tensor(np.stack([ply["x"], ply["y"], ply["z"]], 1), dtype=torch.float64)
    tol = 2e-3  # float32 coordinates of points up to ~100 m away
    on_ground = p[:, 2].abs() < tol
    lo, hi = s.boxes[None, :, 0], s.boxes[None, :, 1]
    in_box = ((p[:, None] >= lo - tol) & (p[:, None] <= hi + tol)).all(-1)
    on_face = ((p[:, None] - lo).abs() < tol) | ((p[:, None] - hi).abs() < tol)
    on_box = (in_box & on_face.any(-1)).any(1)
    on_sphere = ((p[:, None] - s.sphere_centers[None]).norm(dim=-1) - s.sphere_radii).abs().lt(tol).any(1)
    assert (on_ground | on_box | on_sphere).all()
    assert on_ground.any() and on_box.any() and on_sphere.any()


def test_loads_with_consistent_poses_and_depth(tiny_dir, tiny_scene):
    train = load_dataset(tiny_dir, split="train")
    test = load_dataset(tiny_dir, split="test")
    assert train.format == "nerfstudio" and len(train) == TINY.n_train and len(test) == TINY.test_views
    meta = json.loads((tiny_dir / "transforms.json").read_text())
    torch.testing.assert_close(train.scene_box, torch.tensor(meta["scene_box"], dtype=torch.float32))
    assert train.depths is not None and train.points is not None and train.points.shape == (TINY.points, 3)
    # Held-out cameras are not on the training paths.
    gap = torch.cdist(test.cameras.positions, train.cameras.positions).min()
    assert gap >= 5.0 - 1e-4
    # Rays from the loaded cameras (nerfxl's own ray generation) meet the scene at the stored depth.
    w, h = TINY.image_wh
    for k in (0, 7, 19):
        pixels = image_pixels(w, h)
        rays = generate_rays(train.cameras, torch.full((w * h,), k), pixels)
        _, t, _, _ = cast_rays(tiny_scene, rays.origins, rays.directions)
        forward = -train.cameras.camera_to_worlds[k, :, 2].double()
        z = torch.where(torch.isinf(t), torch.zeros_like(t), t * (rays.directions.double() @ forward))
        stored = train.depths.get(k).reshape(-1).double()
        close = (z - stored).abs() < 1e-3 * stored.clamp_min(1.0)
        assert close.float().mean() > 0.99
        assert train.images.get(k).shape == (h, w, 3)


def test_generation_is_bit_identical_with_any_number_of_workers(tiny_dir, tmp_path):
    out = tmp_path / "again"
    out.mkdir()  # an existing empty folder is fine
    # The fixture rendered in this process; this run renders in two spawned worker processes.
    assert generate_city(out, "tiny", seed=0, progress=False, workers=2) == out
    first, second = files_of(tiny_dir), files_of(out)
    assert sorted(first) == sorted(second)
    assert len([n for n in first if n.endswith(".png")]) == TINY.n_train + TINY.test_views
    for name in first:
        assert first[name] == second[name], name


# --- safe writing ----------------------------------------------------------------------------


def test_refuses_a_non_empty_folder_and_overwrite_replaces_it(tiny_dir, tmp_path):
    out = tmp_path / "city"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(NerfxlError) as err:
        generate_city(out, "tiny", progress=False)
    assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert (out / "keep.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NerfxlError, match="not a folder"):
        generate_city(a_file, "tiny", progress=False)
    with pytest.raises(NerfxlError, match="unknown city size"):
        generate_city(tmp_path / "new", "huge", progress=False)

    # A partial folder left by a generation that was killed outright (its process is gone).
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    (tmp_path / f".city.partial-{finished.pid}-x1y2").mkdir()
    generate_city(out, "tiny", seed=0, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists()
    assert files_of(out) == files_of(tiny_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city", "file"]  # nothing left beside it, no stale partial


def interrupt_after(monkeypatch, frames: int) -> None:
    real = city_generate.save_frame
    calls = []

    def failing(*args, **kwargs):
        if len(calls) == frames:
            raise KeyboardInterrupt  # what Ctrl-C raises
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(city_generate, "save_frame", failing)


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    out = tmp_path / "city"
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        generate_city(out, "tiny", progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the partial folder is gone too
    with pytest.raises(DataError):
        load_dataset(out)


def test_interrupted_overwrite_keeps_the_old_dataset(tiny_dir, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "city"
    shutil.copytree(tiny_dir, out)
    before = files_of(out)
    interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        generate_city(out, "tiny", overwrite=True, progress=False)
    assert files_of(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["city"]


def test_cache_path_and_ensure_city(tiny_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("NERFXL_CACHE", str(tmp_path))
    assert default_city_path("small", 3) == tmp_path / "city-small-3"
    monkeypatch.delenv("NERFXL_CACHE")
    assert default_city_path("tiny", 0) == Path.home() / ".cache" / "nerfxl" / "city-tiny-0"
    monkeypatch.setenv("NERFXL_CACHE", str(tmp_path))

    calls = []
    monkeypatch.setattr(city_generate, "generate_city", lambda *a, **k: calls.append((a, k)))
    shutil.copytree(tiny_dir, tmp_path / "city-tiny-0")
    assert ensure_city("tiny", 0, progress=False) == tmp_path / "city-tiny-0"
    assert calls == []  # already complete: nothing to do
    assert ensure_city("tiny", 1, progress=False) == tmp_path / "city-tiny-1"
    assert len(calls) == 1 and calls[0][0][:3] == (tmp_path / "city-tiny-1", "tiny", 1)
    # A city from another generator version is regenerated (in place, once complete).
    meta = json.loads((tmp_path / "city-tiny-0" / "transforms.json").read_text())
    meta["nerfxl_city"]["version"] = CITY_FORMAT_VERSION - 1
    (tmp_path / "city-tiny-0" / "transforms.json").write_text(json.dumps(meta))
    ensure_city("tiny", 0, progress=False)
    assert len(calls) == 2 and calls[1][1]["overwrite"] is True
