"""The viewer's pure parts: camera conversions, the progressive schedule, overlays, camera paths, hosts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nerfxl.data.rays import generate_image_rays
from nerfxl.data.transform import SceneTransform
from nerfxl.errors import ConfigError
from nerfxl.data.camera_paths import look_at
from nerfxl.render import read_camera_path
from nerfxl.viewer.camera import (
    browser_pose,
    matrix_to_quaternion,
    quaternion_to_matrix,
    view_from_browser,
)
from nerfxl.viewer.camera_path import (
    Keyframe,
    camera_path_json,
    interpolate_path,
    read_keyframes,
    safe_path_name,
    save_camera_path,
    slerp,
)
from nerfxl.viewer.hosts import check_host, is_loopback
from nerfxl.viewer.overlays import block_boxes, box_edges, boxes_as_segments, owner_colours, tile_owners, window_box
from nerfxl.viewer.progressive import ProgressiveSchedule


def random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return quaternion_to_matrix(q / np.linalg.norm(q))


def test_quaternions_round_trip_for_every_kind_of_rotation():
    rng = np.random.default_rng(0)
    rotations = [random_rotation(rng) for _ in range(200)]
    rotations += [np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    for r in rotations:
        q = matrix_to_quaternion(r)
        assert q[0] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(quaternion_to_matrix(q), r, atol=1e-9)


def test_browser_camera_looks_where_our_camera_looks():
    """viser's OpenCV camera (+Z forward, +Y down) and our OpenGL one (−Z forward, +Y up) see the same
    rays: the centre pixel's ray points along the browser's +Z, the top row is towards its −Y."""
    eye, target = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.2, 0.3, -0.1])
    c2w = look_at(eye, target, torch.tensor([0.0, 0.0, 1.0])).double().numpy()
    position, wxyz = browser_pose(c2w)
    view = view_from_browser(position, wxyz, math.radians(60), 16 / 9)
    np.testing.assert_allclose(view.c2w, c2w, atol=1e-6)
    r_cv = quaternion_to_matrix(wxyz)
    cams = view.cameras(64)
    assert (int(cams.width[0]), int(cams.height[0])) == (64, 36)
    rays = generate_image_rays(cams, 0)
    centre = rays.directions.reshape(36, 64, 3)[17:19, 31:33].mean((0, 1)).double().numpy()
    np.testing.assert_allclose(centre / np.linalg.norm(centre), r_cv[:, 2], atol=2e-2)
    top = rays.directions.reshape(36, 64, 3)[0].mean(0).double().numpy()
    assert float(top @ r_cv[:, 1]) < 0  # the first row is up, i.e. along the browser's −Y
    # The vertical field of view is the one asked for.
    rows = rays.directions.reshape(36, 64, 3)[:, 31:33].mean(1).double()
    first, last = rows[0] / rows[0].norm(), rows[-1] / rows[-1].norm()
    assert abs(math.degrees(math.acos(float(first @ last))) - 60 * 35 / 36) < 1.0


def test_view_sizes_keep_the_aspect_and_the_long_side():
    view = view_from_browser([0, 0, 0], [1, 0, 0, 0], 1.0, 0.5)
    assert view.size(200) == (100, 200)
    assert view_from_browser([0, 0, 0], [1, 0, 0, 0], 1.0, 2.0).size(200) == (200, 100)


def schedule_with_view(**kwargs) -> ProgressiveSchedule:
    s = ProgressiveSchedule(refined_long_side=400, coarse_seconds=0.1, rest_seconds=0.2, rays_per_second=10_000,
                            **kwargs)
    s.set_view(view_from_browser([0, 0, 1], [1, 0, 0, 0], 1.0, 2.0), now=0.0)
    return s


def test_schedule_shows_a_coarse_frame_at_once_and_refines_when_the_camera_rests():
    s = schedule_with_view()
    job = s.next_job(0.0)
    assert job.level == "coarse"
    w, h = job.size
    assert w * h <= 1.2 * 10_000 * 0.1 and job.long_side == max(w, h) and job.long_side >= s.min_long_side
    s.rendered(job, seconds=0.1, rays=w * h)
    assert s.next_job(0.1) is None  # still moving (rested 0.1 s of 0.2)
    assert s.seconds_until_due(0.1) == pytest.approx(0.1)
    refined = s.next_job(0.25)
    assert refined.level == "refined" and refined.size == (400, 200)
    assert refined.band_rows * 400 <= s.rays_per_second * 0.1 + 400  # one band ≈ one coarse frame
    s.rendered(refined, seconds=8.0, rays=400 * 200)
    assert s.next_job(10.0) is None and s.seconds_until_due(10.0) is None


def test_a_moving_camera_supersedes_the_refined_frame():
    s = schedule_with_view()
    s.rendered(s.next_job(0.0), 0.1, 1000)
    refined = s.next_job(1.0)
    s.set_view(view_from_browser([0, 0, 2], [1, 0, 0, 0], 1.0, 2.0), now=1.5)
    assert s.superseded(refined)
    s.rendered(refined, 0.5, 1000, shown=False)
    assert s.next_job(1.5).level == "coarse"
    # An unchanged camera is not a new version.
    version = s.version
    assert not s.set_view(view_from_browser([0, 0, 2], [1, 0, 0, 0], 1.0, 2.0), now=1.6)
    assert s.version == version


def test_coarse_frames_follow_the_measured_speed_and_fast_devices_skip_them():
    s = schedule_with_view()
    slow = s.coarse_long_side()
    for _ in range(10):
        s.invalidate(0.0)
        s.rendered(s.next_job(0.0), seconds=0.01, rays=100_000)  # 10 M rays/s
    assert s.coarse_long_side() > slow
    s.invalidate(0.0)
    assert s.next_job(0.0).level == "refined"  # a coarse frame would be the refined one anyway


def test_model_changes_refine_without_a_coarse_flicker():
    s = schedule_with_view()
    s.rendered(s.next_job(0.0), 0.1, 1000)
    s.rendered(s.next_job(1.0), 1.0, 80_000)
    s.invalidate(5.0, coarse_first=False)
    assert s.next_job(5.0).level == "refined"
    s.set_refined_long_side(200, 6.0)
    assert s.next_job(6.0).level == "coarse"


def test_box_overlays():
    edges = box_edges([[0, 0, 0], [1, 2, 3]])
    assert edges.shape == (12, 2, 3)
    lengths = sorted(np.linalg.norm(edges[:, 1] - edges[:, 0], axis=1).round(6))
    assert lengths == [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    boxes = np.array([[[0, 0, 0], [1, 1, 1]], [[1, 0, 0], [2, 1, 1]], [[0, 1, 0], [1, 2, 1]], [[1, 1, 0], [2, 2, 1]]])
    segments, colours = boxes_as_segments(boxes, tile_owners(4, 2))
    assert segments.shape == colours.shape == (48, 2, 3)
    palette = owner_colours(2)
    assert (colours[:24] == palette[0]).all() and (colours[24:] == palette[1]).all()
    assert tile_owners(4, 1) == [0, 1, 2, 3] and tile_owners(6, 4) == list(range(6))
    blocks = block_boxes((0, 0), (4, 2), 4, 2, (0, 1))
    assert blocks.shape == (8, 2, 3)
    np.testing.assert_allclose(blocks[5], [[1, 1, 0], [2, 2, 1]])
    np.testing.assert_allclose(window_box((0, 0), (1, 1), 1, 0, 2, (0, 1)), [[1, 0, 0], [3, 2, 1]])


def keyframes() -> list[Keyframe]:
    up = torch.tensor([0.0, 0.0, 1.0])
    eyes = [(-0.8, -0.8, 0.5), (0.0, -0.9, 0.6), (0.8, -0.5, 0.4), (0.6, 0.6, 0.5)]
    return [Keyframe(look_at(torch.tensor(e), torch.zeros(3), up).double().numpy(), 50.0 + 5 * i)
            for i, e in enumerate(eyes)]


def test_slerp_keeps_unit_length_and_hits_its_ends():
    rng = np.random.default_rng(1)
    q0, q1 = (q / np.linalg.norm(q) for q in rng.normal(size=(2, 4)))
    np.testing.assert_allclose(slerp(q0, q1, 0.0), q0, atol=1e-12)
    assert min(np.abs(slerp(q0, q1, 1.0) - q1).max(), np.abs(slerp(q0, q1, 1.0) + q1).max()) < 1e-12
    for t in np.linspace(0, 1, 11):
        assert abs(np.linalg.norm(slerp(q0, q1, t)) - 1) < 1e-12


def test_interpolated_path_passes_through_every_keyframe():
    keys = keyframes()
    poses, fovs = interpolate_path(keys, 3 * 8 + 1)  # frames 0, 8, 16, 24 are the keyframes
    for i, k in enumerate(keys):
        np.testing.assert_allclose(poses[8 * i], k.c2w, atol=1e-6)
        assert fovs[8 * i] == pytest.approx(k.fov_deg)
    for p in poses:
        np.testing.assert_allclose(p[:, :3] @ p[:, :3].T, np.eye(3), atol=1e-9)  # rotations stay rotations
    steps = np.linalg.norm(np.diff(poses[:, :, 3], axis=0), axis=1)
    assert steps.max() < 3 * np.median(steps)  # smooth: no jumps
    with pytest.raises(ConfigError, match="2 keyframes"):
        interpolate_path(keys[:1], 10)


def test_camera_path_file_reads_back_as_nerfstudio_path_in_the_dataset_frame(tmp_path):
    transform = SceneTransform((10.0, -5.0, 2.0), 0.25)
    keys = keyframes()
    doc = camera_path_json(keys, transform, seconds=2.0, fps=12.0, width=320, height=180)
    path = save_camera_path(tmp_path, "../../evil name", doc)
    assert path.parent == tmp_path / "camera_paths" and path.name == "evil_name.json"
    poses, fov, w, h, fps = read_camera_path(path)
    assert (w, h, fps) == (320, 180, 12.0) and len(poses) == 24
    model = transform.poses(poses.double())
    np.testing.assert_allclose(model[0].numpy(), keys[0].c2w, atol=1e-5)
    np.testing.assert_allclose(model[-1].numpy(), keys[-1].c2w, atol=1e-5)
    assert json.loads(path.read_text())["camera_type"] == "perspective"
    back = read_keyframes(path, transform)
    for a, b in zip(back, keys):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-9)


def test_path_names_stay_plain():
    assert safe_path_name("my path.json") == "my_path"
    assert safe_path_name("/etc/passwd") == "etc_passwd"
    assert safe_path_name("") == safe_path_name("..") == "camera_path"


def test_hosts_are_loopback_unless_allowed():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    assert check_host("127.0.0.1", False) is None
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert "warning" in check_host("0.0.0.0", True)
