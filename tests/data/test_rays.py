import math

import numpy as np
import pytest
import torch

from fixture_writers import look_at, project, ray_point_distance
from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.distortion import distort_fisheye, distort_opencv, undistort_fisheye, undistort_opencv
from nerfxl.data.rays import generate_image_rays, generate_rays, image_pixels


def unit(v):
    v = torch.tensor(v, dtype=torch.float32)
    return v / v.norm(dim=-1, keepdim=True)


def test_two_by_two_identity_camera_matches_hand_computed_rays():
    # fx = fy = 2, principal point at the image centre (1, 1): pixel centres sit at ±0.5 px, ±0.25
    # in normalised coordinates; image v grows downwards while camera +Y is up, and it looks down −Z.
    cams = Cameras.create(torch.eye(4)[:3], 2.0, 2.0, 1.0, 1.0, 2, 2)
    rays = generate_image_rays(cams, 0)
    expected = unit([[-0.25, 0.25, -1.0], [0.25, 0.25, -1.0], [-0.25, -0.25, -1.0], [0.25, -0.25, -1.0]])
    torch.testing.assert_close(rays.directions, expected)
    torch.testing.assert_close(rays.origins, torch.zeros(4, 3))
    assert rays.image_indices.tolist() == [0, 0, 0, 0]
    assert image_pixels(2, 2).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_rotated_translated_camera_matches_hand_computed_rays():
    # Rotate 90° about +z: camera x → world y, camera y → world −x, camera z → world z.
    c2w = torch.tensor([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0]])
    cams = Cameras.create(c2w, 2.0, 2.0, 1.0, 1.0, 2, 2)
    rays = generate_image_rays(cams, 0)
    cam_dirs = [[-0.25, 0.25, -1.0], [0.25, 0.25, -1.0], [-0.25, -0.25, -1.0], [0.25, -0.25, -1.0]]
    expected = unit([[-y, x, z] for x, y, z in cam_dirs])
    torch.testing.assert_close(rays.directions, expected)
    torch.testing.assert_close(rays.origins, torch.tensor([[1.0, 2.0, 3.0]]).expand(4, 3))


def test_camera_looking_along_x_sees_a_point_at_its_projection():
    c2w = look_at([0.0, 0.0, 0.0], [1.0, 0.0, 0.0])  # right = −y, up = +z
    cams = Cameras.create(torch.tensor(c2w, dtype=torch.float32), 100.0, 80.0, 50.0, 40.0, 100, 80)
    # The principal point (continuous pixel coordinates) looks straight ahead.
    ray = generate_rays(cams, torch.tensor([0]), torch.tensor([[50.0, 40.0]]))
    torch.testing.assert_close(ray.directions, torch.tensor([[1.0, 0.0, 0.0]]))
    # A point up and to the left appears above and left of the centre.
    point = np.array([5.0, 1.0, 2.0])
    u, v = project(c2w, 100.0, 80.0, 50.0, 40.0, point)
    assert u < 50 and v < 40
    ray = generate_rays(cams, torch.tensor([0]), torch.tensor([[u, v]], dtype=torch.float32))
    assert ray_point_distance(ray.origins[0], ray.directions[0], point) < 1e-5


def test_integer_pixels_are_taken_at_their_centres():
    cams = Cameras.create(torch.eye(4)[:3], 10.0, 10.0, 3.0, 2.0, 6, 4)
    a = generate_rays(cams, torch.tensor([0, 0]), torch.tensor([[1, 3], [4, 0]]))
    b = generate_rays(cams, torch.tensor([0, 0]), torch.tensor([[1.5, 3.5], [4.5, 0.5]]))
    torch.testing.assert_close(a.directions, b.directions)


OPENCV_COEFFS = [
    [-0.25, 0.08, -0.01, 0.0, 0.001, -0.002],
    [0.1, -0.03, 0.005, 0.0, -0.003, 0.002],
    [-0.05, 0.0, 0.0, 0.0, 0.0, 0.0],
]


@pytest.mark.parametrize("coeffs", OPENCV_COEFFS)
def test_opencv_undistort_inverts_distort(coeffs):
    g = torch.Generator().manual_seed(0)
    xy = (torch.rand(5000, 2, generator=g, dtype=torch.float64) * 2 - 1) * 0.7
    c = torch.tensor(coeffs, dtype=torch.float64).expand(5000, 6)
    back = undistort_opencv(distort_opencv(xy, c), c)
    assert (back - xy).abs().max() < 1e-9


@pytest.mark.parametrize("coeffs", [[0.05, -0.01, 0.002, -0.0005, 0, 0], [-0.02, 0.003, 0.0, 0.0, 0, 0]])
def test_fisheye_undistort_inverts_distort(coeffs):
    g = torch.Generator().manual_seed(1)
    # Up to ~60° off axis (r = tan θ ≤ 1.7), where fisheye lenses are used.
    angle = torch.rand(5000, generator=g, dtype=torch.float64) * 2 * math.pi
    r = torch.rand(5000, generator=g, dtype=torch.float64) * 1.7
    xy = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=-1)
    c = torch.tensor(coeffs, dtype=torch.float64).expand(5000, 6)
    back = undistort_fisheye(distort_fisheye(xy, c), c)
    assert (back - xy).abs().max() < 1e-9


@pytest.mark.parametrize("model,coeffs", [
    (CameraModel.PERSPECTIVE, [-0.2, 0.05, 0.0, 0.0, 0.002, -0.001]),
    (CameraModel.FISHEYE, [0.04, -0.01, 0.001, 0.0, 0.0, 0.0]),
])
def test_generated_rays_pass_through_points_projected_with_distortion(model, coeffs):
    g = torch.Generator().manual_seed(2)
    c2w = torch.tensor(look_at([1.0, -3.0, 2.0], [0.0, 0.0, 0.0]), dtype=torch.float64)
    fx, fy, cx, cy = 300.0, 310.0, 320.5, 239.5
    points = torch.rand(200, 3, generator=g, dtype=torch.float64) - 0.5
    cam = (points - c2w[:, 3]) @ c2w[:, :3]  # world → OpenGL camera
    xy = torch.stack([cam[:, 0] / -cam[:, 2], -cam[:, 1] / -cam[:, 2]], dim=-1)  # y down, like pixels
    c = torch.tensor(coeffs, dtype=torch.float64).expand(200, 6)
    xy_d = distort_fisheye(xy, c) if model == CameraModel.FISHEYE else distort_opencv(xy, c)
    pixels = torch.stack([xy_d[:, 0] * fx + cx, xy_d[:, 1] * fy + cy], dim=-1)
    cams = Cameras.create(c2w.float(), fx, fy, cx, cy, 640, 480, torch.tensor(coeffs), model)
    rays = generate_rays(cams.to("cpu"), torch.zeros(200, dtype=torch.int64), pixels.float())
    for o, d, p in zip(rays.origins, rays.directions, points):
        assert ray_point_distance(o, d, p) < 1e-4
