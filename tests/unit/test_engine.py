"""The engine on its own: PromptSelector's verbs, guarantees, failure handling and state, with no trainer."""

import warnings

import numpy as np
import pytest

from depo_trl import PromptSelector
from depo_trl.estimators import PassRateEstimator
from depo_trl.state import load_state, save_state

G = 8


def _pool(n=200, seed=0):
    """Prompts whose pass rate is a function of their length in words (what the length features see)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(1, 40, size=n)
    texts = [" ".join(f"w{i}_{j}" for j in range(k)) for i, k in enumerate(words)]
    pass_rate = np.clip(1.0 - words / 30.0, 0.0, 1.0)  # short: easy, long: hopeless
    return texts, pass_rate


def _run(selector, texts, pass_rate, rounds, n_candidates=64, n_select=16, seed=1):
    rng = np.random.default_rng(seed)
    useful = 0
    for _ in range(rounds):
        pool = rng.choice(len(texts), size=n_candidates, replace=False)
        scores = selector.score([texts[i] for i in pool])
        choice = selector.select(scores, n_select)
        assert len(choice.indices) == n_select == len(set(choice.indices.tolist()))
        passes = rng.binomial(G, pass_rate[pool[choice.indices]])
        outcome = selector.observe(scores, choice.indices, passes, [G] * n_select)
        useful += int(outcome.useful.sum())
    return useful / (rounds * n_select)


def test_selector_learns_to_pick_useful_prompts():
    texts, pass_rate = _pool()
    depo = PromptSelector(group_size=G, features=["length"], revisit_after=None, seed=0)
    uniform = PromptSelector(group_size=G, features=["length"], exploration=0.0, seed=0)
    uniform.select = lambda scores, n: _uniform(scores, n)  # the same loop, selection replaced by a coin
    depo_share = _run(depo, texts, pass_rate, rounds=30)
    uniform_share = _run(uniform, texts, pass_rate, rounds=30)
    assert depo_share > uniform_share + 0.15, (depo_share, uniform_share)
    s = depo.stats
    assert s.rounds == 30 and s.candidates_scored == 30 * 64 and s.prompts_rolled_out == 30 * 16
    assert s.prompts_skipped == 30 * 48 and s.completions_generated == 30 * 16 * G
    assert sum(s.skipped_by_reason[k] for k in ("too_easy", "too_hard")) > 0
    assert "rolled out" in depo.summary()


def _uniform(scores, n, rng=np.random.default_rng(5)):
    from depo_trl.selection import Selection

    chosen = rng.choice(len(scores), size=n, replace=False)
    return Selection(chosen, ["uniform"] * n, np.zeros(len(scores), dtype=bool))


def test_history_is_keyed_by_the_given_keys_and_counts_rollouts():
    selector = PromptSelector(group_size=G, features=["history"])
    texts = ["a", "b", "c"]
    scores = selector.score(texts, keys=[1, 2, 3])
    assert scores.times_seen.tolist() == [0, 0, 0] and np.isnan(scores.rounds_since).all()
    selector.observe(scores, [0, 2], [3, 8], [8, 8])
    again = selector.score(["x", "y", "z"], keys=[1, 2, 3])  # the key, not the text, identifies a prompt
    assert again.times_seen.tolist() == [1, 0, 1]
    assert again.rounds_since[0] == 0 and np.isnan(again.rounds_since[1])


def test_unlabelled_groups_teach_nothing():
    selector = PromptSelector(group_size=G, features=["length"])
    scores = selector.score(["one two", "three"])
    outcome = selector.observe(scores, [0, 1], [0, 0], [0, 0])
    assert not outcome.labelled.any() and selector.stats.labelled_groups == 0
    assert selector.estimator.n_updates_ == 0
    with pytest.raises(ValueError, match="0 <= passes <= trials"):
        selector.observe(scores, [0], [9], [8])


class _Broken(PassRateEstimator):
    def partial_fit(self, X, passes, trials, keys=None):
        raise RuntimeError("boom")

    def predict_pass_rate(self, X, keys=None):
        return np.full(len(X), np.nan)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_failing_estimator_falls_back_to_uniform_and_warns_once():
    selector = PromptSelector(group_size=G, estimator=_Broken(), features=["length"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            scores = selector.score([f"p {i}" for i in range(10)])
            assert scores.failed
            choice = selector.select(scores, 4)
            assert len(set(choice.indices.tolist())) == 4 and set(choice.reasons) == {"uniform"}
            selector.observe(scores, choice.indices, [1, 2, 3, 4], [8] * 4)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("failed to predict" in m for m in messages) == 1
    assert sum("failed to learn" in m for m in messages) == 1
    assert selector.stats.estimator_failures == 6 and selector.stats.rounds == 3
    # The warning points at the caller's line (this loop), not inside depo_trl.
    assert {w.filename for w in caught if issubclass(w.category, RuntimeWarning)} == {__file__}


def test_state_round_trips_through_disk_and_resumes_identically(tmp_path):
    texts, pass_rate = _pool(seed=3)
    first = PromptSelector(group_size=G, features=["length", "history"], seed=7)
    _run(first, texts, pass_rate, rounds=5)
    save_state(first.state_dict(), tmp_path)
    second = PromptSelector(group_size=G, features=["length", "history"], seed=123)
    second.load_state_dict(load_state(tmp_path))
    probe = texts[:64]
    a, b = first.score(probe), second.score(probe)
    np.testing.assert_allclose(a.predicted, b.predicted)
    np.testing.assert_array_equal(first.select(a, 16).indices, second.select(b, 16).indices)  # same RNG state
    assert second.stats.state_dict() == first.stats.state_dict()
    other = PromptSelector(group_size=G, estimator="beta", features=["length", "history"])
    with pytest.raises(ValueError, match="made by estimator"):
        other.load_state_dict(first.state_dict())


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="band must satisfy"):
        PromptSelector(group_size=G, band=(0.9, 0.1))
    with pytest.raises(ValueError, match="Unknown selection policy"):
        PromptSelector(group_size=G, selection="nope")
    with pytest.raises(ValueError, match="group_size"):
        PromptSelector(group_size=0)
    selector = PromptSelector(group_size=G, features=["length", "embedding"])
    with pytest.raises(ValueError, match="no embeddings were passed"):
        selector.score(["a", "b"])
    with pytest.raises(ValueError, match=r"embeddings must be \(n_prompts=2"):
        selector.score(["a", "b"], embeddings=np.zeros((3, 4)))
    scores = selector.score(["a", "b"], embeddings=np.random.default_rng(0).normal(size=(2, 32)))
    assert scores.features.shape[0] == 2
    with pytest.raises(ValueError, match="Cannot select 3"):
        selector.select(scores, 3)


def test_the_readme_loop_runs():
    """The 'Without TRL' snippet of docs/engine.md (moved there from the README), executed as written."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "engine.md").read_text()
    section = readme.split("## Without TRL: the engine in any RL loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["selector"].stats.rounds == 50 and "estimator" in namespace["state"]


@pytest.mark.parametrize("estimator", ["logistic", "gbdt", "ranking", "hierarchical"])
def test_text_features_work_with_every_estimator_by_default(estimator):
    """Wide sparse text is the default only where the estimator accepts it; dense estimators get a dense block."""
    texts, pass_rate = _pool(n=80, seed=4)
    selector = PromptSelector(group_size=G, estimator=estimator, features=["length", "text"], seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an estimator failure would warn and fall back to uniform
        _run(selector, texts, pass_rate, rounds=3, n_candidates=40, n_select=10)
    assert selector.stats.estimator_failures == 0
