"""COLMAP models written by pycolmap (an independent writer) and read by our own reader."""

import struct

import numpy as np
import pycolmap
import pytest
import torch

from fixture_writers import random_cameras, ray_point_distance, write_image
from nerfxl.data.cameras import CameraModel
from nerfxl.data.load import describe_dataset, detect_format, load_dataset
from nerfxl.data.rays import generate_rays
from nerfxl.errors import DataError

W, H = 40, 30
CAMERAS = [  # (model, params) — one camera per model the loader supports
    ("SIMPLE_PINHOLE", [35.0, 20.0, 15.0]),
    ("PINHOLE", [35.0, 37.0, 19.5, 15.5]),
    ("SIMPLE_RADIAL", [36.0, 20.0, 15.0, -0.05]),
    ("RADIAL", [36.0, 20.0, 15.0, -0.05, 0.01]),
    ("OPENCV", [35.0, 36.0, 20.5, 14.5, -0.1, 0.02, 0.001, -0.002]),
    ("OPENCV_FISHEYE", [30.0, 30.0, 20.0, 15.0, 0.05, -0.01, 0.002, -0.001]),
]


def opencv_w2c(c2w_gl: np.ndarray) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3] = c2w_gl
    c2w[:3, 1:3] *= -1  # OpenGL → OpenCV camera axes
    return np.linalg.inv(c2w)[:3]


def write_model(root, n_images=12, text=False, folder="sparse/0"):
    """A reconstruction with one camera per model, images cycling through them, and coloured points."""
    c2ws = random_cameras(n_images, seed=3)
    rec = pycolmap.Reconstruction()
    for cam_id, (model, params) in enumerate(CAMERAS, start=1):
        rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=W, height=H, params=params,
                                                        camera_id=cam_id))
    for i, c2w in enumerate(c2ws):
        name = f"img_{i:03d}.png"
        image = pycolmap.Image(name=name, camera_id=i % len(CAMERAS) + 1, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(opencv_w2c(c2w)))
        write_image(root / "images" / name, W, H, seed=i)
    rng = np.random.default_rng(0)
    points = rng.normal(scale=0.5, size=(50, 3))
    colors = rng.integers(0, 256, size=(50, 3)).astype(np.uint8)
    for p, c in zip(points, colors):
        rec.add_point3D(p, pycolmap.Track(), c)
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    (rec.write_text if text else rec.write_binary)(str(out))
    return rec, c2ws, points, colors


@pytest.mark.parametrize("text", [False, True])
def test_colmap_model_round_trip(tmp_path, text):
    rec, c2ws, points, colors = write_model(tmp_path, text=text)
    assert detect_format(tmp_path) == "colmap"
    ds = load_dataset(tmp_path, split="all")
    assert ds.format == "colmap" and len(ds) == 12
    assert ds.image_names == [f"img_{i:03d}.png" for i in range(12)]
    torch.testing.assert_close(ds.cameras.camera_to_worlds, torch.tensor(np.stack(c2ws), dtype=torch.float32),
                               atol=1e-5, rtol=0)
    assert ds.metadata["camera_models"][:6] == [m for m, _ in CAMERAS]
    assert ds.cameras.camera_model.tolist()[:6] == [CameraModel.PERSPECTIVE] * 5 + [CameraModel.FISHEYE]
    torch.testing.assert_close(ds.cameras.distortion[4], torch.tensor([-0.1, 0.02, 0, 0, 0.001, -0.002]))
    torch.testing.assert_close(ds.cameras.distortion[5], torch.tensor([0.05, -0.01, 0.002, -0.001, 0, 0]))
    assert ds.cameras.fx.tolist()[:2] == [35.0, 35.0] and ds.cameras.fy.tolist()[:2] == [35.0, 37.0]
    # Sparse points (any order) with their colours, and the box around them.
    order = np.lexsort(ds.points.numpy().T)
    expected = np.lexsort(points.T)
    np.testing.assert_allclose(ds.points.numpy()[order], points[expected].astype(np.float32))
    assert (ds.point_colors.numpy()[order] == colors[expected]).all()
    assert ds.metadata["scene_box_from"].startswith("point cloud")


@pytest.mark.parametrize("text", [False, True])
def test_points_projected_by_pycolmap_lie_on_generated_rays(tmp_path, text):
    """pycolmap's own projection (with each model's distortion) against our rays: pixel convention,
    axis flip, pose inversion and distortion parameters all have to agree."""
    rec, c2ws, _, _ = write_model(tmp_path, text=text)
    ds = load_dataset(tmp_path, split="all")
    rng = np.random.default_rng(5)
    for i in range(12):
        image = rec.images[i + 1]
        camera = rec.cameras[image.camera_id]
        world = rng.normal(scale=0.8, size=(20, 3))  # spread out: distortion matters
        cam_points = (image.cam_from_world().matrix()[:, :3] @ world.T).T + image.cam_from_world().translation
        uv = camera.img_from_cam(cam_points)
        rays = generate_rays(ds.cameras, torch.full((20,), i), torch.tensor(uv, dtype=torch.float32))
        for o, d, p in zip(rays.origins, rays.directions, world):
            assert ray_point_distance(o, d, p) < 1e-5  # ignoring distortion gives ~1e-2


def test_model_in_sparse_folder_and_splits(tmp_path):
    write_model(tmp_path, n_images=17, folder="sparse")
    assert load_dataset(tmp_path, "test").image_names == ["img_000.png", "img_008.png", "img_016.png"]
    assert len(load_dataset(tmp_path, "train")) == 14
    text = describe_dataset(tmp_path)
    assert "colmap" in text and "points:        50" in text and "OPENCV_FISHEYE ×2" in text


def test_legacy_text_model_with_blank_point_lines(tmp_path):
    sparse = tmp_path / "sparse" / "0"
    sparse.mkdir(parents=True)
    (sparse / "cameras.txt").write_text("# Camera list\n1 PINHOLE 40 30 35 35 20 15\n")
    (sparse / "images.txt").write_text(
        "# Image list with two lines of data per image:\n"
        "1 1 0 0 0 0 0 0 1 my image.png\n\n"
        "2 1 0 0 0 1 0 0 1 b.png\n10.0 5.0 -1 11.0 6.0 1\n"
        "3 1 0 0 0 2 0 0 1 c.png\n"  # last image without its points line
    )
    (sparse / "points3D.txt").write_text("1 0.5 0.5 4 255 0 0 0.1 2 1\n")
    for name in ("my image.png", "b.png", "c.png"):
        write_image(tmp_path / "images" / name, 40, 30)
    ds = load_dataset(tmp_path, "all")
    assert ds.image_names == ["b.png", "c.png", "my image.png"]
    # Identity rotation, t = (1, 0, 0): the camera centre is at −t, looking down +z (OpenCV) = −z (OpenGL).
    torch.testing.assert_close(ds.cameras.camera_to_worlds[0],
                               torch.tensor([[1.0, 0, 0, -1], [0, -1, 0, 0], [0, 0, -1, 0]]))
    assert ds.points.tolist() == [[0.5, 0.5, 4.0]]


# ---------------------------------------------------------------------------------------- bad input


def error_of(path) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(path, "all")
    return str(info.value)


def test_truncated_binary_files(tmp_path):
    write_model(tmp_path)
    sparse = tmp_path / "sparse" / "0"
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        data = (sparse / name).read_bytes()
        (sparse / name).write_bytes(data[: len(data) - 5])
        msg = error_of(tmp_path)
        assert name in msg and "truncated" in msg
        (sparse / name).write_bytes(data)


def test_huge_record_count_fails_fast(tmp_path):
    write_model(tmp_path)
    (tmp_path / "sparse" / "0" / "points3D.bin").write_bytes(struct.pack("<Q", 2**60) + b"\0" * 16)
    msg = error_of(tmp_path)
    assert "points3D.bin" in msg and "header says" in msg


def test_images_without_cameras(tmp_path):
    write_model(tmp_path)
    (tmp_path / "sparse" / "0" / "cameras.bin").write_bytes(struct.pack("<Q", 0))
    msg = error_of(tmp_path)
    assert "cameras.bin" in msg and "no cameras" in msg


def test_image_referring_to_an_undefined_camera(tmp_path):
    write_model(tmp_path, text=True)
    path = tmp_path / "sparse" / "0" / "cameras.txt"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("2 ")))
    msg = error_of(tmp_path)
    assert "images.txt" in msg and "camera 2" in msg


def test_unsupported_camera_model(tmp_path):
    sparse = tmp_path / "sparse" / "0"
    sparse.mkdir(parents=True)
    (sparse / "cameras.txt").write_text("1 FULL_OPENCV 40 30 35 35 20 15 0 0 0 0 0 0 0 0\n")
    (sparse / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    write_image(tmp_path / "images" / "a.png", 40, 30)
    msg = error_of(tmp_path)
    assert "cameras.txt" in msg and "FULL_OPENCV" in msg and "OPENCV_FISHEYE" in msg


def test_malformed_text_line(tmp_path):
    sparse = tmp_path / "sparse" / "0"
    sparse.mkdir(parents=True)
    (sparse / "cameras.txt").write_text("# header\n1 PINHOLE 40 thirty 35 35 20 15\n")
    (sparse / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    msg = error_of(tmp_path)
    assert "cameras.txt" in msg and "line 2" in msg


def test_missing_image_file(tmp_path):
    write_model(tmp_path)
    (tmp_path / "images" / "img_004.png").unlink()
    msg = error_of(tmp_path)
    assert "img_004.png" in msg and "missing" in msg
