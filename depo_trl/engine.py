"""The DEPO engine: score candidate prompts, pick exactly U, learn from what was rolled out.

``PromptSelector`` is the whole DEPO loop in plain numpy, with no torch or TRL inside, so any RL loop can use it
(``DEPOTrainer`` is its TRL adapter; every benchmark drives it too). One round:

1. ``score(texts, ...)``: featurise the candidates (cheap statistics, text, metadata, the prompt's own history,
   and policy embeddings when the caller passes them) and predict each one's pass rate, with an uncertainty
   when the estimator has one. A failing estimator gives NaN predictions and a warning, never an exception.
2. ``select(scores, n)``: exactly ``n`` distinct candidates by the selection policy (band, usefulness,
   thompson; exploration share and revisit floor included). When the predictions failed, a uniform pick.
3. ``observe(scores, chosen, passes, trials)``: the rolled-out prompts' pass counts train the estimator and the
   history; the running totals (what was skipped and why, useful groups) are updated. Skipped candidates teach
   nothing: their outcome is unknown.

``state_dict()`` / ``load_state_dict()`` round-trip everything (estimator, history, selection RNG, totals)
through plain dicts of numbers, strings and numpy arrays (see ``depo_trl.state`` for saving without pickle).

A minimal loop::

    selector = PromptSelector(group_size=8, features=["length", "history"])
    for step in range(steps):
        candidates = random.sample(pool, 4 * 16)
        scores = selector.score(candidates)
        choice = selector.select(scores, 16)
        prompts = [candidates[i] for i in choice.indices]
        passes = [sum(reward(p, c) for c in generate(p, 8)) for p in prompts]
        selector.observe(scores, choice.indices, passes, [8] * len(prompts))
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._warnings import warn_user
from .estimators import PassRateEstimator, make_estimator
from .exploration import DEFAULT_YIELD_RANGE, ExplorationYield, check_yield_range
from .features import GROUP_INPUTS, CandidateBatch, Featurizer
from .history import PromptHistory, prompt_key
from .selection import (
    REASON_UNIFORM,
    SKIP_IN_BAND,
    SKIP_REASONS,
    SKIP_TOO_EASY,
    SKIP_TOO_HARD,
    Selection,
    check_band,
    check_exploration,
    check_policy_name,
    in_band,
    select,
)

DENSE_TEXT_DIM = 128  # default width of the text group for estimators that need dense input


@dataclass
class Scores:
    """What ``PromptSelector.score`` found for one round's candidates (arrays of one entry per candidate)."""

    keys: np.ndarray  # int64 prompt keys
    features: np.ndarray  # (n, n_features), the estimator's inputs
    predicted: np.ndarray  # predicted pass rate in [0, 1]; NaN everywhere when the estimator failed
    uncertainty: np.ndarray | None  # sd of each prediction, when the estimator has one
    token_counts: np.ndarray  # prompt length in tokens (or words when no tokenizer was involved)
    times_seen: np.ndarray  # rounds in which each candidate was rolled out before
    rounds_since: np.ndarray  # rounds since each was last rolled out; NaN for never
    seconds: float = 0.0  # featurisation + prediction time

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def failed(self) -> bool:
        return not np.isfinite(self.predicted).all()


@dataclass
class RoundOutcome:
    """What ``PromptSelector.observe`` learnt, per rolled-out prompt (in rollout order) and in total."""

    passes: np.ndarray
    trials: np.ndarray
    labelled: np.ndarray  # bool: the group counts as a label (trials > 0)
    useful: np.ndarray  # bool: labelled and 0 < passes < trials
    observed: np.ndarray  # passes / trials, NaN where unlabelled
    predicted: np.ndarray  # the predictions of the rolled-out prompts
    seconds: float = 0.0  # estimator + history update time
    exploration_yield: float = float("nan")  # useful rate of exploration picks / of policy picks, so far


@dataclass
class SelectorStats:
    """Running totals over the whole run."""

    rounds: int = 0
    candidates_scored: int = 0
    prompts_rolled_out: int = 0
    prompts_skipped: int = 0
    completions_generated: int = 0
    useful_groups: int = 0
    labelled_groups: int = 0
    estimator_failures: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "skipped_by_reason"}
        state["skipped_by_reason"] = dict(self.skipped_by_reason)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key == "skipped_by_reason":
                self.skipped_by_reason = defaultdict(int, {k: int(v) for k, v in value.items()})
            else:
                setattr(self, key, int(value))


def _word_counts(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(t.split()) for t in texts], dtype=np.int64)


#: ``PromptSelector`` argument -> the ``DEPOConfig`` field it is built from (``band`` comes from
#: ``depo_band_low`` and ``depo_band_high``; ``group_size`` and ``seed`` from GRPO's own fields).
CONFIG_FIELDS = {
    "estimator": "depo_estimator",
    "estimator_kwargs": "depo_estimator_kwargs",
    "features": "depo_features",
    "feature_options": "depo_feature_options",
    "embedding_dim": "depo_embedding_dim",
    "selection": "depo_selection",
    "exploration": "depo_exploration",
    "adaptive_exploration": "depo_adaptive_exploration",
    "exploration_yield_range": "depo_exploration_yield_range",
    "revisit_after": "depo_revisit_after",
    "history_max_prompts": "depo_history_max_prompts",
}


class PromptSelector:
    """DEPO's selection loop: featurizer, pass-rate estimator, per-prompt history, selection policy, RNG, totals.

    Args:
        group_size: completions per rolled-out prompt (G).
        estimator: a registry name (``depo_trl.ESTIMATORS``), a dotted path ``module.Class``, or an instance.
        estimator_kwargs: constructor arguments when ``estimator`` is a name.
        features: feature group names (``depo_trl.FEATURE_GROUPS``), in column order.
        feature_options: per-group options, e.g. ``{"text": {"dim": 256}}``.
        embedding_dim: width of the reduced embedding (when ``"embedding"`` is a feature group).
        selection: selection policy name (``depo_trl.SELECTION_POLICIES``).
        band: ``(low, high)`` target band of predicted pass rate.
        exploration: expected share of each round's picks drawn from outside what the policy would pick.
        adaptive_exploration: scale that share each round by how useful exploration picks have been relative to
            the policy's own (``depo_trl.exploration``; the default); ``False`` keeps it fixed and only reports the
            ratio.
        exploration_yield_range: ``(low, high)`` exploration yields at which the adaptive share is a tenth of
            ``exploration`` and all of it.
        revisit_after: rounds after which a skipped, previously rolled-out prompt goes first (``None``: never).
        history_max_prompts: prompts remembered by the history (least recently seen are forgotten first).
        seed: seeds the selection RNG and the feature groups' hashes and projections.
    """

    def __init__(
        self,
        group_size: int,
        estimator: str | PassRateEstimator = "logistic",
        estimator_kwargs: dict | None = None,
        features: Sequence[str] = ("length", "history"),
        feature_options: dict[str, dict] | None = None,
        embedding_dim: int = 16,
        selection: str = "band",
        band: tuple[float, float] = (0.15, 0.85),
        exploration: float = 0.1,
        adaptive_exploration: bool = True,
        exploration_yield_range: tuple[float, float] = DEFAULT_YIELD_RANGE,
        revisit_after: float | None = 256,
        history_max_prompts: int = 1_000_000,
        seed: int = 0,
    ):
        if int(group_size) < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}.")
        check_policy_name(selection)
        self.group_size = int(group_size)
        self.band = check_band(*band)
        self.exploration = check_exploration(exploration)
        low, high = check_yield_range(exploration_yield_range)
        self.exploration_yield = ExplorationYield(self.exploration, adaptive=adaptive_exploration, ratio_low=low,
                                                  ratio_high=high)
        self._last_selection: tuple[Scores, Selection] | None = None  # for observe() calls that omit the reasons
        self.selection = selection
        self.revisit_after = revisit_after
        if isinstance(estimator, str):
            estimator = make_estimator(estimator, **(estimator_kwargs or {}))
        elif estimator_kwargs:
            raise ValueError("estimator_kwargs apply only when estimator is a name; got an instance as well.")
        self.estimator: PassRateEstimator = estimator
        feature_options = {k: dict(v or {}) for k, v in (feature_options or {}).items()}
        if "text" in features and not getattr(estimator, "accepts_sparse", False):
            # The wide sparse TF-IDF default only suits estimators that take sparse input; the others get a dense
            # block of DENSE_TEXT_DIM hashed columns unless the user chose a width.
            feature_options.setdefault("text", {}).setdefault("dim", DENSE_TEXT_DIM)
        self.featurizer = Featurizer(list(features), embedding_dim=embedding_dim, seed=seed, options=feature_options)
        self.history = PromptHistory(max_prompts=history_max_prompts)
        self.rng = np.random.default_rng(seed)
        self.stats = SelectorStats()
        self.on_failure: Callable[[str, Exception], None] | None = None  # hook for the caller's own reporting
        self._warned: set[str] = set()

    @classmethod
    def from_config(cls, config, *, group_size: int, seed: int, estimator: str | PassRateEstimator | None = None
                    ) -> PromptSelector:
        """The selector a DEPO run uses: ``config`` is a ``DEPOConfig`` or a mapping of its ``depo_*`` fields (the
        ``"depo"`` part of ``depo_run.json``); a field it lacks takes this class's default. ``estimator`` (an
        instance, or a name) overrides ``depo_estimator``; an instance ignores ``depo_estimator_kwargs``."""
        def field(name: str, default):
            return config.get(name, default) if isinstance(config, Mapping) else getattr(config, name, default)

        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        kwargs = {arg: field(name, defaults[arg]) for arg, name in CONFIG_FIELDS.items()}
        kwargs["band"] = (field("depo_band_low", defaults["band"][0]), field("depo_band_high", defaults["band"][1]))
        kwargs["estimator_kwargs"] = kwargs["estimator_kwargs"] or None
        if estimator is not None:
            kwargs["estimator"] = estimator
            if not isinstance(estimator, str):
                kwargs["estimator_kwargs"] = None
        return cls(group_size=group_size, seed=seed, **kwargs)

    # ------------------------------------------------------------------ what the caller must supply
    @property
    def model_inputs(self) -> tuple[str, ...]:
        """The ``score`` arguments that a prefill of the policy provides and a feature group declares in its
        ``requires`` (``"embeddings"``, ``"answer_logprobs"``); empty when no group reads the model."""
        return self.featurizer.model_inputs

    @property
    def needs_embedding(self) -> bool:
        """Whether ``score`` needs ``embeddings`` (a feature group declares them)."""
        return "embeddings" in self.model_inputs

    @property
    def answer_likelihood(self):
        """The feature group that declares ``answer_logprobs`` (``score`` then needs them; its ``column``,
        ``prefix`` and ``max_tokens`` say how to compute them), else None."""
        return self.featurizer.answer_likelihood

    @property
    def metadata_columns(self) -> list[str]:
        """Dataset columns ``score`` needs in ``metadata``."""
        return self.featurizer.metadata_columns

    # ------------------------------------------------------------------ the three verbs
    def featurize(self, texts, keys=None, token_counts=None, embeddings=None, metadata=None,
                  answer_logprobs=None) -> np.ndarray:
        """The estimator's input matrix for these prompts (no prediction, no state change)."""
        return self._features(self._batch(texts, keys, token_counts, embeddings, metadata, answer_logprobs))

    def score(self, texts, keys=None, token_counts=None, embeddings=None, metadata=None,
              answer_logprobs=None) -> Scores:
        """Predicted pass rate (and uncertainty) of each candidate.

        Args:
            texts: the prompts as the model sees them (chat template applied), one per candidate.
            keys: int64 prompt keys; default ``prompt_key(text)``. Pass the key of the raw prompt when the same
                prompt may be rendered differently (the key is what history is stored under).
            token_counts: prompt lengths in tokens; default whitespace word counts.
            embeddings: ``(n, hidden)`` pooled policy hidden states, required when a group declares them
                (``"embeddings" in model_inputs``; ignored otherwise).
            metadata: ``{column: values}`` for the ``metadata`` feature group (and the columns the ``text`` and
                ``answer_likelihood`` groups read).
            answer_logprobs: ``(n, 3)`` teacher-forced log-likelihood of each prompt's reference answer (total,
                per token, first token; NaN for no answer), required when a group declares them (the
                ``answer_likelihood`` group; ``depo_trl.embedding.embed_and_score_answers`` computes them with the
                embeddings).
        """
        t0 = time.perf_counter()
        batch = self._batch(texts, keys, token_counts, embeddings, metadata, answer_logprobs)
        seen = batch.history_lookup = self.history.lookup(batch.keys)  # read once: the history group reuses it
        features = self._features(batch)
        n = len(batch)
        uncertainty = None
        try:
            predicted = np.asarray(self.estimator.predict_pass_rate(features, keys=batch.keys), dtype=np.float64)
            if predicted.shape != (n,) or not np.isfinite(predicted).all():
                raise ValueError(f"predicted pass rates are not {n} finite numbers (shape {predicted.shape})")
            predicted = np.clip(predicted, 0.0, 1.0)
            uncertainty = self._uncertainty(features, batch.keys)
        except Exception as exc:  # a failing estimator never stops training
            self._failed("predict", exc)
            predicted = np.full(n, np.nan)
        return Scores(
            keys=batch.keys,
            features=features,
            predicted=predicted,
            uncertainty=uncertainty,
            token_counts=np.asarray(batch.token_counts),
            times_seen=seen["count"].astype(np.int64),
            rounds_since=np.where(seen["seen"] > 0, seen["rounds_since"], np.nan),
            seconds=time.perf_counter() - t0,
        )

    def select(self, scores: Scores, n: int) -> Selection:
        """Exactly ``n`` distinct candidates (positions into ``scores``), each with the reason it was picked."""
        if not 0 <= n <= len(scores):
            raise ValueError(f"Cannot select {n} prompts from {len(scores)} candidates.")
        if scores.failed:  # the estimator failed this round: a uniform random subset, like GRPO
            chosen = self.rng.choice(len(scores), size=n, replace=False).astype(np.int64)
            return Selection(chosen, [REASON_UNIFORM] * n, np.zeros(len(scores), dtype=bool))
        low, high = self.band
        choice = select(
            self.selection,
            scores.predicted,
            n,
            self.group_size,
            self.rng,
            uncertainty=scores.uncertainty,
            low=low,
            high=high,
            exploration=self.exploration_yield.share(),
            rounds_since=scores.rounds_since,
            revisit_after=self.revisit_after,
        )
        self._last_selection = (scores, choice)
        return choice

    def observe(self, scores: Scores, chosen, passes, trials, in_band: np.ndarray | None = None,
                reasons: Sequence[str] | None = None) -> RoundOutcome:
        """Learn from the rolled-out candidates ``chosen`` (positions into ``scores``, in rollout order).

        ``passes[i]`` of ``trials[i]`` completions of prompt ``chosen[i]`` passed; ``trials[i] = 0`` marks a group
        that is no label (e.g. unscorable), which the history and estimator skip. Call once per round: it advances
        the history's round counter and the totals. ``in_band`` (per candidate) feeds the skip-reason totals; by
        default it is recomputed from the predictions. ``reasons`` (the selection's reason per rolled-out prompt)
        feed the exploration yield; by default they are those of this selector's last ``select`` when it picked
        ``chosen`` from these ``scores``, and a round without them (e.g. a uniform warm-up round) updates no yield.
        """
        chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
        passes = np.asarray(passes, dtype=np.float64).reshape(-1)
        trials = np.asarray(trials, dtype=np.float64).reshape(-1)
        if not (len(chosen) == len(passes) == len(trials)):
            raise ValueError(f"chosen, passes and trials differ in length: {len(chosen)}, {len(passes)}, {len(trials)}.")
        if ((passes < 0) | (passes > trials) | (trials < 0)).any():
            raise ValueError("passes must satisfy 0 <= passes <= trials.")
        t0 = time.perf_counter()
        keys = scores.keys[chosen]
        labelled = trials > 0
        if labelled.any():
            try:
                self.estimator.partial_fit(scores.features[chosen][labelled], passes[labelled], trials[labelled],
                                           keys=keys[labelled])
            except Exception as exc:
                self._failed("learn", exc)
        self.history.update(keys, passes, trials)
        seconds = time.perf_counter() - t0

        observed = np.where(labelled, passes / np.maximum(trials, 1.0), np.nan)
        useful = labelled & (passes > 0) & (passes < trials)
        self._count_round(scores, chosen, useful, labelled, in_band)
        reasons = self._reasons_for(scores, chosen) if reasons is None else list(reasons)
        if reasons is not None:
            if len(reasons) != len(chosen):
                raise ValueError(f"{len(reasons)} reasons for {len(chosen)} rolled-out prompts.")
            self.exploration_yield.update(reasons, useful, labelled)
        return RoundOutcome(passes, trials, labelled, useful, observed, scores.predicted[chosen], seconds,
                            exploration_yield=self.exploration_yield.ratio())

    def _reasons_for(self, scores: Scores, chosen: np.ndarray) -> list[str] | None:
        """The reasons of the last ``select`` when it picked exactly ``chosen`` from ``scores``, else None."""
        if self._last_selection is None or self._last_selection[0] is not scores:
            return None
        choice = self._last_selection[1]
        if len(choice.indices) != len(chosen) or not np.array_equal(choice.indices, chosen):
            return None
        return list(choice.reasons)

    # ------------------------------------------------------------------ warm start
    def fit(self, texts, passes, trials, keys=None, token_counts=None, embeddings=None, metadata=None,
            answer_logprobs=None) -> None:
        """Fit the estimator on measured outcomes (e.g. a file of pass rates) without touching history or totals."""
        features = self.featurize(texts, keys, token_counts, embeddings, metadata, answer_logprobs)
        batch_keys = self._keys(texts, keys)
        self.estimator.partial_fit(features, np.asarray(passes, float), np.asarray(trials, float), keys=batch_keys)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": 1,
            "estimator_class": type(self.estimator).__name__,
            "estimator": self.estimator.state_dict(),
            "history": self.history.state_dict(),
            "rng": self.rng.bit_generator.state,
            "stats": self.stats.state_dict(),
            "exploration_yield": self.exploration_yield.state_dict(),
        }
        featurizer_state = getattr(self.featurizer, "state_dict", None)
        if callable(featurizer_state):
            state["featurizer"] = featurizer_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, current = state["estimator_class"], type(self.estimator).__name__
        if saved != current:
            raise ValueError(
                f"The saved DEPO state was made by estimator {saved}, but this selector uses {current}. "
                "Load it with the same estimator, or start fresh."
            )
        self.estimator.load_state_dict(state["estimator"])
        self.history.load_state_dict(state["history"])
        self.rng.bit_generator.state = state["rng"]
        self.stats.load_state_dict(state["stats"])
        if "exploration_yield" in state:  # states saved before it existed start it afresh
            self.exploration_yield.load_state_dict(state["exploration_yield"])
        if "featurizer" in state and callable(getattr(self.featurizer, "load_state_dict", None)):
            self.featurizer.load_state_dict(state["featurizer"])

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        """A short human-readable account of what was skipped and what was learnt from."""
        s = self.stats
        if s.rounds == 0:
            return "DEPO: no rounds yet."
        reasons = {k: s.skipped_by_reason.get(k, 0) for k in SKIP_REASONS}
        lines = [
            f"DEPO: {s.rounds} rounds, {s.candidates_scored} candidate prompts scored, "
            f"{s.prompts_rolled_out} rolled out, {s.prompts_skipped} skipped.",
            "  skipped as predicted too easy: {too_easy}, too hard: {too_hard}, in band but not needed: "
            "{in_band_not_needed}".format(**reasons),
            f"  useful groups (0 < passes < G): {s.useful_groups}/{s.labelled_groups} "
            f"({s.useful_groups / max(s.labelled_groups, 1):.1%}) for {s.completions_generated} completions",
        ]
        if s.estimator_failures:
            lines.append(f"  estimator failures (fell back to uniform): {s.estimator_failures}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _keys(texts, keys) -> np.ndarray:
        if keys is None:
            return np.array([prompt_key(t) for t in texts], dtype=np.int64)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(keys) != len(texts):
            raise ValueError(f"{len(keys)} keys for {len(texts)} prompts.")
        return keys

    def _batch(self, texts, keys, token_counts, embeddings, metadata, answer_logprobs=None) -> CandidateBatch:
        texts = list(texts)
        word_counts = None
        if token_counts is None:  # whitespace words stand in for tokens; the length group reuses the counts
            token_counts = word_counts = _word_counts(texts)
        token_counts = np.asarray(token_counts).reshape(-1)
        if len(token_counts) != len(texts):
            raise ValueError(f"{len(token_counts)} token counts for {len(texts)} prompts.")
        # Exactly the model-read inputs the groups declare reach the batch, each checked against its declaration.
        given = {"embeddings": embeddings, "answer_logprobs": answer_logprobs}
        inputs = {name: self._model_input(name, given[name], len(texts)) if name in self.model_inputs else None
                  for name in given}
        missing = [c for c in self.metadata_columns if c not in (metadata or {})]
        if missing:
            raise ValueError(f"The feature groups read dataset columns {missing}; pass them in metadata=.")
        return CandidateBatch(keys=self._keys(texts, keys), texts=texts, token_counts=token_counts,
                              metadata=metadata or None, word_counts=word_counts, **inputs)

    def _model_input(self, name: str, values, n: int) -> np.ndarray:
        """A declared model-read input as an ``(n, width)`` float array, or a clear error naming the groups."""
        spec, groups = GROUP_INPUTS[name], " and ".join(repr(g) for g in self.featurizer.groups_requiring(name))
        if values is None:
            raise ValueError(f"The {groups} feature group is on, but no {name} were passed: {spec.how}, or drop "
                             f"{groups} from the features.")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or len(values) != n or (spec.width is not None and values.shape[1] != spec.width):
            raise ValueError(f"{name} must be (n_prompts={n}, {spec.width or 'hidden'}), got {values.shape}.")
        return values

    def _features(self, batch: CandidateBatch) -> np.ndarray:
        features = self.featurizer.transform(batch, self.history)
        return features if self.featurizer.sparse else np.asarray(features, dtype=np.float64)

    def _uncertainty(self, features: np.ndarray, keys: np.ndarray) -> np.ndarray | None:
        predict = getattr(self.estimator, "predict_uncertainty", None)
        values = None if predict is None else predict(features, keys=keys)
        if values is None:
            return None
        values = np.asarray(values, dtype=np.float64)
        return values if values.shape == keys.shape and np.isfinite(values).all() and (values >= 0).all() else None

    def _count_round(self, scores: Scores, chosen, useful, labelled, band) -> None:
        n_candidates, n_chosen = len(scores), len(chosen)
        low, high = self.band
        if band is None:
            band = in_band(scores.predicted, low, high)
        s = self.stats
        s.rounds += 1
        s.candidates_scored += n_candidates
        s.prompts_rolled_out += n_chosen
        s.prompts_skipped += n_candidates - n_chosen
        s.completions_generated += n_chosen * self.group_size
        s.useful_groups += int(useful.sum())
        s.labelled_groups += int(labelled.sum())
        skipped = np.setdiff1d(np.arange(n_candidates), chosen)
        predicted_skipped = scores.predicted[skipped]
        s.skipped_by_reason[SKIP_TOO_EASY] += int((predicted_skipped > high).sum())
        s.skipped_by_reason[SKIP_TOO_HARD] += int((predicted_skipped < low).sum())
        s.skipped_by_reason[SKIP_IN_BAND] += int(np.asarray(band)[skipped].sum())

    def _failed(self, what: str, exc: Exception) -> None:
        self.stats.estimator_failures += 1
        if self.on_failure is not None:
            self.on_failure(what, exc)
        if what not in self._warned:
            self._warned.add(what)
            # At the user's line (their training loop, or their trainer.train() call), not at this file.
            warn_user(
                f"DEPO estimator {type(self.estimator).__name__} failed to {what} ({exc!r}); this round "
                f"{'falls back to uniform selection' if what == 'predict' else 'teaches it nothing'}. Training goes "
                "on; failures are counted in depo/estimator_failures. Further failures are not warned about.",
                RuntimeWarning,
            )
