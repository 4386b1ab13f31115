"""DEPOTrainer: GRPO that generates completions only for prompts worth learning from.

Each generation round (one call of ``_generate_and_score_completions`` in training):

1. Draw K x U distinct candidate prompts from the training set (``CandidateStream``), identically on every rank.
   U = generation_batch_size / num_generations is the number of prompts GRPO would roll out; K is
   ``depo_candidate_multiplier``.
2. Score them (``PromptEncoder``: rendered as generation renders them, the policy's pooled hidden state from a prefill
   each rank runs on an equal shard; then the engine's features and prediction).
3. Pick exactly U; rank 0's pick is broadcast so every rank agrees.
4. Lay the U prompts out as U x G rows, G contiguous copies each, hand each rank its slice to
   ``GRPOTrainer._generate_and_score_completions`` (generation, rewards, advantages: all TRL's).
5. Read the gathered rewards TRL computed, count passes per group (``depo_trl.labels``), and train the estimator and
   history.

Featurising, predicting, selecting and learning are the framework-agnostic engine ``depo_trl.engine.PromptSelector``
(``self.depo_selector``); this class adapts it to TRL: the TRL hooks and each round's plan and learn steps. Prompt
encoding is ``depo_trl.prompt_encoder``, pass labels and their warnings ``depo_trl.labels``, round bookkeeping
``depo_trl.rounds``, the candidate walk and the rows handed to TRL ``depo_trl.candidates``, zero-variance masking
``depo_trl.zero_variance``, construction-time checks ``depo_trl.trainer_setup``, every private TRL name
``depo_trl._trl_compat``.

During ``depo_warmup_steps`` (or when K = 1) steps 1-4 are replaced by GRPO's own batch, untouched: the trainer
behaves exactly like ``GRPOTrainer`` while the estimator learns (the embedding prefill runs in eval mode and draws
no torch RNG). So are they on the reference steps after warm-up (every ``depo_reference_every``-th step, when set):
GRPO's uniform batch on the current policy, whose useful-group share is the reference the console and report measure
the saving against (``depo/reference_useful_group_share``). Evaluation is never filtered. Every row handed to TRL is
its own object with exactly the columns TRL's dataloader would give it. An epoch is one pass of the candidate walk
(``depo_trl.epochs``): TRL's dataloader is cut to that many rounds, and once filtering has begun its batches (which
DEPO ignores) are not read from the dataset. With nothing to choose from (a TRL environment owns the data, or the
dataset holds no more than U prompts) the whole run is plain GRPO.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from trl import GRPOTrainer

from . import _trl_compat
from ._warnings import at_user_code, warn_user
from .audit import DecisionLog
from .candidates import CandidateStream, IterableCandidateStream, TrlColumns, rank_rows
from .depo_config import DEPOConfig
from .engine import PromptSelector, Scores, SelectorStats
from .epochs import EpochOfRounds, LoadSwitch, LoadSwitchCallback, LoadWhenUsed
from .estimators import PassRateEstimator
from .features import EmbeddingCache, Featurizer
from .history import PromptHistory, prompt_key
from .labels import PassLabeller, resolve_pass_order
from .prompt_encoder import PromptEncoder, adapter_context, check_adapter, sharded_prefill
from .rounds import (Round, RolloutCounter, audit_record, candidate_fingerprint, check_same_candidates,
                     is_reference_step, round_metrics, warmup_indices)
from .selection import REASON_BAND, Selection, in_band
from .state import load_state, save_state
from .trainer_setup import (candidate_prompt, check_metadata_columns, check_train_dataset, depo_config_for,
                            is_map_style, read_warm_start_file, warm_start)
from .usability import IndexRecorder, checked_reward_funcs, cpu_hint, resolve_tiny_model
from .zero_variance import mask_zero_variance_groups, zero_advantage_groups

logger = logging.getLogger(__name__)

_trl_compat.check_trl_version()


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
        args = depo_config_for(model, args)
        environment_owns_data = kwargs.get("train_dataset", pos[0] if pos else None) is None
        if len(pos) < 3:  # model="depo-tiny" works in Python as in recipes (processing_class is the 6th argument)
            model, tokenizer = resolve_tiny_model(model, kwargs.get("processing_class"), args)
            if tokenizer is not None:
                kwargs["processing_class"] = tokenizer
        # TRL validates its own arguments first (so a user gets GRPOTrainer's messages); its warnings are re-issued
        # at the user's line, as GRPOTrainer's would be.
        with at_user_code(), _trl_compat.vllm_cpu_hook(args, model):  # use_vllm on CPU: see depo_trl.vllm_cpu
            super().__init__(model, reward_funcs, args, *pos, **kwargs)
        self.depo_pass_labels = PassLabeller(self.reward_func_names, args.depo_pass_threshold)
        self.depo_pool_size, self.depo_disabled_reason = check_train_dataset(
            self.train_dataset, args, self.environment_factories, environment_owns_data)
        if self.depo_disabled_reason is not None and args.depo_candidate_multiplier > 1:
            warn_user(f"DEPO cannot filter this run and trains it as plain GRPO: {self.depo_disabled_reason}")
        self.depo_pass_order, note = resolve_pass_order(self.reward_func_names, args.depo_pass_reward,
                                                        args.depo_pass_threshold)
        if note is not None:
            warn_user(note)
        self.depo_pass_index = self.depo_pass_order[0]
        self.depo_selector = PromptSelector.from_config(args, group_size=self.num_generations, seed=args.seed,
                                                        estimator=estimator)
        check_metadata_columns(self.depo_featurizer.metadata_columns, self.train_dataset)
        # Late-bound, so a subclass's (or a test's) _render/_embed is the one used.
        self.depo_encoder = PromptEncoder(
            self.depo_selector, getattr(self.processing_class, "tokenizer", self.processing_class),
            render=lambda prompts, environments: self._render(prompts, environments)[:2],
            embed=lambda ids, pad, answers: self._embed(ids, pad, answers),
            max_length=args.depo_embedding_max_length, refresh_every=args.depo_embedding_refresh_every,
            cache_prompts=max(8 * self.depo_pool_size, 1024),  # a few pools' worth, kept with refresh_every > 1
        )
        self.depo_warm_started = args.depo_warm_start_path is None
        self._depo_warm_start_rows = None if self.depo_warm_started else read_warm_start_file(
            args.depo_warm_start_path, args.depo_warm_start_max_prompts, self.depo_featurizer.metadata_columns)
        self.depo_columns = TrlColumns(args.remove_unused_columns)  # what TRL's dataloader keeps, and DEPO's extra
        if is_map_style(self.train_dataset):
            self.depo_candidates = CandidateStream(len(self.train_dataset), args.seed, shuffle=self.shuffle_dataset)
        else:
            self.depo_candidates = IterableCandidateStream(seed=args.seed, shuffle=self.shuffle_dataset)
        self.depo_decisions = DecisionLog(args.output_dir, max_bytes=int(args.depo_audit_max_mb * 2**20))
        self._depo_capture = False
        self._depo_rewards: torch.Tensor | None = None
        self._depo_failures_logged = 0  # estimator failures already reported in depo/estimator_failures
        self.depo_rollouts = RolloutCounter(args.depo_max_rollouts_per_epoch)
        self.depo_load_switch = LoadSwitch()
        self.add_callback(LoadSwitchCallback(self))
        check_adapter(self.accelerator.unwrap_model(self.model), args.depo_embedding_adapter,
                      self.depo_encoder.needs_prefill)
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
    def depo_stats(self) -> SelectorStats:
        return self.depo_selector.stats

    @property
    def depo_embedding_cache(self) -> EmbeddingCache:
        return self.depo_encoder.cache

    # ------------------------------------------------------------------ epochs and TRL's dataloader
    @property
    def depo_rounds_per_epoch(self) -> int | None:
        """Generation rounds in one DEPO epoch (one pass of the candidate walk), or None where GRPO's epoch applies
        (no filtering at all, or a streaming dataset). See ``depo_trl.epochs``."""
        if (self.args.depo_candidate_multiplier <= 1 or self.depo_disabled_reason is not None
                or not is_map_style(self.train_dataset)):
            return None
        return max(1, len(self.train_dataset) // self.depo_pool_size)

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        rounds = self.depo_rounds_per_epoch
        per_round = self.args.generation_batch_size * self.num_iterations * self.args.steps_per_generation
        if rounds is not None:
            sampler = EpochOfRounds(sampler, rounds * per_round)
        if not (is_map_style(self.train_dataset) and self.args.depo_audit_log and self.accelerator.is_main_process):
            return sampler
        # Remember what the sampler yields, so warm-up and reference rounds (TRL's own batches) log their dataset
        # indices.
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
        """TRL's dataloader also keeps the columns DEPO's ``metadata`` features read (``candidates.TrlColumns``)."""
        super()._set_signature_columns_if_needed()
        columns = getattr(self, "depo_columns", None)  # None while GRPOTrainer.__init__ runs
        if columns is not None and columns.trl is None:  # once
            _trl_compat.set_signature_columns(self, columns.widen(_trl_compat.signature_columns(self),
                                                                  self.depo_featurizer.metadata_columns))

    def _trl_rows(self, rows: list[dict], drawn: bool = False) -> list[dict]:
        """``rows`` with exactly the columns TRL's own dataloader would have given them (``drawn``: from the raw
        dataset, DEPO's candidate walk)."""
        if drawn and self.args.remove_unused_columns and self.depo_columns.trl is None:
            self._set_signature_columns_if_needed()
        return self.depo_columns.for_trl(rows, drawn)

    def _generate_and_score_completions(self, inputs):
        if not self.model.training or self.depo_disabled_reason is not None:  # evaluation is never filtered
            with _trl_compat.quiet_generation_deprecations():
                return super()._generate_and_score_completions(self._trl_rows(inputs))
        if not self.depo_warm_started:
            self._warm_start()
        plan, local_inputs = self._plan_round(inputs)
        self._depo_capture, self._depo_rewards = True, None
        try:
            with _trl_compat.quiet_generation_deprecations():
                output = super()._generate_and_score_completions(local_inputs)
        finally:
            self._depo_capture = False
        if self.args.depo_mask_zero_variance and self._depo_rewards is not None:
            self._mask_zero_variance_groups(output, self._depo_rewards)
        self._learn_from_round(plan, self._depo_rewards)
        return output

    def _mask_zero_variance_groups(self, output: dict, rewards: torch.Tensor) -> None:
        zero = zero_advantage_groups(rewards, self.num_generations, self.multi_objective_aggregation,
                                     self.reward_weights)
        share = mask_zero_variance_groups(output, zero, self.num_generations, self.accelerator.process_index,
                                          self.accelerator.gather)
        _trl_compat.metrics(self)["train"]["depo/masked_group_share"].append(share)

    # ------------------------------------------------------------------ one round: plan
    @property
    def depo_filtering(self) -> bool:
        """Whether this round filters (False during warm-up, on reference steps, or when K = 1)."""
        return (
            self.args.depo_candidate_multiplier > 1
            and self.depo_disabled_reason is None
            and self.state.global_step >= self.args.depo_warmup_steps
            and not self.depo_reference_round
        )

    @property
    def depo_reference_round(self) -> bool | None:
        """Whether this round is a reference round (``depo_reference_every``: GRPO's own batch after warm-up, whose
        useful share is the uniform reference on the current policy); None when the run has no reference steps."""
        every = self.args.depo_reference_every
        if not every or self.args.depo_candidate_multiplier <= 1 or self.depo_disabled_reason is not None:
            return None
        # Optimizer steps one generation round trains (TRL generates every steps_per_generation x num_iterations
        # micro-steps; an optimizer step is gradient_accumulation_steps of them).
        span = self.args.steps_per_generation * self.num_iterations // self.args.gradient_accumulation_steps
        return is_reference_step(self.state.global_step, self.args.depo_warmup_steps, every, span)

    def _plan_round(self, inputs: list[dict]) -> tuple[Round, list[dict]]:
        group = self.num_generations
        walk = self.depo_candidates if isinstance(self.depo_candidates, CandidateStream) else None
        reference = self.depo_reference_round
        if not self.depo_filtering:
            # GRPO's own batch (warm-up or a reference step): G contiguous copies per prompt across the ranks'
            # concatenated rows.
            prompts = gather_object([candidate_prompt(x) for x in inputs])[::group]
            metadata = {c: gather_object([x[c] for x in inputs])[::group] for c in self.depo_selector.metadata_columns}
            environments = (None if self.environment_factories is None
                            else gather_object([x.get("environment") for x in inputs])[::group])
            scores, embed_seconds = self._score(prompts, metadata, environments)
            keep_all = Selection(indices=np.arange(len(prompts)), reasons=[REASON_BAND] * len(prompts),
                                 in_band=in_band(scores.predicted, *self.depo_selector.band))
            if walk is not None:  # warm-up (and reference) rollouts count toward the walk's pass
                self.depo_rollouts.count(scores.keys, [walk.epoch] * len(prompts))
            indices = warmup_indices(self._depo_index_recorder, self.train_dataset, scores.keys, candidate_prompt)
            # With K = 1 no round ever filters: none is warm-up. A reference round is not warm-up either.
            warmup = self.args.depo_candidate_multiplier > 1 and not reference
            return (Round(scores, indices, keep_all, warmup, embed_seconds, reference=reference, filtered=False),
                    self._trl_rows(inputs))
        if self._depo_index_recorder is not None and reference is None:
            self._depo_index_recorder.active = False  # DEPO's own draw knows its indices from here on

        if walk is not None:
            skip = self.depo_rollouts.skip_rule(lambda row: prompt_key(candidate_prompt(row)))
            indices, rows = walk.draw(self.train_dataset, self.depo_pool_size, skip=skip)
        else:
            indices, rows = self.depo_candidates.draw(self.train_dataset, self.depo_pool_size)
        metadata = {c: [row[c] for row in rows] for c in self.depo_featurizer.metadata_columns}
        scores, embed_seconds = self._score([candidate_prompt(row) for row in rows], metadata,
                                            [row.get("environment") for row in rows])
        selection = self._select(scores, self.args.generation_batch_size // group)
        if walk is not None:
            self.depo_rollouts.count(scores.keys[selection.indices], walk.last_passes[selection.indices])

        # Every row its own object (rank_rows): TRL merges rollout_func extra fields into the rows in place, so G
        # references to one dict would hand every completion of a group the last completion's value.
        chosen = self._trl_rows([rows[i] for i in selection.indices], drawn=True)
        local_rows = rank_rows(chosen, group, self.accelerator.num_processes, self.accelerator.process_index)
        return Round(scores, indices, selection, False, embed_seconds, reference=reference), local_rows

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
        """Every rank draws the same candidates without talking (same seed, same walk): one cheap digest per rank,
        compared on every rank, so all fail if a rank drew others (``rounds.check_same_candidates``)."""
        check_same_candidates(self._gather_fingerprints(candidate_fingerprint(scores.keys)))

    # ------------------------------------------------------------------ prompt encoding (depo_trl.prompt_encoder)
    _candidate_prompt = staticmethod(candidate_prompt)

    def _render(self, prompts: list, environments: list | None = None) -> tuple[list[str], list[list[int]], Any]:
        """Prompts as the model sees them, their token ids, and the tokenizer. Rendered by TRL's own generation
        path, so tools, chat_template, chat_template_kwargs and special tokens match what the policy will see (with
        several TRL environments, each prompt with its own environment's tools)."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        token_ids = _trl_compat.tokenize_prompts(self, prompts, environments)
        return tokenizer.batch_decode(token_ids, skip_special_tokens=False), token_ids, tokenizer

    def _embed(self, token_ids: list[list[int]], pad_token_id: int, answer_ids: list | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """The policy prefill under the wrapped model, each rank on an equal shard, gathered in rank order."""
        off = self.args.depo_embedding_adapter == "off"
        with adapter_context(self.accelerator.unwrap_model(self.model) if off else None, "off" if off else "on"):
            return sharded_prefill(
                self.model, token_ids, answer_ids, pad_token_id, pooling=self.args.depo_embedding_pooling,
                batch_size=self.args.depo_embedding_batch_size, device=self.accelerator.device,
                num_processes=self.accelerator.num_processes, process_index=self.accelerator.process_index,
                gather=self.accelerator.gather)

    def _score(self, prompts: list, metadata: dict | None = None, environments: list | None = None
               ) -> tuple[Scores, float]:
        """The engine's scores of ``prompts`` (all ranks take part) and the rendering + prefill time."""
        return self.depo_encoder.score(prompts, metadata, environments)

    def _features(self, prompts: list, metadata: dict | None = None, environments: list | None = None) -> np.ndarray:
        """The estimator's inputs for ``prompts`` (all ranks take part: embedding is sharded and gathered)."""
        encoded = self.depo_encoder.encode(prompts, environments, metadata)
        return self.depo_selector.featurize(**encoded.selector_inputs(metadata))

    def _warm_start(self) -> None:
        """Fit the estimator on the file of measured pass rates (``trainer_setup.warm_start``), once."""
        warm_start(self.depo_selector, self.depo_encoder, self._depo_warm_start_rows, self.train_dataset,
                   self.num_generations)
        rows = len(self._depo_warm_start_rows)
        logger.info("DEPO warm start from %s: %d rows", self.args.depo_warm_start_path, rows)
        self.depo_warm_started = True
        self._depo_warm_start_rows = None

    # ------------------------------------------------------------------ one round: learn
    def _group_outcomes(self, rewards: torch.Tensor | None, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
        """Passes and scorable completions per rolled-out group, from the gathered (N, n_funcs) rewards (the rule:
        ``depo_trl.labels``)."""
        if rewards is None:
            return np.zeros(n_groups), np.zeros(n_groups)
        values = rewards.view(n_groups, self.num_generations, -1).numpy()
        passes, trials, notes = self.depo_pass_labels(values, self.depo_pass_order)
        for note in notes:
            warn_user(note, RuntimeWarning)
        return passes, trials

    def _learn_from_round(self, plan: Round, rewards: torch.Tensor | None) -> None:
        chosen = plan.selection.indices
        passes, trials = self._group_outcomes(rewards, len(chosen))
        outcome = self.depo_selector.observe(plan.scores, chosen, passes, trials, in_band=plan.selection.in_band,
                                             reasons=plan.selection.reasons if plan.filtered else None)
        failures = self.depo_stats.estimator_failures
        m = _trl_compat.metrics(self)["train"]
        for name, value in round_metrics(plan, outcome, failures - self._depo_failures_logged).items():
            m[name].append(value)
        self._depo_failures_logged = failures
        if self.args.depo_audit_log and self.accelerator.is_main_process:
            self.depo_decisions.write(audit_record(plan, passes, trials, self.depo_selector.band,
                                                   self.depo_stats.rounds, self.state.global_step))

    # ------------------------------------------------------------------ state and checkpoints
    def depo_state_dict(self) -> dict[str, Any]:
        """The engine's state (estimator, history, selection RNG, totals) plus the candidate walk and the embedding
        cache (with ``depo_embedding_refresh_every > 1`` a resumed run must reuse the embeddings the first run
        would have reused, or its features, and so its picks, diverge)."""
        state = self.depo_selector.state_dict()
        state["candidates"] = self.depo_candidates.state_dict()
        state["warm_started"] = bool(self.depo_warm_started)
        state["embedding_cache"] = self.depo_embedding_cache.state_dict()
        state["rollouts_this_epoch"] = self.depo_rollouts.state_dict()
        return state

    def load_depo_state_dict(self, state: dict[str, Any]) -> None:
        self.depo_selector.load_state_dict(state)
        self.depo_candidates.load_state_dict(state["candidates"])
        self.depo_warm_started = bool(state.get("warm_started", True))
        if self.depo_warm_started:
            self._depo_warm_start_rows = None
        if "embedding_cache" in state:
            self.depo_embedding_cache.load_state_dict(state["embedding_cache"])
        if state.get("rollouts_this_epoch") is not None:
            self.depo_rollouts.load_state_dict(state["rollouts_this_epoch"])
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

    def end(self):
        """Wait for every rank, then let transformers finish the trackers and destroy the process group, so no rank
        destroys the group while another is still in a collective. Objects that still hold the group (the wrapped
        model) are freed later, at interpreter exit, where gloo can still rarely abort a rank ("terminate called
        without an active exception"; the test workers skip finalization: tests/multiprocess/worker_exit.py)."""
        self.accelerator.wait_for_everyone()
        super().end()

    def depo_summary(self) -> str:
        """A short human-readable account of what DEPO skipped and what it saved."""
        if self.depo_disabled_reason is not None:
            return f"DEPO: off, trained as plain GRPO ({self.depo_disabled_reason})"
        if self.depo_stats.rounds == 0:
            return "DEPO: no training rounds yet."
        return self.depo_selector.summary()
