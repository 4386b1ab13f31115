"""Which candidate prompts get rolled out: the selection rule, in plain numpy.

Given a predicted pass rate ``p`` per candidate, pick exactly ``n_select`` of them:

1. Exploration: a share ``exploration`` of the picks (stochastically rounded, so the expected share is exact
   even for small batches) is drawn uniformly from candidates *outside* the band, so the estimator keeps
   seeing them and a prompt it once judged too easy or too hard can come back.
2. Band: the rest come from candidates with ``low <= p <= high``, best first by expected usefulness:
   a group of ``G`` completions teaches nothing when all pass or all fail, which happens with probability
   ``p**G + (1-p)**G``, so usefulness is ``1 - p**G - (1-p)**G``. Ties are broken at random.
3. Fill: when too few candidates are in band, the remaining slots go to the most useful out-of-band ones,
   so the batch is always full.

Every pick carries a reason (``band``, ``explore`` or ``fill``) for metrics and the audit trail.

That is the ``band`` policy (the paper's rule plus exploration). ``select`` runs any policy in
``SELECTION_POLICIES`` with the same guarantees (exactly ``n_select`` distinct picks, each with a reason):

- ``band``: as above.
- ``band_uniform``: as ``band``, but the in-band picks are drawn at random (the paper's literal rule: every
  candidate in band is as good as any other); the fill still goes best first.
- ``band_weighted``: as ``band``, but the exploration draw weighs each out-of-band candidate by its expected
  usefulness, so it goes mostly to candidates just outside the band and rarely to ones predicted (near) certain
  to pass or to fail; all of them stay reachable.
- ``usefulness``: no hard band; rank every candidate by expected usefulness. With an uncertainty ``sd`` per
  candidate the pass rate is taken as ``Beta(a, b)`` with mean ``p`` and that sd, and usefulness is its
  expectation ``1 - E[p**G] - E[(1-p)**G]`` (Beta moments: ``E[p**G] = prod_k (a+k)/(a+b+k)``): an uncertain
  estimate is less sure to give a mixed group.
- ``thompson``: draw one pass rate per candidate from that Beta and rank by the usefulness of the draw, so
  uncertain candidates sometimes win (exploration in proportion to doubt). Without an uncertainty the sd is the
  one of a single observed group: ``sqrt(p (1-p) / (G + 1))``.

- ``proportional``: no hard band and no ranking; every candidate is drawn (without replacement) with probability
  in proportion to its expected usefulness, so a prompt predicted at 0.1 (a mixed group half the time with
  ``G = 8``) still gets about half the chances of one at 0.5, while one predicted (near) certain to pass or fail
  almost never comes up. Ranking best first starves whole regions of the pool that sit just outside the band
  but are learnable; drawing in proportion keeps GRPO's coverage and drops only the predicted waste.

``usefulness``, ``thompson`` and ``proportional`` draw the exploration share uniformly from the candidates they
did not rank in (reason ``explore``); their ranked (or, for ``proportional``, drawn) picks have reason ``rank``.

Revisit floor (every policy): given ``rounds_since`` (rounds since each candidate was last rolled out; NaN for
never) and ``revisit_after``, candidates with ``rounds_since >= revisit_after`` are picked first, most overdue
first (reason ``revisit``), so no prompt is starved by a stale verdict; the policy fills the remaining slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

REASON_BAND, REASON_EXPLORE, REASON_FILL = "band", "explore", "fill"
REASON_RANK, REASON_REVISIT = "rank", "revisit"
REASON_UNIFORM = "uniform"  # the estimator failed: a uniform pick
REASONS = (REASON_BAND, REASON_EXPLORE, REASON_FILL, REASON_RANK, REASON_REVISIT, REASON_UNIFORM)

# Why a candidate was not rolled out: the one vocabulary of the engine's totals and the audit trail (which writes
# ``skip_<reason>``, the in-band one shortened to ``skip_in_band``).
SKIP_TOO_EASY, SKIP_TOO_HARD, SKIP_IN_BAND = "too_easy", "too_hard", "in_band_not_needed"
SKIP_UNIFORM = "uniform"  # the estimator failed: no prediction to judge by
SKIP_REASONS = (SKIP_TOO_EASY, SKIP_TOO_HARD, SKIP_IN_BAND)


def check_band(low: float, high: float, names: tuple[str, str] = ("band low", "band high")) -> tuple[float, float]:
    """The target band as floats; refuses anything but ``0 <= low < high <= 1`` (``names`` say what to fix)."""
    for name, value in zip(names, (low, high)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            0.0 <= value <= 1.0
        ):
            raise ValueError(f"{name} must be a pass rate in [0, 1], got {value!r}. The paper uses 0.15 and 0.85.")
    if low >= high:
        raise ValueError(
            f"{names[0]} ({low}) must be below {names[1]} ({high}): the band must satisfy 0 <= low < high <= 1. "
            "Swap them, or widen the band (the paper uses [0.15, 0.85])."
        )
    return float(low), float(high)


def check_exploration(exploration: float, name: str = "exploration", *, allow_all: bool = False) -> float:
    """The exploration share as a float; refuses anything outside ``[0, 1)``. A training run never explores with
    every pick (it would never use its predictions); ``select`` itself accepts 1 (``allow_all``): all picks uniform
    from what the policy would not pick."""
    valid = not isinstance(exploration, bool) and isinstance(exploration, (int, float, np.integer, np.floating))
    if not valid or not (0.0 <= exploration <= 1.0 if allow_all else 0.0 <= exploration < 1.0):
        interval = "[0, 1]" if allow_all else "[0, 1)"
        raise ValueError(
            f"{name} must be in {interval}, got {exploration!r}. It is the share of rollouts spent outside what the "
            "policy would pick; 0.1 is a good default."
        )
    return float(exploration)


def in_band(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Whether each predicted pass rate lies in the band ``[low, high]`` (NaN never does)."""
    p = np.asarray(p, dtype=np.float64)
    return (p >= low) & (p <= high)


def skip_reason(predicted: float, low: float, high: float) -> str:
    """Why a candidate with this prediction was not rolled out (one of ``SKIP_REASONS``, or ``SKIP_UNIFORM``)."""
    if not np.isfinite(predicted):
        return SKIP_UNIFORM
    if predicted > high:
        return SKIP_TOO_EASY
    if predicted < low:
        return SKIP_TOO_HARD
    return SKIP_IN_BAND


def expected_usefulness(p: np.ndarray, group_size: int) -> np.ndarray:
    """Probability that a group of ``group_size`` completions with pass rate ``p`` is not all-equal."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    return 1.0 - p**group_size - (1.0 - p) ** group_size


@dataclass
class Selection:
    """The outcome of one selection round."""

    indices: np.ndarray  # positions into the candidate list, in the order they will be rolled out
    reasons: list[str]  # one of REASON_* per selected index
    in_band: np.ndarray  # bool per candidate

    @property
    def n_explored(self) -> int:
        return self.reasons.count(REASON_EXPLORE)

    @property
    def n_filled(self) -> int:
        return self.reasons.count(REASON_FILL)


def _ranked(candidates: np.ndarray, score: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``candidates`` sorted by ``score`` descending, ties in random order."""
    if len(candidates) == 0:
        return candidates
    tie_break = rng.random(len(candidates))
    order = np.lexsort((tie_break, -score[candidates]))
    return candidates[order]


def select_in_band(
    pass_rate: np.ndarray,
    n_select: int,
    group_size: int,
    low: float,
    high: float,
    exploration: float,
    rng: np.random.Generator,
    in_band_at_random: bool = False,
    explore_by_usefulness: bool = False,
) -> Selection:
    """Pick exactly ``n_select`` candidates (see the module docstring for the rule). When more candidates are in
    band than needed, the most useful win, or with ``in_band_at_random`` a uniform draw of them. With
    ``explore_by_usefulness`` the exploration draw weighs each out-of-band candidate by its expected usefulness
    (every candidate with ``0 < p < 1`` can still be drawn)."""
    pass_rate = np.asarray(pass_rate, dtype=np.float64)
    n = len(pass_rate)
    if n_select > n:
        raise ValueError(f"Cannot select {n_select} prompts from {n} candidates.")
    if not np.isfinite(pass_rate).all():
        raise ValueError("Predicted pass rates contain NaN or infinity.")
    band = in_band(pass_rate, low, high)
    usefulness = expected_usefulness(pass_rate, group_size)
    inside = np.flatnonzero(band)
    outside = np.flatnonzero(~band)

    n_explore = min(_n_explore(exploration, n_select, rng), len(outside))
    explored = (_draw_by_usefulness(outside, usefulness[outside], n_explore, rng) if explore_by_usefulness
                else _uniform_from(outside, n_explore, rng))

    n_band = min(n_select - n_explore, len(inside))
    banded = (rng.permutation(inside) if in_band_at_random else _ranked(inside, usefulness, rng))[:n_band]

    remaining = np.setdiff1d(outside, explored, assume_unique=True)
    filled = _ranked(remaining, usefulness, rng)[: n_select - n_explore - n_band]

    indices = np.concatenate([banded, explored, filled]).astype(np.int64)
    reasons = [REASON_BAND] * len(banded) + [REASON_EXPLORE] * len(explored) + [REASON_FILL] * len(filled)
    return Selection(indices=indices, reasons=reasons, in_band=band)


# ------------------------------------------------------------------------------------------ uncertainty-aware
def _beta_parameters(p: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of the Beta with mean ``p`` and standard deviation ``sd`` (sd capped below its maximum)."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    spread = p * (1 - p)  # the largest variance a distribution on [0, 1] with mean p can have
    var = np.clip(np.asarray(sd, dtype=np.float64) ** 2, 1e-12 * spread, (1 - 1e-6) * spread)
    concentration = p * (1 - p) / var - 1.0  # a + b
    return p * concentration, (1 - p) * concentration


def expected_usefulness_beta(p: np.ndarray, sd: np.ndarray | None, group_size: int) -> np.ndarray:
    """``E[1 - q**G - (1-q)**G]`` for ``q ~ Beta`` with mean ``p`` and sd ``sd`` (``sd=None``: ``q = p``)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if sd is None:
        return expected_usefulness(p, group_size)
    a, b = _beta_parameters(p, sd)
    all_pass, all_fail = np.ones_like(p), np.ones_like(p)
    for k in range(group_size):  # Beta moments: E[q^G] = prod_{k<G} (a + k) / (a + b + k)
        all_pass *= (a + k) / (a + b + k)
        all_fail *= (b + k) / (a + b + k)
    # A (near) zero sd makes the Beta a spike at p; the product then equals the plain formula up to rounding.
    # A mean of exactly 0 or 1 admits only the spike, whatever the sd says.
    out = np.clip(1.0 - all_pass - all_fail, 0.0, 1.0)
    return np.where((p <= 0.0) | (p >= 1.0), 0.0, out)


def _n_explore(exploration: float, n_slots: int, rng: np.random.Generator) -> int:
    """Stochastic rounding of ``exploration * n_slots``: exact in expectation, floor or ceil every round."""
    expected = exploration * n_slots
    return int(np.floor(expected)) + int(rng.random() < expected - np.floor(expected))


def _uniform_from(rest: np.ndarray, n_explore: int, rng: np.random.Generator) -> np.ndarray:
    """The exploration share: ``n_explore`` distinct uniform picks from what the policy did not pick."""
    return rng.choice(rest, size=n_explore, replace=False) if n_explore else np.empty(0, dtype=np.int64)


def _draw_by_usefulness(candidates: np.ndarray, usefulness: np.ndarray, k: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct ``candidates`` drawn in proportion to their ``usefulness``; the 1e-12 floor keeps a candidate
    at p exactly 0 or 1 drawable, so a draw never lacks candidates."""
    if not k:
        return np.empty(0, dtype=np.int64)
    weights = usefulness + 1e-12
    return rng.choice(candidates, size=k, replace=False, p=weights / weights.sum())


def _rank_then_explore(
    score: np.ndarray, n_select: int, exploration: float, rng: np.random.Generator, band: np.ndarray
) -> Selection:
    """Top ``n_select - n_explore`` by ``score`` (ties random), then ``n_explore`` uniform picks from the rest."""
    n = len(score)
    n_explore = min(_n_explore(exploration, n_select, rng), n_select)
    ranked = _ranked(np.arange(n), score, rng)
    top = ranked[: n_select - n_explore]
    explored = _uniform_from(ranked[n_select - n_explore :], n_explore, rng)
    indices = np.concatenate([top, explored]).astype(np.int64)
    return Selection(indices, [REASON_RANK] * len(top) + [REASON_EXPLORE] * len(explored), band)


def _policy_band(p, n_select, group_size, rng, uncertainty, low, high, exploration) -> Selection:
    return select_in_band(p, n_select, group_size, low, high, exploration, rng)


def _policy_band_uniform(p, n_select, group_size, rng, uncertainty, low, high, exploration) -> Selection:
    return select_in_band(p, n_select, group_size, low, high, exploration, rng, in_band_at_random=True)


def _policy_band_weighted(p, n_select, group_size, rng, uncertainty, low, high, exploration) -> Selection:
    return select_in_band(p, n_select, group_size, low, high, exploration, rng, explore_by_usefulness=True)


def _policy_proportional(p, n_select, group_size, rng, uncertainty, low, high, exploration) -> Selection:
    usefulness = expected_usefulness_beta(p, uncertainty, group_size)
    everyone = np.arange(len(p))
    n_explore = min(_n_explore(exploration, n_select, rng), n_select)
    drawn = _draw_by_usefulness(everyone, usefulness, n_select - n_explore, rng)
    explored = _uniform_from(np.setdiff1d(everyone, drawn, assume_unique=True), n_explore, rng)
    indices = np.concatenate([drawn, explored]).astype(np.int64)
    return Selection(indices, [REASON_RANK] * len(drawn) + [REASON_EXPLORE] * len(explored), in_band(p, low, high))


def _policy_usefulness(p, n_select, group_size, rng, uncertainty, low, high, exploration) -> Selection:
    score = expected_usefulness_beta(p, uncertainty, group_size)
    return _rank_then_explore(score, n_select, exploration, rng, in_band(p, low, high))


def _policy_thompson(p, n_select, group_size, rng, uncertainty, low, high, exploration) -> Selection:
    sd = np.sqrt(p * (1 - p) / (group_size + 1)) if uncertainty is None else uncertainty
    a, b = _beta_parameters(p, sd)
    sample = rng.beta(a, b)
    score = expected_usefulness(sample, group_size)
    return _rank_then_explore(score, n_select, exploration, rng, in_band(p, low, high))


#: name -> policy(p, n_select, group_size, rng, uncertainty, low, high, exploration) -> Selection
SELECTION_POLICIES: dict[str, Callable[..., Selection]] = {
    "band": _policy_band,
    "band_uniform": _policy_band_uniform,
    "band_weighted": _policy_band_weighted,
    "usefulness": _policy_usefulness,
    "thompson": _policy_thompson,
    "proportional": _policy_proportional,
}


def check_policy_name(policy_name: str) -> None:
    if policy_name not in SELECTION_POLICIES:
        raise ValueError(
            f"Unknown selection policy {policy_name!r}. Valid policies: {sorted(SELECTION_POLICIES)}."
        )


def _overdue(rounds_since: np.ndarray, revisit_after: float, n_select: int, rng: np.random.Generator) -> np.ndarray:
    """Candidates not rolled out for ``revisit_after`` rounds or more, most overdue first, at most ``n_select``."""
    waited = np.where(np.isfinite(rounds_since), rounds_since, -np.inf)  # NaN: never rolled out, not overdue
    overdue = np.flatnonzero(waited >= revisit_after)
    return _ranked(overdue, waited, rng)[:n_select]


def select(
    policy_name: str,
    predicted: np.ndarray,
    n_select: int,
    group_size: int,
    rng: np.random.Generator,
    uncertainty: np.ndarray | None = None,
    low: float = 0.15,
    high: float = 0.85,
    exploration: float = 0.1,
    rounds_since: np.ndarray | None = None,
    revisit_after: float | None = None,
) -> Selection:
    """Pick exactly ``n_select`` distinct candidates with the named policy (see the module docstring).

    Args:
        policy_name: a name in ``SELECTION_POLICIES``.
        predicted: predicted pass rate per candidate, finite, in [0, 1].
        n_select: how many to pick (at most the number of candidates).
        group_size: completions per prompt (G).
        rng: the selection's random generator (checkpoint it for reproducible runs).
        uncertainty: standard deviation of each prediction, or ``None``.
        low, high: the band (the ``band`` policy selects in it; the others only report ``in_band``).
        exploration: expected share of the policy's picks drawn uniformly from what it would not pick.
        rounds_since: rounds since each candidate was last rolled out (NaN: never), for the revisit floor.
        revisit_after: candidates with ``rounds_since >= revisit_after`` go first; ``None`` disables the floor.
    """
    check_policy_name(policy_name)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    n = len(p)
    if not 0 <= n_select <= n:
        raise ValueError(f"Cannot select {n_select} prompts from {n} candidates.")
    if not np.isfinite(p).all():
        raise ValueError("Predicted pass rates contain NaN or infinity.")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}.")
    check_exploration(exploration, allow_all=True)
    p = np.clip(p, 0.0, 1.0)
    if uncertainty is not None:
        uncertainty = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
        if uncertainty.shape != p.shape:
            raise ValueError(f"uncertainty has {len(uncertainty)} values for {n} candidates.")
        if not np.isfinite(uncertainty).all() or (uncertainty < 0).any():
            raise ValueError("uncertainty must be finite and >= 0 (a standard deviation per candidate).")
    band = in_band(p, low, high)

    revisit = np.empty(0, dtype=np.int64)
    if rounds_since is not None and revisit_after is not None:
        rounds_since = np.asarray(rounds_since, dtype=np.float64).reshape(-1)
        if rounds_since.shape != p.shape:
            raise ValueError(f"rounds_since has {len(rounds_since)} values for {n} candidates.")
        revisit = _overdue(rounds_since, float(revisit_after), n_select, rng)

    rest = np.setdiff1d(np.arange(n), revisit, assume_unique=True)
    sub = SELECTION_POLICIES[policy_name](
        p[rest],
        n_select - len(revisit),
        group_size,
        rng,
        None if uncertainty is None else uncertainty[rest],
        low,
        high,
        exploration,
    )
    indices = np.concatenate([revisit, rest[sub.indices]]).astype(np.int64)
    reasons = [REASON_REVISIT] * len(revisit) + list(sub.reasons)
    return Selection(indices=indices, reasons=reasons, in_band=band)
