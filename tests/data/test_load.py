import pytest
import torch

from fixture_writers import random_cameras, to4x4, write_image, write_json
from nerfxl.data.images import DEFAULT_CACHE_BYTES
from nerfxl.data.load import describe_dataset, detect_format, load_dataset
from nerfxl.errors import ConfigError, DataError


def small_nerfstudio(root, n=9):
    frames = []
    for i, c2w in enumerate(random_cameras(n)):
        write_image(root / f"f{i}.png", 8, 6, seed=i)
        frames.append({"file_path": f"f{i}.png", "transform_matrix": to4x4(c2w).tolist()})
    write_json(root / "transforms.json", {"fl_x": 8.0, "w": 8, "h": 6, "frames": frames})


def test_unknown_folder_names_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg
    for looked_for in ("transforms.json", "transforms_{train,val,test}.json", "coordinates.pt", "sparse/0/"):
        assert looked_for in msg
    with pytest.raises(DataError, match="notes.txt: not a dataset file"):
        detect_format(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="nowhere: does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_json_that_is_not_transforms(tmp_path):
    write_json(tmp_path / "transforms.json", [1, 2, 3])
    with pytest.raises(DataError, match="transforms.json: expected a JSON object"):
        load_dataset(tmp_path)
    write_json(tmp_path / "transforms.json", {"fl_x": 1})
    with pytest.raises(DataError, match="transforms.json: has no 'frames' list"):
        load_dataset(tmp_path)
    write_json(tmp_path / "transforms.json", {"fl_x": 1, "frames": []})
    with pytest.raises(DataError, match="transforms.json: 'frames' is empty"):
        load_dataset(tmp_path)


def test_options_are_validated(tmp_path):
    small_nerfstudio(tmp_path)
    with pytest.raises(ConfigError, match="split"):
        load_dataset(tmp_path, split="training")
    with pytest.raises(ConfigError, match="downscale"):
        load_dataset(tmp_path, downscale=0)
    with pytest.raises(ConfigError, match="format"):
        load_dataset(tmp_path, format="ply")


def test_format_override_cache_and_background(tmp_path):
    small_nerfstudio(tmp_path)
    ds = load_dataset(tmp_path, "all", format="nerfstudio", cache_bytes=1234, background=(0.0, 1.0, 0.0))
    assert len(ds) == 9 and ds.images.cache.max_bytes == 1234
    assert ds.background.tolist() == [0.0, 1.0, 0.0]
    assert load_dataset(tmp_path).images.cache.max_bytes == DEFAULT_CACHE_BYTES
    # Splits partition the frames; "all" keeps the sorted order; the box is shared by all splits.
    train, test = load_dataset(tmp_path, "train"), load_dataset(tmp_path, "test")
    assert sorted(train.metadata["frame_indices"] + test.metadata["frame_indices"]) == list(range(9))
    assert torch.equal(train.scene_box, test.scene_box)


def test_describe_dataset(tmp_path):
    small_nerfstudio(tmp_path)
    text = describe_dataset(tmp_path)
    for expected in ("format:        nerfstudio", "frames:        9 (train 7, val 2, test 2)", "8x6 ×9",
                     "OPENCV ×9", "scene box:", "camera positions", "points:        none", "depth:         no"):
        assert expected in text, (expected, text)
    (tmp_path / "f3.png").unlink()
    assert "missing images: 1" in describe_dataset(tmp_path)


def test_forced_format_with_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"transforms.json: file is missing"):
        load_dataset(tmp_path, format="nerfstudio")
    with pytest.raises(DataError, match=r"coordinates.pt: file is missing"):
        load_dataset(tmp_path, format="mega-nerf")
    with pytest.raises(DataError, match=r"no COLMAP model"):
        load_dataset(tmp_path, format="colmap")
