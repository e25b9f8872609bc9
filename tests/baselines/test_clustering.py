"""cluster_cameras: coverage, determinism, monotone overlap, and the k > distinct positions error."""

from __future__ import annotations

import pytest
import torch

from nerfxl.baselines.clustering import cluster_cameras
from nerfxl.errors import ConfigError


def camera_positions(n: int = 300, seed: int = 0) -> torch.Tensor:
    """Cameras along a winding street, a loose spread as in driving or drone captures."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g, dtype=torch.float64) * 10
    jitter = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3
    return torch.stack([s, torch.sin(s), torch.full_like(s, 1.5)], dim=-1) + jitter


@pytest.mark.parametrize("k", [1, 2, 4, 8, 16])
def test_clusters_cover_every_camera_and_are_non_empty(k):
    centroids, membership = cluster_cameras(camera_positions(), k, overlap=0.5, seed=0)
    assert centroids.shape == (k, 3) and centroids.dtype == torch.float64
    assert membership.shape == (300, k) and membership.dtype == torch.bool
    assert bool(membership.any(dim=1).all()) and bool(membership.any(dim=0).all())


def test_deterministic_for_a_seed():
    x = camera_positions()
    a = cluster_cameras(x, 6, seed=4)
    b = cluster_cameras(x.clone(), 6, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(cluster_cameras(x.float(), 6, seed=4)[1], cluster_cameras(x.float(), 6, seed=4)[1])


def test_overlap_grows_memberships_monotonically():
    x = camera_positions()
    previous = None
    sizes = []
    for overlap in (0.0, 0.1, 0.25, 0.5, 1.0, 3.0):
        centroids, membership = cluster_cameras(x, 5, overlap=overlap, seed=1)
        if previous is not None:
            assert torch.equal(centroids, previous[0])  # the overlap does not move the clusters
            assert bool((previous[1] <= membership).all())
        previous = (centroids, membership)
        sizes.append(int(membership.sum()))
    assert sizes[0] == 300  # overlap 0: a partition (no exact ties in random positions)
    assert sizes[-1] > sizes[2] > sizes[0]


def test_membership_rule_and_centroids_are_means():
    x = camera_positions()
    centroids, membership = cluster_cameras(x, 4, overlap=0.5, seed=2)
    d = torch.cdist(x, centroids)
    nearest = d.argmin(dim=1)
    assert torch.equal(membership, d <= 1.5 * d.min(dim=1, keepdim=True).values * (1 + 1e-12))
    for j in range(4):
        assert torch.allclose(centroids[j], x[nearest == j].mean(dim=0))


def test_separated_groups_are_found():
    g = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.0, 0, 0], [10.0, 0, 0], [0.0, 10, 0]], dtype=torch.float64)
    labels = torch.arange(60) % 3
    x = centres[labels] + 0.1 * torch.randn(60, 3, generator=g, dtype=torch.float64)
    for seed in range(5):
        centroids, membership = cluster_cameras(x, 3, overlap=0.5, seed=seed)
        assert bool((membership.sum(dim=1) == 1).all())
        found = membership.double().argmax(dim=1)
        # Same partition as the labels up to renaming.
        assert len({(int(a), int(b)) for a, b in zip(labels, found)}) == 3


def test_duplicate_positions_and_too_many_clusters():
    x = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]])
    centroids, membership = cluster_cameras(x, 3, overlap=0.0, seed=0)
    assert bool(membership.any(dim=0).all()) and bool(membership.any(dim=1).all())
    assert sorted(centroids[:, 0].tolist()) == [0.0, 1.0, 5.0]
    with pytest.raises(ConfigError, match="3 distinct positions"):
        cluster_cameras(x, 4)
    with pytest.raises(ConfigError):
        cluster_cameras(x, 0)
    with pytest.raises(ValueError):
        cluster_cameras(x, 2, overlap=-0.5)
    with pytest.raises(ValueError):
        cluster_cameras(x[:, :2], 2)


def test_an_emptied_cluster_is_reseeded():
    from nerfxl.baselines.clustering import _fill_empty_clusters, _nearest

    x = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [9.0, 0, 0]], dtype=torch.float64)
    centroids = torch.tensor([[1.0, 0, 0], [100.0, 0, 0], [9.0, 0, 0]], dtype=torch.float64)  # cluster 1 is empty
    assignment, centroids = _fill_empty_clusters(x, centroids, _nearest(x, centroids))
    assert torch.bincount(assignment, minlength=3).min() >= 1
    assert centroids[1].tolist() in ([0.0, 0, 0], [2.0, 0, 0])
