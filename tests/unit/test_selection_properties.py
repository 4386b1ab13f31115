"""Property tests (hypothesis) for every selection policy in SELECTION_POLICIES.

Each policy must return exactly n_select distinct candidate indices with one known reason each; the band policy
must stay in band when enough in-band candidates exist; the exploration share must be floor or ceil of its
target every round and right on average; the revisit floor must bound how long any prompt waits.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depo_trl.selection import (
    REASON_BAND,
    REASON_EXPLORE,
    REASON_RANK,
    REASON_REVISIT,
    REASONS,
    SELECTION_POLICIES,
    expected_usefulness,
    expected_usefulness_beta,
    select,
    select_in_band,
)

POLICIES = sorted(SELECTION_POLICIES)
LOW, HIGH = 0.15, 0.85


@st.composite
def rounds(draw):
    """A candidate pool and a request: predictions, optional uncertainty and staleness, and n_select."""
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "extremes", "constant"]))
    if kind == "uniform":
        predicted = rng.random(n)
    elif kind == "extremes":  # mostly near 0 or 1, the real skew
        predicted = np.where(rng.random(n) < 0.5, rng.random(n) * 0.1, 1 - rng.random(n) * 0.1)
    else:
        predicted = np.full(n, draw(st.sampled_from([0.0, 0.5, 1.0])))
    uncertainty = rng.random(n) * 0.3 if draw(st.booleans()) else None
    if draw(st.booleans()):
        rounds_since = rng.integers(0, 20, n).astype(float)
        rounds_since[rng.random(n) < 0.2] = np.nan  # never rolled out
        revisit_after = draw(st.integers(1, 25))
    else:
        rounds_since, revisit_after = None, None
    return dict(
        predicted=predicted,
        n_select=draw(st.integers(0, n)),
        group_size=draw(st.sampled_from([1, 4, 8, 16])),
        exploration=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])),
        uncertainty=uncertainty,
        rounds_since=rounds_since,
        revisit_after=revisit_after,
        seed=seed,
    )


def run(policy, r, rng=None):
    return select(
        policy,
        r["predicted"],
        r["n_select"],
        r["group_size"],
        rng if rng is not None else np.random.default_rng(r["seed"]),
        uncertainty=r["uncertainty"],
        low=LOW,
        high=HIGH,
        exploration=r["exploration"],
        rounds_since=r["rounds_since"],
        revisit_after=r["revisit_after"],
    )


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=150, deadline=None)
@given(r=rounds())
def test_exact_count_unique_indices_and_known_reasons(policy, r):
    sel = run(policy, r)
    n = len(r["predicted"])
    assert len(sel.indices) == r["n_select"] == len(sel.reasons)
    assert len(np.unique(sel.indices)) == len(sel.indices)
    assert ((sel.indices >= 0) & (sel.indices < n)).all()
    assert set(sel.reasons) <= set(REASONS)
    np.testing.assert_array_equal(sel.in_band, (r["predicted"] >= LOW) & (r["predicted"] <= HIGH))
    # Same inputs and seed, same selection.
    again = run(policy, r)
    np.testing.assert_array_equal(again.indices, sel.indices)
    assert again.reasons == sel.reasons


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=100, deadline=None)
@given(r=rounds())
def test_revisit_floor_takes_the_most_overdue_first(policy, r):
    sel = run(policy, r)
    if r["rounds_since"] is None:
        assert REASON_REVISIT not in sel.reasons
        return
    waited = np.nan_to_num(r["rounds_since"], nan=-1.0)
    overdue = np.flatnonzero(waited >= r["revisit_after"])
    revisited = sel.indices[np.array(sel.reasons) == REASON_REVISIT]
    assert len(revisited) == min(len(overdue), r["n_select"])
    assert set(revisited) <= set(overdue)
    if len(revisited):  # nothing left out waited longer than anything taken
        left_out = np.setdiff1d(overdue, revisited)
        if len(left_out):
            assert waited[left_out].max() <= waited[revisited].min()


@pytest.mark.parametrize("policy", ["band", "band_uniform", "band_weighted"])
@settings(max_examples=150, deadline=None)
@given(r=rounds())
def test_band_policy_stays_in_band_when_it_can(policy, r):
    r = dict(r, rounds_since=None, revisit_after=None)
    sel = run(policy, r)
    in_band = sel.in_band
    n_non_explore = r["n_select"] - sel.n_explored
    if in_band.sum() >= n_non_explore:
        assert sel.n_filled == 0
        band_picks = sel.indices[np.array(sel.reasons, dtype=object) == REASON_BAND]
        assert in_band[band_picks].all() and len(band_picks) == n_non_explore
    explored = sel.indices[np.array(sel.reasons, dtype=object) == REASON_EXPLORE]
    assert not in_band[explored].any()  # the band policy explores outside the band


@settings(max_examples=100, deadline=None)
@given(r=rounds())
def test_band_policy_matches_select_in_band(r):
    a = run("band", dict(r, rounds_since=None, revisit_after=None))
    b = select_in_band(
        r["predicted"], r["n_select"], r["group_size"], LOW, HIGH, r["exploration"], np.random.default_rng(r["seed"])
    )
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.reasons == b.reasons


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=25, deadline=None)
@given(
    exploration=st.sampled_from([0.05, 0.1, 0.3, 0.5]),
    n_select=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_exploration_share_is_bounded_every_round_and_exact_on_average(policy, exploration, n_select, seed):
    rng = np.random.default_rng(seed)
    n_candidates, n_rounds = 4 * n_select, 200
    explored = []
    for _ in range(n_rounds):
        # Half the pool far outside the band, so the band policy always has room to explore.
        predicted = np.concatenate([rng.random(n_candidates // 2) * 0.1, 0.2 + 0.6 * rng.random(n_candidates // 2)])
        sel = select(policy, predicted, n_select, 8, rng, exploration=exploration)
        target = exploration * n_select
        assert np.floor(target) <= sel.n_explored <= np.ceil(target)
        explored.append(sel.n_explored)
    # Stochastic rounding: the mean share is exact in expectation; 6 standard errors of a Bernoulli(<=.5) mean.
    tolerance = 6 * 0.5 / (np.sqrt(n_rounds) * n_select)
    assert abs(np.mean(explored) / n_select - exploration) <= tolerance


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=10, deadline=None)
@given(
    n_select=st.integers(1, 8),
    pool_multiple=st.integers(2, 6),
    revisit_after=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_revisit_floor_bounds_every_prompts_wait(policy, n_select, pool_multiple, revisit_after, seed):
    # A pool offered in full every round, where half the prompts are predicted hopeless (pass rate 0) and
    # exploration is off: without the floor they would never be picked.
    rng = np.random.default_rng(seed)
    n = n_select * pool_multiple
    predicted = np.where(np.arange(n) % 2 == 0, 0.0, 0.5)
    last = np.zeros(n)
    longest = np.zeros(n)
    for round_ in range(1, 120):
        rounds_since = round_ - last
        sel = select(policy, predicted, n_select, 8, rng, exploration=0.0, rounds_since=rounds_since,
                     revisit_after=revisit_after)
        longest = np.maximum(longest, rounds_since)
        last[sel.indices] = round_
    # Once overdue, a prompt waits at most for the others ahead of it: ceil(n / n_select) rounds.
    assert longest.max() <= revisit_after + int(np.ceil(n / n_select))


def test_unknown_policy_and_bad_inputs_are_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="band.*thompson.*usefulness"):
        select("greedy", np.array([0.5]), 1, 8, rng)
    with pytest.raises(ValueError, match="Cannot select"):
        select("band", np.array([0.5]), 2, 8, rng)
    with pytest.raises(ValueError, match="NaN"):
        select("usefulness", np.array([np.nan, 0.5]), 1, 8, rng)
    with pytest.raises(ValueError, match="uncertainty"):
        select("thompson", np.array([0.2, 0.5]), 1, 8, rng, uncertainty=np.array([0.1]))
    with pytest.raises(ValueError, match="rounds_since"):
        select("band", np.array([0.2, 0.5]), 1, 8, rng, rounds_since=np.array([1.0]), revisit_after=3)


@settings(max_examples=100, deadline=None)
@given(
    p=st.floats(0.0, 1.0),
    sd=st.floats(0.0, 0.5),
    group=st.sampled_from([1, 2, 4, 8, 16]),
)
def test_uncertain_estimates_are_less_surely_useful(p, sd, group):
    certain = expected_usefulness(np.array([p]), group)[0]
    uncertain = expected_usefulness_beta(np.array([p]), np.array([sd]), group)[0]
    assert 0.0 <= uncertain <= certain + 1e-6  # spreading p out can only make an all-equal group likelier
    spike = expected_usefulness_beta(np.array([p]), np.array([0.0]), group)[0]
    assert abs(spike - certain) < 1e-4


def test_usefulness_prefers_mid_rates_and_thompson_explores_uncertain_ones():
    rng = np.random.default_rng(0)
    predicted = np.array([0.02, 0.5, 0.98, 0.3])
    sel = select("usefulness", predicted, 2, 8, rng, exploration=0.0)
    assert set(sel.indices) == {1, 3}
    # A prompt predicted hopeless but very uncertain sometimes wins under Thompson sampling, never when certain.
    predicted = np.array([0.05, 0.9])  # usefulness at G=8: 0.34 vs 0.57
    wins_uncertain = sum(
        select("thompson", predicted, 1, 8, rng, uncertainty=np.array([0.1, 0.01]), exploration=0.0).indices[0] == 0
        for _ in range(300)
    )
    wins_certain = sum(
        select("thompson", predicted, 1, 8, rng, uncertainty=np.array([0.001, 0.01]), exploration=0.0).indices[0] == 0
        for _ in range(300)
    )
    assert wins_uncertain > 10 and wins_certain == 0


def test_band_uniform_draws_in_band_picks_at_random_where_band_takes_the_most_useful():
    # Six candidates in band, two picks, no exploration: "band" always takes the two nearest 0.5, "band_uniform"
    # gives every in-band candidate the same chance (2/6), the paper's rule. Out-of-band ones are never picked.
    predicted = np.array([0.5, 0.45, 0.2, 0.8, 0.84, 0.16, 0.99, 0.01])
    rng = np.random.default_rng(0)
    counts = {policy: np.zeros(len(predicted)) for policy in ("band", "band_uniform")}
    for _ in range(3000):
        for policy in counts:
            counts[policy][select(policy, predicted, 2, 8, rng, exploration=0.0).indices] += 1
    assert counts["band"][[0, 1]].tolist() == [3000, 3000]
    share = counts["band_uniform"][:6] / 3000
    assert np.abs(share - 2 / 6).max() < 0.04, share
    assert counts["band_uniform"][6:].sum() == 0


def test_band_weighted_explores_mostly_just_outside_the_band_and_still_reaches_the_extremes():
    # One in-band candidate, one pick of exploration per round (exploration 1.0 of a single slot is refused by
    # training configs but allowed here): "band" explores the three outside candidates alike, "band_weighted" in
    # proportion to expected usefulness at G = 8: 0.9 -> 0.57, 0.99 -> 0.077, 0.001 -> 0.008.
    predicted = np.array([0.5, 0.9, 0.99, 0.001])
    rng = np.random.default_rng(0)
    counts = {policy: np.zeros(len(predicted)) for policy in ("band", "band_weighted")}
    for _ in range(4000):
        for policy in counts:
            sel = select(policy, predicted, 1, 8, rng, exploration=1.0)
            assert sel.reasons == [REASON_EXPLORE]
            counts[policy][sel.indices] += 1
    assert counts["band"][0] == counts["band_weighted"][0] == 0
    assert np.abs(counts["band"][1:] / 4000 - 1 / 3).max() < 0.04
    useful = 1 - predicted[1:] ** 8 - (1 - predicted[1:]) ** 8
    assert np.abs(counts["band_weighted"][1:] / 4000 - useful / useful.sum()).max() < 0.03
    assert counts["band_weighted"][3] > 0  # a candidate predicted almost certain to fail still comes back


def test_proportional_draws_in_proportion_to_usefulness_without_a_band():
    # One pick a round, no exploration: each candidate comes up in proportion to 1 - p^8 - (1-p)^8, so a prompt
    # predicted at 0.1 (just below the band, a mixed group about half the time) keeps about half the chances of one
    # at 0.5, and one predicted at 0.001 is almost never drawn; "band" only ever takes the one at 0.5.
    predicted = np.array([0.5, 0.1, 0.93, 0.001])
    rng = np.random.default_rng(0)
    counts = np.zeros(len(predicted))
    for _ in range(4000):
        sel = select("proportional", predicted, 1, 8, rng, exploration=0.0)
        assert sel.reasons == [REASON_RANK]
        counts[sel.indices] += 1
    useful = 1 - predicted**8 - (1 - predicted) ** 8
    assert np.abs(counts / 4000 - useful / useful.sum()).max() < 0.03
    assert counts[1] > 0.4 * counts[0]
    assert select("band", predicted, 1, 8, rng, exploration=0.0).indices.tolist() == [0]
