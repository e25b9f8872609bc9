"""LLFF ``poses_bounds.npy`` + ``images/`` folders written here from LLFF's own definitions.

The fixtures build each 3×5 matrix as LLFF does ([down | right | back | position | hwf], the camera
looking along −back) and project points with that definition, sharing no code with the loader, so
a ray that meets its point checks the axis conversion, the focal scaling and the pixel convention.
"""

import ctypes

import numpy as np
import pytest
import torch
from PIL import Image

from fixture_writers import look_at, ray_point_distance, write_image
from nerfxl.data.load import describe_dataset, detect_format, load_dataset
from nerfxl.data.rays import generate_rays
from nerfxl.errors import DataError

W, H, FOCAL = 24, 16, 20.0
NEAR, FAR = 1.5, 9.0
TARGET = np.array([0.2, -0.1, 0.3])


def llff_look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """[3, 4] LLFF [down | right | back | position] of a camera at ``eye`` looking at ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([down, right, -forward, eye], axis=1)


def llff_project(pose: np.ndarray, fx, fy, cx, cy, point) -> np.ndarray:
    """Continuous pixel (u, v) of a world point, straight from LLFF's axes (v grows along 'down')."""
    down, right, back, eye = pose.T
    offset = np.asarray(point, dtype=np.float64) - eye
    depth = -offset @ back
    assert depth > 0, "point is behind the camera"
    return np.array([cx + fx * (offset @ right) / depth, cy + fy * (offset @ down) / depth])


def eyes(n: int, seed: int = 0) -> np.ndarray:
    """n camera centres of a forward-facing capture: a small patch about 4 units in front of TARGET."""
    rng = np.random.default_rng(seed)
    return np.array([0.0, -4.0, 1.0]) + rng.uniform(-0.6, 0.6, size=(n, 3))


def poses_bounds(poses: np.ndarray, hwf=(H, W, FOCAL), bounds=(NEAR, FAR)) -> np.ndarray:
    """[N, 17] rows: each [3, 4] pose with its hwf column, flattened row-major, then near, far."""
    hwf_column = np.broadcast_to(np.asarray(hwf, dtype=np.float64)[:, None], (len(poses), 3, 1))
    matrices = np.concatenate([poses, hwf_column], axis=2)
    near_far = np.broadcast_to(np.asarray(bounds, dtype=np.float64), (len(poses), 2))
    return np.concatenate([matrices.reshape(len(poses), 15), near_far], axis=1)


def write_llff(root, n=10, hwf=(H, W, FOCAL), size=(W, H), copies=(), bounds=(NEAR, FAR), suffix=".png"):
    """An LLFF folder looking at TARGET; ``copies`` = [(factor, (w, h))] writes images_{factor}/ too.

    Returns the [N, 3, 4] LLFF poses. Copies get other pixels (seed + 100) than images/, so a test
    can tell which folder was read.
    """
    poses = np.stack([llff_look_at(eye, TARGET) for eye in eyes(n)])
    for i in range(n):
        write_image(root / "images" / f"IMG_{i:04d}{suffix}", *size, seed=i)
        for factor, (w, h) in copies:
            write_image(root / f"images_{factor}" / f"IMG_{i:04d}.png", w, h, seed=i + 100)
    np.save(root / "poses_bounds.npy", poses_bounds(poses, hwf, bounds))
    return poses


def rays_through(cameras, i: int, uv) -> tuple[torch.Tensor, torch.Tensor]:
    ray = generate_rays(cameras, torch.tensor([i]), torch.tensor(np.asarray([uv]), dtype=torch.float32))
    return ray.origins[0], ray.directions[0]


def test_loads_cameras_images_and_detects_the_format(tmp_path):
    poses = write_llff(tmp_path, n=10)
    (tmp_path / "sparse" / "0").mkdir(parents=True)  # LLFF folders keep COLMAP's model; LLFF still wins
    for name in ("cameras.bin", "images.bin"):
        (tmp_path / "sparse" / "0" / name).write_bytes(b"")
    assert detect_format(tmp_path) == "llff" and detect_format(tmp_path / "poses_bounds.npy") == "llff"
    ds = load_dataset(tmp_path, split="all")
    assert ds.format == "llff" and len(ds) == 10
    assert ds.image_names == [f"images/IMG_{i:04d}.png" for i in range(10)]
    assert ds.cameras.camera_to_worlds.shape == (10, 3, 4)
    # The same cameras built as OpenGL look-ats by the shared fixture: [right, up, back].
    expected = np.stack([look_at(eye, TARGET) for eye in eyes(10)])
    torch.testing.assert_close(ds.cameras.camera_to_worlds, torch.tensor(expected, dtype=torch.float32),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.cameras.camera_to_worlds[:, :, 3], torch.tensor(poses[:, :, 3]).float())
    assert ds.cameras.fx.tolist() == [FOCAL] * 10 and ds.cameras.fy.tolist() == [FOCAL] * 10
    assert ds.cameras.cx.tolist() == [W / 2] * 10 and ds.cameras.cy.tolist() == [H / 2] * 10
    assert ds.cameras.width.tolist() == [W] * 10 and ds.cameras.height.tolist() == [H] * 10
    assert ds.metadata["camera_models"] == ["PINHOLE"] * 10 and ds.points is None
    raw = np.array(Image.open(tmp_path / "images" / "IMG_0003.png"))
    assert torch.equal(ds.images.get(3), torch.from_numpy(raw)) and ds.images.rgb(3).shape == (H, W, 3)
    assert load_dataset(tmp_path, "all", format="llff").format == "llff"


def test_rays_of_a_camera_looking_at_a_point_hit_it(tmp_path):
    poses = write_llff(tmp_path, n=6)
    ds = load_dataset(tmp_path, split="all")
    rng = np.random.default_rng(3)
    for i, pose in enumerate(poses):
        # Every camera looks at TARGET: the ray through the image centre meets it.
        origin, direction = rays_through(ds.cameras, i, (W / 2, H / 2))
        assert ray_point_distance(origin, direction, TARGET) < 1e-5
        # Off-centre points, projected with LLFF's axes: left/right and up/down must not be swapped.
        for point in TARGET + rng.normal(scale=0.5, size=(5, 3)):
            uv = llff_project(pose, FOCAL, FOCAL, W / 2, H / 2, point)
            origin, direction = rays_through(ds.cameras, i, uv)
            assert ray_point_distance(origin, direction, point) < 1e-5


def test_every_eighth_image_is_held_out(tmp_path):
    write_llff(tmp_path, n=17)
    test = load_dataset(tmp_path, split="test")
    assert test.image_names == ["images/IMG_0000.png", "images/IMG_0008.png", "images/IMG_0016.png"]
    assert load_dataset(tmp_path, split="val").image_names == test.image_names
    train = load_dataset(tmp_path, split="train")
    assert len(train) == 14 and not set(train.image_names) & set(test.image_names)
    assert torch.equal(train.scene_box, test.scene_box)


def test_scene_box_holds_every_frustum_between_near_and_far(tmp_path):
    bounds = np.stack([np.linspace(1.0, 2.0, 5), np.linspace(6.0, 9.0, 5)], axis=1)
    poses = np.stack([llff_look_at(eye, TARGET) for eye in eyes(5)])
    for i in range(5):
        write_image(tmp_path / "images" / f"{i}.png", W, H, seed=i)
    rows = poses_bounds(poses)
    rows[:, 15:] = bounds  # per-image bounds
    np.save(tmp_path / "poses_bounds.npy", rows)
    ds = load_dataset(tmp_path, "all")
    corners = []
    for pose, (near, far) in zip(poses, bounds):
        down, right, back, eye = pose.T
        for u, v in ((0, 0), (W, 0), (0, H), (W, H)):
            ray = -back + (u - W / 2) / FOCAL * right + (v - H / 2) / FOCAL * down  # unit z-depth
            corners += [eye + near * ray, eye + far * ray]
    corners = np.array(corners)
    expected = np.stack([corners.min(axis=0), corners.max(axis=0)])
    torch.testing.assert_close(ds.scene_box, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)
    assert "frustum" in ds.metadata["scene_box_from"]


def test_focal_follows_images_smaller_than_hwf(tmp_path):
    """hwf is for 2W × 2H (the originals); the folder holds W × H images: fx, cx are halved."""
    poses = write_llff(tmp_path, n=4, hwf=(2 * H, 2 * W, 2 * FOCAL))
    ds = load_dataset(tmp_path, "all")
    assert ds.cameras.width.tolist() == [W] * 4 and ds.cameras.height.tolist() == [H] * 4
    assert ds.cameras.fx.tolist() == [FOCAL] * 4 and ds.cameras.fy.tolist() == [FOCAL] * 4
    assert ds.cameras.cx.tolist() == [W / 2] * 4 and ds.cameras.cy.tolist() == [H / 2] * 4
    point = TARGET + np.array([0.3, -0.2, 0.1])
    origin, direction = rays_through(ds.cameras, 2, llff_project(poses[2], FOCAL, FOCAL, W / 2, H / 2, point))
    assert ray_point_distance(origin, direction, point) < 1e-5
    # Sides rounded on their own (25 × 15 → 12 × 7): each axis keeps its own ratio.
    write_llff(tmp_path / "odd", n=2, hwf=(15, 25, 30.0), size=(12, 7))
    odd = load_dataset(tmp_path / "odd", "all").cameras
    assert odd.fx[0].item() == pytest.approx(30.0 * 12 / 25) and odd.fy[0].item() == pytest.approx(30.0 * 7 / 15)
    assert odd.cx[0].item() == pytest.approx(6.0) and odd.cy[0].item() == pytest.approx(3.5)


def test_downscale_reads_images_n_when_it_exists(tmp_path):
    write_llff(tmp_path, n=9, copies=[(2, (W // 2, H // 2)), (4, (W // 4, H // 4))])
    for factor in (2, 4):
        ds = load_dataset(tmp_path, "train", downscale=factor)
        assert ds.metadata["images_from"] == f"images_{factor}" and ds.images.downscale == 1.0
        assert ds.cameras.width.tolist() == [W // factor] * 7 and ds.cameras.fx.tolist() == [FOCAL / factor] * 7
        raw = np.array(Image.open(tmp_path / f"images_{factor}" / "IMG_0001.png"))  # train frame 0 is image 1
        assert torch.equal(ds.images.get(0), torch.from_numpy(raw))
    # No images_3/: images/ is downscaled on the fly, as for every other format.
    ds = load_dataset(tmp_path, "all", downscale=3)
    assert "images_from" not in ds.metadata and ds.images.downscale == 3.0
    assert ds.images.paths[2] == tmp_path / "images" / "IMG_0002.png" and ds.images.get(2).shape == (5, 8, 3)
    text = describe_dataset(tmp_path)
    assert "images_2, images_4 (read by --downscale 2, 4)" in text


def test_images_n_size_decides_the_intrinsics(tmp_path):
    """A copy rounded another way than the loader would (25 / 2 → 12, not 13) is read at its real size."""
    write_llff(tmp_path, n=3, hwf=(15, 25, 30.0), size=(25, 15), copies=[(2, (12, 7))])
    ds = load_dataset(tmp_path, "all", downscale=2)
    assert ds.cameras.width.tolist() == [12] * 3 and ds.cameras.height.tolist() == [7] * 3
    assert ds.cameras.fx[0].item() == pytest.approx(30.0 * 12 / 25)
    assert ds.images.get(1).shape == (7, 12, 3)


# ---------------------------------------------------------------------------------------- bad input


def error_of(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(path, "all", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def rewrite(root, change):
    array = np.load(root / "poses_bounds.npy")
    array = change(array)
    np.save(root / "poses_bounds.npy", array)


def set_value(row, column, value):
    def change(array):
        array[row, column] = value
        return array
    return change


@pytest.mark.parametrize("change, fragments", [
    (lambda a: a[:, :15], ("[N, 17]", "[10, 15]")),
    (lambda a: a[0], ("[N, 17]", "[17]")),
    (lambda a: a[:0], ("[N, 17]", "[0, 17]")),
    (lambda a: a.astype(np.complex128), ("real numbers",)),
    (set_value(3, 7, np.nan), ("row 3", "non-finite")),
    (set_value(2, 14, 0.0), ("row 2", "IMG_0002.png", "focal length", "must be positive")),
    (set_value(1, 4, -16.0), ("row 1", "height and width", "must be positive")),
    (set_value(4, 15, -1.0), ("row 4", "near and far bounds must be positive")),
    (set_value(5, 16, 1.0), ("row 5", "near < far")),
    (set_value(6, 0, 3.0), ("row 6", "not orthonormal")),
])
def test_bad_arrays(tmp_path, change, fragments):
    write_llff(tmp_path)
    rewrite(tmp_path, change)
    message = error_of(tmp_path)
    assert "poses_bounds.npy" in message
    for fragment in fragments:
        assert fragment in message, message


def test_not_a_npy_file(tmp_path):
    write_llff(tmp_path)
    (tmp_path / "poses_bounds.npy").write_bytes(b"\x93NUMPY garbage that is no header")
    assert "poses_bounds.npy: cannot be read as a NumPy .npy array" in error_of(tmp_path)
    with pytest.raises(DataError, match="poses_bounds.npy: file is missing"):
        load_dataset(tmp_path / "images", format="llff")


def test_count_mismatch_and_missing_images_folder(tmp_path):
    write_llff(tmp_path)
    (tmp_path / "images" / "IMG_0004.png").unlink()
    message = error_of(tmp_path)
    assert "poses_bounds.npy" in message and "10 poses but images/ holds 9 images" in message
    (tmp_path / "images").rename(tmp_path / "elsewhere")
    message = error_of(tmp_path)
    assert f"{tmp_path / 'images'}: folder is missing" in message


def test_aspect_mismatch_names_the_image(tmp_path):
    write_llff(tmp_path, n=3)
    write_image(tmp_path / "images" / "IMG_0001.png", H, W)  # rotated
    message = error_of(tmp_path)
    assert "IMG_0001.png" in message and f"{H}x{W}" in message and f"says {W}x{H}" in message
    assert "aspect ratios differ" in message


def test_images_n_with_the_wrong_count_fails_only_when_read(tmp_path):
    write_llff(tmp_path, n=4, copies=[(2, (W // 2, H // 2)), (4, (W // 4, H // 4))])
    (tmp_path / "images_2" / "IMG_0000.png").unlink()
    message = error_of(tmp_path, downscale=2)
    assert "images_2" in message and "holds 3 images" in message and "poses_bounds.npy describes 4" in message
    assert len(load_dataset(tmp_path, "all", downscale=4)) == 4  # the other copy is fine
    write_image(tmp_path / "images_4" / "IMG_0002.png", H // 4, W // 4)  # a rotated copy
    message = error_of(tmp_path, downscale=4)
    assert "images_4/IMG_0002.png" in message and "aspect ratios differ" in message


# ---------------------------------------------------------------------------------------- memory


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory_growth(fn) -> int:
    """Bytes this process's peak resident memory rises above its current use while ``fn`` runs.

    Linux resets the peak (VmHWM) to the current use when 5 is written to /proc/self/clear_refs;
    this catches native allocations (PIL's decoder) that tracemalloc does not see. Memory freed
    earlier but still resident in malloc's heap would hide new allocations, so it is handed back
    to the system first (glibc's malloc_trim).
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pytest.skip("needs glibc's malloc_trim to measure peak memory growth")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status("VmRSS")
    except (OSError, KeyError):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident memory")
    fn()
    return _proc_status("VmHWM") - before


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_large_image_read_downscaled_stays_within_memory(tmp_path, suffix):
    side, factor = 4000, 8
    ramp = (np.arange(side, dtype=np.uint16)[None, :] + np.arange(side, dtype=np.uint16)[:, None]) // 32
    pixels = np.repeat(ramp.astype(np.uint8)[:, :, None], 3, axis=2)
    (tmp_path / "images").mkdir()
    fast = {"compress_level": 1} if suffix == ".png" else {}  # the fixture, not the test, would take the time
    Image.fromarray(pixels).save(tmp_path / "images" / f"big{suffix}", **fast)
    del pixels, ramp
    pose = llff_look_at([0.0, -4.0, 1.0], TARGET)
    np.save(tmp_path / "poses_bounds.npy", poses_bounds(pose[None], hwf=(side, side, 3000.0)))
    ds = load_dataset(tmp_path, "all", downscale=factor)
    out = {}
    growth = peak_memory_growth(lambda: out.setdefault("image", ds.images.get(0)))
    assert out["image"].shape == (side // factor, side // factor, 3)
    float_decode = side * side * 3 * 4  # 192 MB: what decoding to float at full size would cost
    uint8_decode = side * side * 3
    # JPEG decodes at 1/8 scale straight away; PNG at full size, but as uint8 and only once.
    bound = uint8_decode / 2 if suffix == ".jpg" else float_decode / 2
    assert growth < bound, f"peak memory rose by {growth / 1e6:.1f} MB (bound {bound / 1e6:.0f} MB)"
    # Decoding at a reduced scale changes the pixels no more than a rounding step or two.
    with Image.open(tmp_path / "images" / f"big{suffix}") as im:
        reference = np.asarray(im.convert("RGB").resize((side // factor,) * 2, Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(out["image"].numpy() - reference).mean() < 1.5


# ---------------------------------------------------------------------------------------- nerfxl info


def test_nerfxl_info_on_an_llff_folder(tmp_path, capsys):
    from nerfxl.cli import main

    write_llff(tmp_path, n=9, hwf=(2 * H, 2 * W, 2 * FOCAL), copies=[(4, (W // 4, H // 4))])
    main(["info", str(tmp_path)])
    out = capsys.readouterr().out
    for expected in ("format:        llff", "frames:        9 (train 7, val 2, test 2)", f"{W}x{H} ×9",
                     "PINHOLE ×9", "frustum between its near and far bounds", f"near {NEAR:g}, far {FAR:g}",
                     f"{2 * W}x{2 * H}, focal {2 * FOCAL:g}", "images_4 (read by --downscale 4)"):
        assert expected in out, (expected, out)
