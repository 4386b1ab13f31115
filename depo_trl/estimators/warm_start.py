"""Warm start: fit an estimator before training from a JSONL of measured pass rates.

Each line is one prompt: its text (``prompt``, ``problem``, ``question`` or ``text``; a string or a list of chat
messages) and its measured pass rate, as any of

- ``passes`` and ``trials``;
- ``successes_of_<N>`` (an int, or a list of ints for duplicate measurements) with ``n_samples`` (else N);
- ``pass_rate`` with ``n_samples`` (else ``default_trials`` trials).

The prompts are turned into features by a ``Featurizer`` (content groups only: ``length``, ``text``,
``metadata``; ``history`` sees every prompt as unseen, which is what it is to the policy at that point;
``embedding`` needs the policy and is refused) or by any callable ``texts -> X``; then ``partial_fit`` is
called with passes and trials, in one call or in shuffled chunks of ``batch_size``.

For the features to mean the same thing as during training, pass ``render`` (the prompt as the trainer renders
it, e.g. through the chat template) and ``count_tokens`` (the tokenizer's token counts); without them the raw
text is used and tokens are estimated as characters / 4. Keys are ``key_fn(raw prompt)``, by default
``history.prompt_key``, the trainer's key, so the ``beta`` estimator's posteriors carry over when the training
dataset holds the same prompts.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..features import CandidateBatch, Featurizer
from ..history import PromptHistory, prompt_key

TEXT_FIELDS = ("prompt", "problem", "question", "text")
_SUCCESSES = re.compile(r"^successes_of_(\d+)$")


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):  # chat messages
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)
    return str(prompt)


def row_label(row: dict, default_trials: float = 8.0) -> tuple[float, float] | None:
    """``(passes, trials)`` of one JSONL row, or ``None`` when it carries no usable label."""
    if "passes" in row and "trials" in row:
        passes, trials = float(row["passes"]), float(row["trials"])
    else:
        field = next((k for k in row if _SUCCESSES.match(k)), None)
        if field is not None:
            counts = row[field] if isinstance(row[field], list) else [row[field]]
            per_run = float(row.get("n_samples") or _SUCCESSES.match(field).group(1))
            passes, trials = float(sum(counts)), per_run * len(counts)
        elif row.get("pass_rate") is not None:
            trials = float(row.get("n_samples") or default_trials)
            passes = float(row["pass_rate"]) * trials
        else:
            return None
    if not (np.isfinite(passes) and np.isfinite(trials)) or trials <= 0 or not 0 <= passes <= trials:
        return None
    return passes, trials


def read_passrate_jsonl(
    path: str,
    text_field: str | None = None,
    default_trials: float = 8.0,
    indices: Iterable[int] | None = None,
    limit: int | None = None,
) -> tuple[list[dict], np.ndarray, np.ndarray, int]:
    """Rows with a usable text and label, their passes and trials, and how many rows were skipped.

    Each row gains ``_prompt`` (its prompt field) and ``_line`` (its 0-based line number).

    ``indices`` keeps only those 0-based line numbers (e.g. a train split); ``limit`` stops after that many rows.
    """
    wanted = None if indices is None else {int(i) for i in indices}
    rows, passes, trials, skipped = [], [], [], 0
    with open(path) as f:
        for number, line in enumerate(f):
            if limit is not None and len(rows) >= limit:
                break
            if wanted is not None and number not in wanted:
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number + 1} is not valid JSON ({exc}).") from exc
            field = text_field or next((k for k in TEXT_FIELDS if k in row), None)
            if field is None or field not in row:
                raise ValueError(
                    f"{path}:{number + 1} has no prompt text field (looked for {[text_field] if text_field else list(TEXT_FIELDS)}; "
                    f"the row has {sorted(row)}). Pass text_field=..."
                )
            label = row_label(row, default_trials)
            if label is None or row[field] is None:
                skipped += 1
                continue
            row["_prompt"], row["_line"] = row[field], number
            rows.append(row)
            passes.append(label[0])
            trials.append(label[1])
    return rows, np.asarray(passes, dtype=np.float64), np.asarray(trials, dtype=np.float64), skipped


def featurize_prompts(
    featurizer: Featurizer | Callable[[list[str]], np.ndarray],
    prompts: list,
    render: Callable[[Any], str] | None = None,
    count_tokens: Callable[[list[str]], Any] | None = None,
    metadata: dict[str, list] | None = None,
    key_fn: Callable[[Any], int] = prompt_key,
) -> tuple[np.ndarray, np.ndarray]:
    """Content features and keys for raw prompts (strings or chat messages), with no policy involved."""
    texts = [render(p) if render is not None else _prompt_text(p) for p in prompts]
    keys = np.array([key_fn(p) for p in prompts], dtype=np.int64)
    if not isinstance(featurizer, Featurizer):
        X = np.asarray(featurizer(texts), dtype=np.float64)
        if X.ndim != 2 or len(X) != len(texts):
            raise ValueError(f"The feature callable returned shape {X.shape} for {len(texts)} prompts; expected (n, d).")
        return X, keys
    if featurizer.model_inputs:
        groups = sorted({g for name in featurizer.model_inputs for g in featurizer.groups_requiring(name)})
        raise ValueError(
            f"Warm start uses content features only, but the featurizer includes {groups} (they read the policy: "
            f"{', '.join(featurizer.model_inputs)}). Warm-start an estimator over e.g. ['length', 'text'] instead."
        )
    counts = None if count_tokens is None else np.asarray(count_tokens(texts), dtype=np.float64)
    batch = CandidateBatch(keys=keys, texts=texts, token_counts=counts, metadata=metadata)
    history = PromptHistory(max_prompts=1) if featurizer.needs_history else None  # empty: every prompt unseen
    return featurizer.transform(batch, history), keys


def scale_to_trials(passes: np.ndarray, trials: np.ndarray, max_trials: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows measured with more than ``max_trials`` samples scaled down to that many trials (the pass rate kept), so
    a 128-sample measurement weighs like one group of rollouts rather than sixteen. ``DEPOTrainer``'s warm start
    uses it with ``max_trials = num_generations``."""
    scale = np.minimum(1.0, float(max_trials) / np.asarray(trials, dtype=np.float64))
    return passes * scale, trials * scale


def warm_start_from_jsonl(
    estimator,
    featurizer: Featurizer | Callable[[list[str]], np.ndarray],
    path: str,
    *,
    text_field: str | None = None,
    render: Callable[[Any], str] | None = None,
    count_tokens: Callable[[list[str]], Any] | None = None,
    key_fn: Callable[[Any], int] = prompt_key,
    default_trials: float = 8.0,
    max_trials: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    indices: Iterable[int] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Fit ``estimator`` on the measured pass rates in ``path``; returns a summary dict.

    Args:
        estimator: any ``PassRateEstimator``.
        featurizer: a ``Featurizer`` over content groups, or a callable ``texts -> X``.
        path: the JSONL file (see the module docstring for the fields).
        text_field: the prompt field; by default the first of ``prompt``, ``problem``, ``question``, ``text``.
        render: raw prompt -> text as the trainer renders it (chat template); default the raw text.
        count_tokens: texts -> token counts, for the ``length`` group.
        key_fn: raw prompt -> int64 key (default ``prompt_key``, the trainer's).
        default_trials: trials assumed for a row with only ``pass_rate``.
        max_trials: if set, rows measured with more samples are scaled down to this many trials, so a
            128-sample measurement weighs like one group of rollouts rather than sixteen.
        batch_size: ``None`` fits all rows in one ``partial_fit``; otherwise rows are shuffled with ``seed``
            and fed in chunks of this size (one online update each).
        indices, limit: read only these 0-based lines / at most this many rows.
    """
    metadata_columns = featurizer.metadata_columns if isinstance(featurizer, Featurizer) else []
    rows, passes, trials, skipped = read_passrate_jsonl(path, text_field, default_trials, indices, limit)
    if not rows:
        raise ValueError(f"{path} holds no rows with a prompt and a pass rate ({skipped} rows skipped).")
    missing = [c for c in metadata_columns if c not in rows[0]]
    if missing:
        raise ValueError(f"The featurizer reads metadata columns {missing}, but {path} rows have {sorted(rows[0])}.")
    metadata = {c: [row.get(c) for row in rows] for c in metadata_columns} or None
    X, keys = featurize_prompts(featurizer, [row["_prompt"] for row in rows], render, count_tokens, metadata, key_fn)
    if max_trials is not None:
        passes, trials = scale_to_trials(passes, trials, max_trials)
    window = getattr(estimator, "window", None)
    if isinstance(window, int) and window < len(rows):
        warnings.warn(
            f"{type(estimator).__name__} keeps a window of {window} prompts, so only the last {window} of the "
            f"{len(rows)} warm-start rows are kept; pass window={len(rows)} (or more) to use them all.",
            UserWarning,
            stacklevel=2,
        )
    order = np.arange(len(rows))
    if batch_size is None:
        chunks = [order]
    else:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}.")
        order = np.random.default_rng(seed).permutation(len(rows))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in chunks:
        estimator.partial_fit(X[chunk], passes[chunk], trials[chunk], keys=keys[chunk])
    return {
        "rows": len(rows),
        "skipped": skipped,
        "updates": len(chunks),
        "n_features": X.shape[1],
        "mean_pass_rate": float(passes.sum() / trials.sum()),
    }
