"""Plane windows: a ground plane cut into sub-planes that share borders computes what the whole plane does."""

from __future__ import annotations

import pytest
import torch

from nerfxl.errors import ConfigError
from nerfxl.fields.grid_plane_line import PlaneLineGrid
from nerfxl.fields.grid_plane_window import PlaneSplit, WindowedPlaneGrid, merge_grid_states, split_grid_state
from nerfxl.parallel.channel_parallel import check_channel_split, merge_channel_states, split_channel_state


def full_grid(seed: int = 0) -> PlaneLineGrid:
    torch.manual_seed(seed)
    return PlaneLineGrid((7, 10, 5), (1, 2, 4), 3, 4, "ground", level_scaling="cells").double()


@pytest.mark.parametrize("nx, ny", [(2, 3), (3, 1), (1, 1), (6, 9)])
def test_windows_compute_the_whole_plane_in_their_regions(nx, ny):
    full, split = full_grid(), PlaneSplit(nx, ny)
    windows = [WindowedPlaneGrid.from_full(full, split, i).double() for i in range(split.parts)]
    x = torch.rand(3000, 3, dtype=torch.float64) * 2.4 - 1.2  # also outside the box: clamped alike
    region = split.region_of_points(x[:, :2])
    want_d, want_a = full(x)
    for i, window in enumerate(windows):
        got_d, got_a = window(x[region == i])
        torch.testing.assert_close(got_d, want_d[region == i], rtol=0, atol=1e-12)
        torch.testing.assert_close(got_a, want_a[region == i], rtol=0, atol=1e-12)
    # Regularisers: every term of the whole grid counted once over the windows.
    torch.testing.assert_close(sum(w.total_variation() for w in windows), full.total_variation())
    torch.testing.assert_close(sum(w.density_l1() for w in windows), full.density_l1())


def test_sub_plane_sizes_follow_the_shared_border_rule():
    split = PlaneSplit(4, 2)
    window = WindowedPlaneGrid(split, 5, base_resolution=(17, 9, 5), scales=(1, 2))
    # (h − 1)·k + 1 = H: 17 nodes in 4 pieces of 5, 33 in 4 of 9; 9 in 2 of 5, 17 in 2 of 9.
    assert [tuple(p.shape[2:]) for p in window.density_planes] == [(5, 5), (9, 9)]
    assert split.region(5) == (2, 1)


def test_split_then_merge_is_the_identity_and_resizing_commutes_with_cutting():
    full, split = full_grid(), PlaneSplit(2, 3)
    states = [split_grid_state(full.state_dict(), split, i) for i in range(split.parts)]
    merged = merge_grid_states(states, split)
    assert all(torch.equal(merged[k], v) for k, v in full.state_dict().items())
    windows = [WindowedPlaneGrid.from_full(full, split, i).double() for i in range(split.parts)]
    full.resize((13, 19, 9))
    for w in windows:
        w.resize((13, 19, 9))
    merged = merge_grid_states([w.state_dict() for w in windows], split)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(merged[k], v, rtol=0, atol=1e-12)


def test_bad_splits_and_mismatched_pieces_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"9 nodes along x cannot be cut into 3 .* 8 is not a multiple of 3 \(e.g. 10"):
        PlaneSplit(3, 1).sub_nodes(9, "x")
    with pytest.raises(ConfigError, match="expected NXxNY"):
        PlaneSplit.parse("2by2")
    window = WindowedPlaneGrid(PlaneSplit(2, 1), 0, base_resolution=(9, 9, 5), scales=(1,))
    before = [p.shape for p in window.parameters()]
    with pytest.raises(ConfigError, match="10 nodes along x"):
        window.resize((10, 9, 5))
    assert [p.shape for p in window.parameters()] == before and window.base_resolution == (9, 9, 5)
    split = PlaneSplit(2, 1)
    a = split_grid_state(full_grid(0).state_dict(), split, 0)
    b = split_grid_state(full_grid(1).state_dict(), split, 1)  # another model's piece
    with pytest.raises(ConfigError, match="shared border"):
        merge_grid_states([a, b], split)
    with pytest.raises(ConfigError, match=r"density channels \(3\) to be a multiple of 2"):
        check_channel_split(3, 4, 2)


def test_channel_slices_concatenate_back_into_the_grid():
    full = full_grid()
    state = full.state_dict()
    state["optim.grid.density_planes.0.step"] = torch.tensor(3.0)  # a scalar travels unchanged
    slices = [split_channel_state(state, 1 if i is None else 3, i or 0) for i in (None,)]
    assert all(torch.equal(slices[0][k], v) for k, v in state.items())
    full4 = PlaneLineGrid((7, 10, 5), (1, 2), 4, 8, "ground")
    parts = [split_channel_state(full4.state_dict(), 4, i) for i in range(4)]
    assert parts[1]["density_planes.0"].shape[1] == 1 and parts[1]["appearance_lines.1"].shape[1] == 2
    merged = merge_channel_states(parts)
    assert all(torch.equal(merged[k], v) for k, v in full4.state_dict().items())
