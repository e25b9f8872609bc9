"""Ray generation from cameras: pixel centres → (undistorted) unit directions in world space."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nerfxl.data.cameras import CameraModel, Cameras
from nerfxl.data.distortion import undistort_fisheye, undistort_opencv


@dataclass
class RayBundle:
    """R rays.

    Attributes:
        origins: [R, 3] world-space origins (the camera centres).
        directions: [R, 3] unit world-space directions.
        image_indices: [R] int64, index of the camera/image each ray comes from.
    """

    origins: Tensor
    directions: Tensor
    image_indices: Tensor

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, index) -> "RayBundle":
        return RayBundle(self.origins[index], self.directions[index], self.image_indices[index])


def camera_space_directions(cameras: Cameras, camera_indices: Tensor, pixels: Tensor) -> Tensor:
    """Directions in OpenGL camera axes (z = −1 plane, not normalised) through pixel positions.

    Args:
        cameras: the camera batch.
        camera_indices: [R] int64 indices into ``cameras``.
        pixels: [R, 2] (u, v) pixel coordinates; integer pixel indices are shifted to the pixel
            centre (+0.5), float inputs are used as given (already continuous coordinates).
    Returns:
        [R, 3] camera-space directions.
    """
    if not torch.is_floating_point(pixels):
        pixels = pixels.to(torch.float32) + 0.5
    fx, fy = cameras.fx[camera_indices], cameras.fy[camera_indices]
    cx, cy = cameras.cx[camera_indices], cameras.cy[camera_indices]
    xy = torch.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy], dim=-1)

    coeffs = cameras.distortion[camera_indices]
    model = cameras.camera_model[camera_indices]
    needs = (coeffs != 0).any(dim=-1) | (model == CameraModel.FISHEYE)
    if bool(needs.any()):
        fisheye = model == CameraModel.FISHEYE
        undistorted = xy.clone()
        perspective_sel = needs & ~fisheye
        if bool(perspective_sel.any()):
            undistorted[perspective_sel] = undistort_opencv(xy[perspective_sel], coeffs[perspective_sel])
        if bool(fisheye.any()):
            undistorted[fisheye] = undistort_fisheye(xy[fisheye], coeffs[fisheye])
        xy = undistorted
    # Image y grows downwards, camera +Y is up; the camera looks down −Z.
    return torch.stack([xy[:, 0], -xy[:, 1], -torch.ones_like(xy[:, 0])], dim=-1)


def generate_rays(
    cameras: Cameras,
    camera_indices: Tensor,
    pixels: Tensor,
    camera_to_worlds: Tensor | None = None,
) -> RayBundle:
    """Rays through the given pixels of the given cameras.

    Args:
        cameras: the camera batch (intrinsics, distortion, poses).
        camera_indices: [R] int64.
        pixels: [R, 2] (u, v); integer pixels are taken at their centres (+0.5).
        camera_to_worlds: optional [R, 3, 4] per-ray poses that replace the cameras' own, e.g. after a
            learned pose correction; gradients flow into them.
    Returns:
        A :class:`RayBundle` with unit directions.
    """
    camera_indices = camera_indices.to(torch.int64)
    dirs_cam = camera_space_directions(cameras, camera_indices, pixels)
    c2w = cameras.camera_to_worlds[camera_indices] if camera_to_worlds is None else camera_to_worlds
    directions = torch.einsum("rij,rj->ri", c2w[:, :3, :3], dirs_cam.to(c2w.dtype))
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return RayBundle(origins=c2w[:, :3, 3], directions=directions, image_indices=camera_indices)


def image_pixels(width: int, height: int, device=None) -> Tensor:
    """[H·W, 2] int64 (u, v) for every pixel in row-major order (v outer, u inner)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def generate_image_rays(cameras: Cameras, index: int) -> RayBundle:
    """All H·W rays of camera ``index``, row-major; reshape results to [H, W, ...]."""
    w, h = int(cameras.width[index]), int(cameras.height[index])
    pixels = image_pixels(w, h, device=cameras.device)
    indices = torch.full((pixels.shape[0],), index, dtype=torch.int64, device=cameras.device)
    return generate_rays(cameras, indices, pixels)
