import json

import numpy as np
import pytest
import torch
from PIL import Image

from fixture_writers import project, random_cameras, ray_point_distance, to4x4, write_image, write_json
from nerfxl.data.cameras import CameraModel
from nerfxl.data.load import describe_dataset, detect_format, load_dataset
from nerfxl.data.pointcloud import read_ply, write_ply
from nerfxl.data.rays import generate_rays
from nerfxl.errors import DataError

W, H = 24, 16


def write_scene(root, n=10, **top):
    c2ws = random_cameras(n, seed=1)
    frames = []
    for i, c2w in enumerate(c2ws):
        write_image(root / "images" / f"frame_{i:05d}.png", W, H, seed=i)
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": to4x4(c2w).tolist()})
    meta = {"camera_model": "PINHOLE", "fl_x": 20.0, "fl_y": 21.0, "cx": 12.5, "cy": 7.5, "w": W, "h": H,
            "frames": frames[::-1]}  # written in reverse: the loader sorts by file_path
    meta.update(top)
    write_json(root / "transforms.json", meta)
    return c2ws, meta


def test_cameras_and_intrinsics_round_trip(tmp_path):
    c2ws, _ = write_scene(tmp_path)
    assert detect_format(tmp_path) == "nerfstudio"
    ds = load_dataset(tmp_path, split="all")
    assert ds.format == "nerfstudio" and len(ds) == 10
    torch.testing.assert_close(ds.cameras.camera_to_worlds, torch.tensor(np.stack(c2ws), dtype=torch.float32))
    assert ds.cameras.fx.tolist() == [20.0] * 10 and ds.cameras.fy.tolist() == [21.0] * 10
    assert ds.cameras.cx[0] == 12.5 and ds.cameras.cy[0] == 7.5
    assert ds.cameras.width.tolist() == [W] * 10 and ds.cameras.height.tolist() == [H] * 10
    assert ds.image_names[0] == "images/frame_00000.png"
    assert ds.images.rgb(3).shape == (H, W, 3)
    # The loaded image is the file's pixels.
    raw = np.array(Image.open(tmp_path / "images" / "frame_00003.png"))
    assert torch.equal(ds.images.get(3), torch.from_numpy(raw))


def test_known_point_projects_onto_its_generated_ray(tmp_path):
    c2ws, _ = write_scene(tmp_path)
    ds = load_dataset(tmp_path / "transforms.json", split="all")  # the JSON file works too
    point = np.array([0.1, -0.2, 0.05])
    for i in (0, 4, 9):
        u, v = project(c2ws[i], 20.0, 21.0, 12.5, 7.5, point)
        ray = generate_rays(ds.cameras, torch.tensor([i]), torch.tensor([[u, v]], dtype=torch.float32))
        assert ray_point_distance(ray.origins[0], ray.directions[0], point) < 1e-4


def test_default_splits_hold_out_every_eighth_frame(tmp_path):
    write_scene(tmp_path, n=17)
    test = load_dataset(tmp_path, split="test")
    assert test.image_names == ["images/frame_00000.png", "images/frame_00008.png", "images/frame_00016.png"]
    assert load_dataset(tmp_path, split="val").image_names == test.image_names
    train = load_dataset(tmp_path, split="train")
    assert len(train) == 14 and not set(train.image_names) & set(test.image_names)


def test_split_lists_are_used(tmp_path):
    write_scene(tmp_path, n=6, train_filenames=[f"images/frame_{i:05d}.png" for i in (0, 1, 2, 3)],
                test_filenames=["./images/frame_00005.png"])
    assert load_dataset(tmp_path, "train").image_names == [f"images/frame_{i:05d}.png" for i in range(4)]
    assert load_dataset(tmp_path, "test").image_names == ["images/frame_00005.png"]
    assert load_dataset(tmp_path, "val").image_names == ["images/frame_00005.png"]  # val falls back to test


def test_distortion_per_frame_intrinsics_and_camera_models(tmp_path):
    c2ws, meta = write_scene(tmp_path, n=3)
    frames = sorted(meta["frames"], key=lambda f: f["file_path"])
    frames[0].update(camera_model="OPENCV", k1=-0.1, k2=0.02, p1=0.001, p2=-0.002)
    frames[1].update(camera_model="OPENCV_FISHEYE", distortion_params=[0.05, -0.01, 0.002, -0.001, 0, 0],
                     fl_x=30.0, fl_y=30.0)
    frames[2].update(camera_model="SIMPLE_RADIAL", k1=0.03)
    meta["frames"] = frames
    write_json(tmp_path / "transforms.json", meta)
    ds = load_dataset(tmp_path, "all")
    torch.testing.assert_close(ds.cameras.distortion, torch.tensor([
        [-0.1, 0.02, 0, 0, 0.001, -0.002], [0.05, -0.01, 0.002, -0.001, 0, 0], [0.03, 0, 0, 0, 0, 0]]))
    assert ds.cameras.camera_model.tolist() == [CameraModel.PERSPECTIVE, CameraModel.FISHEYE, CameraModel.PERSPECTIVE]
    assert ds.cameras.fx.tolist() == [20.0, 30.0, 20.0]
    assert ds.metadata["camera_models"] == ["OPENCV", "OPENCV_FISHEYE", "SIMPLE_RADIAL"]


def test_ply_points_depth_and_applied_transform(tmp_path):
    applied = [[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]]
    c2ws, meta = write_scene(tmp_path, n=4, ply_file_path="sparse_pc.ply", applied_transform=applied,
                             depth_unit_scale_factor=0.01)
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3)).astype(np.float32)
    cols = rng.integers(0, 256, size=(500, 3)).astype(np.uint8)
    write_ply(tmp_path / "sparse_pc.ply", pts, cols)
    for i, frame in enumerate(sorted(meta["frames"], key=lambda f: f["file_path"])):
        depth = (np.arange(W * H).reshape(H, W) + i).astype(np.uint16)
        if i % 2:
            Image.fromarray(depth).save(tmp_path / f"d{i}.png")
            frame["depth_file_path"] = f"d{i}.png"
        else:
            np.save(tmp_path / f"d{i}.npy", depth.astype(np.float32))
            frame["depth_file_path"] = f"d{i}.npy"
    write_json(tmp_path / "transforms.json", meta)
    ds = load_dataset(tmp_path, "all")
    # Points are used as written: ns-process-data already applied applied_transform to them.
    torch.testing.assert_close(ds.points, torch.from_numpy(pts))
    assert torch.equal(ds.point_colors, torch.from_numpy(cols))
    assert ds.metadata["applied_transform"] == applied
    for i in range(4):
        expected = (np.arange(W * H).reshape(H, W) + i) * 0.01
        torch.testing.assert_close(ds.depths.get(i), torch.tensor(expected, dtype=torch.float32))
    # The box comes from the points (quantiles), not the cameras at radius 4.
    assert (ds.scene_box.abs() < 4).all() and (ds.scene_box[1] - ds.scene_box[0] > 3).all()
    text = describe_dataset(tmp_path)
    assert "points:        500 (sparse_pc.ply)" in text and "depth:         yes" in text


def test_scene_box_key_wins_and_downscale(tmp_path):
    write_scene(tmp_path, n=4, scene_box=[[-5, -6, -1], [5, 6, 3]])
    ds = load_dataset(tmp_path, "all", downscale=2.0)
    assert ds.scene_box.tolist() == [[-5, -6, -1], [5, 6, 3]]
    assert ds.cameras.width.tolist() == [12] * 4 and ds.cameras.height.tolist() == [8] * 4
    assert ds.cameras.fx[0] == 10.0 and ds.cameras.cx[0] == 6.25
    img = ds.images.get(1)
    full = np.asarray(Image.open(tmp_path / "images" / "frame_00001.png"), dtype=np.float64)
    box_mean = full.reshape(8, 2, 12, 2, 3).mean(axis=(1, 3))
    assert img.shape == (8, 12, 3) and np.abs(img.numpy() - box_mean).max() <= 1.0


def test_width_height_read_from_images_when_absent(tmp_path):
    _, meta = write_scene(tmp_path, n=2)
    del meta["w"], meta["h"], meta["cx"], meta["cy"]
    write_json(tmp_path / "transforms.json", meta)
    ds = load_dataset(tmp_path, "all")
    assert ds.cameras.width.tolist() == [W, W] and ds.cameras.cx.tolist() == [W / 2, W / 2]


# ---------------------------------------------------------------------------------------- bad input


def error_of(*args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(*args, **kwargs)
    return str(info.value)


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "transforms.json").write_text('{\n "frames": [\n  {"file_path": "a.png",}\n ]\n}')
    msg = error_of(tmp_path)
    assert "transforms.json" in msg and "line 3" in msg


def test_missing_image_is_reported_at_load_time(tmp_path):
    write_scene(tmp_path, n=3)
    (tmp_path / "images" / "frame_00001.png").unlink()
    msg = error_of(tmp_path, "all")
    assert "frame_00001.png" in msg and "missing" in msg


def test_unreadable_image_is_reported_at_first_read(tmp_path):
    write_scene(tmp_path, n=3)
    (tmp_path / "images" / "frame_00002.png").write_bytes(b"not a png")
    ds = load_dataset(tmp_path, "all")
    with pytest.raises(DataError, match="frame_00002.png"):
        ds.images.rgb(2)
    ds2 = load_dataset(tmp_path, "all", downscale=2)
    with pytest.raises(DataError, match="frame_00002.png"):
        ds2.images.rgb(2)


@pytest.mark.parametrize("matrix,problem", [
    ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "4×4"),
    ([[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "non-finite"),
    ([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]], "orthonormal"),
    ("identity", "numeric"),
])
def test_bad_poses(tmp_path, matrix, problem):
    _, meta = write_scene(tmp_path, n=2)
    meta["frames"][0]["transform_matrix"] = matrix
    (tmp_path / "transforms.json").write_text(json.dumps(meta))  # NaN is written as a bare NaN
    msg = error_of(tmp_path)
    assert "transforms.json" in msg and problem in msg


def test_missing_intrinsics_and_unknown_model(tmp_path):
    _, meta = write_scene(tmp_path, n=2)
    del meta["fl_x"]
    write_json(tmp_path / "transforms.json", meta)
    msg = error_of(tmp_path)
    assert "transforms.json" in msg and "intrinsics missing" in msg
    meta["fl_x"] = 20.0
    meta["camera_model"] = "EQUIRECTANGULAR"
    write_json(tmp_path / "transforms.json", meta)
    msg = error_of(tmp_path)
    assert "transforms.json" in msg and "EQUIRECTANGULAR" in msg and "OPENCV_FISHEYE" in msg


def test_bad_split_lists_depth_and_ply(tmp_path):
    _, meta = write_scene(tmp_path, n=3, train_filenames=["images/nope.png"])
    assert "nope.png" in error_of(tmp_path)
    _, meta = write_scene(tmp_path, n=3, ply_file_path="missing.ply")
    assert "missing.ply" in error_of(tmp_path)
    (tmp_path / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n")
    _, meta = write_scene(tmp_path, n=3, ply_file_path="broken.ply")
    assert "broken.ply" in error_of(tmp_path)
    _, meta = write_scene(tmp_path, n=3)
    meta["frames"][0]["depth_file_path"] = "d.exr"
    write_json(tmp_path / "transforms.json", meta)
    msg = error_of(tmp_path)
    assert "transforms.json" in msg and "2 of 3" not in msg and "1 of 3" in msg
    for f in meta["frames"]:
        f["depth_file_path"] = "d.exr"
    write_json(tmp_path / "transforms.json", meta)
    msg = error_of(tmp_path)
    assert "d.exr" in msg and "EXR" in msg


def test_empty_split(tmp_path):
    write_scene(tmp_path, n=1)  # the only frame is held out for val/test
    msg = error_of(tmp_path, "train")
    assert "transforms.json" in msg and "train split is empty" in msg


def test_point_cloud_round_trip_and_float_colours(tmp_path):
    pts = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    write_ply(tmp_path / "a.ply", pts, binary=False)
    p, c = read_ply(tmp_path / "a.ply")
    torch.testing.assert_close(p, torch.from_numpy(pts))
    assert c is None
    from plyfile import PlyData, PlyElement

    v = np.zeros(2, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "f4"), ("green", "f4"), ("blue", "f4")])
    v["red"] = [1.0, 0.5]
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "b.ply"))
    _, c = read_ply(tmp_path / "b.ply")
    assert c[:, 0].tolist() == [255, 128]
