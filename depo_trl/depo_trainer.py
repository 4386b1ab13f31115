"""DEPOTrainer: GRPO that generates completions only for prompts worth learning from.

Each generation round (one call of ``_generate_and_score_completions`` in training):

1. Draw K x U distinct candidate prompts from the training set (``CandidateStream``), identically on every rank.
   U = generation_batch_size / num_generations is the number of prompts GRPO would roll out; K is
   ``depo_candidate_multiplier``.
2. Featurise them: cheap statistics, per-prompt history, and the policy's pooled hidden state of the prompt (each
   rank embeds an equal shard, then the shards are gathered).
3. Predict each candidate's pass rate and pick exactly U; rank 0's pick is broadcast so every rank agrees.
4. Lay the U prompts out as U x G rows, G contiguous copies each, hand each rank its slice to
   ``GRPOTrainer._generate_and_score_completions`` (generation, rewards, advantages: all TRL's).
5. Read the gathered rewards TRL computed, count passes per group, and train the estimator and history. A group's
   passes come from the first pass reward (``depo_pass_reward``; default: every reward function in order) that
   scores it: a reward returning None for a whole group does not apply to that prompt.

Featurising, predicting, selecting and learning are the framework-agnostic engine ``depo_trl.engine.PromptSelector``
(``self.depo_selector``); this class adapts it to TRL: the candidate draw, the policy prefill under the wrapped
model, gather/broadcast across ranks, the U x G row layout, reward capture, metrics and checkpoints.

During ``depo_warmup_steps`` (or when K = 1) step 1-4 are replaced by GRPO's own batch, untouched: the trainer
behaves exactly like ``GRPOTrainer`` while the estimator learns (the embedding prefill runs in eval mode and draws no
torch RNG). Evaluation is never filtered. Every row handed to TRL is its own object with exactly the columns TRL's
dataloader would give it. An epoch is one pass of the candidate walk (``depo_trl.epochs``): TRL's dataloader is cut
to that many rounds, and once filtering has begun its batches (which DEPO ignores) are not read from the dataset. With nothing to choose
from (a TRL environment owns the data, or the dataset holds no more than U prompts) the whole run is plain GRPO.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from transformers import TrainerCallback
from trl import GRPOTrainer

from . import _trl_compat
from .audit import DecisionLog, finite_or_none, skip_reason
from .candidates import CandidateStream, IterableCandidateStream, copy_row
from .depo_config import DEPOConfig
from .embedding import answer_token_ids, embed_and_score_answers
from .epochs import EpochOfRounds, LoadSwitch, LoadWhenUsed
from .engine import PromptSelector, RoundOutcome, Scores, SelectorStats
from .estimators import PassRateEstimator
from ._warnings import at_user_code, warn_user
from .estimators.warm_start import read_passrate_jsonl
from .features import EmbeddingCache, Featurizer
from .history import PromptHistory, prompt_key
from .selection import REASON_BAND, Selection
from .state import load_state, save_state
from .usability import IndexRecorder, checked_reward_funcs, cpu_hint, resolve_tiny_model

logger = logging.getLogger(__name__)


@dataclass
class _Round:
    """What one generation round decided, kept until its rewards arrive."""

    scores: Scores  # the engine's view of every candidate (keys, features, predictions)
    dataset_indices: np.ndarray | None  # where each candidate sits in the train dataset (None: not known)
    selection: Selection
    warmup: bool
    embed_seconds: float = 0.0

    @property
    def keys(self) -> np.ndarray:
        return self.scores.keys

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.predicted


DEPOStats = SelectorStats  # the run's totals are the engine's (kept under this name for existing callers)


_trl_compat.check_trl_version()


@contextlib.contextmanager
def _quiet_trl_deprecations():
    """TRL's generation reads transformers' deprecated ``is_gradient_checkpointing``: the FutureWarning is nothing a
    user can act on, and it landed inside the progress bar three times per run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _is_map_style(dataset) -> bool:
    """Indexable with a length (datasets.Dataset, a list); streaming datasets are not."""
    return hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def _no_spread(values: torch.Tensor) -> torch.Tensor:
    """Over the last axis, ignoring NaN: fewer than two values, or a sample std that ``torch.isclose`` calls 0."""
    scorable = ~torch.isnan(values)
    count = scorable.sum(dim=-1)
    mean = torch.where(scorable, values, 0.0).sum(dim=-1) / count.clamp(min=1)
    spread = torch.where(scorable, (values - mean.unsqueeze(-1)) ** 2, 0.0).sum(dim=-1)
    std = torch.sqrt(spread / (count - 1).clamp(min=1))
    return (count < 2) | torch.isclose(std, torch.zeros_like(std))


class _LoadSwitchCallback(TrainerCallback):
    """Turns off row loading for TRL's discarded batches as soon as DEPO filters (see ``depo_trl.epochs``)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.depo_load_switch.skip = self.trainer.depo_filtering

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.depo_load_switch.skip = self.trainer.depo_filtering


class DEPOTrainer(GRPOTrainer):
    """[`~trl.GRPOTrainer`] that rolls out only prompts whose predicted pass rate is in a target band.

    Takes every argument of `GRPOTrainer` (with `args` a [`DEPOConfig`]) plus:

    Args:
        estimator ([`~depo_trl.estimators.PassRateEstimator`], *optional*):
            A ready estimator instance. Defaults to the one named by `args.depo_estimator`.
    """

    _tag_names = ["trl", "grpo", "depo"]
    _name = "DEPO"

    def __init__(self, model, reward_funcs=None, args: DEPOConfig | None = None, *pos, estimator=None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = DEPOConfig(f"{name.split('/')[-1]}-DEPO")
        if not isinstance(args, DEPOConfig):
            raise TypeError(
                f"DEPOTrainer needs a DEPOConfig, got {type(args).__name__}. "
                "Build one with the same fields: DEPOConfig(**your_grpo_args.to_dict()), plus any depo_* fields."
            )
        environment_owns_data = kwargs.get("train_dataset", pos[0] if pos else None) is None
        if len(pos) < 3:  # model="depo-tiny" works in Python as in recipes (processing_class is the 6th argument)
            model, tokenizer = resolve_tiny_model(model, kwargs.get("processing_class"), args.seed)
            if tokenizer is not None:
                kwargs["processing_class"] = tokenizer
        # TRL validates its own arguments first (so a user gets GRPOTrainer's messages); its warnings are re-issued
        # at the user's line, as GRPOTrainer's would be.
        with at_user_code(), _trl_compat.vllm_cpu_hook(args, model):  # use_vllm on CPU: see depo_trl.vllm_cpu
            super().__init__(model, reward_funcs, args, *pos, **kwargs)
        self._depo_warned: set[str] = set()
        self._depo_pass_tally = np.zeros(3)  # rounds with labels, passes, trials: to spot a threshold that never splits
        self.depo_pool_size, self.depo_disabled_reason = self._check_train_dataset(environment_owns_data)
        if self.depo_disabled_reason is not None and args.depo_candidate_multiplier > 1:
            warn_user(f"DEPO cannot filter this run and trains it as plain GRPO: {self.depo_disabled_reason}")
        self.depo_pass_order = self._resolve_pass_reward()
        self.depo_pass_index = self.depo_pass_order[0]
        self.depo_selector = PromptSelector(
            group_size=self.num_generations,
            estimator=estimator if estimator is not None else args.depo_estimator,
            estimator_kwargs=None if estimator is not None else (args.depo_estimator_kwargs or None),
            features=args.depo_features,
            feature_options=args.depo_feature_options,
            embedding_dim=args.depo_embedding_dim,
            selection=args.depo_selection,
            band=(args.depo_band_low, args.depo_band_high),
            exploration=args.depo_exploration,
            revisit_after=args.depo_revisit_after,
            history_max_prompts=args.depo_history_max_prompts,
            seed=args.seed,
        )
        self._check_metadata_columns()
        # Only with refresh_every > 1 are embeddings kept, for a few candidate pools' worth of prompts.
        pool = args.depo_candidate_multiplier * args.generation_batch_size // args.num_generations
        self.depo_embedding_cache = EmbeddingCache(args.depo_embedding_refresh_every, max_prompts=max(8 * pool, 1024))
        self.depo_warm_started = args.depo_warm_start_path is None
        self._depo_warm_start_rows = None if self.depo_warm_started else self._read_warm_start_file()
        self._depo_trl_columns: list[str] | None = None  # the columns TRL's dataloader keeps (remove_unused_columns)
        self._depo_hidden_columns: list[str] = []  # metadata columns DEPO asked TRL's dataloader to keep for it
        if _is_map_style(self.train_dataset):
            self.depo_candidates = CandidateStream(len(self.train_dataset), seed=args.seed, shuffle=self.shuffle_dataset)
        else:
            self.depo_candidates = IterableCandidateStream(seed=args.seed, shuffle=self.shuffle_dataset)
        self.depo_decisions = DecisionLog(args.output_dir, max_bytes=int(args.depo_audit_max_mb * 2**20))
        self._depo_capture = False
        self._depo_rewards: torch.Tensor | None = None
        self._depo_failures_logged = 0  # estimator failures already reported in depo/estimator_failures
        self._depo_rollouts: dict[int, tuple[int, int]] = {}  # prompt key -> (walk pass, rollouts in that pass)
        self.depo_load_switch = LoadSwitch()
        self.add_callback(_LoadSwitchCallback(self))
        self._check_embedding_adapter()
        self._depo_index_recorder: IndexRecorder | None = None  # set with the train sampler (warm-up row indices)
        hint = cpu_hint(args, self.accelerator.device.type, torch.get_num_threads())
        if hint is not None:
            warn_user(hint)
        self.depo_console = None
        if args.depo_console == "depo":  # TRL's per-step dicts with depo_console="trl"
            from .console import use_depo_console

            self.depo_console = use_depo_console(self, every=args.depo_console_every)

    # The engine's parts, under the names the trainer has always exposed.
    @property
    def depo_estimator(self) -> PassRateEstimator:
        return self.depo_selector.estimator

    @property
    def depo_history(self) -> PromptHistory:
        return self.depo_selector.history

    @property
    def depo_featurizer(self) -> Featurizer:
        return self.depo_selector.featurizer

    @property
    def depo_rng(self) -> np.random.Generator:
        return self.depo_selector.rng

    @property
    def depo_stats(self) -> SelectorStats:
        return self.depo_selector.stats

    # ------------------------------------------------------------------ set-up checks
    def _check_train_dataset(self, environment_owns_data: bool) -> tuple[int, str | None]:
        """Candidate pool size, and why DEPO cannot filter this run (None when it can).

        Runs after ``GRPOTrainer.__init__``, which has already refused what GRPO cannot train. Without a
        ``train_dataset``, TRL's environment supplies every prompt at ``reset()`` and the dataset is a placeholder of
        identical empty prompts: there is nothing to select from, so the run is plain GRPO. A dataset smaller than
        one pool gives a smaller pool (every prompt is a candidate each round); one no larger than a round's U
        prompts leaves nothing to choose, so the run is plain GRPO too.
        """
        dataset, args = self.train_dataset, self.args
        unique_per_round = args.generation_batch_size // args.num_generations
        pool = args.depo_candidate_multiplier * unique_per_round
        if environment_owns_data and self.environment_factories is not None:
            return pool, (
                "the environment owns the data (no train_dataset: every prompt comes from reset()), so there are no "
                "prompts to score before rollout. To let DEPO select, pass a train_dataset whose rows (a 'prompt' "
                "column, or the columns reset() reads) describe each task."
            )
        columns = getattr(dataset, "column_names", None)
        if columns is not None and "prompt" not in columns and self.environment_factories is None:
            raise ValueError(
                f"The train_dataset has no 'prompt' column (columns: {columns}). DEPO scores and rolls out the "
                "'prompt' column; rename yours, e.g. dataset.rename_column('question', 'prompt')."
            )
        if _is_map_style(dataset) and len(dataset) < pool:  # a stream is checked when it is read
            if len(dataset) < unique_per_round:
                raise ValueError(
                    f"The train_dataset has {len(dataset)} prompts, fewer than the {unique_per_round} prompts one "
                    f"generation round rolls out (generation_batch_size {args.generation_batch_size} / "
                    f"num_generations {args.num_generations}); TRL's sampler drops an incomplete round, so training "
                    f"would run 0 steps. Add prompts (at least {unique_per_round}; {pool} for DEPO's full candidate "
                    "pool), or lower per_device_train_batch_size (or raise num_generations) so that a round needs no "
                    f"more than {len(dataset)} prompts."
                )
            if len(dataset) <= unique_per_round:
                return pool, (
                    f"the train_dataset has {len(dataset)} prompts, no more than the {unique_per_round} that one "
                    "generation round rolls out, so there is nothing to choose from. Add prompts to filter."
                )
            if args.depo_candidate_multiplier > 1:
                warn_user(
                    f"The train_dataset has {len(dataset)} prompts, fewer than one candidate pool of {pool} "
                    f"(depo_candidate_multiplier={args.depo_candidate_multiplier} x {unique_per_round} prompts per "
                    f"generation round): every round scores all {len(dataset)} and rolls out {unique_per_round}. "
                    "Add prompts for the full pool, or lower depo_candidate_multiplier to silence this."
                )
            pool = len(dataset)
        return pool, None

    def _check_embedding_adapter(self) -> None:
        """``depo_embedding_adapter="off"`` means "embed with the PEFT adapter disabled"; without an adapter it
        would silently embed with the trained model."""
        if self.args.depo_embedding_adapter != "off" or not self.depo_selector.needs_embedding:
            return
        if not hasattr(self.accelerator.unwrap_model(self.model), "disable_adapter"):
            raise ValueError(
                "depo_embedding_adapter='off' embeds with the PEFT adapter disabled, but the model has no PEFT "
                "adapter, so it would embed with the trained weights. Pass a peft_config (or a PeftModel), or set "
                "depo_embedding_adapter='on'."
            )

    def _check_metadata_columns(self) -> None:
        wanted = self.depo_featurizer.metadata_columns
        columns = getattr(self.train_dataset, "column_names", None)
        missing = [c for c in wanted if columns is not None and c not in columns]
        if missing:
            raise ValueError(
                f"The 'metadata' feature group reads columns {missing}, which the train_dataset lacks "
                f"(columns: {columns}). Fix the 'columns' (or 'column') of depo_feature_options for the group that "
                "reads them ('metadata', 'text' or 'answer_likelihood'), or add the columns."
            )

    def _resolve_pass_reward(self) -> list[int]:
        """Indices of the reward functions that decide a pass, in priority order (see ``_group_outcomes``).

        ``depo_pass_reward`` unset: every reward function in TRL's order, so the first one decides and the others
        only score prompts it returns None for (with one warning naming the choice when there are several). Set: the
        named reward(s) only, in the given order.
        """
        names = list(self.reward_func_names)
        wanted = self.args.depo_pass_reward
        threshold = self.args.depo_pass_threshold
        if wanted is None:
            if len(names) > 1:
                warn_user(
                    f"There are {len(names)} reward functions {names}; DEPO decides a pass with the first, "
                    f"{names[0]!r}: a completion passes when its {names[0]!r} reward is >= depo_pass_threshold="
                    f"{threshold}. Prompts that {names[0]!r} returns None for are judged by the next reward that "
                    f"scores them, in the order {names[1:]}. This binary signal only trains DEPO's estimator; the "
                    "policy still learns from TRL's weighted rewards. To choose, set depo_pass_reward to one of "
                    f"{names} (or a comma-separated priority list) and depo_pass_threshold."
                )
            return list(range(len(names)))
        requested = [w.strip() for w in wanted.split(",")] if isinstance(wanted, str) else [str(w) for w in wanted]
        requested = list(dict.fromkeys(w for w in requested if w))
        unknown = [w for w in requested if w not in names]
        if unknown or not requested:
            raise ValueError(
                f"depo_pass_reward={wanted!r} is not a reward function name (unknown: {unknown}). Choose one of "
                f"{names}, or several separated by commas (the first that scores a prompt decides)."
            )
        return [names.index(w) for w in requested]

    def _candidate_prompt(self, row: dict):
        """What DEPO scores for a dataset row: its prompt. Under a TRL environment a row may carry no prompt (reset()
        writes it from the row's other columns, e.g. ``environment``), so the row is described by those columns, as
        the user turn TRL would otherwise leave empty."""
        if "prompt" in row:
            return row["prompt"]
        return [{"role": "user", "content": "\n".join(f"{name}: {value}" for name, value in sorted(row.items()))}]

    # ------------------------------------------------------------------ epochs and TRL's dataloader
    @property
    def depo_rounds_per_epoch(self) -> int | None:
        """Generation rounds in one DEPO epoch (one pass of the candidate walk), or None where GRPO's epoch applies
        (no filtering at all, or a streaming dataset). See ``depo_trl.epochs``."""
        if (self.args.depo_candidate_multiplier <= 1 or self.depo_disabled_reason is not None
                or not _is_map_style(self.train_dataset)):
            return None
        return max(1, len(self.train_dataset) // self.depo_pool_size)

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        rounds = self.depo_rounds_per_epoch
        per_round = self.args.generation_batch_size * self.num_iterations * self.args.steps_per_generation
        if rounds is not None:
            sampler = EpochOfRounds(sampler, rounds * per_round)
        if not (_is_map_style(self.train_dataset) and self.args.depo_audit_log and self.accelerator.is_main_process):
            return sampler
        # Remember what the sampler yields, so warm-up rounds (TRL's own batches) log their dataset indices.
        self._depo_index_recorder = IndexRecorder(
            sampler, self.args.generation_batch_size, self.num_iterations * self.args.steps_per_generation,
            self.num_generations,
        )
        return self._depo_index_recorder

    def get_train_dataloader(self):
        if self.depo_rounds_per_epoch is None:
            return super().get_train_dataloader()
        dataset = self.train_dataset
        self.depo_loader_dataset = LoadWhenUsed(dataset, self.depo_load_switch)  # what TRL's dataloader reads from
        self.train_dataset = self.depo_loader_dataset
        try:
            return super().get_train_dataloader()
        finally:
            self.train_dataset = dataset

    def _over_rollout_cap(self, row: dict, pass_index: int) -> bool:
        """Whether a candidate drawn in walk pass ``pass_index`` was already rolled out the most times per epoch."""
        cap = self.args.depo_max_rollouts_per_epoch
        seen = self._depo_rollouts.get(prompt_key(self._candidate_prompt(row)))
        return cap is not None and seen is not None and seen[0] == pass_index and seen[1] >= cap

    def _count_rollouts(self, keys, passes) -> None:
        for key, pass_index in zip(keys, passes):
            seen = self._depo_rollouts.get(int(key))
            count = seen[1] + 1 if seen is not None and seen[0] == int(pass_index) else 1
            self._depo_rollouts[int(key)] = (int(pass_index), count)

    # ------------------------------------------------------------------ TRL hooks
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Each reward's output is checked as it returns, so a reward returning strings is named with the fix.
        funcs, self.reward_funcs = self.reward_funcs, checked_reward_funcs(self.reward_funcs, self.reward_func_names)
        try:
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        finally:
            self.reward_funcs = funcs
        if self._depo_capture:
            self._depo_rewards = rewards.detach().float().cpu()
        return rewards

    def _set_signature_columns_if_needed(self):
        """TRL keeps only ``prompt``/``image``/``images`` when ``remove_unused_columns=True``. DEPO's ``metadata``
        features need their columns in warm-up batches too, so TRL's dataloader is asked to keep them as well; they
        are taken off again before any row reaches TRL (see ``_trl_rows``), so reward functions get exactly the
        columns they get from GRPOTrainer."""
        super()._set_signature_columns_if_needed()
        if getattr(self, "_depo_trl_columns", "unset") is None:  # only once, and only after DEPO's own set-up
            self._depo_trl_columns = list(self._signature_columns)
            self._depo_hidden_columns = [
                c for c in self.depo_featurizer.metadata_columns if c not in self._depo_trl_columns
            ]
            self._signature_columns = self._depo_trl_columns + self._depo_hidden_columns

    def _trl_rows(self, rows: list[dict], drawn: bool = False) -> list[dict]:
        """``rows`` with exactly the columns TRL's own dataloader would have given them. ``drawn`` rows come from
        the raw dataset (DEPO's candidate walk); the others came through TRL's dataloader."""
        if not self.args.remove_unused_columns:
            return rows
        if drawn:
            if self._depo_trl_columns is None:
                self._set_signature_columns_if_needed()
            return [{k: v for k, v in row.items() if k in self._depo_trl_columns} for row in rows]
        if not self._depo_hidden_columns:
            return rows
        return [{k: v for k, v in row.items() if k not in self._depo_hidden_columns} for row in rows]

    def _generate_and_score_completions(self, inputs):
        if not self.model.training or self.depo_disabled_reason is not None:  # evaluation is never filtered
            with _quiet_trl_deprecations():
                return super()._generate_and_score_completions(self._trl_rows(inputs))
        if not self.depo_warm_started:
            self._warm_start()
        plan, local_inputs = self._plan_round(inputs)
        self._depo_capture, self._depo_rewards = True, None
        try:
            with _quiet_trl_deprecations():
                output = super()._generate_and_score_completions(local_inputs)
        finally:
            self._depo_capture = False
        if self.args.depo_mask_zero_variance and self._depo_rewards is not None:
            self._mask_zero_variance_groups(output, self._depo_rewards)
        self._learn_from_round(plan, self._depo_rewards)
        return output

    def _read_warm_start_file(self) -> list[dict]:
        """The warm-start rows, read and checked at construction so a bad file fails before any compute."""
        path = self.args.depo_warm_start_path
        rows, passes, trials, skipped = read_passrate_jsonl(path, limit=self.args.depo_warm_start_max_prompts)
        if not rows:
            raise ValueError(
                f"depo_warm_start_path {path!r} holds no row with a prompt and a pass rate ({skipped} rows skipped). "
                "Each line needs 'prompt' (or 'problem'/'question'/'text') and 'pass_rate', 'passes'+'trials' or "
                "'successes_of_<N>'."
            )
        wanted = self.depo_featurizer.metadata_columns
        lacking = sorted({c for row in rows for c in wanted if c not in row})
        if lacking:
            raise ValueError(
                f"The 'metadata' feature group reads columns {lacking}, but rows of depo_warm_start_path {path!r} "
                "lack them. Add those fields to every line of the file, or drop 'metadata' from depo_features."
            )
        for row, p, t in zip(rows, passes, trials):
            row["_passes"], row["_trials"] = float(p), float(t)
        return rows

    def _render_like_training(self, prompt):
        """A warm-start prompt in the form training prompts take: a plain string becomes the content of the last
        user turn of the first training prompt (so the same system prompt and turns surround it), when training
        prompts are chats; chats, and strings for plain-text training, are used as they are. Features and prompt
        keys then match those of the same prompt drawn from the dataset."""
        if not isinstance(prompt, str):
            return prompt
        example = self._first_training_prompt()
        if not isinstance(example, list) or not example:
            return prompt
        users = [i for i, m in enumerate(example) if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            return prompt
        at = users[-1]
        return [dict(m) for m in example[:at]] + [{**example[at], "content": prompt}] + [dict(m) for m in example[at + 1:]]

    def _first_training_prompt(self):
        dataset = self.train_dataset
        row = dataset[0] if _is_map_style(dataset) else next(iter(dataset))
        return row.get("prompt")

    def _warm_start(self) -> None:
        """Fit the estimator on a file of measured pass rates, with the features training will use: prompts rendered
        as training prompts are, metadata from the file's own columns, embeddings from the initial policy."""
        rows = self._depo_warm_start_rows
        prompts = [self._render_like_training(row["_prompt"]) for row in rows]
        metadata = {c: [row[c] for row in rows] for c in self.depo_featurizer.metadata_columns}
        passes = np.array([row["_passes"] for row in rows])
        trials = np.array([row["_trials"] for row in rows])
        scale = np.minimum(1.0, float(self.num_generations) / trials)  # a 128-sample measurement weighs like a group
        texts, token_ids, embeddings, keys, _, answer_logprobs = self._prepare(prompts, metadata=metadata)
        try:
            self.depo_selector.fit(texts, passes * scale, trials * scale, keys=keys,
                                   token_counts=[len(t) for t in token_ids], embeddings=embeddings,
                                   metadata=metadata or None, answer_logprobs=answer_logprobs)
        except Exception as exc:  # a failing estimator never stops training
            self.depo_selector._failed("warm start", exc)
        self.depo_warm_started = True
        self._depo_warm_start_rows = None
        logger.info("DEPO warm start from %s: %d rows", self.args.depo_warm_start_path, len(rows))

    def _zero_advantage_groups(self, rewards: torch.Tensor) -> torch.Tensor:
        """Per global group: True when TRL's advantage arithmetic gives every completion of it a zero advantage.

        ``rewards`` is TRL's gathered ``(N, n_reward_funcs)`` tensor (NaN where a function returned None). TRL
        leaves NaN out of its group statistics and sets a NaN advantage to 0, so a group counts as zero when the
        quantity TRL normalises per group has fewer than two scorable values or zero spread (TRL's own
        ``isclose(std, 0)`` test; its advantage is then ``0 / (0 + 1e-4)`` up to float rounding). That quantity is
        the weighted reward sum under ``sum_then_normalize`` (so ``[1, 1, 1, None]`` is zero, as TRL says), and
        every reward function separately under ``normalize_then_sum`` (a group whose functions vary but whose
        weighted sum is constant still has non-zero advantages there, and is kept)."""
        group = self.num_generations
        if self.multi_objective_aggregation == "sum_then_normalize":
            weights = self.reward_weights.detach().float().cpu()
            total = torch.nansum(rewards * weights, dim=1)
            total[torch.isnan(rewards).all(dim=1)] = torch.nan
            return _no_spread(total.view(-1, group))
        per_function = rewards.view(-1, group, rewards.size(1)).transpose(1, 2)  # (groups, funcs, G)
        return _no_spread(per_function).all(dim=1)

    def _mask_zero_variance_groups(self, output: dict, rewards: torch.Tensor) -> None:
        """Leave this rank's rows of zero-advantage groups out of the loss (not out of the attention mask: TRL's
        ``completion_mask`` stays as it is; the loss-only mask is multiplied) and recount the loss normaliser."""
        zero = self._zero_advantage_groups(rewards).repeat_interleave(self.num_generations)
        completion_mask = output["completion_mask"]
        n_local = completion_mask.size(0)
        start = self.accelerator.process_index * n_local
        keep = (~zero[start : start + n_local]).to(device=completion_mask.device, dtype=completion_mask.dtype)
        key = _trl_compat.LOSS_ONLY_MASK
        loss_only = output.get(key)
        loss_only = torch.ones_like(completion_mask) if loss_only is None else loss_only
        output[key] = loss_only * keep.unsqueeze(1)
        output["num_items_in_batch"] = self.accelerator.gather((completion_mask * output[key]).sum()).sum()
        _trl_compat.metrics(self)["train"]["depo/masked_group_share"].append(float(zero.float().mean()))

    # ------------------------------------------------------------------ one round
    @property
    def depo_filtering(self) -> bool:
        """Whether this round filters (False during warm-up, or when K = 1)."""
        return (
            self.args.depo_candidate_multiplier > 1
            and self.depo_disabled_reason is None
            and self.state.global_step >= self.args.depo_warmup_steps
        )

    def _plan_round(self, inputs: list[dict]) -> tuple[_Round, list[dict]]:
        group = self.num_generations
        if not self.depo_filtering:
            # GRPO's own batch: G contiguous copies per prompt across the ranks' concatenated rows.
            global_prompts = gather_object([self._candidate_prompt(x) for x in inputs])
            prompts = global_prompts[::group]
            metadata = {c: gather_object([x[c] for x in inputs])[::group] for c in self.depo_featurizer.metadata_columns}
            environments = (None if self.environment_factories is None
                            else gather_object([x.get("environment") for x in inputs])[::group])
            scores, embed_seconds = self._score(prompts, metadata, environments)
            low, high = self.depo_selector.band
            in_band = (scores.predicted >= low) & (scores.predicted <= high)
            keep_all = Selection(indices=np.arange(len(prompts)), reasons=[REASON_BAND] * len(prompts), in_band=in_band)
            if isinstance(self.depo_candidates, CandidateStream):  # warm-up rollouts count toward the walk's pass
                self._count_rollouts(scores.keys, [self.depo_candidates.epoch] * len(prompts))
            indices = self._warmup_indices(scores.keys)
            return _Round(scores, indices, keep_all, True, embed_seconds), self._trl_rows(inputs)
        if self._depo_index_recorder is not None:
            self._depo_index_recorder.active = False  # DEPO's own draw knows its indices from here on

        n_select = self.args.generation_batch_size // group
        if isinstance(self.depo_candidates, CandidateStream):
            skip = self._over_rollout_cap if self.args.depo_max_rollouts_per_epoch is not None else None
            indices, rows = self.depo_candidates.draw(self.train_dataset, self.depo_pool_size, skip=skip)
        else:
            indices, rows = self.depo_candidates.draw(self.train_dataset, self.depo_pool_size)
        prompts = [self._candidate_prompt(row) for row in rows]
        metadata = {c: [row[c] for row in rows] for c in self.depo_featurizer.metadata_columns}
        scores, embed_seconds = self._score(prompts, metadata, [row.get("environment") for row in rows])
        selection = self._select(scores, n_select)
        plan = _Round(scores, indices, selection, False, embed_seconds)
        if isinstance(self.depo_candidates, CandidateStream):
            passes = self.depo_candidates.last_passes
            self._count_rollouts(scores.keys[selection.indices], passes[selection.indices])

        # Every row its own object: TRL merges rollout_func extra fields into the rows in place, so G references to
        # one dict would hand every completion of a group the last completion's value.
        chosen = self._trl_rows([rows[i] for i in selection.indices], drawn=True)
        global_rows = [copy_row(row) for row in chosen for _ in range(group)]
        per_rank = len(global_rows) // self.accelerator.num_processes
        start = self.accelerator.process_index * per_rank
        return plan, global_rows[start : start + per_rank]

    def _warmup_indices(self, keys: np.ndarray) -> np.ndarray | None:
        """Dataset indices of a warm-up round's prompts, read from TRL's sampler (None when they cannot be known,
        e.g. a streaming dataset). Each recorded round is checked against the prompts actually rolled out; rounds
        the sampler yielded but training skipped (resume fast-forwards the dataloader) are passed over."""
        recorder = self._depo_index_recorder
        while recorder is not None:
            indices = recorder.take_round()
            if indices is None or len(indices) != len(keys):
                return None
            rows = [self.train_dataset[int(i)] for i in indices]
            if all(prompt_key(self._candidate_prompt(row)) == int(k) for row, k in zip(rows, keys)):
                return np.asarray(indices, dtype=np.int64)
        return None

    def _select(self, scores: Scores, n_select: int) -> Selection:
        """Rank 0 picks (only it draws from the selection RNG, whose state is the one checkpointed); the pick is
        broadcast so every rank rolls out the same prompts. Its positions index rank 0's candidate list, so the
        ranks first check that their lists agree."""
        if self.accelerator.num_processes > 1:
            self._check_same_candidates(scores)
        payload = [self.depo_selector.select(scores, n_select) if self.accelerator.is_main_process else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(payload, from_process=0)
        return payload[0]

    def _gather_fingerprints(self, fingerprint: str) -> list[str]:
        return gather_object([fingerprint])

    def _check_same_candidates(self, scores: Scores) -> None:
        """Every rank draws the same candidates without talking (same seed, same walk); a dataset that differs
        between ranks (e.g. shuffled per process) would make rank 0's pick roll out other prompts elsewhere and
        break the G-contiguous layout silently. One cheap digest per rank, compared on every rank, so all fail."""
        digest = hashlib.blake2b(np.ascontiguousarray(scores.keys, dtype=np.int64).tobytes(), digest_size=8).hexdigest()
        fingerprints = self._gather_fingerprints(digest)
        if len(set(fingerprints)) > 1:
            raise RuntimeError(
                f"DEPO's ranks drew different candidate prompts this round (fingerprints per rank: {fingerprints}), so "
                "rank 0's selection cannot be applied. Give every process the same train_dataset in the same order "
                "(do not shard or shuffle it per process; DEPO and TRL's sampler split the work themselves)."
            )

    def _render(self, prompts: list, environments: list | None = None) -> tuple[list[str], list[list[int]], Any]:
        """Prompts as the model sees them, their token ids, and the tokenizer. Rendered by TRL's own generation
        path, so tools, chat_template, chat_template_kwargs and special tokens match what the policy will see (with
        several TRL environments, each prompt with its own environment's tools); the text features read the same
        rendering back."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        token_ids = _trl_compat.tokenize_prompts(self, prompts, environments)
        texts = tokenizer.batch_decode(token_ids, skip_special_tokens=False)
        return texts, token_ids, tokenizer

    def _features(self, prompts: list, metadata: dict | None = None, environments: list | None = None) -> np.ndarray:
        """The estimator's inputs for ``prompts`` (all ranks take part: embedding is sharded and gathered)."""
        texts, token_ids, embeddings, keys, _, answer_logprobs = self._prepare(prompts, environments, metadata)
        return self.depo_selector.featurize(texts, keys=keys, token_counts=[len(t) for t in token_ids],
                                            embeddings=embeddings, metadata=metadata, answer_logprobs=answer_logprobs)

    def _prepare(self, prompts: list, environments: list | None = None, metadata: dict | None = None):
        """Rendered texts, token ids, embeddings (None without the embedding group), prompt keys (history is keyed
        by the raw prompt), the seconds it took, and the reference answers' log-likelihoods (None without the
        ``answer_likelihood`` group; computed in the same prefill as the embeddings)."""
        t0 = time.perf_counter()
        texts, token_ids, tokenizer = self._render(prompts, environments)
        keys = np.array([prompt_key(p) for p in prompts], dtype=np.int64)
        embeddings = answer_logprobs = None
        answers = self.depo_selector.answer_likelihood
        if self.depo_selector.needs_embedding or answers is not None:
            limit = self.args.depo_embedding_max_length
            answer_ids = None
            if answers is not None:
                values = (metadata or {}).get(answers.column)
                if values is None:
                    raise ValueError(f"The 'answer_likelihood' features read the column {answers.column!r}; the rows "
                                     "lack it.")
                answer_ids = answer_token_ids(tokenizer, values, answers.prefix, answers.max_tokens)
            embeddings, answer_logprobs = self._cached_prefill(
                keys, [ids[-limit:] for ids in token_ids], answer_ids, tokenizer.pad_token_id)
            if not self.depo_selector.needs_embedding:
                embeddings = None
        return texts, token_ids, embeddings, keys, time.perf_counter() - t0, answer_logprobs

    def _score(self, prompts: list, metadata: dict | None = None, environments: list | None = None
               ) -> tuple[Scores, float]:
        """The engine's scores of ``prompts`` (history is keyed by the raw prompt) and the embedding time."""
        texts, token_ids, embeddings, keys, embed_seconds, answer_logprobs = self._prepare(prompts, environments,
                                                                                           metadata)
        scores = self.depo_selector.score(texts, keys=keys, token_counts=np.array([len(t) for t in token_ids]),
                                          embeddings=embeddings, metadata=metadata or None,
                                          answer_logprobs=answer_logprobs)
        return scores, embed_seconds

    def _cached_prefill(self, keys: np.ndarray, token_ids: list[list[int]], answer_ids: list | None,
                        pad_token_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings (and answer log-likelihoods) of the prompts, recomputing only those whose cached entry is too
        old (the same set on every rank: the cache evolves identically everywhere)."""
        if self.args.depo_embedding_refresh_every == 1:
            return self._embed(token_ids, pad_token_id, answer_ids)
        cache, now = self.depo_embedding_cache, self.depo_stats.rounds
        stale = cache.missing(keys, now)
        if stale.any():
            fresh_ids = [ids for ids, is_stale in zip(token_ids, stale) if is_stale]
            fresh_answers = None if answer_ids is None else [a for a, is_stale in zip(answer_ids, stale) if is_stale]
            embeddings, answer_logprobs = self._embed(fresh_ids, pad_token_id, fresh_answers)
            # The answer log-likelihoods ride in the cache as 3 trailing columns, refreshed with the embedding.
            row = embeddings if answer_logprobs is None else np.hstack([embeddings, answer_logprobs])
            cache.put(keys[stale], row.astype(np.float32), now)
        rows = cache.get(keys).astype(np.float64)
        return (rows, None) if answer_ids is None else (rows[:, :-3], rows[:, -3:])

    def _embed(self, token_ids: list[list[int]], pad_token_id: int, answer_ids: list | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """Each rank embeds an equal shard (padded with repeats), then the shards are gathered in rank order."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        shard = -(-len(token_ids) // world)
        padded = token_ids + [token_ids[-1]] * (shard * world - len(token_ids))
        mine = padded[rank * shard : (rank + 1) * shard]
        my_answers = None
        if answer_ids is not None:
            answers = list(answer_ids) + [answer_ids[-1]] * (shard * world - len(answer_ids))
            my_answers = answers[rank * shard : (rank + 1) * shard]
        with self._embedding_adapter_context():
            embeddings, answer_logprobs = embed_and_score_answers(
                self.model, mine, my_answers, pad_token_id, pooling=self.args.depo_embedding_pooling,
                batch_size=self.args.depo_embedding_batch_size, device=self.accelerator.device)
        if world > 1:
            embeddings = self.accelerator.gather(embeddings.contiguous())
            if answer_logprobs is not None:
                answer_logprobs = self.accelerator.gather(answer_logprobs.contiguous())
        embeddings = embeddings[: len(token_ids)].cpu().double().numpy()
        if answer_logprobs is not None:
            answer_logprobs = answer_logprobs[: len(token_ids)].cpu().double().numpy()
        return embeddings, answer_logprobs

    def _embedding_adapter_context(self):
        """``depo_embedding_adapter="off"`` embeds with the PEFT adapter disabled (the frozen base model)."""
        if self.args.depo_embedding_adapter == "off":
            unwrapped = self.accelerator.unwrap_model(self.model)
            if hasattr(unwrapped, "disable_adapter"):
                return unwrapped.disable_adapter()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ learning and metrics
    def _group_outcomes(self, rewards: torch.Tensor | None, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
        """Passes and scorable completions per rolled-out group, from the gathered (N, n_funcs) rewards.

        Each group is judged by the first reward in ``depo_pass_order`` that applies to it: a reward returning None
        (NaN) for every completion of a group does not apply to that prompt (TRL's convention for multi-task
        rewards, e.g. a math reward on a code prompt), so the next one is asked. The deciding reward is thresholded
        at ``depo_pass_threshold``. A reward that scores only some completions of a group applies but failed to score
        the rest; such a group is not a label this round: failures to score are rarely independent of the outcome
        (timeouts on long answers, parse errors), so its pass count may be biased.
        """
        passes, trials = np.zeros(n_groups), np.zeros(n_groups)
        if rewards is None:
            return passes, trials
        values = rewards.view(n_groups, self.num_generations, -1).numpy()
        threshold = self.args.depo_pass_threshold
        no_reward_applies = 0
        for g in range(n_groups):
            for index in self.depo_pass_order:
                column = values[g, :, index]
                scored = np.isfinite(column)
                if not scored.any():
                    continue  # this reward does not apply to this prompt: ask the next one
                if scored.all():
                    passes[g], trials[g] = float((column >= threshold).sum()), float(len(column))
                break
            else:
                no_reward_applies += 1
        self._check_pass_signal_splits(passes, trials)
        if no_reward_applies and len(self.depo_pass_order) < len(self.reward_func_names):
            self._warn_once(
                "pass_reward_none",
                f"{no_reward_applies} of {n_groups} prompts this round got None from every pass reward "
                f"{[self.reward_func_names[i] for i in self.depo_pass_order]}, so DEPO learned nothing about them. "
                "Add a reward that scores them to depo_pass_reward (a comma-separated priority list), or leave "
                "depo_pass_reward unset to fall back to every reward function in order.",
            )
        return passes, trials

    def _check_pass_signal_splits(self, passes: np.ndarray, trials: np.ndarray, rounds: int = 5) -> None:
        """Warn once when, over the first ``rounds`` labelled rounds, every scored completion passed (or every one
        failed): the threshold does not split this reward (e.g. a shaped length reward at 0.5), so the estimator
        cannot tell prompts apart. Training goes on; only the warning is added."""
        if trials.sum() == 0:
            return
        self._depo_pass_tally += (1, passes.sum(), trials.sum())
        n_rounds, n_passed, n_scored = self._depo_pass_tally
        if n_rounds == rounds and n_passed in (0, n_scored):
            names = [self.reward_func_names[i] for i in self.depo_pass_order]
            self._warn_once(
                "pass_signal_constant",
                f"In DEPO's first {rounds} rounds, {'all' if n_passed else 'none'} of {int(n_scored)} scored "
                f"completions passed (pass reward {names[0]!r} >= depo_pass_threshold="
                f"{self.args.depo_pass_threshold}), so its estimator cannot tell prompts apart yet. If that reward is "
                "shaped (a length, a score), set depo_pass_threshold to the value that means a correct answer, or "
                "depo_pass_reward to a 0/1 reward; if it is 0/1, the prompts so far were all too "
                f"{'easy' if n_passed else 'hard'} for the policy.",
            )

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._depo_warned:
            self._depo_warned.add(what)
            warn_user(message, RuntimeWarning)

    def _learn_from_round(self, plan: _Round, rewards: torch.Tensor | None) -> None:
        chosen = plan.selection.indices
        passes, trials = self._group_outcomes(rewards, len(chosen))
        outcome = self.depo_selector.observe(plan.scores, chosen, passes, trials, in_band=plan.selection.in_band)
        self._log_round(plan, outcome)
        if self.args.depo_audit_log and self.accelerator.is_main_process:
            self._audit_round(plan, passes, trials)

    def _audit_round(self, plan: _Round, passes: np.ndarray, trials: np.ndarray) -> None:
        n = len(plan.keys)
        decision = [skip_reason(p, self.args.depo_band_low, self.args.depo_band_high) for p in plan.predicted]
        observed_passes: list = [None] * n
        observed_trials: list = [None] * n
        for slot, (index, reason) in enumerate(zip(plan.selection.indices, plan.selection.reasons)):
            decision[index] = reason
            observed_passes[index], observed_trials[index] = int(passes[slot]), int(trials[slot])
        indices = plan.dataset_indices
        self.depo_decisions.write({
            "round": self.depo_stats.rounds,
            "step": self.state.global_step,
            "warmup": plan.warmup,
            "rolled_out": [int(i) for i in plan.selection.indices],  # candidate positions, in rollout order
            "dataset_index": None if indices is None else [int(i) for i in indices],
            "prompt_key": [int(k) for k in plan.keys],
            "tokens": [int(t) for t in plan.scores.token_counts],
            "times_seen": [int(c) for c in plan.scores.times_seen],
            "predicted": finite_or_none(plan.predicted),
            "decision": decision,
            "passes": observed_passes,
            "trials": observed_trials,
        })

    def _log_round(self, plan: _Round, outcome: RoundOutcome) -> None:
        chosen = plan.selection.indices
        n_candidates, n_chosen = len(plan.scores), len(chosen)
        m = _trl_compat.metrics(self)["train"]
        m["depo/warmup"].append(float(plan.warmup))
        m["depo/candidates_scored"].append(float(n_candidates))
        m["depo/prompts_rolled_out"].append(float(n_chosen))
        m["depo/skipped_share"].append(1.0 - n_chosen / n_candidates)
        m["depo/in_band_share"].append(float(plan.selection.in_band[chosen].mean()))
        m["depo/explored_share"].append(plan.selection.n_explored / n_chosen)
        m["depo/filled_share"].append(plan.selection.n_filled / n_chosen)
        m["depo/embed_seconds"].append(plan.embed_seconds)
        m["depo/estimator_seconds"].append(plan.scores.seconds + outcome.seconds)
        # Failures of this round (TRL averages each metric over the rounds of a logging window: a running total
        # would be averaged into nonsense); the run's total is depo_stats.estimator_failures.
        failures = self.depo_stats.estimator_failures
        m["depo/estimator_failures"].append(float(failures - self._depo_failures_logged))
        self._depo_failures_logged = failures
        labelled = outcome.labelled
        if labelled.any():
            predicted = outcome.predicted[labelled]
            observed = outcome.observed[labelled]
            m["depo/observed_pass_rate"].append(float(observed.mean()))
            m["depo/useful_group_share"].append(float(outcome.useful[labelled].mean()))
            if np.isfinite(predicted).all():
                m["depo/predicted_pass_rate"].append(float(predicted.mean()))
                # Brier score of the per-completion prediction: mean over groups of mean_j (p - y_j)^2.
                brier = predicted**2 - 2 * predicted * observed + observed
                m["depo/brier"].append(float(brier.mean()))
                m["depo/abs_calibration_error"].append(float(np.abs(predicted.mean() - observed.mean())))

    # ------------------------------------------------------------------ state and checkpoints
    def depo_state_dict(self) -> dict[str, Any]:
        """The engine's state (estimator, history, selection RNG, totals) plus the candidate walk and the embedding
        cache (with ``depo_embedding_refresh_every > 1`` a resumed run must reuse the embeddings the first run
        would have reused, or its features, and so its picks, diverge)."""
        state = self.depo_selector.state_dict()
        state["candidates"] = self.depo_candidates.state_dict()
        state["warm_started"] = bool(self.depo_warm_started)
        state["embedding_cache"] = self.depo_embedding_cache.state_dict()
        keys = np.array(list(self._depo_rollouts), dtype=np.int64)
        state["rollouts_this_epoch"] = {
            "keys": keys,
            "passes": np.array([self._depo_rollouts[int(k)][0] for k in keys], dtype=np.int64),
            "counts": np.array([self._depo_rollouts[int(k)][1] for k in keys], dtype=np.int64),
        }
        return state

    def load_depo_state_dict(self, state: dict[str, Any]) -> None:
        self.depo_selector.load_state_dict(state)
        self.depo_candidates.load_state_dict(state["candidates"])
        self.depo_warm_started = bool(state.get("warm_started", True))
        if self.depo_warm_started:
            self._depo_warm_start_rows = None
        if "embedding_cache" in state:
            self.depo_embedding_cache.load_state_dict(state["embedding_cache"])
        rollouts = state.get("rollouts_this_epoch")
        if rollouts is not None:
            self._depo_rollouts = {
                int(k): (int(p), int(c))
                for k, p, c in zip(*(np.asarray(rollouts[f]).reshape(-1) for f in ("keys", "passes", "counts")))
            }
        self._depo_failures_logged = self.depo_stats.estimator_failures
        if self.args.depo_audit_log and self.accelerator.is_main_process:
            self.depo_decisions.discard_after(self.depo_stats.rounds)

    def _save_checkpoint(self, model, trial):
        # DEPO's state goes in first: Trainer._save_checkpoint pushes the folder to the hub (push_to_hub) before it
        # returns, so state written afterwards would be missing from the uploaded checkpoint.
        if self.args.should_save:
            save_state(self.depo_state_dict(), _trl_compat.checkpoint_dir(self, trial))
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            state = load_state(checkpoint)
            if state is None:
                warnings.warn(
                    f"Checkpoint {checkpoint} holds no DEPO state (depo_state.json); the estimator and history "
                    "start fresh.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                self.load_depo_state_dict(state)

    # ------------------------------------------------------------------ summary
    def depo_summary(self) -> str:
        """A short human-readable account of what DEPO skipped and what it saved."""
        if self.depo_disabled_reason is not None:
            return f"DEPO: off, trained as plain GRPO ({self.depo_disabled_reason})"
        if self.depo_stats.rounds == 0:
            return "DEPO: no training rounds yet."
        return self.depo_selector.summary()
