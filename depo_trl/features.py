"""Feature groups: what the estimator sees about each candidate prompt.

Each group turns a ``CandidateBatch`` into a block of columns; ``Featurizer`` concatenates the groups named in
``depo_features``. Groups are plain numpy and know nothing about the trainer, so they can be used and tested on
their own.

- ``length``: cheap prompt statistics (tokens, characters, words, lines, digits, math symbols).
- ``text``: scikit-learn TF-IDF of hashed word n-grams and character n-grams of the prompt (and of extra text
  columns such as the reference answer). Fixed width (no vocabulary); the IDF weights are fitted once on the
  first pool (or the warm-start file) and frozen. Sparse when wide (the default, 2**18 columns per source).
- ``metadata``: dataset columns the user names (``CandidateBatch.metadata``). A number becomes a value column
  plus a missing flag; a string (or a list of strings) is one-hot encoded into a few hashed buckets.
- ``history``: what was observed for this prompt before (seen, times seen, smoothed and posterior pass rate in
  log-odds, rounds since last seen), from ``PromptHistory``.
- ``embedding``: the policy's pooled last hidden state of the prompt, optionally L2-normalised, reduced to
  ``dim`` columns by a PCA fitted once on the first embeddings (scikit-learn ``IncrementalPCA``, then frozen, so
  the estimator's inputs mean the same thing from round to round), or by a seeded random projection, or kept raw.
  ``EmbeddingCache`` keeps embeddings by prompt key so a prompt is re-embedded only every ``refresh_every`` rounds.
- ``answer_likelihood``: the current policy's teacher-forced log-likelihood of the prompt's reference answer (a
  dataset column, default ``answer``) right after the prompt, from the embedding prefill with the answer appended
  (``depo_trl.embedding.embed_and_score_answers``): total, per-token and first-token log-probability, and the
  probability of the exact answer. For a short exact-match answer at temperature 1 that probability *is* the pass
  rate of a completion that is only the answer; for answers wrapped in prose or reasoning it is a weaker proxy.

Per-group options go through ``Featurizer(names, options={"text": {"dim": 128}, "metadata": {"columns": [...]}})``.

What a group reads besides the prompt text is declared on the group, never looked up by its name elsewhere: its
``requires`` class attribute names inputs from ``GROUP_INPUTS`` (``embeddings`` and ``answer_logprobs`` come from
one no-grad prefill of the policy, which ``depo_trl.prompt_encoder.PromptEncoder`` runs exactly when a group
declares one of them; ``history`` is the engine's ``PromptHistory``), and its ``columns`` attribute names the
dataset columns it reads. ``register_feature_group`` adds a group of your own; once registered, a name in
``depo_features`` is all it takes, in training and routing alike.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .history import PromptHistory

_MATH_SYMBOLS = "=+-*/^\\<>%()[]{}|"
_DIGIT_BYTES = b"0123456789"
_SYMBOL_BYTES = _MATH_SYMBOLS.encode()
# Words, numbers and single symbols: in math prompts "\frac", "^" and "=" carry as much signal as words.
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass
class CandidateBatch:
    """The candidates of one round, as the feature groups need them."""

    keys: np.ndarray  # int64 prompt keys (see history.prompt_key)
    texts: list[str]  # prompt as rendered for the model (chat template applied)
    token_counts: np.ndarray | None = None  # prompt length in tokens
    embeddings: np.ndarray | None = None  # (n, hidden) pooled policy hidden states
    answer_logprobs: np.ndarray | None = None  # (n, 3) reference answer log-prob: total, per token, first token
    word_counts: np.ndarray | None = None  # whitespace word counts, when the caller already has them
    history_lookup: dict | None = None  # PromptHistory.lookup(keys), when the caller already looked them up
    metadata: dict[str, list] | None = field(default=None)  # dataset column name -> one value per candidate

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class GroupInput:
    """An input a feature group may declare in ``requires``, beyond the prompt text and token counts."""

    description: str
    from_policy: bool  # True: one no-grad prefill of the policy provides it (PromptEncoder)
    width: int | None = None  # columns per prompt of the (n, width) array; None: any width (the hidden size)
    how: str = ""  # how a caller of PromptSelector.score computes it, for the error when it is missing


#: Every input a feature group may declare in ``requires``, by the ``CandidateBatch`` field that carries it.
GROUP_INPUTS = {
    "embeddings": GroupInput(
        "the policy's pooled last hidden state of each prompt (n, hidden)", from_policy=True,
        how="pass the pooled policy hidden states of the prompts (n, hidden)"),
    "answer_logprobs": GroupInput(
        "the policy's teacher-forced log-likelihood of each prompt's reference answer: total, per token, first "
        "token (n, 3); the declaring group's ``column``, ``prefix`` and ``max_tokens`` say which answer",
        from_policy=True, width=3,
        how="compute them with depo_trl.embedding.embed_and_score_answers (prompt + reference answer, one prefill)"),
    "history": GroupInput("the engine's PromptHistory (what was observed for each prompt before)",
                          from_policy=False),
}
#: What a group declaring ``answer_logprobs`` says about the answer: its dataset column, the text placed between the
#: prompt and the answer, and the most answer tokens scored.
ANSWER_SPEC = ("column", "prefix", "max_tokens")
#: The declarable inputs that only a prefill of the policy provides.
MODEL_INPUTS = tuple(name for name, spec in GROUP_INPUTS.items() if spec.from_policy)


def _check_requires(cls) -> tuple[str, ...]:
    requires = tuple(getattr(cls, "requires", ()))
    unknown = [r for r in requires if r not in GROUP_INPUTS]
    if unknown:
        raise ValueError(f"Feature group {getattr(cls, 'name', cls)!r} requires {unknown}; a group may declare "
                         f"only {list(GROUP_INPUTS)} (dataset columns go in its `columns`).")
    return requires


def _logit(p: np.ndarray, eps: float = 0.02) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------- hashing helpers
def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; features must mean the same thing on every rank and after resume.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


# ----------------------------------------------------------------------------------------------- feature groups
class LengthFeatures:
    name = "length"
    requires = ()

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        texts = batch.texts
        chars = np.array([len(t) for t in texts], dtype=np.float64)
        tokens = batch.token_counts if batch.token_counts is not None else chars / 4.0
        words = (np.asarray(batch.word_counts, dtype=np.float64) if batch.word_counts is not None
                 else np.array([len(t.split()) for t in texts], dtype=np.float64))
        lines = np.array([t.count("\n") + 1 for t in texts], dtype=np.float64)
        # Counted by deleting the (ASCII) bytes, one C call per prompt: a per-character Python loop made this group
        # the slowest part of scoring 10,000 candidates.
        encoded = [t.encode("utf-8") for t in texts]
        sizes = np.array([len(e) for e in encoded], dtype=np.float64)
        digits = sizes - np.array([len(e.translate(None, _DIGIT_BYTES)) for e in encoded], dtype=np.float64)
        symbols = sizes - np.array([len(e.translate(None, _SYMBOL_BYTES)) for e in encoded], dtype=np.float64)
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
    """TF-IDF of hashed word and character n-grams of the prompt (and of extra text columns), with scikit-learn.

    Each text source (the prompt, then each column named in ``columns``, read from ``CandidateBatch.metadata``)
    becomes two blocks: ``HashingVectorizer`` word n-grams (``dim // 2`` columns) and ``char_wb`` character
    n-grams (the rest), each re-weighted by a ``TfidfTransformer`` (sublinear tf, L2-normalised rows). Hashing
    needs no vocabulary, so the width is fixed and a prompt never seen still gets its columns; only the IDF
    weights are learnt, once, from the first batch transformed (the first candidate pool) or from an explicit
    ``fit`` (e.g. on the warm-start file), and then frozen so the columns mean the same thing all run long.

    Output: a ``scipy.sparse`` CSR matrix when ``sparse`` (default: when ``dim > 4096``), else dense. Wide sparse
    text carries most of the signal (a 2**18-wide TF-IDF + ridge reaches r ~ 0.5 on DeepScaleR where 1,024 hashed
    columns reach ~ 0.44) but only estimators that accept sparse input (``hierarchical``) can use it.

    Rows are cached by prompt key (``cache_size`` prompts), since the text of a prompt never changes.

    Args:
        dim: columns per text source (word block ``dim // 2``, character block the rest).
        word_ngrams: ``(min_n, max_n)`` of word n-grams (words, numbers and single symbols are tokens).
        char_ngrams: ``(min_n, max_n)`` of character n-grams inside word boundaries.
        columns: extra text columns of the dataset to vectorise the same way (e.g. ``["answer"]``).
        idf: re-weight by inverse document frequency (fitted on the first batch or by ``fit``).
        sparse: return CSR (``None``: when ``dim > 4096``).
        seed: permutes the hashed columns (two seeds give differently collided buckets); 0 keeps sklearn's.
    """

    name = "text"
    requires = ()
    DENSE_LIMIT = 4096

    def __init__(
        self,
        dim: int = 2**18,
        word_ngrams=(1, 2),
        char_ngrams=(2, 5),
        columns=(),
        idf: bool = True,
        sparse: bool | None = None,
        cache_size: int = 20_000,
        seed: int = 0,
    ):
        if int(dim) < 2:
            raise ValueError(f"text feature dim must be >= 2, got {dim}.")
        for label, (lo, hi) in (("word_ngrams", word_ngrams), ("char_ngrams", char_ngrams)):
            if not 1 <= int(lo) <= int(hi):
                raise ValueError(f"text {label} must be (min_n, max_n) with 1 <= min_n <= max_n, got {(lo, hi)}.")
        if isinstance(columns, str):
            columns = [columns]
        self.dim = int(dim)
        self.word_ngrams = (int(word_ngrams[0]), int(word_ngrams[1]))
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        self.columns = [str(c) for c in columns]
        self.idf = bool(idf)
        self.sparse = self.dim > self.DENSE_LIMIT if sparse is None else bool(sparse)
        self.cache_size = int(cache_size)
        self.seed = int(seed)
        from sklearn.feature_extraction.text import HashingVectorizer

        common = dict(alternate_sign=False, norm=None, lowercase=True, dtype=np.float64)
        word_dim = self.dim // 2
        self._vectorizers = [
            HashingVectorizer(ngram_range=self.word_ngrams, token_pattern=_TOKEN.pattern, n_features=word_dim, **common),
            HashingVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, n_features=self.dim - word_dim,
                              **common),
        ]
        self._offsets = [0, word_dim]
        self._idf: np.ndarray | None = None  # (n_sources * dim,) frozen IDF weights; None until fitted
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._permutation = None
        if self.seed:
            rng = np.random.default_rng(self.seed)
            self._permutation = [rng.permutation(word_dim), rng.permutation(self.dim - word_dim)]

    @property
    def width(self) -> int:
        return self.dim * (1 + len(self.columns))

    def _sources(self, batch: CandidateBatch) -> list[list[str]]:
        sources = [list(batch.texts)]
        metadata = batch.metadata or {}
        missing = [c for c in self.columns if c not in metadata]
        if missing:
            raise ValueError(
                f"The 'text' feature group vectorises columns {missing}, but the batch carries {sorted(metadata)}."
            )
        for column in self.columns:
            values = list(metadata[column])
            if len(values) != len(batch):
                raise ValueError(f"text column {column!r} has {len(values)} values for {len(batch)} prompts.")
            sources.append(["" if v is None else str(v) for v in values])
        return sources

    def _counts(self, batch: CandidateBatch):
        """Raw hashed term counts, CSR (n, width), sublinear tf (1 + log count)."""
        import scipy.sparse as sp

        blocks = []
        for texts in self._sources(batch):
            for b, vectorizer in enumerate(self._vectorizers):
                block = vectorizer.transform(texts).tocsr()
                if self._permutation is not None:
                    block.indices = self._permutation[b][block.indices].astype(block.indices.dtype)
                    block.has_sorted_indices = False
                blocks.append(block)
        counts = sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((len(batch), 0))
        counts.data = 1.0 + np.log(counts.data)
        return counts

    def fit(self, batch: CandidateBatch) -> TextFeatures:
        """Learn (and freeze) the IDF weights from these prompts' texts (labels are never used)."""
        counts = self._counts(batch)
        n = counts.shape[0]
        df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)
        self._idf = np.log((1.0 + n) / (1.0 + df)) + 1.0  # scikit-learn's smoothed IDF
        self._cache.clear()
        return self

    def _weighted(self, counts):
        import scipy.sparse as sp

        if self.idf:
            counts = counts @ sp.diags(self._idf)
        counts = counts.tocsr()
        # L2-normalise each block of each row, so a long prompt does not outweigh a short one.
        n_blocks = 2 * (1 + len(self.columns))
        starts = np.array([s * self.dim + o for s in range(1 + len(self.columns)) for o in self._offsets])
        block_of = np.searchsorted(starts, counts.indices, side="right") - 1
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        norms = np.zeros((counts.shape[0], n_blocks))
        np.add.at(norms, (rows, block_of), counts.data**2)
        counts.data = counts.data / np.sqrt(np.maximum(norms[rows, block_of], 1e-24))
        return counts

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None):
        import scipy.sparse as sp

        n = len(batch)
        if self.idf and self._idf is None:
            if n == 0:
                return sp.csr_matrix((0, self.width)) if self.sparse else np.zeros((0, self.width))
            self.fit(batch)  # the first pool: unsupervised, so no label leaks
        keys = np.asarray(batch.keys, dtype=np.int64)
        if self.cache_size and len(self._cache) + n > self.cache_size:
            self._cache.clear()  # bounded memory: start over rather than track recency per row
        use_cache = self.cache_size >= n > 0
        todo = [i for i, k in enumerate(keys) if int(k) not in self._cache] if use_cache else list(range(n))
        if not todo:
            fresh = None
        else:
            sub = CandidateBatch(keys=keys[todo], texts=[batch.texts[i] for i in todo],
                                 metadata=None if batch.metadata is None else
                                 {c: [batch.metadata[c][i] for i in todo] for c in self.columns})
            fresh = self._weighted(self._counts(sub))
        if not use_cache or len(todo) == n:
            out = fresh if fresh is not None else sp.csr_matrix((n, self.width))
        else:
            rows = [None] * n
            for j, i in enumerate(todo):
                lo, hi = fresh.indptr[j], fresh.indptr[j + 1]
                rows[i] = (fresh.indices[lo:hi], fresh.data[lo:hi])
            for i, k in enumerate(keys):
                if rows[i] is None:
                    rows[i] = self._cache[int(k)]
            lengths = np.array([len(r[0]) for r in rows], dtype=np.int64)
            indptr = np.concatenate([[0], np.cumsum(lengths)])
            out = sp.csr_matrix((np.concatenate([r[1] for r in rows]), np.concatenate([r[0] for r in rows]), indptr),
                                shape=(n, self.width))
        if use_cache and fresh is not None:
            for j, i in enumerate(todo):
                lo, hi = fresh.indptr[j], fresh.indptr[j + 1]
                self._cache[int(keys[i])] = (fresh.indices[lo:hi].copy(), fresh.data[lo:hi].copy())
        return out if self.sparse else out.toarray()

    def state_dict(self) -> dict[str, Any]:
        return {} if self._idf is None else {"idf": self._idf.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cache.clear()
        self._idf = None if "idf" not in state else np.asarray(state["idf"], dtype=np.float64).reshape(-1)
        if self._idf is not None and len(self._idf) != self.width:
            raise ValueError(f"Saved text IDF has {len(self._idf)} columns, this text group has {self.width}.")


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
    requires = ()
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
    requires = ("history",)

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        if history is None:
            raise ValueError("The 'history' feature group needs a PromptHistory.")
        h = batch.history_lookup if batch.history_lookup is not None else history.lookup(batch.keys)
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


class AnswerLikelihoodFeatures:
    """How likely the current policy is to say the reference answer right after the prompt.

    Reads ``CandidateBatch.answer_logprobs`` (total, per-token and first-token log-probability of the answer
    tokens, teacher-forced; NaN where a prompt has no answer) and emits, clipped to a sane range: the total
    log-probability, the per-token and first-token log-probabilities, the probability of the whole answer and a
    missing flag (the other columns are 0 for a prompt without an answer).

    Args:
        column: the dataset column holding the reference answer (as text; numbers are converted with ``str``).
        prefix: text placed between the rendered prompt and the answer (e.g. ``"The answer is "`` when the policy
            answers in a sentence); empty by default.
        max_tokens: answers are cut to their first ``max_tokens`` tokens (a long worked solution would otherwise
            dominate the prefill and its log-likelihood mean little).
    """

    name = "answer_likelihood"
    requires = ("answer_logprobs",)

    def __init__(self, column: str = "answer", prefix: str = "", max_tokens: int = 32):
        if not isinstance(column, str) or not column:
            raise ValueError(f"answer_likelihood column must be a dataset column name, got {column!r}.")
        if int(max_tokens) < 1:
            raise ValueError(f"answer_likelihood max_tokens must be >= 1, got {max_tokens}.")
        self.column, self.prefix, self.max_tokens = column, str(prefix), int(max_tokens)
        self.columns = [column]

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        lp = batch.answer_logprobs
        if lp is None:
            raise ValueError(
                "The 'answer_likelihood' feature group needs answer_logprobs (depo_trl.embedding."
                "embed_and_score_answers on the prompts and their answers), or drop it from the features."
            )
        lp = np.asarray(lp, dtype=np.float64).reshape(len(batch), 3)
        missing = ~np.isfinite(lp).all(axis=1)
        lp = np.where(missing[:, None], 0.0, lp)
        total = np.clip(lp[:, 0], -40.0, 0.0)
        per_token, first = np.clip(lp[:, 1], -15.0, 0.0), np.clip(lp[:, 2], -15.0, 0.0)
        probability = np.where(missing, 0.0, np.exp(total))
        return np.column_stack([total, per_token, first, probability, missing.astype(np.float64)])


class EmbeddingFeatures:
    """Policy embeddings reduced to ``dim`` columns.

    ``reduction``:

    - ``"pca"`` (default): principal components (scikit-learn ``IncrementalPCA``), learnt from the embeddings
      that arrive and frozen once ``fit_samples`` have been seen (or at once by an explicit ``fit``). The PCA is
      fitted on the first batch (rank ``min(dim, n - 1)``) and then only *grows*: each time the samples seen
      double, components of what the existing ones do not explain are appended in the columns that were still 0.
      A column never changes meaning once it is non-zero, so the estimator's stored rows stay valid, and zero is
      what a centred component reads for an average prompt: before a column exists the estimator simply learns
      nothing from it. On a real LM (SmolLM2-135M) a 64-dim PCA keeps nearly all of what ridge regression reads
      from the raw 576-dim hidden state, where a 16-dim random projection kept little.
    - ``"random"``: a seeded Gaussian random projection (fixed for the run; cheap, no fitting, loses signal).
    - ``"none"`` (or ``dim=0``): the raw hidden state.

    ``normalize`` L2-normalises each embedding first.
    """

    name = "embedding"
    requires = ("embeddings",)
    REDUCTIONS = ("pca", "random", "none")

    def __init__(
        self, dim: int = 64, reduction: str = "pca", fit_samples: int = 256, seed: int = 0, normalize: bool = False
    ):
        if int(dim) < 0:
            raise ValueError(f"embedding dim must be >= 0 (0 keeps the raw hidden state), got {dim}.")
        if reduction not in self.REDUCTIONS:
            raise ValueError(f"embedding reduction must be one of {list(self.REDUCTIONS)}, got {reduction!r}.")
        if int(fit_samples) < 2:
            raise ValueError(f"embedding fit_samples must be >= 2, got {fit_samples}.")
        self.dim = int(dim)
        self.reduction = "none" if self.dim == 0 else reduction
        self.fit_samples = int(fit_samples)
        self.seed = int(seed)
        self.normalize = bool(normalize)
        self._projection: np.ndarray | None = None
        # PCA state: mean and components (zero rows past rank_), samples at the last growth, frozen flag, and
        # the embeddings buffered until frozen.
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # (dim, hidden)
        self.rank_: int = 0
        self.grown_at_: int = 0
        self.frozen_: bool = False
        self._buffer: list[np.ndarray] = []

    @property
    def fitted(self) -> bool:
        return self.reduction != "pca" or self.frozen_

    def projection(self, hidden_size: int) -> np.ndarray:
        if self._projection is None or self._projection.shape[0] != hidden_size:
            rng = np.random.default_rng(self.seed)
            self._projection = rng.standard_normal((hidden_size, self.dim)) / np.sqrt(hidden_size)
        return self._projection

    def _prepare(self, embeddings) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be 2-D (n_prompts, hidden), got shape {emb.shape}.")
        if self.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb

    def _first_fit(self, emb: np.ndarray) -> None:
        from sklearn.decomposition import IncrementalPCA

        rank = min(self.dim, len(emb) - 1, emb.shape[1])
        pca = IncrementalPCA(n_components=rank, batch_size=max(rank, 512)).fit(emb)
        self.components_ = np.zeros((self.dim, emb.shape[1]))
        self.components_[:rank] = pca.components_
        self.mean_, self.rank_, self.grown_at_ = pca.mean_.copy(), rank, len(emb)

    def _grow(self, emb: np.ndarray) -> None:
        """Append the principal components of what the current ones leave unexplained (columns still 0)."""
        from sklearn.decomposition import IncrementalPCA

        target = min(self.dim, len(emb) - 1, emb.shape[1])
        if target > self.rank_:
            centred = emb - self.mean_
            basis = self.components_[: self.rank_]
            residual = centred - (centred @ basis.T) @ basis
            extra = target - self.rank_
            pca = IncrementalPCA(n_components=extra, batch_size=max(extra, 512)).fit(residual)
            new = pca.components_ - (pca.components_ @ basis.T) @ basis  # exactly orthogonal to the old ones
            new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
            self.components_[self.rank_ : target] = new
            self.rank_ = target
        self.grown_at_ = len(emb)

    def fit(self, batch: CandidateBatch | None = None, embeddings=None) -> EmbeddingFeatures:
        """Fit (and freeze) the PCA on these embeddings (``batch.embeddings`` or ``embeddings``)."""
        emb = self._prepare(batch.embeddings if embeddings is None else embeddings)
        if self.reduction != "pca":
            return self
        if len(emb) < 2:
            raise ValueError(f"Fitting the embedding PCA needs at least 2 embeddings, got {len(emb)}.")
        self._first_fit(emb)
        self.frozen_, self._buffer = True, []
        return self

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None) -> np.ndarray:
        if batch.embeddings is None:
            raise ValueError("The 'embedding' feature group needs policy embeddings in the batch.")
        emb = self._prepare(batch.embeddings)
        if self.reduction == "none":
            return emb
        if self.reduction == "random":
            return emb @ self.projection(emb.shape[1])
        if not self.frozen_ and len(emb):
            self._buffer.extend(emb)
            seen = np.stack(self._buffer)
            if self.components_ is None:
                if len(seen) < 2:
                    return np.zeros((len(emb), self.dim))
                self._first_fit(seen)
            elif len(seen) >= min(2 * self.grown_at_, self.fit_samples):
                self._grow(seen)
            if len(seen) >= self.fit_samples:
                self.frozen_, self._buffer = True, []
        if self.components_ is None:
            return np.zeros((len(emb), self.dim))
        if emb.shape[1] != self.components_.shape[1]:
            raise ValueError(f"embeddings have {emb.shape[1]} dims, the PCA was fitted on {self.components_.shape[1]}.")
        # x C^T - mean C^T: the same projection without materialising the centred (n, hidden) copy.
        return emb @ self.components_.T - self.mean_ @ self.components_.T

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rank": self.rank_, "grown_at": self.grown_at_, "frozen": int(self.frozen_)}
        if self.components_ is not None:
            state.update(mean=self.mean_.copy(), components=self.components_.copy())
        if self._buffer:
            state["buffer"] = np.stack(self._buffer)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean_ = self.components_ = None
        self.rank_ = int(state.get("rank", 0))
        self.grown_at_ = int(state.get("grown_at", 0))
        self.frozen_ = bool(int(state.get("frozen", 0)))
        self._buffer = list(np.asarray(state["buffer"], dtype=np.float64)) if "buffer" in state else []
        if "components" in state:
            self.mean_ = np.asarray(state["mean"], dtype=np.float64).reshape(-1)
            self.components_ = np.asarray(state["components"], dtype=np.float64)
            if self.components_.shape[0] != self.dim:
                raise ValueError(f"Saved embedding PCA has {self.components_.shape[0]} components, dim is {self.dim}.")


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
    cls.name: cls
    for cls in (LengthFeatures, TextFeatures, MetadataFeatures, HistoryFeatures, EmbeddingFeatures,
                AnswerLikelihoodFeatures)
}


def register_feature_group(cls: type | None = None, *, overwrite: bool = False):
    """Class decorator: make ``cls`` selectable as ``depo_features=[..., cls.name]``.

    The class needs a ``name``, ``transform(batch, history) -> (n, k) array`` and ``requires`` (a tuple of
    ``GROUP_INPUTS`` names, empty for a group that reads only the text); a group that reads dataset columns names
    them in its ``columns``. The trainer, ``depo-trl route`` and the engine provide exactly what is declared:
    nothing else is to be wired. A name already registered is refused unless ``overwrite=True``.
    """

    def register(cls: type) -> type:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} needs a class attribute `name` (a non-empty string) to be registered.")
        if not callable(getattr(cls, "transform", None)):
            raise ValueError(f"Feature group {name!r} needs a method transform(batch, history) -> (n, k) array.")
        if not hasattr(cls, "requires"):
            raise ValueError(f"Feature group {name!r} needs a class attribute `requires`: the inputs it reads, from "
                             f"{list(GROUP_INPUTS)}; () when it reads only the prompt text.")
        _check_requires(cls)
        if name in FEATURE_GROUPS and FEATURE_GROUPS[name] is not cls and not overwrite:
            raise ValueError(f"A feature group is already registered as {name!r}. Give {cls.__name__} another `name`, "
                             "or replace the registered one on purpose with @register_feature_group(overwrite=True).")
        FEATURE_GROUPS[name] = cls
        return cls

    return register if cls is None else register(cls)


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
    if "seed" in inspect.signature(cls).parameters:  # hashes and projections follow the run's seed
        options.setdefault("seed", seed)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"Bad options {sorted(options)} for feature group {name!r}: {exc}.") from exc


class Featurizer:
    """Concatenates the named feature groups into one matrix.

    Args:
        names: feature group names, in column order.
        embedding_dim: width of the reduced ``embedding`` group (``options`` may override it).
        seed: seed of the hash functions and projections.
        options: per-group constructor options, e.g. ``{"text": {"dim": 64}, "metadata": {"columns": ["level"]}}``.

    ``transform`` returns a dense array, or a ``scipy.sparse`` CSR matrix when a group is sparse (wide ``text``).
    Groups that learn something unsupervised (text IDF, embedding PCA) are fitted on the first batch they see or
    by ``fit``; ``state_dict`` / ``load_state_dict`` carry that through a checkpoint.
    """

    def __init__(self, names, embedding_dim: int = 64, seed: int = 0, options: dict[str, dict] | None = None):
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
            # a group's own "seed" option (e.g. to pick its hash buckets) wins over the run's seed
            self.groups.append(make_feature_group(n, seed=group_options.pop("seed", seed), **group_options))
        declared = {r for g in self.groups for r in _check_requires(g)}
        self._requires = tuple(r for r in GROUP_INPUTS if r in declared)
        answers = set()
        for g in self.groups:
            if "answer_logprobs" in g.requires:
                lacking = [a for a in ANSWER_SPEC if not hasattr(g, a)]
                if lacking:
                    raise ValueError(f"Feature group {g.name!r} declares answer_logprobs but has no {lacking}: the "
                                     f"prefill reads {list(ANSWER_SPEC)} from it to know which answer to score.")
                answers.add(tuple(getattr(g, a) for a in ANSWER_SPEC))
        if len(answers) > 1:  # one prefill scores one answer per prompt
            raise ValueError(f"Feature groups {self.groups_requiring('answer_logprobs')} declare answer_logprobs for "
                             f"different answers {sorted(answers)}; one prefill scores one answer per prompt.")

    @property
    def requires(self) -> tuple[str, ...]:
        """The inputs the groups declare (``GROUP_INPUTS`` names, in that order)."""
        return self._requires

    @property
    def model_inputs(self) -> tuple[str, ...]:
        """The declared inputs that a prefill of the policy provides (empty: no group reads the model)."""
        return tuple(r for r in self._requires if r in MODEL_INPUTS)

    def groups_requiring(self, name: str) -> list[str]:
        """The names of the groups that declare input ``name``."""
        return [g.name for g in self.groups if name in getattr(g, "requires", ())]

    @property
    def needs_embedding(self) -> bool:
        return "embeddings" in self._requires

    @property
    def answer_likelihood(self):
        """The group that declares ``answer_logprobs`` (its ``column``, ``prefix`` and ``max_tokens`` say which
        answer the prefill scores), or None when no group does."""
        return next((g for g in self.groups if "answer_logprobs" in getattr(g, "requires", ())), None)

    @property
    def needs_history(self) -> bool:
        return "history" in self._requires

    @property
    def sparse(self) -> bool:
        """Whether ``transform`` returns a sparse matrix (a group emits sparse columns)."""
        return any(getattr(g, "sparse", False) for g in self.groups)

    @property
    def metadata_columns(self) -> list[str]:
        """Dataset columns the batch must carry in ``CandidateBatch.metadata``."""
        columns = []
        for g in self.groups:
            for c in list(getattr(g, "columns", ())):  # the groups that read dataset columns name them here
                if c not in columns:
                    columns.append(c)
        return columns

    def fit(self, batch: CandidateBatch) -> Featurizer:
        """Fit the groups that learn unsupervised state (text IDF; embedding PCA when embeddings are given)."""
        for g in self.groups:
            if isinstance(g, TextFeatures):
                g.fit(batch)
            elif isinstance(g, EmbeddingFeatures) and batch.embeddings is not None and g.reduction == "pca":
                g.fit(batch)
        return self

    def transform(self, batch: CandidateBatch, history: PromptHistory | None = None):
        if not self.groups:
            return np.zeros((len(batch), 0))
        blocks = [g.transform(batch, history) for g in self.groups]
        if any(not isinstance(b, np.ndarray) for b in blocks):
            import scipy.sparse as sp

            return sp.hstack([b if not isinstance(b, np.ndarray) else sp.csr_matrix(b) for b in blocks],
                             format="csr", dtype=np.float64)
        return np.hstack(blocks)

    def state_dict(self) -> dict[str, Any]:
        state = {}
        for i, g in enumerate(self.groups):
            group_state = getattr(g, "state_dict", None)
            if callable(group_state):
                state[f"{i}:{g.name}"] = group_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, g in enumerate(self.groups):
            key = f"{i}:{g.name}"
            if key in state and callable(getattr(g, "load_state_dict", None)):
                g.load_state_dict(state[key])
