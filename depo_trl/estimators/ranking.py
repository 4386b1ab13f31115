"""The paper's estimator: a small dual-head MLP trained with BCE + confidence BCE + a pairwise ranking loss.

DEPO's released code scores prompts with a BERT encoder and two sigmoid heads; here the encoder is replaced by
the feature groups (policy embeddings, text, length, ...) and a small MLP over them:

    z = standardise(x)                      # running mean / variance of every row seen so far
    h = relu(W2 relu(W1 z))                 # `layers` hidden layers of width `hidden`
    pass_logit = w_p . h + b_p              # predicted pass rate  = sigmoid(pass_logit)
    conf_logit = w_c . h + b_c              # predicted confidence = sigmoid(conf_logit)

Loss on a minibatch with observed pass rates r = passes / trials:

    BCE(sigmoid(pass_logit), r)
    + confidence_weight * BCE(sigmoid(conf_logit), c)      only when confidence targets c are given
    + ranking_weight * mean over pairs (i, j) with r_i - r_j > ranking_min_gap of
          max(0, ranking_margin - (pass_logit_i - pass_logit_j))

with the paper's weights (0.5, 3.0), gap 0.05 and margin 0.5. The hinge acts on logits, where a fixed margin
is reachable for any pair of pass rates (on probabilities a 0.5 margin could not be met by most pairs). The
confidence target is the policy's exp(mean token log-prob) of the group, which TRL can provide; without it the
confidence head is simply not trained. The paper's ablation found the ranking and confidence terms are what
make the estimator useful, so they are on by default.

Online training (as in the paper: a few optimiser steps per RL step on the prompts just rolled out): each
``partial_fit`` makes ``steps_per_update`` passes over the new batch in shuffled minibatches of ``batch_size``
with AdamW. Seeded: initial weights and shuffling come from one ``torch.Generator``, so two estimators with the
same seed fed the same data are identical on CPU. The state (weights, AdamW moments, standardiser, generator)
is saved as numpy arrays, so training continues after a resume exactly as it would have.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import PassRateEstimator, dense_features


@contextmanager
def _one_thread():
    """Run torch single-threaded: for a net this small, intra-op threads only add synchronisation (on a busy
    machine, spinning OpenMP threads made 80 tiny steps take 10 s instead of 0.2 s)."""
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


class _DualHeadMLP(torch.nn.Module):
    def __init__(self, n_features: int, hidden: int, layers: int):
        super().__init__()
        widths = [n_features] + [hidden] * layers
        self.body = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.pass_head = torch.nn.Linear(widths[-1], 1)
        self.confidence_head = torch.nn.Linear(widths[-1], 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = z
        for layer in self.body:
            h = torch.relu(layer(h))
        return self.pass_head(h).squeeze(-1), self.confidence_head(h).squeeze(-1)


def pairwise_hinge(scores: torch.Tensor, rates: torch.Tensor, min_gap: float, margin: float) -> torch.Tensor:
    """Mean of ``max(0, margin - (s_i - s_j))`` over pairs with ``rates_i - rates_j > min_gap`` (0 if none)."""
    higher = (rates[:, None] - rates[None, :]) > min_gap
    if not bool(higher.any()):
        return scores.sum() * 0.0
    gaps = scores[:, None] - scores[None, :]
    return torch.relu(margin - gaps[higher]).mean()


class RankingPassRateEstimator(PassRateEstimator):
    """Dual-head MLP (pass rate + confidence) with the paper's BCE + ranking loss, trained online.

    Args:
        hidden (`int`, defaults to `64`): width of the hidden layers.
        layers (`int`, defaults to `2`): number of hidden layers.
        lr (`float`, defaults to `1e-3`): AdamW learning rate.
        weight_decay (`float`, defaults to `1e-4`): AdamW weight decay.
        steps_per_update (`int`, defaults to `4`): passes over each new batch per ``partial_fit``.
        batch_size (`int`, defaults to `256`): minibatch size within a pass.
        confidence_weight (`float`, defaults to `0.5`): weight of the confidence BCE.
        ranking_weight (`float`, defaults to `3.0`): weight of the pairwise hinge loss.
        ranking_min_gap (`float`, defaults to `0.05`): pairs count only if their pass rates differ by more.
        ranking_margin (`float`, defaults to `0.5`): hinge margin, in logits.
        prior_pass_rate (`float`, defaults to `0.5`): prediction before any label (and initial head bias).
        seed (`int`, defaults to `0`): seed of the initial weights and the minibatch order.
    """

    name = "ranking"

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        steps_per_update: int = 4,
        batch_size: int = 256,
        confidence_weight: float = 0.5,
        ranking_weight: float = 3.0,
        ranking_min_gap: float = 0.05,
        ranking_margin: float = 0.5,
        prior_pass_rate: float = 0.5,
        seed: int = 0,
    ):
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {hidden} and {layers}.")
        if steps_per_update < 1 or batch_size < 2:
            raise ValueError(f"steps_per_update must be >= 1 and batch_size >= 2, got {steps_per_update}, {batch_size}.")
        if not 0 < prior_pass_rate < 1:
            raise ValueError(f"prior_pass_rate must be in (0, 1), got {prior_pass_rate}.")
        self.hidden = int(hidden)
        self.layers = int(layers)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps_per_update = int(steps_per_update)
        self.batch_size = int(batch_size)
        self.confidence_weight = float(confidence_weight)
        self.ranking_weight = float(ranking_weight)
        self.ranking_min_gap = float(ranking_min_gap)
        self.ranking_margin = float(ranking_margin)
        self.prior_pass_rate = float(prior_pass_rate)
        self.seed = int(seed)
        self._reset()

    def _reset(self) -> None:
        self.n_features_in_: int | None = None
        self.n_updates_: int = 0
        self.n_seen_: float = 0.0  # rows folded into the standardiser
        self.mean_: np.ndarray | None = None
        self.m2_: np.ndarray | None = None  # sum of squared deviations (Chan et al. parallel update)
        self.net_: _DualHeadMLP | None = None
        self.optimizer_: torch.optim.AdamW | None = None
        self.generator_ = torch.Generator().manual_seed(self.seed)

    def _build(self, n_features: int) -> None:
        self.n_features_in_ = n_features
        self.mean_, self.m2_ = np.zeros(n_features), np.zeros(n_features)
        self.net_ = _DualHeadMLP(n_features, self.hidden, self.layers)
        with torch.no_grad():  # seeded init from our own generator, independent of torch's global RNG
            for module in [*self.net_.body, self.net_.pass_head, self.net_.confidence_head]:
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.copy_((torch.rand(module.weight.shape, generator=self.generator_) * 2 - 1) * bound)
                module.bias.copy_((torch.rand(module.bias.shape, generator=self.generator_) * 2 - 1) * bound)
            prior_logit = math.log(self.prior_pass_rate / (1 - self.prior_pass_rate))
            self.net_.pass_head.bias.fill_(prior_logit)
        self.optimizer_ = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ learning
    def _check_X(self, X) -> np.ndarray:
        X = dense_features(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_prompts, n_features), got shape {X.shape}.")
        if self.n_features_in_ is not None and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but the estimator was fitted with {self.n_features_in_}.")
        return X

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        var = self.m2_ / max(self.n_seen_, 1.0)
        scale = np.where(var > 1e-12, np.sqrt(var), 1.0)
        return torch.as_tensor((X - self.mean_) / scale, dtype=torch.float32)

    def _update_standardiser(self, X: np.ndarray) -> None:
        n_new = float(len(X))
        mean_new = X.mean(axis=0)
        m2_new = ((X - mean_new) ** 2).sum(axis=0)
        total = self.n_seen_ + n_new
        delta = mean_new - self.mean_
        self.mean_ = self.mean_ + delta * (n_new / total)
        self.m2_ = self.m2_ + m2_new + delta**2 * (self.n_seen_ * n_new / total)
        self.n_seen_ = total

    def partial_fit(self, X, passes, trials, keys=None, confidence=None) -> RankingPassRateEstimator:
        """One online update. ``confidence`` (optional, one value in [0, 1] per prompt, NaN = unknown) trains the
        confidence head, e.g. exp(mean token log-prob) of the prompt's completions."""
        X = self._check_X(X)
        passes = np.asarray(passes, dtype=np.float64).reshape(-1)
        trials = np.asarray(trials, dtype=np.float64).reshape(-1)
        conf = np.full(len(X), np.nan) if confidence is None else np.asarray(confidence, dtype=np.float64).reshape(-1)
        if not (len(X) == len(passes) == len(trials) == len(conf)):
            raise ValueError(
                f"X, passes, trials (and confidence) must have the same length, got {len(X)}, {len(passes)}, "
                f"{len(trials)} and {len(conf)}."
            )
        if np.any(passes < 0) or np.any(passes > trials):
            raise ValueError("passes must lie in [0, trials] for every prompt.")
        if np.any((conf < 0) | (conf > 1)):
            raise ValueError("confidence targets must lie in [0, 1] (NaN for unknown).")
        keep = (trials > 0) & np.isfinite(X).all(axis=1) & np.isfinite(passes)
        X, rates, conf = X[keep], passes[keep] / trials[keep], conf[keep]
        if len(X) == 0:
            return self
        if self.net_ is None:
            self._build(X.shape[1])
        self.n_updates_ += 1
        self._update_standardiser(X)
        z = self._standardise(X)
        r = torch.as_tensor(rates, dtype=torch.float32)
        c = torch.as_tensor(conf, dtype=torch.float32)
        self.net_.train()
        with _one_thread():
            for _ in range(self.steps_per_update):
                order = torch.randperm(len(X), generator=self.generator_)
                for start in range(0, len(X), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    self.optimizer_.zero_grad(set_to_none=True)
                    loss = self._loss(z[idx], r[idx], c[idx])
                    loss.backward()
                    self.optimizer_.step()
        return self

    def _loss(self, z: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        pass_logit, conf_logit = self.net_(z)
        loss = F.binary_cross_entropy_with_logits(pass_logit, r)
        has_conf = torch.isfinite(c)
        if self.confidence_weight > 0 and bool(has_conf.any()):
            loss = loss + self.confidence_weight * F.binary_cross_entropy_with_logits(
                conf_logit[has_conf], c[has_conf]
            )
        if self.ranking_weight > 0:
            loss = loss + self.ranking_weight * pairwise_hinge(
                pass_logit, r, self.ranking_min_gap, self.ranking_margin
            )
        return loss

    # ---------------------------------------------------------------- predicting
    @torch.no_grad()
    def _heads(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = self._check_X(X)
        finite = np.isfinite(X).all(axis=1)
        pass_logit = np.full(len(X), np.nan)
        conf_logit = np.full(len(X), np.nan)
        if self.net_ is not None and finite.any():
            self.net_.eval()
            with _one_thread():
                p, c = self.net_(self._standardise(X[finite]))
            pass_logit[finite], conf_logit[finite] = p.double().numpy(), c.double().numpy()
        return pass_logit, conf_logit, finite

    def predict_pass_rate(self, X, keys=None) -> np.ndarray:
        pass_logit, _, finite = self._heads(X)
        out = np.full(len(pass_logit), self.prior_pass_rate)  # before any label, and for broken feature rows
        if self.n_updates_ > 0:
            out[finite] = 1.0 / (1.0 + np.exp(-pass_logit[finite]))
        return out

    def predict_confidence(self, X, keys=None) -> np.ndarray:
        """The confidence head's prediction (meaningful only if confidence targets were given); NaN if untrained."""
        _, conf_logit, _ = self._heads(X)
        return 1.0 / (1.0 + np.exp(-conf_logit)) if self.n_updates_ > 0 else np.full(len(conf_logit), np.nan)

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"n_updates_": self.n_updates_, "n_seen_": self.n_seen_}
        state["generator_"] = self.generator_.get_state().numpy().copy()
        if self.net_ is None:
            return state
        state["n_features_in_"] = self.n_features_in_
        state["mean_"], state["m2_"] = self.mean_.copy(), self.m2_.copy()
        state["net_"] = {name: t.detach().numpy().copy() for name, t in self.net_.state_dict().items()}
        # AdamW moments per parameter, in parameters() order (the optimiser's own indexing).
        optim_state = self.optimizer_.state_dict()["state"]
        state["optimizer_"] = {
            str(i): {k: np.asarray(v.detach().numpy() if torch.is_tensor(v) else v).copy() for k, v in s.items()}
            for i, s in optim_state.items()
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self.n_updates_ = int(state["n_updates_"])
        self.n_seen_ = float(state["n_seen_"])
        if "net_" in state:
            self._build(int(state["n_features_in_"]))
            self.mean_ = np.asarray(state["mean_"], dtype=np.float64).copy()
            self.m2_ = np.asarray(state["m2_"], dtype=np.float64).copy()
            self.net_.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state["net_"].items()})
            optim = self.optimizer_.state_dict()
            optim["state"] = {
                int(i): {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in s.items()}
                for i, s in state.get("optimizer_", {}).items()
            }
            self.optimizer_.load_state_dict(optim)
        self.generator_.set_state(torch.as_tensor(np.asarray(state["generator_"], dtype=np.uint8)))
