"""Per-image parameters shared by every tile: appearance embeddings and camera pose corrections.

NeRF-XL keeps these shared (one set of cameras for the whole scene); novel views use the zero
appearance embedding and no pose correction (image index -1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AppearanceEmbedding(nn.Module):
    """One learnable vector per training image; index -1 (or None) gives the zero vector.

    Args:
        n_images: number of training images.
        dim: embedding width.
        init_std: entries start N(0, init_std²); small, so the zero vector used for novel views
            stays close to the typical training embedding.

    Shapes: ``forward(image_indices [N] | None, n=None) -> [N, dim]``.
    """

    def __init__(self, n_images: int, dim: int, init_std: float = 0.01):
        super().__init__()
        if n_images < 1 or dim < 1:
            raise ValueError(f"need n_images ≥ 1 and dim ≥ 1, got {n_images}, {dim}")
        self.n_images, self.dim = n_images, dim
        self.weight = nn.Parameter(init_std * torch.randn(n_images, dim))

    def forward(self, image_indices: Tensor | None, n: int | None = None) -> Tensor:
        """Look up embeddings.

        Args:
            image_indices: [N] int image indices in [-1, n_images); -1 means "no image" (zero).
                None means all zero, in which case ``n`` gives N.
            n: number of rows when ``image_indices`` is None.
        """
        if image_indices is None:
            if n is None:
                raise ValueError("pass n when image_indices is None")
            return self.weight.new_zeros(n, self.dim)
        idx = image_indices.long()
        if idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= self.n_images):
            raise IndexError(f"image index out of range [-1, {self.n_images}): {int(idx.min())}..{int(idx.max())}")
        valid = idx >= 0
        rows = self.weight[idx.clamp_min(0)]
        return rows * valid[..., None].to(rows.dtype)

    def extra_repr(self) -> str:
        return f"n_images={self.n_images}, dim={self.dim}"


def skew(v: Tensor) -> Tensor:
    """[..., 3] → [..., 3, 3] cross-product matrix, ``skew(a) @ b == cross(a, b)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).view(*v.shape[:-1], 3, 3)


def se3_exp(xi: Tensor) -> Tensor:
    """Exponential map of se(3): twist ``xi = (rho, omega)`` [..., 6] → rigid transform [..., 3, 4].

    ``rho`` (first three) is the translational part, ``omega`` (last three) the rotation vector.
    R = I + A W + B W², t = (I + B W + C W²) rho with W = skew(omega), θ = |omega|,
    A = sin θ / θ, B = (1 - cos θ) / θ², C = (θ - sin θ) / θ³. Near θ = 0 the coefficients use
    their Taylor series in θ², so the map and its gradient are finite everywhere (exact identity
    at zero).
    """
    rho, omega = xi[..., :3], xi[..., 3:]
    theta2 = (omega * omega).sum(-1)
    small = theta2 < 1e-4
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    sin, cos = torch.sin(theta), torch.cos(theta)
    a = torch.where(small, 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0, sin / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0, (1.0 - cos) / safe2)
    c = torch.where(small, 1.0 / 6.0 - theta2 / 120.0 + theta2 * theta2 / 5040.0, (theta - sin) / (safe2 * theta))
    w = skew(omega)
    w2 = w @ w
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand_as(w)
    rot = eye + a[..., None, None] * w + b[..., None, None] * w2
    v = eye + b[..., None, None] * w + c[..., None, None] * w2
    t = (v @ rho[..., None])
    return torch.cat([rot, t], dim=-1)


def compose(a: Tensor, b: Tensor) -> Tensor:
    """Compose rigid transforms [..., 3, 4]: the result maps x to a(b(x))."""
    rot = a[..., :3, :3] @ b[..., :3, :3]
    t = a[..., :3, :3] @ b[..., :3, 3:] + a[..., :3, 3:]
    return torch.cat([rot, t], dim=-1)


class PoseCorrection(nn.Module):
    """Learnable per-image SE(3) correction of camera-to-world poses (camera optimisation).

    Each image has a twist ``(rho, omega)`` [6], initialised to zero (identity). The correction
    acts in the camera frame: ``c2w' = c2w · exp(xi)`` (nerfstudio's convention), so ``rho`` is a
    translation in camera axes. Image index -1 (novel views) gets no correction.

    Args:
        n_images: number of training images.

    Shapes: ``apply(camera_to_worlds [B, 3, 4] or [B, 4, 4], image_indices [B]) -> same shape``.
    """

    def __init__(self, n_images: int):
        super().__init__()
        if n_images < 1:
            raise ValueError(f"need n_images ≥ 1, got {n_images}")
        self.n_images = n_images
        self.twists = nn.Parameter(torch.zeros(n_images, 6))

    def corrections(self, image_indices: Tensor) -> Tensor:
        """[B] image indices (-1 → identity) → [B, 3, 4] correction transforms."""
        idx = image_indices.long()
        if idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= self.n_images):
            raise IndexError(f"image index out of range [-1, {self.n_images}): {int(idx.min())}..{int(idx.max())}")
        xi = self.twists[idx.clamp_min(0)] * (idx >= 0)[:, None].to(self.twists.dtype)
        return se3_exp(xi)

    def apply(self, camera_to_worlds, image_indices: Tensor | None = None):  # type: ignore[override]
        """Corrected poses ``c2w · exp(xi[image])``; differentiable w.r.t. the twists.

        (Called with a single function it behaves as ``nn.Module.apply``, so ``model.apply(init)``
        on a parent module still works.)
        """
        if image_indices is None and callable(camera_to_worlds):
            return super().apply(camera_to_worlds)
        if image_indices is None:
            raise TypeError("PoseCorrection.apply needs camera_to_worlds and image_indices")
        corr = self.corrections(image_indices).to(camera_to_worlds.dtype)
        out = compose(camera_to_worlds[..., :3, :4], corr)
        if camera_to_worlds.shape[-2] == 4:
            out = torch.cat([out, camera_to_worlds[..., 3:, :]], dim=-2)
        return out

    def forward(self, camera_to_worlds: Tensor, image_indices: Tensor) -> Tensor:
        return self.apply(camera_to_worlds, image_indices)

    def penalty(self) -> Tensor:
        """Mean squared twist norm (a small regulariser keeping corrections near identity). Scalar."""
        return self.twists.square().sum(-1).mean()

    def extra_repr(self) -> str:
        return f"n_images={self.n_images}"
