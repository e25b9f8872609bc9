import json

import numpy as np
import pytest
import torch

from fixture_writers import look_at, project, ray_point_distance, to4x4, write_image, write_json
from nerfxl.data.load import describe_dataset, detect_format, load_dataset
from nerfxl.data.rays import generate_rays
from nerfxl.errors import DataError

W, H = 32, 18
FL = 20.0


def aerial_c2ws(n, seed=0):
    """Cameras 150–200 m above a city block (metres, z-up), looking down at 45–80°."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        eye = np.array([rng.uniform(-300, 300), rng.uniform(-300, 300), rng.uniform(150, 200)])
        target = eye + np.array([rng.uniform(-100, 100), rng.uniform(-100, 100), -150.0])
        out.append(look_at(eye, target))
    return out


def write_pose_block(city, n_train=5, n_test=3):
    """MatrixCity's pose/<block>/transforms_{train,test}.json (positions in 100 m) and the images."""
    c2ws = aerial_c2ws(n_train + n_test)
    for split, idx in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        frames = []
        for i in idx:
            block = "block_1" if split == "train" else "block_1_test"
            write_image(city / split / block / f"{i:04d}.png", W, H, seed=i)
            m = to4x4(c2ws[i])
            m[:3, 3] /= 100.0
            frames.append({"file_path": f"../../{split}/{block}/{i:04d}.png", "transform_matrix": m.tolist()})
        write_json(city / "pose" / "block_A" / f"transforms_{split}.json", {
            "camera_angle_x": 2 * np.arctan(W / 2 / FL), "fl_x": FL, "fl_y": FL, "k1": 0, "k2": 0, "k3": 0,
            "k4": 0, "p1": 0, "p2": 0, "cx": W / 2, "cy": H / 2, "w": float(W), "h": float(H), "frames": frames})
    return c2ws


def test_pose_files_are_converted_to_metres(tmp_path):
    c2ws = write_pose_block(tmp_path)
    block = tmp_path / "pose" / "block_A"
    assert detect_format(block) == "matrixcity"
    assert detect_format(block / "transforms_test.json") == "matrixcity"
    train, test = load_dataset(block, "train"), load_dataset(block, "test")
    assert len(train) == 5 and len(test) == 3
    assert load_dataset(block, "val").image_names == test.image_names
    torch.testing.assert_close(train.cameras.camera_to_worlds, torch.tensor(np.stack(c2ws[:5]), dtype=torch.float32),
                               atol=1e-4, rtol=1e-6)
    assert train.metadata["position_scale"] == 100.0
    assert train.cameras.fx[0] == FL and train.cameras.cx[0] == W / 2 and train.cameras.width[0] == W
    # A street-level point seen by each test camera lies on the ray through its projection.
    for i in range(3):
        c2w = c2ws[5 + i]
        point = c2w[:, 3] - 160.0 * c2w[:, 2] + np.array([3.0, -2.0, 0.0])  # ahead of the camera
        u, v = project(c2w, FL, FL, W / 2, H / 2, point)
        ray = generate_rays(test.cameras, torch.tensor([i]), torch.tensor([[u, v]], dtype=torch.float32))
        assert ray_point_distance(ray.origins[0].double(), ray.directions[0].double(), point) < 1e-2
    # The heuristic box holds the cameras and reaches the ground below them.
    box = load_dataset(block, "all").scene_box
    assert box[0, 2] < 0 < 150 < box[1, 2]
    assert "matrixcity" in describe_dataset(block)


def write_raw_block(folder, n=9, rgb_subfolder=False):
    c2ws = aerial_c2ws(n, seed=4)
    frames = []
    for i, c2w in enumerate(c2ws):
        write_image(folder / ("rgb" if rgb_subfolder else "") / f"{i:04d}.png", W, H, seed=i)
        m = to4x4(c2w)
        m[:3, :3] *= 0.01  # MatrixCity's raw exports scale the rotation by 0.01 (positions in metres)
        frames.append({"frame_index": i, "rot_mat": m.tolist()})
    write_json(folder / "transforms.json", {"camera_angle_x": 2 * np.arctan(W / 2 / FL), "frames": frames})
    return c2ws


@pytest.mark.parametrize("rgb_subfolder", [False, True])
def test_raw_block_files(tmp_path, rgb_subfolder):
    folder = tmp_path / "aerial" / "train" / "block_1"
    c2ws = write_raw_block(folder, rgb_subfolder=rgb_subfolder)
    (folder / "depth").mkdir()
    assert detect_format(folder) == "matrixcity"
    ds = load_dataset(folder / "transforms.json", "all")
    torch.testing.assert_close(ds.cameras.camera_to_worlds, torch.tensor(np.stack(c2ws), dtype=torch.float32),
                               atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(ds.cameras.fx, torch.full((9,), FL))
    assert load_dataset(folder, "test").image_names[1].endswith("0008.png")
    assert "EXR" in ds.metadata["depth"] and "EXR" in describe_dataset(folder)


def test_bad_matrixcity_input(tmp_path):
    folder = tmp_path / "block"
    write_raw_block(folder, n=2)
    obj = json.loads((folder / "transforms.json").read_text())
    obj["frames"][1]["rot_mat"] = to4x4(look_at([0, 0, 1], [1, 0, 0])).tolist()  # rotation not scaled
    write_json(folder / "transforms.json", obj)
    with pytest.raises(DataError, match=r"transforms.json.*rot_mat.*orthonormal"):
        load_dataset(folder, "all")

    write_pose_block(tmp_path / "city", n_test=0)
    block = tmp_path / "city" / "pose" / "block_A"
    (block / "transforms_test.json").unlink()
    with pytest.raises(DataError, match=r"transforms_train.json.*test split is empty.*transforms_test.json"):
        load_dataset(block, "test")
    (block / "transforms_train.json").write_text('{"fl_x": 20, "frames": [}')
    with pytest.raises(DataError, match=r"transforms_train.json: malformed JSON at line 1"):
        load_dataset(block, "train")
