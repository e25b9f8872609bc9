"""Block-NeRF-style camera clusters: seeded k-means of camera positions, with overlapping memberships.

Overlap rule (our stand-in for Block-NeRF's "50% overlap" between neighbouring blocks): camera i,
whose nearest centroid is at distance d_i, belongs to every cluster j with

    dist(i, j) ≤ (1 + overlap) · d_i.

A camera also always belongs to its own k-means cluster (at convergence that is its nearest one, so
this only matters when ``max_iterations`` stops Lloyd early); it keeps every cluster non-empty.
``overlap = 0`` is the plain k-means partition (plus exact ties); memberships only grow as
``overlap`` grows, and every camera belongs to at least its nearest cluster. A camera lying exactly
on a centroid (d_i = 0) joins only clusters centred there. Distances are Euclidean in 3D world units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nerfxl.data.sampler import generator_for
from nerfxl.errors import ConfigError

DEFAULT_CLUSTER_OVERLAP = 0.5  # Block-NeRF's 50% (nerf-xl.md §8)
_KMEANS_STREAM = 0xC1A5  # generator stream of the k-means++ seeding
_DISTANCE_CHUNK = 1 << 16  # cameras per block of the distance computation (bounds [chunk, K] memory)


def cluster_cameras(
    positions: Tensor,
    k: int,
    overlap: float = DEFAULT_CLUSTER_OVERLAP,
    seed: int = 0,
    max_iterations: int = 100,
) -> tuple[Tensor, Tensor]:
    """Cluster N camera centres into K overlapping groups.

    k-means++ seeding from a generator of ``seed`` alone, then Lloyd iterations until the assignment
    stops changing (or ``max_iterations``); a cluster that empties is re-seeded at the camera
    farthest from its centroid. Everything runs in float64 on the CPU, so the result is a pure
    function of (positions, k, overlap, seed).

    Args:
        positions: [N, 3] camera centres (``Cameras.positions``).
        k: number of clusters, 1 ≤ k ≤ number of distinct positions.
        overlap: ≥ 0, see the module docstring.
        seed: seeds the k-means++ initialisation.
        max_iterations: cap on Lloyd iterations.
    Returns:
        centroids: [K, 3] float64 cluster centres (means of the hard k-means assignment).
        membership: [N, K] bool; every row and every column has at least one True.
    Raises:
        ValueError: malformed ``positions`` or ``overlap``.
        ConfigError: ``k`` < 1 or more clusters than distinct camera positions.
    """
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [N, 3], got {list(positions.shape)}")
    if not math.isfinite(overlap) or overlap < 0:
        raise ValueError(f"overlap must be a finite number ≥ 0, got {overlap}")
    x = positions.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("camera positions must be finite")
    distinct = int(torch.unique(x, dim=0).shape[0]) if x.shape[0] else 0
    if k < 1 or k > distinct:
        raise ConfigError(
            f"cannot make {k} camera clusters from {x.shape[0]} cameras at {distinct} distinct positions "
            f"(need 1 ≤ k ≤ {distinct})"
        )
    centroids = _kmeans_plus_plus(x, k, generator_for(seed, _KMEANS_STREAM))
    assignment = _nearest(x, centroids)
    assignment, centroids = _fill_empty_clusters(x, centroids, assignment)
    for _ in range(max_iterations):
        centroids = _cluster_means(x, assignment, centroids)
        new_assignment, centroids = _fill_empty_clusters(x, centroids, _nearest(x, centroids))
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
    centroids = _cluster_means(x, assignment, centroids)
    sq = _squared_distances(x, centroids)  # [N, K]
    d_min = sq.amin(dim=1, keepdim=True)
    # Compare squared distances: (1 + overlap)^2 · d_min^2 avoids square roots and keeps ties exact.
    membership = sq <= (1.0 + overlap) ** 2 * d_min
    membership[torch.arange(x.shape[0]), assignment] = True
    return centroids, membership


def _kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """[N, 3] → [K, 3] initial centres: the first uniform, each next one with probability ∝ squared
    distance to the nearest centre so far (never a position already chosen)."""
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(dim=-1)
    for _ in range(1, k):
        nxt = int(torch.multinomial(d2, 1, generator=generator))
        centres.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(dim=-1))
    return torch.stack(centres)


def _squared_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """[N, 3], [K, 3] → [N, K] exact squared distances, in blocks of cameras.

    Differences rather than the |x|² − 2x·c + |c|² expansion: no cancellation, so ties and the
    overlap threshold are exact, and no BLAS whose summation order could depend on threading.
    """
    return torch.cat([
        ((x[i:i + _DISTANCE_CHUNK, None, :] - centroids[None, :, :]) ** 2).sum(dim=-1)
        for i in range(0, x.shape[0], _DISTANCE_CHUNK)
    ])


def _nearest(x: Tensor, centroids: Tensor) -> Tensor:
    """[N] int64 index of each camera's nearest centroid (lowest index among ties)."""
    return _squared_distances(x, centroids).argmin(dim=1)


def _cluster_means(x: Tensor, assignment: Tensor, previous: Tensor) -> Tensor:
    """[K, 3] mean position per cluster; an empty cluster keeps its previous centre."""
    k = previous.shape[0]
    sums = torch.zeros_like(previous).index_add_(0, assignment, x)
    counts = torch.bincount(assignment, minlength=k).to(x.dtype)[:, None]
    return torch.where(counts > 0, sums / counts.clamp_min(1), previous)


def _fill_empty_clusters(x: Tensor, centroids: Tensor, assignment: Tensor) -> tuple[Tensor, Tensor]:
    """Move each empty cluster's centre onto the camera farthest from its own centre, then reassign.

    With k ≤ distinct positions, some cluster spans two distinct positions, so that camera is at a
    positive distance; when centres are cluster means, taking it leaves its old cluster non-empty
    (a mean always has a member closer to it than to any other point). The bounded loop guards the
    remaining degenerate cases.
    """
    k = centroids.shape[0]
    centroids = centroids.clone()
    for _ in range(2 * k):
        empty = (torch.bincount(assignment, minlength=k) == 0).nonzero().flatten()
        if empty.numel() == 0:
            return assignment, centroids
        d2 = ((x - centroids[assignment]) ** 2).sum(dim=-1)
        centroids[int(empty[0])] = x[int(d2.argmax())]
        assignment = _nearest(x, centroids)
    raise RuntimeError(f"k-means could not keep all {k} camera clusters non-empty")
