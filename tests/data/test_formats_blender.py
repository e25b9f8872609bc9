import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fixture_writers import random_cameras, ray_point_distance, to4x4, write_image, write_json
from nerfxl.data.load import detect_format, load_dataset
from nerfxl.data.rays import generate_rays
from nerfxl.errors import DataError

LEGO = Path(__file__).resolve().parents[3] / "shared" / "data" / "nerf_synthetic_lego_400"
W, H = 20, 20
ANGLE = 0.69


def write_blender(root, splits=("train", "test"), n=4):
    c2ws = random_cameras(n * len(splits), seed=2)
    pixels = {}
    for s, split in enumerate(splits):
        frames = []
        for i in range(n):
            k = s * n + i
            pixels[(split, i)] = write_image(root / split / f"r_{i}.png", W, H, seed=k, alpha=True)
            frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.1,
                           "transform_matrix": to4x4(c2ws[k]).tolist()})
        write_json(root / f"transforms_{split}.json", {"camera_angle_x": ANGLE, "frames": frames})
    return c2ws, pixels


def test_blender_fixture(tmp_path):
    c2ws, pixels = write_blender(tmp_path)
    assert detect_format(tmp_path) == "blender"
    assert detect_format(tmp_path / "transforms_train.json") == "blender"
    train = load_dataset(tmp_path, "train", background=(0.0, 0.0, 0.0))
    test = load_dataset(tmp_path, "test")
    assert len(train) == 4 and len(test) == 4 and train.image_names[0] == "train/r_0.png"
    assert load_dataset(tmp_path, "val").image_names == test.image_names  # no transforms_val.json
    assert len(load_dataset(tmp_path, "all")) == 8
    focal = 0.5 * W / math.tan(0.5 * ANGLE)
    torch.testing.assert_close(train.cameras.fx, torch.full((4,), focal))
    assert train.cameras.cx[0] == W / 2 and train.cameras.cy[0] == H / 2
    torch.testing.assert_close(train.cameras.camera_to_worlds, torch.tensor(np.stack(c2ws[:4]), dtype=torch.float32))
    assert train.scene_box.tolist() == [[-1.5] * 3, [1.5] * 3]
    # RGBA composited onto the requested background.
    px = pixels[("train", 2)].astype(np.float64) / 255
    expected = px[..., :3] * px[..., 3:] + 0.0 * (1 - px[..., 3:])
    torch.testing.assert_close(train.images.rgb(2), torch.tensor(expected, dtype=torch.float32))
    px = pixels[("test", 1)].astype(np.float64) / 255
    expected = px[..., :3] * px[..., 3:] + 1.0 * (1 - px[..., 3:])
    torch.testing.assert_close(test.images.rgb(1), torch.tensor(expected, dtype=torch.float32))


def test_blender_errors(tmp_path):
    write_blender(tmp_path, splits=("train",))
    with pytest.raises(DataError, match=r"test split is empty \(there is no transforms_test.json\)"):
        load_dataset(tmp_path, "test")
    (tmp_path / "transforms_train.json").write_text('{"frames": [{"file_path": "./train/r_0"}]}')
    with pytest.raises(DataError, match=r"transforms_train.json: intrinsics missing"):
        load_dataset(tmp_path, "train")


@pytest.mark.skipif(not LEGO.is_dir(), reason="shared lego data not present next to the repository")
def test_lego_from_shared_data():
    train = load_dataset(LEGO, "train")
    test = load_dataset(LEGO, "test", background=(0.0, 0.0, 0.0))
    assert len(train) == 100 and len(test) == 200
    assert set(train.cameras.width.tolist()) == {400} and set(train.cameras.height.tolist()) == {400}
    assert abs(float(train.cameras.fx[0]) - 555.5555) < 0.01 and train.cameras.cx[0] == 200.0
    white = train.images.rgb(0)
    assert white.shape == (400, 400, 3) and white.min() >= 0 and white.max() <= 1
    raw = train.images.get(0)
    assert raw.shape == (400, 400, 4)
    # Transparent background pixels take the background colour; opaque ones keep theirs.
    transparent = raw[..., 3] == 0
    assert transparent.any() and (white[transparent] == 1.0).all()
    assert (test.images.rgb(0)[test.images.get(0)[..., 3] == 0] == 0.0).all()
    a = raw[..., 3:].float() / 255
    torch.testing.assert_close(white, raw[..., :3].float() / 255 * a + (1 - a))
    # Every camera looks at the object at the origin: the principal ray passes close to it.
    rays = generate_rays(train.cameras, torch.arange(100), torch.full((100, 2), 200.0))
    dist = [ray_point_distance(o, d, [0.0, 0.0, 0.0]) for o, d in zip(rays.origins, rays.directions)]
    assert max(dist) < 0.1
    assert (train.cameras.positions[:, 2] > 0).all()  # the upper hemisphere: z is up
