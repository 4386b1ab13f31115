"""The exploration yield: what an exploration pick is worth against a chosen one, and the share it earns."""

import numpy as np
import pytest

from depo_trl import PromptSelector
from depo_trl.exploration import ExplorationYield

G = 8


def _round(yield_, n_policy, policy_useful, n_explore, explore_useful):
    reasons = ["band"] * n_policy + ["explore"] * n_explore
    useful = [True] * policy_useful + [False] * (n_policy - policy_useful)
    useful += [True] * explore_useful + [False] * (n_explore - explore_useful)
    yield_.update(reasons, useful, [True] * len(reasons))


def test_no_data_keeps_the_full_share_and_a_fixed_share_never_moves():
    adaptive, fixed = ExplorationYield(0.1), ExplorationYield(0.1, adaptive=False)
    assert adaptive.ratio() == 1.0 and adaptive.share() == 0.1
    for _ in range(50):  # exploration picks never useful, policy picks always
        for y in (adaptive, fixed):
            _round(y, 14, 14, 2, 0)
    assert fixed.share() == 0.1  # reported only
    assert fixed.ratio() < 0.1 and adaptive.ratio() == fixed.ratio()
    assert adaptive.share() == pytest.approx(0.1 * adaptive.floor)  # down to the floor, never to zero


def test_the_share_follows_the_ratio_between_the_thresholds_and_comes_back():
    y = ExplorationYield(0.2, adaptive=True, ratio_low=0.3, ratio_high=0.6, decay=1.0)
    for _ in range(200):
        _round(y, 10, 8, 10, 4)  # exploration useful 0.4, policy 0.8: ratio ~0.5
    assert y.ratio() == pytest.approx(0.5, abs=0.01)
    assert y.share() == pytest.approx(0.2 * (y.ratio() - 0.3) / 0.3)
    y.decay = 0.9
    for _ in range(100):  # the excluded region starts to yield: the full share comes back
        _round(y, 10, 8, 10, 8)
    assert y.share() == 0.2


def test_the_default_thresholds_keep_the_share_where_picks_pay_half_and_cut_it_where_they_pay_a_third():
    """The ratios measured on the proving ground's easy pool (~0.5) and on the replay log (~0.35)."""
    pays, wasted = ExplorationYield(0.1, decay=1.0), ExplorationYield(0.1, decay=1.0)
    for _ in range(200):
        _round(pays, 10, 8, 10, 4)  # exploration useful 0.4, policy 0.8: ratio ~0.5
        _round(wasted, 10, 9, 10, 3)  # 0.3 against 0.9: ratio ~0.33
    assert pays.share() == pytest.approx(0.1, abs=0.005)
    assert wasted.share() == pytest.approx(0.1 * wasted.floor)


def test_unlabelled_groups_and_uniform_fallback_picks_count_for_neither_side():
    y = ExplorationYield(0.1, adaptive=True)
    y.update(["uniform", "explore", "band"], [True, True, False], [True, False, True])
    np.testing.assert_array_equal(y.explore_, [0, 0])
    np.testing.assert_array_equal(y.policy_, [1, 0])


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="a zero floor would stop exploring"):
        ExplorationYield(0.1, floor=0.0)
    with pytest.raises(ValueError, match="below ratio_high"):
        ExplorationYield(0.1, ratio_low=0.6, ratio_high=0.3)


def _pool(n=300, seed=0):
    rng = np.random.default_rng(seed)
    words = rng.integers(1, 40, size=n)
    texts = [" ".join(f"w{i}_{j}" for j in range(k)) for i, k in enumerate(words)]
    return texts, np.clip(1.0 - words / 30.0, 0.0, 1.0)


def _rounds(selector, texts, pass_rate, rounds, seed=1, warmup=0):
    rng = np.random.default_rng(seed)
    explored = []
    for r in range(rounds):
        pool = rng.choice(len(texts), size=64, replace=False)
        scores = selector.score([texts[i] for i in pool])
        if r < warmup:  # GRPO's own batch: observed without a select, so it is no evidence either way
            chosen = np.arange(16)
        else:
            choice = selector.select(scores, 16)
            chosen = choice.indices
            explored.append(choice.n_explored)
        selector.observe(scores, chosen, rng.binomial(G, pass_rate[pool[chosen]]), [G] * 16)
    return explored


def test_the_engine_measures_the_yield_from_its_own_selections_and_adapts_when_asked():
    texts, pass_rate = _pool()
    fixed = PromptSelector(group_size=G, features=["length"], exploration=0.25, adaptive_exploration=False,
                           revisit_after=None, seed=0)
    adaptive = PromptSelector(group_size=G, features=["length"], exploration=0.25, revisit_after=None, seed=0)
    _rounds(fixed, texts, pass_rate, 3, warmup=3)
    assert fixed.exploration_yield.explore_.sum() == fixed.exploration_yield.policy_.sum() == 0  # warm-up only
    explored_fixed = _rounds(fixed, texts, pass_rate, 60)
    explored_adaptive = _rounds(adaptive, texts, pass_rate, 60)
    # Out-of-band prompts here are mostly hopeless or trivial: exploration picks are mixed far less often.
    assert fixed.exploration_yield.ratio() < 0.6
    assert fixed.exploration_yield.share() == 0.25
    assert adaptive.exploration_yield.share() < 0.25
    assert sum(explored_adaptive[-20:]) < sum(explored_fixed[-20:])


def test_explicit_reasons_win_and_a_mismatch_is_refused():
    texts, pass_rate = _pool()
    selector = PromptSelector(group_size=G, features=["length"], revisit_after=None, seed=0)
    scores = selector.score(texts[:32])
    selector.select(scores, 8)
    outcome = selector.observe(scores, np.arange(4), [4, 0, 8, 2], [G] * 4, reasons=["explore"] * 4)
    np.testing.assert_array_equal(selector.exploration_yield.explore_, [4, 2])
    assert outcome.exploration_yield == selector.exploration_yield.ratio()
    with pytest.raises(ValueError, match="3 reasons for 4 rolled-out prompts"):
        selector.observe(scores, np.arange(4), [1] * 4, [G] * 4, reasons=["band"] * 3)


def test_the_yield_survives_a_checkpoint_and_old_states_load():
    texts, pass_rate = _pool()
    first = PromptSelector(group_size=G, features=["length"], adaptive_exploration=True, seed=3)
    _rounds(first, texts, pass_rate, 10)
    second = PromptSelector(group_size=G, features=["length"], adaptive_exploration=True, seed=9)
    second.load_state_dict(first.state_dict())
    assert second.exploration_yield.ratio() == first.exploration_yield.ratio()
    assert second.exploration_yield.share() == first.exploration_yield.share()
    old = first.state_dict()
    del old["exploration_yield"]  # saved before the yield existed
    third = PromptSelector(group_size=G, features=["length"], adaptive_exploration=True, seed=9)
    third.load_state_dict(old)
    assert third.exploration_yield.ratio() == 1.0
