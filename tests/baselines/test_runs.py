"""Baselines from the command-line layer: train one into a new folder, recognise and score it."""

from __future__ import annotations

import dataclasses
import math

import pytest

from nerfxl.baselines.runs import baseline_method, evaluate_baseline, train_baseline
from nerfxl.errors import CheckpointError, ConfigError
from nerfxl.presets import TRAIN_PRESETS
from nerfxl.run.trained import load_trained


def baseline_config(data, output, **overrides):
    base = TRAIN_PRESETS["tiny"][1]
    settings = dict(data=data, output=output, progress=False, downscale=2.0, batch_rays=256, steps=2,
                    method="independent-2d", partitions=2)
    return dataclasses.replace(base, **{**settings, **overrides})


@pytest.mark.parametrize("method, models", [("independent-2d", ["cluster-000", "cluster-001"]),
                                           ("independent-3d", ["tile-000", "tile-001"])])
def test_a_baseline_trains_into_a_new_folder_and_is_scored(tiny_city, tmp_path, method, models):
    run = train_baseline(baseline_config(tiny_city, tmp_path, method=method))
    assert baseline_method(run) == method
    assert sorted(p.name for p in (run / "models").iterdir()) == models
    result = evaluate_baseline(run, limit=1)
    assert math.isfinite(result["psnr"]) and (run / "eval.json").is_file()
    with pytest.raises(CheckpointError, match="independent baseline"):
        load_trained(run)  # render/resume paths refuse it with a pointer to eval
    assert baseline_method(tmp_path) is None


@pytest.mark.parametrize("overrides, message", [
    ({"devices": 2}, "one process"),
    ({"resume": "somewhere"}, "--resume is not supported"),
])
def test_independent_baseline_refuses_what_it_cannot_do(tiny_city, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train_baseline(baseline_config(tiny_city, tmp_path / "out", **overrides))
    assert not (tmp_path / "out").exists()
