"""expand_boxes: grown boxes contain the tiles, stay in the scene box, and overlap 0 is the plan."""

from __future__ import annotations

import pytest
import torch
from baseline_fixtures import SCENE_BOX, some_plan

from nerfxl.baselines.overlap import box_centres, expand_boxes


@pytest.mark.parametrize("k, method", [(1, "kd"), (2, "kd"), (4, "kd"), (8, "kd"), (6, "uniform")])
@pytest.mark.parametrize("overlap", [0.15, 0.5, 3.0])
def test_expanded_boxes_contain_tiles_and_stay_in_scene(k, method, overlap):
    plan = some_plan(k, method)
    grown = expand_boxes(plan.boxes, overlap, plan.scene_box)
    assert grown.shape == plan.boxes.shape and grown.dtype == torch.float64
    assert bool((grown[:, 0] <= plan.boxes[:, 0]).all() and (grown[:, 1] >= plan.boxes[:, 1]).all())
    assert bool((grown[:, 0] >= SCENE_BOX[0]).all() and (grown[:, 1] <= SCENE_BOX[1]).all())


def test_zero_overlap_is_the_plan():
    plan = some_plan(8)
    assert torch.equal(expand_boxes(plan.boxes, 0.0, plan.scene_box), plan.boxes)


def test_each_face_moves_half_the_overlap_unless_clamped():
    box = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, 4.0]], dtype=torch.float64)
    grown = expand_boxes(box, 0.2)
    assert torch.allclose(grown, torch.tensor([[0.8, 1.6, 2.9], [3.2, 6.4, 4.1]], dtype=torch.float64))
    scene = torch.tensor([[0.9, 0.0, 0.0], [10.0, 6.2, 10.0]], dtype=torch.float64)
    clamped = expand_boxes(box[None], 0.2, scene)[0]
    assert clamped[0, 0] == 0.9 and clamped[1, 1] == 6.2 and clamped[1, 0] == grown[1, 0]


def test_interior_faces_overlap_neighbours():
    plan = some_plan(4)
    grown = expand_boxes(plan.boxes, 0.15, plan.scene_box)
    # Every tile centre is inside its own grown box, and grown neighbours now share volume.
    centres = box_centres(plan.boxes)
    lo = torch.maximum(grown[:, None, 0], grown[None, :, 0])
    hi = torch.minimum(grown[:, None, 1], grown[None, :, 1])
    shared = (hi - lo).clamp_min(0).prod(dim=-1).fill_diagonal_(0)
    assert bool((shared > 0).any())
    assert bool(((centres >= grown[:, 0]) & (centres <= grown[:, 1])).all())


def test_rejects_negative_overlap_and_bad_shapes():
    with pytest.raises(ValueError):
        expand_boxes(SCENE_BOX, -0.1)
    with pytest.raises(ValueError):
        expand_boxes(torch.zeros(2, 3, 3), 0.1)
