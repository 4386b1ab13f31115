"""Feature groups: what the estimator sees about each candidate prompt.

Each group turns a ``CandidateBatch`` into a block of columns; ``Featurizer`` concatenates the groups named in
``depo_features``. Groups are plain numpy and know nothing about the trainer, so they can be used and tested on
their own.

- ``length``: cheap prompt statistics (tokens, characters, words, lines, digits, math symbols).
- ``text``: hashed word n-grams and character n-grams of the prompt text (signed feature hashing, the "hashing
  trick"), log-scaled and L2-normalised per block. Fixed width, no vocabulary, stateless: the same text always
  gives the same columns, in every process and after resume.
- ``metadata``: dataset columns the user names (``CandidateBatch.metadata``). A number becomes a value column
  plus a missing flag; a string (or a list of strings) is one-hot encoded into a few hashed buckets.
- ``history``: what was observed for this prompt before (seen, times seen, smoothed and posterior pass rate in
  log-odds, rounds since last seen), from ``PromptHistory``.
- ``embedding``: the policy's pooled last hidden state of the prompt, optionally L2-normalised, reduced to
  ``dim`` columns by a seeded Gaussian random projection (fixed for the whole run, so the estimator's inputs
  mean the same thing from round to round); ``dim=0`` keeps the raw hidden state. ``EmbeddingCache`` keeps
  embeddings by prompt key so a prompt is re-embedded only every ``refresh_every`` rounds.

Per-group options go through ``Featurizer(names, options={"text": {"dim": 128}, "metadata": {"columns": [...]}})``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .history import PromptHistory

_MATH_SYMBOLS = re.compile(r"[=+\-*/^\\<>%()\[\]{}|]")
# Words, numbers and single symbols: in math prompts "\frac", "^" and "=" carry as much signal as words.
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass
class CandidateBatch:
    """The candidates of one round, as the feature groups need them."""

    keys: np.ndarray  # int64 prompt keys (see history.prompt_key)
    texts: list[str]  # prompt as rendered for the model (chat template applied)
    token_counts: np.ndarray | None = None  # prompt length in tokens
    embeddings: np.ndarray | None = None  # (n, hidden) pooled policy hidden states
    metadata: dict[str, list] | None = field(default=None)  # dataset column name -> one value per candidate

    def __len__(self) -> int:
        return len(self.keys)


def _logit(p: np.ndarray, eps: float = 0.02) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------- hashing helpers
_MASK64 = (1 << 64) - 1


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays: spreads nearby inputs over all 64 bits (overflow wraps)."""
    h = h.astype(np.uint64, copy=True)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; features must mean the same thing on every rank and after resume.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _scatter(rows: np.ndarray, hashes: np.ndarray, n_rows: int, width: int) -> np.ndarray:
    """Sum +-1 into ``width`` buckets per row: the bucket from the high 32 bits of the hash (multiply-shift,
    avoiding a slow 64-bit modulo), the sign from the lowest bit."""
    if len(hashes) == 0 or width == 0:
        return np.zeros((n_rows, width))
    bucket = (((hashes >> np.uint64(32)) * np.uint64(width)) >> np.uint64(32)).view(np.int64)
    weight = np.where((hashes & np.uint64(1)).view(np.int64) == 1, -1.0, 1.0)
    out = np.bincount(rows * width + bucket, weights=weight, minlength=n_rows * width)
    return out.reshape(n_rows, width)


def _sublinear_normalised(block: np.ndarray) -> np.ndarray:
    # log-scaled counts so one long repeated token does not dominate, then unit length per row.
    block = np.sign(block) * np.log1p(np.abs(block))
    norm = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.maximum(norm, 1e-12)


# ----------------------------------------------------------------------------------------------- feature groups
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
        ).reshape(len(texts), 6)


class TextFeatures:
    """Signed hashing of lower-cased word n-grams (first ``dim // 2`` columns) and character n-grams (the rest).

    Args:
        dim: total number of columns.
        word_ngrams: ``(min_n, max_n)`` of word n-grams.
        char_ngrams: ``(min_n, max_n)`` of character (byte) n-grams.
        seed: changes the hash functions, so two seeds give differently collided buckets.
    """

    name = "text"
    needs_embedding = False

    def __init__(self, dim: int = 128, word_ngrams=(1, 2), char_ngrams=(3, 5), seed: int = 0):
        if int(dim) < 2:
            raise ValueError(f"text feature dim must be >= 2, got {dim}.")
        for label, (lo, hi) in (("word_ngrams", word_ngrams), ("char_ngrams", char_ngrams)):
            if not 1 <= int(lo) <= int(hi):
                raise ValueError(f"text {label} must be (min_n, max_n) with 1 <= min_n <= max_n, got {(lo, hi)}.")
        self.dim = int(dim)
        self.word_ngrams = (int(word_ngrams[0]), int(word_ngrams[1]))
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        self.seed = int(seed)
        self._token_hash: dict[str, int] = {}

    def _salt(self, kind: int, n: int) -> np.uint64:
        return np.uint64(_stable_hash(f"{self.seed}/{kind}/{n}"))

    def _ngram_hashes(self, units: np.ndarray, rows: np.ndarray, n: int, salt: np.uint64):
        """Hashes of all length-``n`` runs of ``units`` that stay inside one row (``rows`` = row id per unit)."""
        count = len(units) - n + 1
        if count <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint64)
        # Polynomial rolling hash (wrapping uint64 arithmetic), then one avalanche mix per n-gram.
        h = np.full(count, salt, dtype=np.uint64)
        for k in range(n):
            h *= np.uint64(0x100000001B3)
            h += units[k : k + count]
        h = _mix64(h)
        valid = rows[:count] == rows[n - 1 : n - 1 + count]
        return rows[:count][valid], h[valid]

    def _block(self, units: np.ndarray, rows: np.ndarray, n_rows: int, width: int, ngrams, kind: int) -> np.ndarray:
        parts_rows, parts_hash = [], []
        for n in range(ngrams[0], ngrams[1] + 1):
            r, h = self._ngram_hashes(units, rows, n, self._salt(kind, n))
            parts_rows.append(r)
            parts_hash.append(h)
        block = _scatter(np.concatenate(parts_rows), np.concatenate(parts_hash), n_rows, width)
        return _sublinear_normalised(block)

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        texts = [t.lower() for t in batch.texts]
        n = len(texts)
        word_dim = self.dim // 2
        # Words: one 64-bit hash per token (cached; vocabularies repeat), laid end to end over all prompts.
        tokens = [_TOKEN.findall(text) for text in texts]
        flat = [token for row in tokens for token in row]
        cache = self._token_hash
        if len(cache) > 500_000:  # bound the cache on endless streams
            cache.clear()
        for token in set(flat).difference(cache):
            cache[token] = _stable_hash(token)
        token_hashes = [cache[token] for token in flat]
        token_rows = np.repeat(np.arange(n, dtype=np.int64), [len(row) for row in tokens])
        token_hashes = np.array(token_hashes, dtype=np.uint64)
        words = self._block(token_hashes, token_rows, n, word_dim, self.word_ngrams, kind=0)
        # Characters: the UTF-8 bytes of all prompts concatenated, with the row id of each byte.
        encoded = [t.encode("utf-8") for t in texts]
        units = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
        rows = np.repeat(np.arange(n, dtype=np.int64), [len(e) for e in encoded])
        chars = self._block(units, rows, n, self.dim - word_dim, self.char_ngrams, kind=1)
        return np.hstack([words, chars])


class MetadataFeatures:
    """Dataset columns named by the user, read from ``CandidateBatch.metadata``.

    Args:
        columns: a list of column names (type decided per value) or a dict ``name -> "numeric" | "categorical" |
            "auto"``. A numeric column gives ``[value, missing]``; a categorical one ``buckets`` one-hot columns
            (value hashed to a bucket; a list of values spreads 1 over its buckets); ``auto`` gives both, so
            a column may hold numbers in some rows and strings in others. ``None`` and NaN count as missing.
        buckets: one-hot buckets per categorical column.
    """

    name = "metadata"
    needs_embedding = False
    KINDS = ("auto", "numeric", "categorical")

    def __init__(self, columns=None, buckets: int = 16, seed: int = 0):
        if columns is None or len(columns) == 0:
            raise ValueError(
                "The 'metadata' feature group needs the dataset columns to read, e.g. "
                "options={'metadata': {'columns': ['level', 'subject']}}."
            )
        if isinstance(columns, str):
            columns = [columns]
        kinds = dict(columns) if isinstance(columns, dict) else {str(c): "auto" for c in columns}
        for column, kind in kinds.items():
            if kind not in self.KINDS:
                raise ValueError(f"metadata column {column!r} has kind {kind!r}; valid kinds: {list(self.KINDS)}.")
        if int(buckets) < 1:
            raise ValueError(f"metadata buckets must be >= 1, got {buckets}.")
        self.columns = kinds
        self.buckets = int(buckets)
        self.seed = int(seed)

    @staticmethod
    def _number(value) -> float | None:
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        if isinstance(value, (int, float, np.integer, np.floating)):
            return float(value) if np.isfinite(value) else None
        return None

    def _column(self, column: str, kind: str, values: list) -> np.ndarray:
        numeric = np.zeros((len(values), 2))  # [value, missing-or-not-a-number]
        onehot = np.zeros((len(values), self.buckets))
        for row, value in enumerate(values):
            number = self._number(value)
            if value is None or (isinstance(value, (float, np.floating)) and number is None):  # None or NaN
                numeric[row, 1] = 1.0
                continue
            if number is not None and kind != "categorical":
                numeric[row, 0] = number
                continue
            if kind == "numeric":
                raise ValueError(f"metadata column {column!r} is declared numeric but holds {value!r}.")
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            for item in items:
                onehot[row, _stable_hash(f"{self.seed}/{column}/{item}") % self.buckets] += 1.0 / len(items)
            numeric[row, 1] = 1.0  # in an auto column a category means "no number"
        if kind == "numeric":
            return numeric
        if kind == "categorical":
            return onehot
        return np.hstack([numeric, onehot])

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        metadata = batch.metadata or {}
        missing = [c for c in self.columns if c not in metadata]
        if missing:
            raise ValueError(
                f"The 'metadata' feature group needs columns {missing}, but the batch carries {sorted(metadata)}. "
                "Check the column names against the dataset."
            )
        blocks = []
        for column, kind in self.columns.items():
            values = list(metadata[column])
            if len(values) != len(batch):
                raise ValueError(f"metadata column {column!r} has {len(values)} values for {len(batch)} prompts.")
            blocks.append(self._column(column, kind, values))
        return np.hstack(blocks)


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
        ).reshape(len(batch), 6)


class EmbeddingFeatures:
    """Policy embeddings: optional L2 normalisation, then a seeded random projection to ``dim`` (0 = raw)."""

    name = "embedding"
    needs_embedding = True

    def __init__(self, dim: int = 16, seed: int = 0, normalize: bool = False):
        if int(dim) < 0:
            raise ValueError(f"embedding dim must be >= 0 (0 keeps the raw hidden state), got {dim}.")
        self.dim = int(dim)
        self.seed = int(seed)
        self.normalize = bool(normalize)
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
        if self.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        if self.dim == 0:
            return emb
        return emb @ self.projection(emb.shape[1])


class EmbeddingCache:
    """Pooled embeddings by prompt key, so a prompt is re-embedded only when its entry is ``refresh_every``
    rounds old (the policy drifts, so embeddings age). Bounded: the least recently stored entry is evicted.

    ``missing(keys, round)`` says which keys need a fresh embedding; ``put`` stores them; ``get`` returns them.
    """

    def __init__(self, refresh_every: int = 1, max_prompts: int = 100_000):
        if int(refresh_every) < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}.")
        if int(max_prompts) < 1:
            raise ValueError(f"max_prompts must be >= 1, got {max_prompts}.")
        self.refresh_every = int(refresh_every)
        self.max_prompts = int(max_prompts)
        self._entries: dict[int, tuple[int, np.ndarray]] = {}  # key -> (round stored, embedding); insertion order

    def __len__(self) -> int:
        return len(self._entries)

    def missing(self, keys, round: int) -> np.ndarray:
        """Boolean mask: which keys have no embedding, or one ``refresh_every`` or more rounds old."""
        out = np.ones(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            entry = self._entries.get(int(key))
            out[i] = entry is None or round - entry[0] >= self.refresh_every
        return out

    def put(self, keys, embeddings, round: int) -> None:
        for key, emb in zip(keys, np.asarray(embeddings)):
            self._entries.pop(int(key), None)  # re-insert so dict order = storage order
            self._entries[int(key)] = (int(round), np.array(emb, copy=True))
        while len(self._entries) > self.max_prompts:
            del self._entries[next(iter(self._entries))]

    def state_dict(self) -> dict:
        """Keys, storage rounds and embeddings as arrays (in storage order), for checkpoints."""
        keys = np.array(list(self._entries), dtype=np.int64)
        rounds = np.array([self._entries[int(k)][0] for k in keys], dtype=np.int64)
        rows = [self._entries[int(k)][1] for k in keys]
        embeddings = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), dtype=np.float32)
        return {"keys": keys, "rounds": rounds, "embeddings": embeddings}

    def load_state_dict(self, state: dict) -> None:
        keys, rounds = np.asarray(state["keys"]).reshape(-1), np.asarray(state["rounds"]).reshape(-1)
        embeddings = np.asarray(state["embeddings"])
        self._entries = {int(k): (int(r), np.array(e, copy=True)) for k, r, e in zip(keys, rounds, embeddings)}

    def get(self, keys) -> np.ndarray:
        missing = [int(k) for k in keys if int(k) not in self._entries]
        if missing:
            raise KeyError(f"{len(missing)} prompts have no cached embedding; embed them first (see missing()).")
        return np.stack([self._entries[int(k)][1] for k in keys]) if len(keys) else np.zeros((0, 0))


FEATURE_GROUPS = {
    cls.name: cls for cls in (LengthFeatures, TextFeatures, MetadataFeatures, HistoryFeatures, EmbeddingFeatures)
}


def check_feature_names(names) -> None:
    unknown = [n for n in names if n not in FEATURE_GROUPS]
    if unknown:
        raise ValueError(f"Unknown depo_features {unknown}. Valid feature groups: {sorted(FEATURE_GROUPS)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"depo_features lists a group twice: {list(names)}.")


def make_feature_group(name: str, seed: int = 0, **options: Any):
    """One feature group by name, with its options (a clear error for an unknown name or option)."""
    check_feature_names([name])
    cls = FEATURE_GROUPS[name]
    if name in ("text", "metadata", "embedding"):
        options.setdefault("seed", seed)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"Bad options {sorted(options)} for feature group {name!r}: {exc}.") from exc


class Featurizer:
    """Concatenates the named feature groups into one matrix.

    Args:
        names: feature group names, in column order.
        embedding_dim: projection width of the ``embedding`` group (``options`` may override it).
        seed: seed of the hash functions and projections.
        options: per-group constructor options, e.g. ``{"text": {"dim": 64}, "metadata": {"columns": ["level"]}}``.
    """

    def __init__(self, names, embedding_dim: int = 16, seed: int = 0, options: dict[str, dict] | None = None):
        check_feature_names(names)
        options = dict(options or {})
        stray = [n for n in options if n not in names]
        if stray:
            raise ValueError(
                f"Feature options given for groups {stray} that are not in the feature list {list(names)}. "
                f"Valid feature groups: {sorted(FEATURE_GROUPS)}."
            )
        self.names = list(names)
        self.groups = []
        for n in self.names:
            group_options = dict(options.get(n) or {})
            if n == "embedding":
                group_options.setdefault("dim", embedding_dim)
            self.groups.append(make_feature_group(n, seed=seed, **group_options))

    @property
    def needs_embedding(self) -> bool:
        return any(g.needs_embedding for g in self.groups)

    @property
    def needs_history(self) -> bool:
        return "history" in self.names

    @property
    def metadata_columns(self) -> list[str]:
        """Dataset columns the batch must carry in ``CandidateBatch.metadata``."""
        return [c for g in self.groups if isinstance(g, MetadataFeatures) for c in g.columns]

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        if not self.groups:
            return np.zeros((len(batch), 0))
        return np.hstack([g.transform(batch, history) for g in self.groups])
