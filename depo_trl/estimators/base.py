"""The interface every pass-rate estimator implements.

An estimator maps a feature matrix ``X`` of shape ``(n_prompts, n_features)`` to a predicted pass rate in
``[0, 1]`` per prompt. It learns online from groups of rollouts: for each prompt, how many of its ``trials``
completions passed (``passes``). Following scikit-learn, hyperparameters live in ``__init__`` and learned state
in attributes with a trailing underscore; ``state_dict`` / ``load_state_dict`` carry that state through a
checkpoint without pickle (only JSON scalars, lists and numpy arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def dense_features(X) -> np.ndarray:
    """``X`` as a float64 array; a ``scipy.sparse`` matrix gets an error that says what to do instead."""
    if hasattr(X, "tocsr") and not isinstance(X, np.ndarray):
        raise ValueError(
            f"This estimator needs dense features, but got a scipy.sparse matrix of shape {X.shape} (wide 'text' "
            "features are sparse). Use estimator='hierarchical', which accepts sparse input, or a dense text block, "
            "e.g. feature_options={'text': {'dim': 256}}."
        )
    return np.asarray(X, dtype=np.float64)


def check_labels(X: np.ndarray, passes, trials) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one labelled batch and return it as float arrays, dropping rows that carry no label."""
    X = dense_features(X)
    passes = np.asarray(passes, dtype=np.float64).reshape(-1)
    trials = np.asarray(trials, dtype=np.float64).reshape(-1)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_prompts, n_features), got shape {X.shape}.")
    if not (len(X) == len(passes) == len(trials)):
        raise ValueError(
            f"X, passes and trials must have the same length, got {len(X)}, {len(passes)} and {len(trials)}."
        )
    if np.any(passes < 0) or np.any(passes > trials):
        raise ValueError("passes must lie in [0, trials] for every prompt.")
    # A group whose completions were all unscorable (trials == 0) or whose features are broken teaches nothing.
    keep = (trials > 0) & np.isfinite(X).all(axis=1) & np.isfinite(passes)
    return X[keep], passes[keep], trials[keep]


class PassRateEstimator:
    """Base class: predicts the probability that one completion of a prompt passes.

    Subclasses implement ``partial_fit`` and ``predict_pass_rate``; ``predict_uncertainty`` is optional
    (``None`` means the estimator has no notion of it).
    """

    #: Registry name, set by subclasses.
    name: str = "base"

    def partial_fit(self, X: np.ndarray, passes, trials, keys=None) -> PassRateEstimator:
        raise NotImplementedError

    def predict_pass_rate(self, X: np.ndarray, keys=None) -> np.ndarray:
        raise NotImplementedError

    def predict_uncertainty(self, X: np.ndarray, keys=None) -> np.ndarray | None:
        """Standard deviation of the predicted pass rate per prompt, or ``None`` if not available."""
        return None

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError
