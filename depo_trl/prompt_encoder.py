"""Prompts -> what ``PromptSelector.score`` reads: rendered text, token ids, keys, policy embeddings, answer
likelihood.

Each feature group declares the model-read inputs it needs in its ``requires`` (``selector.model_inputs`` is their
union: ``embeddings``, ``answer_logprobs``; the answer to score comes from the group that declares it) and the dataset
columns it reads (``selector.metadata_columns``). ``PromptEncoder`` runs the prefill exactly when a group declares a
model-read input and passes on exactly the declared ones, for training (``DEPOTrainer``) and routing
(``depo_trl.route``) alike, so a new feature group that reads the model needs no wiring. The caller supplies two
functions:

- ``render(prompts, environments) -> (texts, token_ids)``: the prompts as the policy sees them. The trainer renders
  through TRL's own generation path (tools, chat template and its kwargs, per-environment tools); routing applies
  the run's chat template.
- ``embed(token_ids, pad_token_id, answer_ids) -> (embeddings, answer_logprobs)``: one no-grad prefill (numpy
  arrays; the answer log-likelihoods are None without answers). The trainer shards it across ranks
  (``sharded_prefill``); routing runs it on one device.

Prompts are keyed by the raw prompt (history is stored under that key), truncated to ``max_length`` tokens for the
prefill only (the token-count feature sees the whole prompt), and, with ``refresh_every > 1``, embedded again only
when their cached entry is that many rounds old (the same set on every rank: the cache evolves identically).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .embedding import answer_token_ids, embed_and_score_answers
from .engine import PromptSelector, Scores
from .features import EmbeddingCache
from .history import prompt_key

ANSWER_COLUMNS = 3  # answer log-likelihood: total, per token, first token

#: The prefill settings of a DEPO run (``DEPOConfig`` fields) and their defaults; ``encoder_settings`` reads them.
ENCODER_DEFAULTS = {
    "depo_embedding_max_length": 512,
    "depo_embedding_pooling": "mean",
    "depo_embedding_batch_size": 16,
    "depo_embedding_refresh_every": 1,
    "depo_embedding_adapter": "on",
}


def encoder_settings(config) -> dict:
    """The prefill settings of a ``DEPOConfig`` or of a mapping of its fields (``depo_run.json``'s ``"depo"``), a
    field it lacks taking its default."""
    if isinstance(config, Mapping):
        return {name: config.get(name, default) for name, default in ENCODER_DEFAULTS.items()}
    return {name: getattr(config, name, default) for name, default in ENCODER_DEFAULTS.items()}


@dataclass
class EncodedPrompts:
    """One batch of prompts as ``PromptSelector`` reads them."""

    texts: list[str]
    token_ids: list[list[int]]
    keys: np.ndarray
    embeddings: np.ndarray | None  # None when no feature group declares "embeddings"
    answer_logprobs: np.ndarray | None  # None when no feature group declares "answer_logprobs"
    seconds: float  # rendering + prefill time

    def selector_inputs(self, metadata: dict | None) -> dict:
        """Keyword arguments of ``PromptSelector.score`` / ``featurize`` / ``fit``."""
        return dict(texts=self.texts, keys=self.keys, token_counts=np.array([len(t) for t in self.token_ids]),
                    embeddings=self.embeddings, metadata=metadata or None, answer_logprobs=self.answer_logprobs)


def sharded_prefill(model, token_ids: list[list[int]], answer_ids: list | None, pad_token_id: int, *, pooling: str,
                    batch_size: int, device, num_processes: int = 1, process_index: int = 0, gather=None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Each rank embeds an equal shard (padded with repeats), then the shards are gathered in rank order."""
    world, rank = num_processes, process_index
    shard = -(-len(token_ids) // world)
    padded = token_ids + [token_ids[-1]] * (shard * world - len(token_ids))
    mine = padded[rank * shard : (rank + 1) * shard]
    my_answers = None
    if answer_ids is not None:
        answers = list(answer_ids) + [answer_ids[-1]] * (shard * world - len(answer_ids))
        my_answers = answers[rank * shard : (rank + 1) * shard]
    embeddings, answer_logprobs = embed_and_score_answers(model, mine, my_answers, pad_token_id, pooling=pooling,
                                                          batch_size=batch_size, device=device)
    if world > 1:
        embeddings = gather(embeddings.contiguous())
        if answer_logprobs is not None:
            answer_logprobs = gather(answer_logprobs.contiguous())
    embeddings = embeddings[: len(token_ids)].cpu().double().numpy()
    if answer_logprobs is not None:
        answer_logprobs = answer_logprobs[: len(token_ids)].cpu().double().numpy()
    return embeddings, answer_logprobs


def adapter_context(model, adapter: str):
    """``adapter="off"`` embeds with the PEFT adapter disabled (the frozen base model)."""
    if adapter == "off" and hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def check_adapter(model, adapter: str, needs_prefill: bool) -> None:
    """``adapter="off"`` means "embed with the PEFT adapter disabled"; without an adapter it would silently embed
    with the trained model."""
    if adapter == "off" and needs_prefill and not hasattr(model, "disable_adapter"):
        raise ValueError(
            "depo_embedding_adapter='off' embeds with the PEFT adapter disabled, but the model has no PEFT "
            "adapter, so it would embed with the trained weights. Pass a peft_config (or a PeftModel), or set "
            "depo_embedding_adapter='on'."
        )


class PromptEncoder:
    """Renders, keys and (when a feature group needs the model) prefills prompts for ``selector``.

    Args:
        selector: the engine whose feature groups say what is needed.
        tokenizer: the policy's tokenizer (pad id, reference-answer tokens).
        render: ``render(prompts, environments) -> (texts, token_ids)``.
        embed: ``embed(token_ids, pad_token_id, answer_ids) -> (embeddings, answer_logprobs)`` as numpy arrays.
        max_length: prompts are truncated to their last ``max_length`` tokens for the prefill only.
        refresh_every: re-embed a prompt when its cached embedding is this many rounds old (1: no cache).
        cache_prompts: most prompts whose embedding is kept (with ``refresh_every > 1``).
    """

    def __init__(self, selector: PromptSelector, tokenizer, render: Callable, embed: Callable, *,
                 max_length: int = 512, refresh_every: int = 1, cache_prompts: int = 1024):
        self.selector = selector
        self.tokenizer = tokenizer
        self.render = render
        self.embed = embed
        self.max_length = int(max_length)
        self.refresh_every = int(refresh_every)
        self.cache = EmbeddingCache(refresh_every, max_prompts=cache_prompts)

    @property
    def needs_prefill(self) -> bool:
        """Whether any feature group declares a model-read input (``embeddings``, ``answer_logprobs``)."""
        return bool(self.selector.model_inputs)

    def encode(self, prompts: list, environments: list | None = None, metadata: dict | None = None
               ) -> EncodedPrompts:
        """Rendered texts, token ids, keys, and exactly the model-read inputs the feature groups declare."""
        t0 = time.perf_counter()
        texts, token_ids = self.render(prompts, environments)
        keys = np.array([prompt_key(p) for p in prompts], dtype=np.int64)
        declared = self.selector.model_inputs
        embeddings = answer_logprobs = None
        if declared:
            answer_ids = self._answer_ids(metadata) if "answer_logprobs" in declared else None
            embeddings, answer_logprobs = self._cached_prefill(
                keys, [ids[-self.max_length:] for ids in token_ids], answer_ids, self.tokenizer.pad_token_id)
            if "embeddings" not in declared:  # the prefill computes them anyway; no group asked for them
                embeddings = None
        return EncodedPrompts(texts, token_ids, keys, embeddings, answer_logprobs, time.perf_counter() - t0)

    def _answer_ids(self, metadata: dict | None) -> list:
        """Token ids of each prompt's reference answer, as the group that declares ``answer_logprobs`` names it."""
        group = self.selector.answer_likelihood
        values = (metadata or {}).get(group.column)
        if values is None:
            raise ValueError(f"The {group.name!r} features read the column {group.column!r}; the rows lack it.")
        return answer_token_ids(self.tokenizer, values, group.prefix, group.max_tokens)

    def score(self, prompts: list, metadata: dict | None = None, environments: list | None = None
              ) -> tuple[Scores, float]:
        """The engine's scores of ``prompts`` and the seconds rendering and prefill took."""
        encoded = self.encode(prompts, environments, metadata)
        return self.selector.score(**encoded.selector_inputs(metadata)), encoded.seconds

    def _cached_prefill(self, keys: np.ndarray, token_ids: list[list[int]], answer_ids: list | None,
                        pad_token_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings (and answer log-likelihoods), recomputing only the prompts whose cached entry is too old."""
        if self.refresh_every == 1:
            return self.embed(token_ids, pad_token_id, answer_ids)
        cache, now = self.cache, self.selector.stats.rounds
        stale = cache.missing(keys, now)
        if stale.any():
            fresh_ids = [ids for ids, is_stale in zip(token_ids, stale) if is_stale]
            fresh_answers = None if answer_ids is None else [a for a, is_stale in zip(answer_ids, stale) if is_stale]
            embeddings, answer_logprobs = self.embed(fresh_ids, pad_token_id, fresh_answers)
            # The answer log-likelihoods ride in the cache as trailing columns, refreshed with the embedding.
            row = embeddings if answer_logprobs is None else np.hstack([embeddings, answer_logprobs])
            cache.put(keys[stale], row.astype(np.float32), now)
        rows = cache.get(keys).astype(np.float64)
        if answer_ids is None:
            return rows, None
        return rows[:, :-ANSWER_COLUMNS], rows[:, -ANSWER_COLUMNS:]
