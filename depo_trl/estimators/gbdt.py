"""Gradient-boosted trees with a binomial objective, refit periodically on a recency-weighted window.

Model: scikit-learn's ``HistGradientBoostingClassifier`` (log-loss, i.e. a binomial likelihood). A group with
``s`` passes out of ``n`` completions becomes two weighted rows with the same features: label 1 with weight
``s`` and label 0 with weight ``n - s``, each also multiplied by the row's recency weight
``decay ** (updates since it arrived)`` (the policy drifts, so old labels count for less). Weights are rescaled
to mean 1 per row so the trees' regularisation means the same thing at any scale.

Online training: labelled prompts go into a bounded window (the most recent ``window`` prompts). Trees are
refit from scratch every ``refit_every`` updates (a refit costs ~0.1-1 s for a few thousand prompts, too much
for every round, cheap every few). Before ``min_samples`` labelled prompts (or while every label so far is the
same) it predicts the recency-weighted mean pass rate of the window, or ``prior_pass_rate`` with no data.

State without pickle: the window rows the current trees were fitted on stay in the buffer (new rows are only
appended until the next refit trims it), so ``load_state_dict`` refits on exactly those rows with the same
weights and ``random_state``; with early stopping off the fit is deterministic, so predictions after loading
equal those before.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from .base import PassRateEstimator, check_labels, dense_features


@contextmanager
def _threads_for(n_rows: int, parallel_min_rows: int):
    """Single-threaded OpenMP below ``parallel_min_rows`` rows: for small fits and predictions, thread start-up
    and spinning cost more than the work (seconds instead of a fraction of one on a busy machine)."""
    if n_rows >= parallel_min_rows:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


class GBDTPassRateEstimator(PassRateEstimator):
    """Histogram gradient boosting (binomial) refit every few updates on a bounded, recency-weighted window.

    Args:
        window (`int`, defaults to `4096`): most recent labelled prompts used for a refit.
        decay (`float`, defaults to `0.95`): per-update weight multiplier of stored prompts.
        refit_every (`int`, defaults to `4`): updates between refits.
        min_samples (`int`, defaults to `32`): labelled prompts needed before the first tree fit.
        max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization, max_bins: passed to
            ``HistGradientBoostingClassifier``.
        early_stopping (`bool`, defaults to `False`): scikit-learn's early stopping on a held-out split.
        prior_pass_rate (`float`, defaults to `0.5`): prediction before any label.
        random_state (`int`, defaults to `0`): seed of the trees (fixed so refits are reproducible).
    """

    name = "gbdt"
    #: Fits and predictions on fewer rows than this run single-threaded.
    parallel_min_rows = 20_000

    def __init__(
        self,
        window: int = 4096,
        decay: float = 0.95,
        refit_every: int = 4,
        min_samples: int = 32,
        max_iter: int = 50,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        max_bins: int = 64,
        early_stopping: bool = False,
        prior_pass_rate: float = 0.5,
        random_state: int = 0,
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}.")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}.")
        if refit_every < 1:
            raise ValueError(f"refit_every must be >= 1, got {refit_every}.")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}.")
        if not 0 < prior_pass_rate < 1:
            raise ValueError(f"prior_pass_rate must be in (0, 1), got {prior_pass_rate}.")
        self.window = int(window)
        self.decay = float(decay)
        self.refit_every = int(refit_every)
        self.min_samples = int(min_samples)
        self.max_iter = int(max_iter)
        self.learning_rate = float(learning_rate)
        self.max_leaf_nodes = int(max_leaf_nodes)
        self.min_samples_leaf = int(min_samples_leaf)
        self.l2_regularization = float(l2_regularization)
        self.max_bins = int(max_bins)
        self.early_stopping = bool(early_stopping)
        self.prior_pass_rate = float(prior_pass_rate)
        self.random_state = int(random_state)
        self._reset()

    def _reset(self) -> None:
        self.n_features_in_: int | None = None
        self.n_updates_: int = 0
        # Buffer of labelled prompts; its first fit_rows_ rows are the ones the current model was fitted on.
        self.X_: np.ndarray | None = None
        self.passes_: np.ndarray | None = None
        self.trials_: np.ndarray | None = None
        self.arrival_: np.ndarray | None = None
        self.fit_rows_: int = 0
        self.fit_update_: int = 0  # the update index at the last refit (0: never)
        self.base_rate_: float = self.prior_pass_rate  # fallback prediction until trees exist
        self.model_ = None  # a fitted sklearn HistGradientBoostingClassifier, or None

    # ------------------------------------------------------------------ learning
    def partial_fit(self, X, passes, trials, keys=None) -> GBDTPassRateEstimator:
        X, passes, trials = check_labels(X, passes, trials)
        if len(X) == 0:
            return self
        if self.n_features_in_ is None:
            self.n_features_in_ = X.shape[1]
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but the estimator was fitted with {self.n_features_in_}.")
        self.n_updates_ += 1
        arrival = np.full(len(X), self.n_updates_, dtype=np.float64)
        if self.X_ is None:
            self.X_, self.passes_, self.trials_, self.arrival_ = X, passes, trials, arrival
        else:
            self.X_ = np.concatenate([self.X_, X])
            self.passes_ = np.concatenate([self.passes_, passes])
            self.trials_ = np.concatenate([self.trials_, trials])
            self.arrival_ = np.concatenate([self.arrival_, arrival])
        # Until trees exist every update tries (cheap while data is short); then every refit_every updates.
        if self.model_ is None or self.n_updates_ - self.fit_update_ >= self.refit_every:
            self._trim()
            self._refit(len(self.X_), self.n_updates_)
        return self

    def _trim(self) -> None:
        self.X_, self.passes_ = self.X_[-self.window :], self.passes_[-self.window :]
        self.trials_, self.arrival_ = self.trials_[-self.window :], self.arrival_[-self.window :]

    def _refit(self, rows: int, at_update: int) -> None:
        """Fit on the first ``rows`` buffered prompts with recency weights as of update ``at_update``."""
        X, s, n = self.X_[:rows], self.passes_[:rows], self.trials_[:rows]
        recency = self.decay ** (at_update - self.arrival_[:rows])
        self.fit_rows_, self.fit_update_ = rows, at_update
        self.base_rate_ = float(np.sum(recency * s) / np.sum(recency * n))
        if rows < self.min_samples or s.sum() == 0 or s.sum() == n.sum():
            self.model_ = None  # too little data, or a single class: the trees would have nothing to split on
            return
        # Each prompt -> a pass row (weight s) and a fail row (weight n - s): the binomial log-likelihood.
        features = np.concatenate([X, X])
        labels = np.concatenate([np.ones(rows), np.zeros(rows)])
        weights = np.concatenate([recency * s, recency * (n - s)])
        keep = weights > 0
        from sklearn.ensemble import HistGradientBoostingClassifier  # lazy: keeps `import depo_trl` fast

        weights = weights[keep] * (keep.sum() / weights[keep].sum())
        self.model_ = HistGradientBoostingClassifier(
            loss="log_loss",
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_bins=self.max_bins,
            early_stopping=self.early_stopping,
            random_state=self.random_state,
        )
        with _threads_for(int(keep.sum()), self.parallel_min_rows):
            self.model_.fit(features[keep], labels[keep], sample_weight=weights)

    # ---------------------------------------------------------------- predicting
    def predict_pass_rate(self, X, keys=None) -> np.ndarray:
        X = dense_features(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_prompts, n_features), got shape {X.shape}.")
        if self.n_features_in_ is not None and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but the estimator was fitted with {self.n_features_in_}.")
        out = np.full(len(X), self.base_rate_)
        finite = np.isfinite(X).all(axis=1)  # a broken feature row gets the base rate, not a guess
        if self.model_ is not None and finite.any():
            with _threads_for(int(finite.sum()), self.parallel_min_rows):
                out[finite] = self.model_.predict_proba(X[finite])[:, 1]
        return out

    # --------------------------------------------------------------------- state
    _ARRAYS = ("X_", "passes_", "trials_", "arrival_")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "n_updates_": self.n_updates_,
            "fit_rows_": self.fit_rows_,
            "fit_update_": self.fit_update_,
            "base_rate_": self.base_rate_,
        }
        if self.n_features_in_ is not None:
            state["n_features_in_"] = self.n_features_in_
        for name in self._ARRAYS:
            if getattr(self, name) is not None:
                state[name] = np.asarray(getattr(self, name))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self.n_updates_ = int(state["n_updates_"])
        self.base_rate_ = float(state["base_rate_"])
        if "n_features_in_" in state:
            self.n_features_in_ = int(state["n_features_in_"])
        for name in self._ARRAYS:
            if name in state:
                setattr(self, name, np.asarray(state[name], dtype=np.float64))
        fit_rows, fit_update = int(state["fit_rows_"]), int(state["fit_update_"])
        if fit_update > 0:
            self._refit(fit_rows, fit_update)  # rebuilds the same trees from the same rows and seed
