"""The plateau rule: windows of training MSE, stop when the newer window gains < min_gain_db."""

from __future__ import annotations

import json
import math

import pytest

from nerfxl.plateau import PlateauRule, psnr_of_mse


def _psnr_curve(step: int) -> float:
    """A training curve rising 1 dB per 10 steps, flat from step 100 on."""
    return 20.0 + min(step, 100) / 10.0


def test_a_rising_curve_does_not_stop_and_a_flat_one_stops_two_windows_in():
    rule = PlateauRule(window=20, min_gain_db=0.05)
    stopped = None
    for step in range(400):
        if rule.observe(10 ** (-_psnr_curve(step) / 10)):
            stopped = step
            break
    # The newer window is flat from step 100 + 20 on; the older one (20 steps earlier) from 120 + 20.
    assert stopped is not None and 120 <= stopped <= 140
    assert rule.gain_db() < 0.05
    assert rule.window_psnr() == pytest.approx(30.0)


def test_nothing_is_decided_before_two_full_windows():
    rule = PlateauRule(window=5)
    assert not any(rule.observe(0.01) for _ in range(9))  # flat, but only 9 steps
    assert math.isnan(rule.gain_db())
    assert rule.observe(0.01)  # the 10th step completes two windows


def test_windows_compare_the_psnr_of_the_mean_error_not_the_mean_psnr():
    rule = PlateauRule(window=2, min_gain_db=0.0)
    for mse in (0.04, 0.0, 0.02, 0.02):  # older window mean 0.02 = newer window mean
        rule.observe(mse)
    assert rule.gain_db() == pytest.approx(0.0)
    assert rule.window_psnr() == pytest.approx(psnr_of_mse(0.02))


def test_a_window_must_be_positive():
    with pytest.raises(ValueError):
        PlateauRule(window=0)


def test_training_stops_on_a_plateau_and_says_so(tmp_path, tiny_city):
    import dataclasses

    from nerfxl.presets import TRAIN_PRESETS
    from nerfxl.train import train

    base = TRAIN_PRESETS["tiny"][1]
    config = dataclasses.replace(base, data=tiny_city, output=tmp_path, steps=400, batch_rays=64, progress=False,
                                 plateau_window=4, plateau_min_gain=10.0)  # any gain under 10 dB is a plateau
    run_dir = train(config)
    convergence = json.loads((run_dir / "convergence.json").read_text())
    assert convergence["converged"] and convergence["steps"] == 8 and convergence["max_steps"] == 400
    from nerfxl.checkpoint import checkpoint_name, latest_checkpoint

    assert latest_checkpoint(run_dir).name == checkpoint_name(8)
