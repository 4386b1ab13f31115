"""The online binomial logistic estimator on synthetic data where the truth is known."""

import numpy as np
import pytest

from depo_trl.estimators import LogisticPassRateEstimator


def _synthetic(n, rng, w=(1.5, -2.0, 0.0), b=-0.3):
    X = rng.normal(size=(n, len(w)))
    p = 1 / (1 + np.exp(-(X @ np.array(w) + b)))
    return X, p


def test_prior_before_any_label():
    est = LogisticPassRateEstimator(prior_pass_rate=0.3)
    np.testing.assert_allclose(est.predict_pass_rate(np.zeros((5, 3))), 0.3)


def test_learns_the_true_pass_rates_from_binomial_groups():
    rng = np.random.default_rng(0)
    est = LogisticPassRateEstimator(decay=1.0, window=10_000)
    for _ in range(20):
        X, p = _synthetic(64, rng)
        passes = rng.binomial(8, p)
        est.partial_fit(X, passes, np.full(64, 8))
    X, p = _synthetic(2000, rng)
    predicted = est.predict_pass_rate(X)
    assert np.corrcoef(predicted, p)[0, 1] > 0.97
    assert np.abs(predicted - p).mean() < 0.05


def test_uses_counts_not_thresholded_labels():
    """A prompt that passes 1 of 8 must look hard, one that passes 7 of 8 easy, though both have a pass."""
    est = LogisticPassRateEstimator(l2=0.01)
    X = np.array([[0.0], [1.0]] * 20)
    est.partial_fit(X, np.array([1, 7] * 20), np.full(40, 8))
    low, high = est.predict_pass_rate(np.array([[0.0], [1.0]]))
    assert low == pytest.approx(1 / 8, abs=0.03)
    assert high == pytest.approx(7 / 8, abs=0.03)


def test_recency_weighting_follows_drift():
    rng = np.random.default_rng(1)
    est = LogisticPassRateEstimator(decay=0.5)
    X = rng.normal(size=(32, 2))
    for _ in range(5):
        est.partial_fit(X, np.full(32, 1), np.full(32, 8))  # hard at first
    for _ in range(5):
        est.partial_fit(X, np.full(32, 7), np.full(32, 8))  # the policy improved
    assert est.predict_pass_rate(X).mean() > 0.8


def test_uncertainty_shrinks_with_data():
    rng = np.random.default_rng(2)
    est = LogisticPassRateEstimator()
    X, p = _synthetic(16, rng)
    est.partial_fit(X, rng.binomial(8, p), np.full(16, 8))
    early = est.predict_uncertainty(X).mean()
    for _ in range(10):
        X2, p2 = _synthetic(64, rng)
        est.partial_fit(X2, rng.binomial(8, p2), np.full(64, 8))
    assert est.predict_uncertainty(X).mean() < early


def test_state_round_trip_and_bad_input(tmp_path):
    from depo_trl.state import load_state, save_state

    rng = np.random.default_rng(3)
    est = LogisticPassRateEstimator()
    X, p = _synthetic(64, rng)
    est.partial_fit(X, rng.binomial(8, p), np.full(64, 8))
    save_state({"est": est.state_dict()}, str(tmp_path))
    other = LogisticPassRateEstimator()
    other.load_state_dict(load_state(str(tmp_path))["est"])
    np.testing.assert_array_equal(other.predict_pass_rate(X), est.predict_pass_rate(X))

    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    est.partial_fit(X_nan, np.full(64, 4), np.full(64, 8))  # the NaN row is dropped, the rest is used
    assert np.isfinite(est.coef_).all()
    est.partial_fit(np.zeros((0, 3)), [], [])  # empty batch: no-op
    with pytest.raises(ValueError, match="passes must lie in"):
        est.partial_fit(X[:2], [9, 1], [8, 8])
    with pytest.raises(ValueError, match="features"):
        est.predict_pass_rate(np.zeros((2, 5)))
