"""The methods DEPO is compared with, as plain-numpy selectors over a fixed pool of prompts.

A selector sees prompts by integer index in ``[0, n_prompts)``. Each round it is given the round's ``pool`` (the
indices that may be rolled out) and a ``budget``, and ``rollout`` returns the indices it generated groups for,
in order, with their pass counts (revealed by the harness only for what was generated). Only those outcomes are
ever fed back (``observe``): no selector sees an outcome it did not pay for, except ``OracleSelector``, which is
the physical limit and says so.

- ``UniformSelector``: plain GRPO, a uniform random subset of the pool.
- ``DynamicSamplingSelector`` (DAPO): candidates in random order, all-equal groups dropped after generation,
  refilled until ``budget`` groups are *kept* or the pool is exhausted; every generated group is counted.
  Refills ask for exactly the missing number of groups (the cheapest possible dynamic sampling; DAPO's own
  refills generate whole batches and so overshoot).
- ``GRESOSelector``: skips a prompt whose last ``z`` observed groups were all-pass (all-fail) with probability
  ``1 - max(p_easy**z, 0.01)`` (``p_hard``); ``p_easy``/``p_hard`` start at 0.5 and move by 0.01 per round
  toward target shares of all-pass / all-fail groups among rolled-out groups, clamped to [0.05, 0.95].
  Under a fixed budget it walks the pool in random order until the budget is filled; if too many prompts were
  skipped to fill it, the remaining slots go to skipped prompts in random order.
- ``MoPPSSelector``: per-prompt Beta posterior over the pass rate, one Thompson sample per candidate, keep the
  ``budget`` prompts whose sample is closest to 0.5. ``decay`` shrinks a prompt's pseudo-counts toward the prior
  before each new observation (the policy drifts); ``decay=1`` is the plain posterior.
- ``OracleSelector``: knows this round's true outcomes; rolls out useful groups first.
- ``HindsightSelector``: knows each prompt's useful rate over the whole run (not this round's draw): the limit
  of a perfect per-prompt predictor.

``TfidfRidgePassRate`` is the content-only cold-start baseline: TF-IDF of the prompt text + ridge regression on
the pass rate (scikit-learn).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Reveal = Callable[[np.ndarray], np.ndarray]


def is_useful(passes: np.ndarray, group_size: int) -> np.ndarray:
    """A group teaches something (non-zero advantages) when 0 < passes < G."""
    passes = np.asarray(passes)
    return (passes > 0) & (passes < group_size)


class Selector:
    """Base class: choose ``budget`` prompts from ``pool``, then learn from their outcomes."""

    name = "selector"

    def __init__(self, n_prompts: int, group_size: int = 8):
        self.n_prompts = int(n_prompts)
        self.group_size = int(group_size)

    def choose(self, round_index: int, pool: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def observe(self, round_index: int, indices: np.ndarray, passes: np.ndarray) -> None:
        """Outcomes of the groups this selector generated this round (default: nothing to learn)."""

    def rollout(
        self, round_index: int, pool: np.ndarray, budget: int, reveal: Reveal, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Generated indices (in order) and their pass counts."""
        budget = min(int(budget), len(pool))
        chosen = np.asarray(self.choose(round_index, pool, budget, rng), dtype=np.int64)
        if len(chosen) != budget or len(np.unique(chosen)) != budget or not np.isin(chosen, pool).all():
            raise RuntimeError(
                f"{self.name} chose {len(chosen)} prompts (distinct, from the pool) for budget {budget}"
            )
        passes = np.asarray(reveal(chosen))
        self.observe(round_index, chosen, passes)
        return chosen, passes


class UniformSelector(Selector):
    name = "uniform (GRPO)"

    def choose(self, round_index, pool, budget, rng):
        return rng.choice(pool, size=budget, replace=False)


class DynamicSamplingSelector(Selector):
    name = "dynamic sampling (DAPO)"

    def rollout(self, round_index, pool, budget, reveal, rng):
        order = rng.permutation(pool)
        budget = min(int(budget), len(pool))
        generated, outcomes, kept, cursor = [], [], 0, 0
        while kept < budget and cursor < len(order):
            batch = order[cursor : cursor + (budget - kept)]
            cursor += len(batch)
            passes = np.asarray(reveal(batch))
            generated.append(batch)
            outcomes.append(passes)
            kept += int(is_useful(passes, self.group_size).sum())
        chosen = np.concatenate(generated) if generated else np.empty(0, dtype=np.int64)
        passes = np.concatenate(outcomes) if outcomes else np.empty(0)
        self.observe(round_index, chosen, passes)
        return chosen, passes


class GRESOSelector(Selector):
    name = "GRESO"

    def __init__(
        self,
        n_prompts: int,
        group_size: int = 8,
        target_all_pass: float = 1 / 12,
        target_all_fail: float = 1 / 6,
        start: float = 0.5,
        step: float = 0.01,
        bounds: tuple[float, float] = (0.05, 0.95),
        min_keep: float = 0.01,
    ):
        super().__init__(n_prompts, group_size)
        self.target_all_pass, self.target_all_fail = target_all_pass, target_all_fail
        self.p_easy = self.p_hard = float(start)
        self.step, self.bounds, self.min_keep = step, bounds, min_keep
        # streak_kind: +1 last observations were all-pass, -1 all-fail, 0 otherwise; streak_len: how many in a row
        self.streak_kind = np.zeros(self.n_prompts, dtype=np.int8)
        self.streak_len = np.zeros(self.n_prompts, dtype=np.int64)

    def keep_probability(self, indices: np.ndarray) -> np.ndarray:
        kind, z = self.streak_kind[indices], self.streak_len[indices]
        base = np.where(kind > 0, self.p_easy, self.p_hard)
        keep = np.maximum(base ** z.astype(np.float64), self.min_keep)
        return np.where(kind == 0, 1.0, keep)

    def choose(self, round_index, pool, budget, rng):
        order = rng.permutation(pool)
        kept = rng.random(len(order)) < self.keep_probability(order)
        picked = order[kept][:budget]
        if len(picked) < budget:  # not enough survivors: fill with skipped prompts, in random order
            picked = np.concatenate([picked, order[~kept][: budget - len(picked)]])
        return picked

    def observe(self, round_index, indices, passes):
        G = self.group_size
        passes = np.asarray(passes)
        all_pass, all_fail = passes >= G, passes <= 0
        for kind, mask in ((1, all_pass), (-1, all_fail)):
            idx = indices[mask]
            same = self.streak_kind[idx] == kind
            self.streak_len[idx] = np.where(same, self.streak_len[idx] + 1, 1)
            self.streak_kind[idx] = kind
        mixed = indices[~(all_pass | all_fail)]
        self.streak_kind[mixed], self.streak_len[mixed] = 0, 0
        if len(passes):
            lo, hi = self.bounds
            self.p_easy += -self.step if all_pass.mean() > self.target_all_pass else self.step
            self.p_hard += -self.step if all_fail.mean() > self.target_all_fail else self.step
            self.p_easy, self.p_hard = float(np.clip(self.p_easy, lo, hi)), float(np.clip(self.p_hard, lo, hi))


class MoPPSSelector(Selector):
    name = "MoPPS"

    def __init__(
        self,
        n_prompts: int,
        group_size: int = 8,
        prior: tuple[float, float] = (1.0, 1.0),
        decay: float = 1.0,
        target: float = 0.5,
    ):
        super().__init__(n_prompts, group_size)
        # A prior per prompt (arrays) as well as one for all (floats): an offline pass-rate estimate is a prior.
        self.prior = tuple(np.broadcast_to(np.asarray(v, dtype=np.float64), (self.n_prompts,)).copy() for v in prior)
        self.decay, self.target = float(decay), float(target)
        self.alpha = self.prior[0].copy()
        self.beta = self.prior[1].copy()

    def choose(self, round_index, pool, budget, rng):
        sample = rng.beta(self.alpha[pool], self.beta[pool])
        distance = np.abs(sample - self.target)
        order = np.lexsort((rng.random(len(pool)), distance))
        return pool[order[:budget]]

    def observe(self, round_index, indices, passes):
        passes = np.asarray(passes, dtype=np.float64)
        a0, b0 = self.prior[0][indices], self.prior[1][indices]
        self.alpha[indices] = a0 + self.decay * (self.alpha[indices] - a0) + passes
        self.beta[indices] = b0 + self.decay * (self.beta[indices] - b0) + (self.group_size - passes)


class OracleSelector(Selector):
    """Knows the round's true outcomes (``truth[i]`` = passes of prompt ``i`` this round): the physical limit."""

    name = "oracle"

    def __init__(self, n_prompts: int, group_size: int = 8):
        super().__init__(n_prompts, group_size)
        self.truth: np.ndarray | None = None

    def choose(self, round_index, pool, budget, rng):
        if self.truth is None:
            raise RuntimeError("OracleSelector.truth must be set to the round's outcomes before choose().")
        useful = is_useful(self.truth[pool], self.group_size)
        order = np.lexsort((rng.random(len(pool)), ~useful))  # useful first, random within
        return pool[order[:budget]]


class HindsightSelector(Selector):
    """Knows each prompt's useful-group rate over the whole log (``rate[i]``, future epochs included) but not this
    round's draw: the limit of any per-prompt predictor, however good, since a group of 8 is still a random draw."""

    name = "hindsight"

    def __init__(self, n_prompts: int, group_size: int = 8, rate: np.ndarray | None = None):
        super().__init__(n_prompts, group_size)
        self.rate = np.zeros(self.n_prompts) if rate is None else np.asarray(rate, dtype=np.float64)

    def choose(self, round_index, pool, budget, rng):
        order = np.lexsort((rng.random(len(pool)), -self.rate[pool]))
        return pool[order[:budget]]


BASELINE_SELECTORS = {
    "uniform": UniformSelector,
    "dynamic_sampling": DynamicSamplingSelector,
    "greso": GRESOSelector,
    "mopps": MoPPSSelector,
    "oracle": OracleSelector,
}


# ------------------------------------------------------------------------- cold start
class TfidfRidgePassRate:
    """Content-only pass-rate regressor: TF-IDF (word 1-2 grams) + ridge, penalty chosen by internal CV on the
    training split only; predictions clipped to [0, 1]."""

    name = "tfidf+ridge"

    def __init__(self, alphas=(0.3, 1.0, 3.0, 10.0), min_df: int = 2, max_features: int | None = 200_000):
        self.alphas, self.min_df, self.max_features = tuple(alphas), min_df, max_features

    def fit(self, texts, pass_rate, seed: int = 0) -> TfidfRidgePassRate:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import Ridge

        y = np.asarray(pass_rate, dtype=np.float64)
        self.vectorizer_ = TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=self.min_df,
            max_features=self.max_features,
            sublinear_tf=True,
            token_pattern=r"(?u)\b\w+\b|[^\w\s]",
        )
        X = self.vectorizer_.fit_transform(list(texts))
        # Penalty: best Pearson r on a seeded 20% slice of the training split (the test split is never seen).
        order = np.random.default_rng(seed).permutation(len(y))
        cut = int(0.8 * len(y))
        fit_idx, val_idx = order[:cut], order[cut:]
        scores = []
        for alpha in self.alphas:
            pred = Ridge(alpha=alpha).fit(X[fit_idx], y[fit_idx]).predict(X[val_idx])
            scores.append(np.corrcoef(pred, y[val_idx])[0, 1] if np.std(pred) > 0 else -1.0)
        self.alpha_ = float(self.alphas[int(np.argmax(scores))])
        self.model_ = Ridge(alpha=self.alpha_).fit(X, y)
        return self

    def predict(self, texts) -> np.ndarray:
        return np.clip(self.model_.predict(self.vectorizer_.transform(list(texts))), 0.0, 1.0)
