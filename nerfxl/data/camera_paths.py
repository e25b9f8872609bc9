"""Camera paths made for a scene: an orbit like its training cameras see it and a flyover loop over
the ground, as camera-to-world poses (OpenGL convention, as :class:`~nerfxl.data.cameras.Cameras`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nerfxl.data.cameras import Cameras

FLYOVER_TILT_DEG = 30.0
"""The flyover's view direction, degrees from straight down (``nerfxl render --path flyover``)."""


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """[3, 4] OpenGL camera-to-world at ``eye`` looking at ``target`` (−Z towards it, +Y ≈ ``up``)."""
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-6:  # looking along up: any perpendicular right vector will do
        right = torch.linalg.cross(forward, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype))
    right = right / right.norm()
    true_up = torch.linalg.cross(right, forward)
    return torch.stack([right, true_up, -forward, eye], dim=1)


def orbit_path(cameras: Cameras, scene_box: Tensor, n_frames: int = 120) -> Tensor:
    """[n_frames, 3, 4] a circle around the scene like the training cameras see it.

    The circle's height is the training cameras' median height above the box centre (about their
    mean up direction) and its radius makes the view pitch the training cameras' median pitch
    (capped by their median horizontal distance), so an aerial capture gets an aerial orbit and an
    object capture an orbit at its usual distance. The cameras look at the centre of the box.
    """
    pos = cameras.positions.double()
    center = 0.5 * (scene_box[0] + scene_box[1]).double()
    up = cameras.camera_to_worlds[:, :3, 1].double().mean(0)
    up = up / up.norm()
    rel = pos - center
    height = float((rel @ up).median())
    horizontal = rel - (rel @ up)[:, None] * up
    radius = float(horizontal.norm(dim=-1).median())
    forward = -cameras.camera_to_worlds[:, :3, 2].double()
    pitch_down = float(torch.asin((-(forward @ up)).clamp(-1, 1)).median())
    if pitch_down > 1e-3 and height > 0:
        radius = min(radius, height / math.tan(pitch_down))
    a = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    if a.norm() < 1e-6:
        a = torch.linalg.cross(up, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    target = center
    poses = []
    for i in range(n_frames):
        phi = 2 * math.pi * i / n_frames
        eye = center + radius * (math.cos(phi) * a + math.sin(phi) * b) + height * up
        poses.append(look_at(eye, target, up))
    return torch.stack(poses).float()


def flyover_path(scene_box: Tensor, n_frames: int, height: float, tilt_deg: float = FLYOVER_TILT_DEG,
                 extent: float = 0.7) -> Tensor:
    """[n_frames, 3, 4] a loop over the ground at ``height`` above the box's bottom (z up), looking ahead
    and down, ``tilt_deg`` from straight down.

    The loop is a rounded square (the superellipse |x|⁴ + |y|⁴ = 1) spanning ``extent`` of the box's x-y
    size, flown once at constant speed, so along a city it crosses many block borders in both directions.
    """
    lo, hi = scene_box[0].double(), scene_box[1].double()
    centre, half = 0.5 * (lo[:2] + hi[:2]), 0.5 * extent * (hi[:2] - lo[:2])
    phi = torch.linspace(0, 2 * math.pi, 64 * max(n_frames, 8) + 1, dtype=torch.float64)
    c, s_ = torch.cos(phi), torch.sin(phi)
    curve = centre + half * torch.stack([c.sign() * c.abs().sqrt(), s_.sign() * s_.abs().sqrt()], dim=1)
    # Resample by arc length: equal distances between frames.
    arc = torch.cat([torch.zeros(1, dtype=torch.float64), (curve[1:] - curve[:-1]).norm(dim=1).cumsum(0)])
    wanted = torch.arange(n_frames + 1, dtype=torch.float64) * (arc[-1] / n_frames)
    index = torch.searchsorted(arc, wanted).clamp(1, len(arc) - 1)
    w = ((wanted - arc[index - 1]) / (arc[index] - arc[index - 1]).clamp_min(1e-12))[:, None]
    points = (1 - w) * curve[index - 1] + w * curve[index]
    tilt = math.radians(tilt_deg)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    poses = []
    for i in range(n_frames):
        eye = torch.cat([points[i], (lo[2] + height).reshape(1)])
        heading = torch.cat([points[i + 1] - points[i], torch.zeros(1, dtype=torch.float64)])
        heading = heading / heading.norm().clamp_min(1e-12)
        view = math.sin(tilt) * heading - math.cos(tilt) * up
        poses.append(look_at(eye, eye + view, heading if tilt_deg < 1 else up))
    return torch.stack(poses).float()
