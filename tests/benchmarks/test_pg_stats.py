"""The proving ground's statistics: crossings, censoring, area, and bootstrap intervals over paired seeds."""

import numpy as np
import pytest

from benchmarks import pg_stats as S


def _run(x, acc, tokens=None):
    x = list(map(float, x))
    return {"x": x, "acc": list(acc), "cost": {"completions": x, "tokens": tokens or [2 * v for v in x]}}


def test_crossing_is_interpolated_between_evaluations():
    assert S.crossing([0, 100, 200], [0.0, 0.2, 0.6], 0.4, window=1) == (pytest.approx(150.0), False)
    # smoothing (trailing mean of 3 by default) can only move a rising curve's crossing later
    at, censored = S.crossing([0, 100, 200, 300], [0.0, 0.2, 0.6, 0.6], 0.4)
    assert not censored and 200 < at < 300


def test_never_reaching_the_target_counts_the_whole_run_for_every_method():
    at, censored = S.crossing([0, 50, 100], [0.1, 0.1, 0.1], 0.5)
    assert censored and at == 100.0
    runs = {"GRPO": [_run([0, 50, 100], [0.1, 0.3, 0.5]), _run([0, 50, 100], [0.1, 0.1, 0.1])],
            "DEPO": [_run([0, 50, 100], [0.1, 0.1, 0.1]), _run([0, 50, 100], [0.1, 0.1, 0.1])]}
    out = S.compare(runs, n_boot=50)
    # GRPO's second seed never reaches the mean target: it counts its whole run, like DEPO's seeds
    assert out["methods"]["GRPO"]["censored"] == 1
    assert out["methods"]["DEPO"]["censored"] == 2
    assert out["methods"]["DEPO"]["cost"] == 100.0


def test_crossing_at_the_first_evaluation():
    at, censored = S.crossing([10, 20], [0.9, 0.9], 0.5)
    assert (at, censored) == (10.0, False)


def test_area_of_a_constant_and_of_a_ramp():
    assert S.area([0, 100], [0.3, 0.3], 100) == pytest.approx(0.3)
    assert S.area([0, 100], [0.0, 1.0], 100) == pytest.approx(0.5)
    assert S.area([0, 100], [0.0, 1.0], 50) == pytest.approx(0.25)
    assert S.area([0, 50], [0.0, 1.0], 100) == pytest.approx(0.75)  # last value held past the curve's end


def test_identical_seeds_give_a_degenerate_interval_containing_the_estimate():
    runs = {"GRPO": [_run([0, 100, 200, 300], [0.0, 0.2, 0.4, 0.6])] * 4,
            "DEPO": [_run([0, 50, 100, 150], [0.0, 0.2, 0.4, 0.6])] * 4}
    r = S.compare(runs, n_boot=200)["methods"]["DEPO"]["ratio"]
    assert r["value"] == pytest.approx(0.5)
    assert r["low"] == pytest.approx(0.5) and r["high"] == pytest.approx(0.5)


def test_grpo_reference_uncertainty_widens_the_interval():
    fixed = [_run([0, 50, 100, 150], [0.0, 0.2, 0.4, 0.6])] * 4
    steady = {"GRPO": [_run([0, 100, 200, 300], [0.0, 0.2, 0.4, 0.6])] * 4, "DEPO": fixed}
    noisy = {"GRPO": [_run([0, 100, 200, 300], [0.0, 0.2, 0.4, a]) for a in (0.45, 0.6, 0.7, 0.8)], "DEPO": fixed}
    w_steady = S.compare(steady, n_boot=300)["methods"]["DEPO"]["ratio"]
    w_noisy = S.compare(noisy, n_boot=300)["methods"]["DEPO"]["ratio"]
    assert (w_noisy["high"] - w_noisy["low"]) > (w_steady["high"] - w_steady["low"]) + 0.01


def test_oracle_share_and_ratio_vs_ds():
    g = [_run([0, 100, 200, 400], [0.0, 0.2, 0.4, 0.6])] * 3
    runs = {"GRPO": g,
            "ORACLE": [_run([0, 50, 100, 200], [0.0, 0.2, 0.4, 0.6])] * 3,   # ratio 0.5
            "DEPO": [_run([0, 75, 150, 300], [0.0, 0.2, 0.4, 0.6])] * 3,     # ratio 0.75
            "DS": [_run([0, 150, 300, 600], [0.0, 0.2, 0.4, 0.6])] * 3}      # ratio 1.5
    out = S.compare(runs, n_boot=100)["methods"]
    assert out["DEPO"]["ratio"]["value"] == pytest.approx(0.75)
    assert out["DEPO"]["oracle_share"]["value"] == pytest.approx(0.5)
    assert out["DEPO"]["ratio_vs_ds"]["value"] == pytest.approx(0.5)
    assert out["ORACLE"]["oracle_share"]["value"] == pytest.approx(1.0)


def test_unpaired_seeds_are_refused():
    with pytest.raises(ValueError, match="same seeds"):
        S.compare({"GRPO": [_run([0, 1], [0, 1])], "DEPO": []})


def test_share_of_the_oracle_gain_in_a_per_seed_measure():
    out = S.share_of_gain({"GRPO": [0.1, 0.2], "ORACLE": [0.5, 0.6], "DEPO": [0.3, 0.4]}, n_boot=100)
    assert out["DEPO"]["share"]["value"] == pytest.approx(0.5)
    assert out["ORACLE"]["share"]["value"] == pytest.approx(1.0) and out["GRPO"]["share"]["value"] == 0.0
    assert out["DEPO"]["share"]["low"] <= 0.5 <= out["DEPO"]["share"]["high"]
