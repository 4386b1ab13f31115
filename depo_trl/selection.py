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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REASON_BAND, REASON_EXPLORE, REASON_FILL = "band", "explore", "fill"


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
) -> Selection:
    """Pick exactly ``n_select`` candidates (see the module docstring for the rule)."""
    pass_rate = np.asarray(pass_rate, dtype=np.float64)
    n = len(pass_rate)
    if n_select > n:
        raise ValueError(f"Cannot select {n_select} prompts from {n} candidates.")
    if not np.isfinite(pass_rate).all():
        raise ValueError("Predicted pass rates contain NaN or infinity.")
    in_band = (pass_rate >= low) & (pass_rate <= high)
    usefulness = expected_usefulness(pass_rate, group_size)
    inside = np.flatnonzero(in_band)
    outside = np.flatnonzero(~in_band)

    expected_explore = exploration * n_select
    n_explore = int(np.floor(expected_explore)) + int(rng.random() < expected_explore - np.floor(expected_explore))
    n_explore = min(n_explore, len(outside))
    explored = rng.choice(outside, size=n_explore, replace=False) if n_explore else np.empty(0, dtype=np.int64)

    n_band = min(n_select - n_explore, len(inside))
    banded = _ranked(inside, usefulness, rng)[:n_band]

    remaining = np.setdiff1d(outside, explored, assume_unique=True)
    filled = _ranked(remaining, usefulness, rng)[: n_select - n_explore - n_band]

    indices = np.concatenate([banded, explored, filled]).astype(np.int64)
    reasons = [REASON_BAND] * len(banded) + [REASON_EXPLORE] * len(explored) + [REASON_FILL] * len(filled)
    return Selection(indices=indices, reasons=reasons, in_band=in_band)
