"""Lens distortion in normalised image coordinates (x = (u − cx) / fx, y = (v − cy) / fy, y down).

``distort_*`` maps ideal pinhole coordinates to the distorted coordinates the sensor records;
``undistort_*`` inverts it with Newton iterations (what ray generation needs: a pixel centre is a
distorted point, and its ray goes through the undistorted one).
"""

from __future__ import annotations

import torch
from torch import Tensor


def distort_opencv(xy: Tensor, coeffs: Tensor) -> Tensor:
    """OpenCV radial-tangential model.

    Args:
        xy: [..., 2] undistorted normalised coordinates.
        coeffs: [..., 6] (k1, k2, k3, k4, p1, p2); k4 is ignored.
    Returns:
        [..., 2] distorted normalised coordinates.
    """
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, k3, p1, p2 = coeffs[..., 0], coeffs[..., 1], coeffs[..., 2], coeffs[..., 4], coeffs[..., 5]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort_opencv(xy_distorted: Tensor, coeffs: Tensor, iterations: int = 10) -> Tensor:
    """Invert :func:`distort_opencv` by Newton's method on the 2×2 Jacobian.

    Starts at the distorted point, which is within the basin of convergence for the moderate
    distortion of real lenses. A fixed iteration count (no data-dependent early exit) keeps it free
    of host-device synchronisation.
    """
    xd, yd = xy_distorted[..., 0], xy_distorted[..., 1]
    k1, k2, k3, p1, p2 = coeffs[..., 0], coeffs[..., 1], coeffs[..., 2], coeffs[..., 4], coeffs[..., 5]
    x, y = xd.clone(), yd.clone()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
        fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        fx_x = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
        fx_y = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        fy_x = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        fy_y = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
        det = fx_x * fy_y - fx_y * fy_x
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        step_x = (fx * fy_y - fy * fx_y) / det
        step_y = (fy * fx_x - fx * fy_x) / det
        x = x - step_x
        y = y - step_y
    return torch.stack([x, y], dim=-1)


def distort_fisheye(xy: Tensor, coeffs: Tensor) -> Tensor:
    """OpenCV equidistant fisheye: θ_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸), xy scaled by θ_d / r."""
    r = xy.norm(dim=-1)
    theta = torch.atan(r)
    t2 = theta * theta
    k1, k2, k3, k4 = coeffs[..., 0], coeffs[..., 1], coeffs[..., 2], coeffs[..., 3]
    theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))
    return xy * scale[..., None]


def undistort_fisheye(xy_distorted: Tensor, coeffs: Tensor, iterations: int = 10) -> Tensor:
    """Invert :func:`distort_fisheye`: solve θ from θ_d by Newton, then r = tan θ."""
    theta_d = xy_distorted.norm(dim=-1)
    k1, k2, k3, k4 = coeffs[..., 0], coeffs[..., 1], coeffs[..., 2], coeffs[..., 3]
    theta = theta_d.clone()
    for _ in range(iterations):
        t2 = theta * theta
        f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
        df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + 9 * t2 * k4)))
        theta = theta - f / df
    theta = theta.clamp(max=torch.pi / 2 - 1e-6)
    scale = torch.where(theta_d > 1e-12, torch.tan(theta) / theta_d.clamp_min(1e-12), torch.ones_like(theta_d))
    return xy_distorted * scale[..., None]
