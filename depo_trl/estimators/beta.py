"""Per-prompt Beta posterior over the pass rate, with forgetting (the MoPPS idea): a history-only estimator.

Each prompt key ``k`` has a posterior ``Beta(alpha_k, beta_k)``. A rolled-out group with ``s`` passes out of ``n``
adds ``s`` to ``alpha_k`` and ``n - s`` to ``beta_k``. The policy moves, so old evidence ages: every update round
shrinks each prompt's pseudo-counts toward the prior by ``forgetting``,

    alpha_k <- prior_alpha + forgetting**elapsed * (alpha_k - prior_alpha)      (same for beta_k)

applied lazily (only when a prompt is touched or predicted, from the rounds elapsed since its last update), so
an update costs O(batch), not O(prompts). With ``forgetting_unit="observation"`` the clock is the prompt's own:
its evidence shrinks once each time a new group of it arrives, and not at all while it waits (MoPPS's decay per
observation). Ageing by rounds lets a skipped prompt drift back to the prior, so it is tried again after a while;
ageing by observations keeps what was learnt about a skipped prompt and weighs its latest groups most (on the real
GRPO log of the replay benchmark a prompt's status barely changes while it waits: P(useful | k = 0 last time)
is 0.21 one epoch later and 0.26 twenty-four epochs later). A prompt never seen (or evicted) gets the prior. The prediction is
the posterior mean, the uncertainty its standard deviation.

The features ``X`` are ignored except to validate rows (a row with non-finite features is dropped, as every
estimator does); prompts are identified by ``keys`` (int64, ``history.prompt_key``), which are required.
Memory is bounded: past ``max_prompts`` prompts, the least recently updated one is forgotten.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import PassRateEstimator


FORGETTING_UNITS = ("round", "observation")


def check_forgetting_unit(unit: str) -> None:
    if unit not in FORGETTING_UNITS:
        raise ValueError(f"forgetting_unit must be one of {list(FORGETTING_UNITS)}, got {unit!r}.")


def _keyed_rows(X, passes, trials, keys):
    """Validate a labelled batch like ``check_labels`` and keep ``keys`` aligned with the surviving rows."""
    if hasattr(X, "tocsr") and not isinstance(X, np.ndarray):  # sparse features: only row validity matters here
        X = X.tocsr()
        finite = np.ones(X.shape[0], dtype=bool)
        finite[np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[~np.isfinite(X.data)]] = False
        X = np.where(finite[:, None], 0.0, np.nan)
    X = np.asarray(X, dtype=np.float64)
    passes = np.asarray(passes, dtype=np.float64).reshape(-1)
    trials = np.asarray(trials, dtype=np.float64).reshape(-1)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_prompts, n_features), got shape {X.shape}.")
    keys = _check_keys(keys, len(X))
    if not (len(X) == len(passes) == len(trials)):
        raise ValueError(
            f"X, passes and trials must have the same length, got {len(X)}, {len(passes)} and {len(trials)}."
        )
    if np.any(passes < 0) or np.any(passes > trials):
        raise ValueError("passes must lie in [0, trials] for every prompt.")
    keep = (trials > 0) & np.isfinite(X).all(axis=1) & np.isfinite(passes)
    return keys[keep], passes[keep], trials[keep]


def _check_keys(keys, n: int) -> np.ndarray:
    if keys is None:
        raise ValueError(
            "The 'beta' estimator keeps one posterior per prompt and needs keys=<int64 prompt keys> "
            "(depo_trl.history.prompt_key of each prompt)."
        )
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if len(keys) != n:
        raise ValueError(f"keys has {len(keys)} entries for {n} prompts.")
    return keys


class BetaPassRateEstimator(PassRateEstimator):
    """Per-prompt Beta posterior with forgetting, keyed by prompt.

    Args:
        prior_alpha (`float`, defaults to `1.0`): prior pseudo-passes.
        prior_beta (`float`, defaults to `1.0`): prior pseudo-fails (the prior mean is alpha / (alpha + beta)).
        forgetting (`float`, defaults to `0.9`): per-update shrink of a prompt's evidence toward the prior.
        forgetting_unit (`str`, defaults to `"round"`): what one step of ``forgetting`` is: an update round of the
            estimator (``"round"``) or a new observation of that prompt (``"observation"``).
        max_prompts (`int`, defaults to `1000000`): most prompts remembered; the least recently updated go first.
    """

    name = "beta"
    keeps_prompt_record = True
    accepts_sparse = True  # the features are ignored

    def __init__(
        self,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        forgetting: float = 0.9,
        max_prompts: int = 1_000_000,
        forgetting_unit: str = "round",
    ):
        check_forgetting_unit(forgetting_unit)
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError(f"prior_alpha and prior_beta must be > 0, got {prior_alpha} and {prior_beta}.")
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}.")
        if max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1, got {max_prompts}.")
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.forgetting = float(forgetting)
        self.max_prompts = int(max_prompts)
        self.forgetting_unit = forgetting_unit
        self._reset()

    def _reset(self) -> None:
        self.n_updates_: int = 0
        # One slot per remembered prompt; slots are reused after eviction.
        self.keys_ = np.zeros(0, dtype=np.int64)
        self.alpha_ = np.zeros(0)
        self.beta_ = np.zeros(0)
        self.last_update_ = np.zeros(0, dtype=np.int64)
        self._slots: dict[int, int] = {}

    # ------------------------------------------------------------------ posterior at the current round
    def _aged(self, slots: np.ndarray, observing: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Pseudo-counts of ``slots`` now; ``observing``: as a new group of each arrives (per-observation clock)."""
        if self.forgetting_unit == "observation":
            shrink = np.full(len(slots), self.forgetting if observing else 1.0)
        else:
            shrink = self.forgetting ** (self.n_updates_ - self.last_update_[slots])
        alpha = self.prior_alpha + shrink * (self.alpha_[slots] - self.prior_alpha)
        beta = self.prior_beta + shrink * (self.beta_[slots] - self.prior_beta)
        return alpha, beta

    def posterior(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """``(alpha, beta)`` per key at the current round (the prior for unknown keys)."""
        keys = _check_keys(keys, len(np.asarray(keys).reshape(-1)))
        slots = np.array([self._slots.get(int(k), -1) for k in keys], dtype=np.int64)
        alpha = np.full(len(keys), self.prior_alpha)
        beta = np.full(len(keys), self.prior_beta)
        known = slots >= 0
        alpha[known], beta[known] = self._aged(slots[known])
        return alpha, beta

    # ------------------------------------------------------------------ learning
    def _slot(self, key: int) -> int:
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        if len(self._slots) < len(self.keys_):
            slot = len(self._slots)
        elif len(self.keys_) < self.max_prompts:
            grow = min(self.max_prompts, max(16, 2 * len(self.keys_))) - len(self.keys_)
            self.keys_ = np.concatenate([self.keys_, np.zeros(grow, dtype=np.int64)])
            self.alpha_ = np.concatenate([self.alpha_, np.zeros(grow)])
            self.beta_ = np.concatenate([self.beta_, np.zeros(grow)])
            self.last_update_ = np.concatenate([self.last_update_, np.zeros(grow, dtype=np.int64)])
            slot = len(self._slots)
        else:  # full: forget the least recently updated prompt (it falls back to the prior: the safe direction)
            used = len(self._slots)
            slot = int(np.argmin(self.last_update_[:used]))
            del self._slots[int(self.keys_[slot])]
        self._slots[key] = slot
        self.keys_[slot] = key
        self.alpha_[slot], self.beta_[slot] = self.prior_alpha, self.prior_beta
        self.last_update_[slot] = self.n_updates_
        return slot

    def partial_fit(self, X, passes, trials, keys=None) -> BetaPassRateEstimator:
        keys, passes, trials = _keyed_rows(X, passes, trials, keys)
        if len(keys) == 0:
            return self
        self.n_updates_ += 1
        for key, s, n in zip(keys, passes, trials):
            slot = self._slot(int(key))
            alpha, beta = self._aged(np.array([slot]), observing=True)
            # Several groups of one prompt in a batch add up (by rounds), or each counts as an observation.
            self.alpha_[slot] = alpha[0] + s
            self.beta_[slot] = beta[0] + (n - s)
            self.last_update_[slot] = self.n_updates_
        return self

    # ---------------------------------------------------------------- predicting
    def predict_pass_rate(self, X, keys=None) -> np.ndarray:
        alpha, beta = self.posterior(_check_keys(keys, X.shape[0]))
        return alpha / (alpha + beta)

    def predict_uncertainty(self, X, keys=None) -> np.ndarray:
        alpha, beta = self.posterior(_check_keys(keys, X.shape[0]))
        total = alpha + beta
        return np.sqrt(alpha * beta / (total**2 * (total + 1.0)))

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        used = len(self._slots)
        return {
            "n_updates_": self.n_updates_,
            "keys_": self.keys_[:used].copy(),
            "alpha_": self.alpha_[:used].copy(),
            "beta_": self.beta_[:used].copy(),
            "last_update_": self.last_update_[:used].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self.n_updates_ = int(state["n_updates_"])
        self.keys_ = np.asarray(state["keys_"], dtype=np.int64).reshape(-1).copy()
        self.alpha_ = np.asarray(state["alpha_"], dtype=np.float64).reshape(-1).copy()
        self.beta_ = np.asarray(state["beta_"], dtype=np.float64).reshape(-1).copy()
        self.last_update_ = np.asarray(state["last_update_"], dtype=np.int64).reshape(-1).copy()
        if len(self.keys_) > self.max_prompts:
            raise ValueError(f"The saved state holds {len(self.keys_)} prompts, more than max_prompts={self.max_prompts}.")
        self._slots = {int(k): i for i, k in enumerate(self.keys_)}
