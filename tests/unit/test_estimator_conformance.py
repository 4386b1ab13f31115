"""One conformance suite, run over every registered pass-rate estimator.

Every estimator in ``ESTIMATORS`` must: predict one pass rate in [0, 1] per prompt; predict its prior before
any label; respond to labels in the right direction; survive a checkpoint (save_state / load_state) with equal
predictions, and keep training identically afterwards; be deterministic under a seed; ignore rows with
non-finite features; treat an empty batch as a no-op; reject impossible labels.
"""

import numpy as np
import pytest

from depo_trl.estimators import ESTIMATORS, make_estimator, resolve_estimator_class
from depo_trl.state import load_state, save_state

NAMES = sorted(ESTIMATORS)
N_PROMPTS, N_FEATURES, GROUP = 48, 6, 8

# Constructor arguments that set the prior mean to 0.3, per estimator.
PRIOR_03 = {
    "beta": dict(prior_alpha=0.6, prior_beta=1.4),
    "gbdt": dict(prior_pass_rate=0.3),
    "hierarchical": dict(prior_pass_rate=0.3),
    "logistic": dict(prior_pass_rate=0.3),
    "ranking": dict(prior_pass_rate=0.3),
}


def make_data(seed=0, n=N_PROMPTS):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    true_rate = 1.0 / (1.0 + np.exp(-(X @ rng.normal(size=N_FEATURES))))
    keys = rng.integers(-(2**62), 2**62, size=n, dtype=np.int64)
    return X, true_rate, keys, rng


def labels(true_rate, rng):
    trials = np.full(len(true_rate), float(GROUP))
    return rng.binomial(GROUP, true_rate).astype(np.float64), trials


def fit_rounds(est, X, keys, rounds):
    for passes, trials in rounds:
        est.partial_fit(X, passes, trials, keys=keys)
    return est


def standard_rounds(seed=0, n_rounds=3):
    X, true_rate, keys, rng = make_data(seed)
    return X, keys, [labels(true_rate, rng) for _ in range(n_rounds)]


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def test_registry_builds_each_estimator(name):
    est = make_estimator(name)
    assert est.name == name and resolve_estimator_class(name) is type(est)
    with pytest.raises(ValueError, match="logistic"):
        make_estimator("no_such_estimator")


def test_shapes_and_ranges(name):
    X, keys, rounds = standard_rounds()
    est = fit_rounds(make_estimator(name), X, keys, rounds)
    p = est.predict_pass_rate(X, keys=keys)
    assert p.shape == (N_PROMPTS,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    sd = est.predict_uncertainty(X, keys=keys)
    if sd is not None:
        assert sd.shape == (N_PROMPTS,) and np.isfinite(sd).all() and (sd >= 0).all() and (sd <= 0.5).all()
    assert est.predict_pass_rate(X[:0], keys=keys[:0]).shape == (0,)
    assert est.predict_pass_rate(X[:1], keys=keys[:1]).shape == (1,)


def test_prior_before_any_label(name):
    X, _, keys, _ = make_data()
    est = make_estimator(name, **PRIOR_03[name])
    np.testing.assert_allclose(est.predict_pass_rate(X, keys=keys), 0.3, atol=1e-9)
    sd = est.predict_uncertainty(X, keys=keys)
    if sd is not None:  # before data the estimator must not claim certainty
        assert (sd > 0.05).all()


def test_more_passes_means_higher_prediction(name):
    X, keys, rounds = standard_rounds(n_rounds=10)
    target = np.arange(8)  # the same prompts get all-pass labels in one run, all-fail in the other
    runs = {}
    for outcome in (0.0, GROUP):
        changed = [(np.where(np.isin(np.arange(N_PROMPTS), target), outcome, s), t) for s, t in rounds]
        runs[outcome] = fit_rounds(make_estimator(name), X, keys, changed).predict_pass_rate(X, keys=keys)
    low, high = runs[0.0][target], runs[GROUP][target]
    assert high.mean() > low.mean() + 0.05, (low, high)


def test_learns_something_from_labels(name):
    # Fed the same prompts round after round, every estimator should rank them better than chance.
    X, true_rate, keys, rng = make_data(seed=1)
    est = make_estimator(name)
    for _ in range(6):
        est.partial_fit(X, *labels(true_rate, rng), keys=keys)
    p = est.predict_pass_rate(X, keys=keys)
    assert np.corrcoef(p, true_rate)[0, 1] > 0.5


def test_state_round_trip_through_a_checkpoint(name, tmp_path):
    X, keys, rounds = standard_rounds()
    est = fit_rounds(make_estimator(name), X, keys, rounds)
    save_state({"estimator": est.state_dict()}, str(tmp_path))  # JSON + npz, loaded with allow_pickle=False
    restored = make_estimator(name)
    restored.load_state_dict(load_state(str(tmp_path))["estimator"])
    np.testing.assert_array_equal(restored.predict_pass_rate(X, keys=keys), est.predict_pass_rate(X, keys=keys))
    before, after = est.predict_uncertainty(X, keys=keys), restored.predict_uncertainty(X, keys=keys)
    assert (before is None) == (after is None)
    if before is not None:
        np.testing.assert_array_equal(after, before)
    # Training goes on identically after a resume (optimizer moments, buffers and RNG state all came back).
    rng = np.random.default_rng(5)
    for _ in range(5):  # enough updates to cross a gbdt refit
        passes, trials = labels(np.full(N_PROMPTS, 0.5), rng)
        est.partial_fit(X, passes, trials, keys=keys)
        restored.partial_fit(X, passes, trials, keys=keys)
    np.testing.assert_array_equal(restored.predict_pass_rate(X, keys=keys), est.predict_pass_rate(X, keys=keys))


def test_fresh_state_round_trips(name, tmp_path):
    est = make_estimator(name)
    save_state({"estimator": est.state_dict()}, str(tmp_path))
    restored = make_estimator(name)
    restored.load_state_dict(load_state(str(tmp_path))["estimator"])
    X, _, keys, _ = make_data()
    np.testing.assert_array_equal(restored.predict_pass_rate(X, keys=keys), est.predict_pass_rate(X, keys=keys))


def test_deterministic_under_a_seed(name):
    X, keys, rounds = standard_rounds(seed=3)
    a = fit_rounds(make_estimator(name), X, keys, rounds).predict_pass_rate(X, keys=keys)
    b = fit_rounds(make_estimator(name), X, keys, rounds).predict_pass_rate(X, keys=keys)
    np.testing.assert_array_equal(a, b)


def test_rows_with_nan_features_are_ignored(name):
    X, keys, rounds = standard_rounds()
    clean = fit_rounds(make_estimator(name), X, keys, rounds)
    bad = np.vstack([X, np.full((1, N_FEATURES), np.nan)])
    bad[0, 0] = np.inf
    bad_keys = np.append(keys, 12345)
    dirty = make_estimator(name)
    for passes, trials in rounds:
        dirty.partial_fit(bad[1:], np.append(passes[1:], 8.0), np.append(trials[1:], 8.0), keys=bad_keys[1:])
        dirty.partial_fit(bad[:1], passes[:1], trials[:1], keys=bad_keys[:1])  # only an inf row: a no-op
    reference = make_estimator(name)
    for passes, trials in rounds:
        reference.partial_fit(X[1:], passes[1:], trials[1:], keys=keys[1:])
    np.testing.assert_allclose(
        dirty.predict_pass_rate(X, keys=keys), reference.predict_pass_rate(X, keys=keys), rtol=0, atol=1e-12
    )
    # Predicting on a batch with a broken row leaves the clean rows' predictions unchanged.
    p = clean.predict_pass_rate(bad, keys=bad_keys)
    np.testing.assert_allclose(p[1:N_PROMPTS], clean.predict_pass_rate(X[1:], keys=keys[1:]), rtol=0, atol=1e-12)
    assert np.isnan(p[-1]) or 0 <= p[-1] <= 1


def test_empty_batch_is_a_no_op(name):
    X, keys, rounds = standard_rounds()
    empty = np.zeros((0, N_FEATURES))
    est = make_estimator(name)
    est.partial_fit(empty, [], [], keys=np.zeros(0, dtype=np.int64))
    fresh = make_estimator(name)
    np.testing.assert_array_equal(est.predict_pass_rate(X, keys=keys), fresh.predict_pass_rate(X, keys=keys))
    fit_rounds(est, X, keys, rounds)
    before = est.predict_pass_rate(X, keys=keys)
    est.partial_fit(empty, [], [], keys=np.zeros(0, dtype=np.int64))
    np.testing.assert_array_equal(est.predict_pass_rate(X, keys=keys), before)
    # A group with no scorable completion (trials == 0) teaches nothing either.
    est.partial_fit(X[:3], np.zeros(3), np.zeros(3), keys=keys[:3])
    np.testing.assert_array_equal(est.predict_pass_rate(X, keys=keys), before)


def test_impossible_labels_are_rejected(name):
    X, _, keys, _ = make_data()
    est = make_estimator(name)
    with pytest.raises(ValueError, match="passes"):
        est.partial_fit(X[:2], [9.0, 1.0], [8.0, 8.0], keys=keys[:2])
    with pytest.raises(ValueError, match="same length"):
        est.partial_fit(X[:2], [1.0], [8.0, 8.0], keys=keys[:2])
    with pytest.raises(ValueError, match="2-D"):
        est.partial_fit(X[0], [1.0], [8.0], keys=keys[:1])


def test_feature_width_is_checked_after_fitting(name):
    X, keys, rounds = standard_rounds()
    est = fit_rounds(make_estimator(name), X, keys, rounds)
    if getattr(est, "n_features_in_", None) is None:
        pytest.skip(f"{name} does not use the features")
    with pytest.raises(ValueError, match="features"):
        est.predict_pass_rate(np.hstack([X, X[:, :1]]), keys=keys)


# ----------------------------------------------------------------------------------- estimator-specific checks
def test_beta_unseen_prompts_keep_the_prior_and_old_evidence_fades():
    est = make_estimator("beta", forgetting=0.5)
    X = np.zeros((2, 0))
    est.partial_fit(X, [8.0, 0.0], [8.0, 8.0], keys=[1, 2])
    p = est.predict_pass_rate(np.zeros((3, 0)), keys=[1, 2, 3])
    assert p[0] > 0.8 and p[1] < 0.2 and p[2] == 0.5
    sd_fresh = est.predict_uncertainty(np.zeros((1, 0)), keys=[1])[0]
    for _ in range(5):  # other prompts' updates age prompt 1's evidence toward the prior
        est.partial_fit(np.zeros((1, 0)), [4.0], [8.0], keys=[99])
    assert 0.5 < est.predict_pass_rate(np.zeros((1, 0)), keys=[1])[0] < p[0]
    assert est.predict_uncertainty(np.zeros((1, 0)), keys=[1])[0] > sd_fresh
    with pytest.raises(ValueError, match="keys"):
        est.predict_pass_rate(np.zeros((1, 0)))


def test_beta_memory_is_bounded_and_evicts_least_recently_updated():
    est = make_estimator("beta", max_prompts=3)
    for key in range(5):
        est.partial_fit(np.zeros((1, 0)), [8.0], [8.0], keys=[key])
    assert len(est.state_dict()["keys_"]) == 3
    p = est.predict_pass_rate(np.zeros((5, 0)), keys=np.arange(5))
    assert (p[:2] == 0.5).all() and (p[2:] > 0.5).all()


def test_gbdt_refits_on_schedule_and_uses_prior_before_enough_data():
    est = make_estimator("gbdt", min_samples=40, refit_every=3)
    X, true_rate, keys, rng = make_data(n=20)
    est.partial_fit(X, *labels(true_rate, rng), keys=keys)
    assert est.model_ is None  # 20 < min_samples: predicts the observed mean rate
    np.testing.assert_allclose(est.predict_pass_rate(X), est.base_rate_)
    est.partial_fit(X, *labels(true_rate, rng), keys=keys)
    assert est.model_ is not None and est.fit_update_ == 2
    est.partial_fit(X, *labels(true_rate, rng), keys=keys)
    est.partial_fit(X, *labels(true_rate, rng), keys=keys)
    assert est.fit_update_ == 2  # not yet refit_every updates since
    est.partial_fit(X, *labels(true_rate, rng), keys=keys)
    assert est.fit_update_ == 5


def test_ranking_confidence_head_trains_only_with_targets():
    X, true_rate, keys, rng = make_data()
    passes, trials = labels(true_rate, rng)
    without = make_estimator("ranking").partial_fit(X, passes, trials, keys=keys)
    with_conf = make_estimator("ranking").partial_fit(X, passes, trials, keys=keys, confidence=np.full(N_PROMPTS, 0.9))
    for _ in range(20):
        with_conf.partial_fit(X, passes, trials, keys=keys, confidence=np.full(N_PROMPTS, 0.9))
    assert with_conf.predict_confidence(X).mean() > without.predict_confidence(X).mean() + 0.1
    with pytest.raises(ValueError, match="confidence"):
        without.partial_fit(X, passes, trials, confidence=np.full(N_PROMPTS, 2.0))


def test_sparse_input_is_accepted_or_refused_clearly(name):
    """Wide text features are sparse: an estimator that accepts them gives the same predictions as on the dense
    copy; one that does not says so, naming the way out, instead of failing somewhere deep inside."""
    import scipy.sparse as sp

    X, keys, rounds = standard_rounds()
    X = np.where(np.abs(X) > 0.8, X, 0.0)  # mostly zeros, like TF-IDF
    est = make_estimator(name)
    if not getattr(est, "accepts_sparse", False):
        with pytest.raises(ValueError, match="hierarchical"):
            fit_rounds(est, sp.csr_matrix(X), keys, rounds)
        return
    dense = fit_rounds(make_estimator(name), X, keys, rounds)
    sparse = fit_rounds(est, sp.csr_matrix(X), keys, rounds)
    np.testing.assert_allclose(sparse.predict_pass_rate(sp.csr_matrix(X), keys=keys),
                               dense.predict_pass_rate(X, keys=keys), atol=1e-8)


def test_hierarchical_unseen_prompts_get_the_content_prior_seen_ones_their_record():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    true_rate = 1.0 / (1.0 + np.exp(-2.0 * X[:, 0] - rng.normal(size=200)))  # content explains part of it
    keys = np.arange(200, dtype=np.int64)
    est = make_estimator("hierarchical", prior_strength="auto")
    for _ in range(4):  # the first 150 prompts are rolled out each round
        est.partial_fit(X[:150], rng.binomial(8, true_rate[:150]).astype(float), np.full(150, 8.0), keys=keys[:150])
    p = est.predict_pass_rate(X, keys=keys)
    content = est.predict_pass_rate(X)  # without keys: the content prior alone
    np.testing.assert_allclose(p[150:], content[150:])  # unseen: the prior exactly
    assert np.corrcoef(content[150:], true_rate[150:])[0, 1] > 0.6  # the content model generalises
    assert 1.0 < est.kappa_ < 200.0  # fitted prior strength, inside its range
    # A seen prompt whose record disagrees with its content moves toward its record, and is more certain.
    est.partial_fit(X[:1], [8.0], [8.0], keys=keys[:1])
    est.partial_fit(X[:1], [8.0], [8.0], keys=keys[:1])
    assert est.predict_pass_rate(X[:1], keys=keys[:1])[0] > est.predict_pass_rate(X[:1])[0]
    sd_seen = est.predict_uncertainty(X[:150], keys=keys[:150])
    sd_unseen = est.predict_uncertainty(X[150:], keys=keys[150:])
    assert sd_seen.mean() < sd_unseen.mean()


@pytest.mark.parametrize("name", ["beta", "hierarchical"])
def test_forgetting_by_observation_keeps_a_waiting_prompts_record(name):
    """``forgetting_unit="observation"``: a skipped prompt's evidence does not fade while others are updated; its
    older groups shrink once per new group of its own. ``"round"``: every update round ages every record."""
    X = np.zeros((1, 2))
    by_obs = make_estimator(name, forgetting=0.5, forgetting_unit="observation")
    by_round = make_estimator(name, forgetting=0.5, forgetting_unit="round")
    for est in (by_obs, by_round):
        est.partial_fit(np.zeros((2, 2)), [8.0, 4.0], [8.0, 8.0], keys=np.array([1, 2]))
        for _ in range(6):  # prompt 1 waits while prompt 2 keeps being rolled out
            est.partial_fit(X, [4.0], [8.0], keys=np.array([2]))
    waiting = lambda est: est.predict_uncertainty(X, keys=np.array([1]))[0]  # noqa: E731
    assert waiting(by_obs) < waiting(by_round)  # kept its 8 trials vs faded toward the prior
    assert by_obs.predict_pass_rate(X, keys=np.array([1]))[0] > by_round.predict_pass_rate(X, keys=np.array([1]))[0]
    # One more group of prompt 1 (0 of 8): by observation, its first group now counts half.
    by_obs.partial_fit(X, [0.0], [8.0], keys=np.array([1]))
    if name == "beta":
        alpha, beta = by_obs.posterior(np.array([1]))
        assert alpha[0] == pytest.approx(1.0 + 0.5 * 8) and beta[0] == pytest.approx(1.0 + 8)
    else:
        passes, fails = by_obs.record_.posterior(np.array([1]))
        assert passes[0] == pytest.approx(0.5 * 8, abs=1e-6) and fails[0] == pytest.approx(8, abs=1e-6)
    with pytest.raises(ValueError, match="forgetting_unit"):
        make_estimator(name, forgetting_unit="epoch")
