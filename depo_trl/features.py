"""Feature groups: what the estimator sees about each candidate prompt.

Each group turns a ``CandidateBatch`` into a block of columns; ``Featurizer`` concatenates the groups named in
``depo_features``. Groups are plain numpy and know nothing about the trainer, so they can be used and tested on
their own.

- ``length``: cheap prompt statistics (tokens, characters, words, lines, digits, math symbols).
- ``history``: what was observed for this prompt before (seen, times seen, smoothed and posterior pass rate in
  log-odds, rounds since last seen), from ``PromptHistory``.
- ``embedding``: the policy's pooled last hidden state of the prompt, reduced to ``embedding_dim`` columns by a
  seeded Gaussian random projection (fixed for the whole run, so the estimator's inputs mean the same thing
  from round to round).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .history import PromptHistory

_MATH_SYMBOLS = re.compile(r"[=+\-*/^\\<>%()\[\]{}|]")


@dataclass
class CandidateBatch:
    """The candidates of one round, as the feature groups need them."""

    keys: np.ndarray  # int64 prompt keys (see history.prompt_key)
    texts: list[str]  # prompt as rendered for the model (chat template applied)
    token_counts: np.ndarray | None = None  # prompt length in tokens
    embeddings: np.ndarray | None = None  # (n, hidden) pooled policy hidden states

    def __len__(self) -> int:
        return len(self.keys)


def _logit(p: np.ndarray, eps: float = 0.02) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


class LengthFeatures:
    name = "length"
    needs_embedding = False

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        texts = batch.texts
        chars = np.array([len(t) for t in texts], dtype=np.float64)
        tokens = batch.token_counts if batch.token_counts is not None else chars / 4.0
        words = np.array([len(t.split()) for t in texts], dtype=np.float64)
        lines = np.array([t.count("\n") + 1 for t in texts], dtype=np.float64)
        digits = np.array([sum(c.isdigit() for c in t) for t in texts], dtype=np.float64)
        symbols = np.array([len(_MATH_SYMBOLS.findall(t)) for t in texts], dtype=np.float64)
        return np.column_stack(
            [
                np.log1p(np.asarray(tokens, dtype=np.float64)),
                np.log1p(chars),
                np.log1p(words),
                np.log1p(lines),
                digits / np.maximum(chars, 1.0),
                np.log1p(symbols),
            ]
        )


class HistoryFeatures:
    name = "history"
    needs_embedding = False

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        if history is None:
            raise ValueError("The 'history' feature group needs a PromptHistory.")
        h = history.lookup(batch.keys)
        posterior_mean = h["alpha"] / (h["alpha"] + h["beta"])
        return np.column_stack(
            [
                h["seen"],
                np.log1p(h["count"]),
                _logit(h["last_rate"]) * h["seen"],
                _logit(h["ema_rate"]) * h["seen"],
                _logit(posterior_mean),
                np.log1p(h["rounds_since"]),
            ]
        )


class EmbeddingFeatures:
    name = "embedding"
    needs_embedding = True

    def __init__(self, dim: int = 16, seed: int = 0):
        self.dim = int(dim)
        self.seed = int(seed)
        self._projection: np.ndarray | None = None

    def projection(self, hidden_size: int) -> np.ndarray:
        if self._projection is None or self._projection.shape[0] != hidden_size:
            rng = np.random.default_rng(self.seed)
            self._projection = rng.standard_normal((hidden_size, self.dim)) / np.sqrt(hidden_size)
        return self._projection

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        if batch.embeddings is None:
            raise ValueError("The 'embedding' feature group needs policy embeddings in the batch.")
        emb = np.asarray(batch.embeddings, dtype=np.float64)
        return emb @ self.projection(emb.shape[1])


FEATURE_GROUPS = {cls.name: cls for cls in (LengthFeatures, HistoryFeatures, EmbeddingFeatures)}


def check_feature_names(names) -> None:
    unknown = [n for n in names if n not in FEATURE_GROUPS]
    if unknown:
        raise ValueError(f"Unknown depo_features {unknown}. Valid feature groups: {sorted(FEATURE_GROUPS)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"depo_features lists a group twice: {list(names)}.")


class Featurizer:
    """Concatenates the named feature groups into one matrix."""

    def __init__(self, names, embedding_dim: int = 16, seed: int = 0):
        check_feature_names(names)
        self.names = list(names)
        self.groups = [
            EmbeddingFeatures(embedding_dim, seed) if n == "embedding" else FEATURE_GROUPS[n]() for n in self.names
        ]

    @property
    def needs_embedding(self) -> bool:
        return any(g.needs_embedding for g in self.groups)

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        if not self.groups:
            return np.zeros((len(batch), 0))
        return np.hstack([g.transform(batch, history) for g in self.groups])
