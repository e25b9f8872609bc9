"""Shared fixtures: one tiny procedural city per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: oversubscribed BLAS/OpenMP threads make small tensor ops much slower, not faster.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory):
    """Path of a tiny city dataset (generated once per session)."""
    from nerfxl.data.city import generate_city

    return generate_city(tmp_path_factory.mktemp("city") / "tiny", size="tiny", seed=0, progress=False)
