"""One generation round's bookkeeping: what was decided, what it logs, and how often each prompt was rolled out.

``Round`` is what the trainer decides before rollout and keeps until the rewards arrive. ``round_metrics`` and
``audit_record`` turn a finished round into its ``depo/*`` metrics and its line of ``depo_decisions.jsonl``.
``is_reference_step`` says which steps are reference steps (``depo_reference_every``). ``RolloutCounter`` enforces
``depo_max_rollouts_per_epoch`` (rollouts of one prompt within one pass of the candidate walk). ``warmup_indices``
reads a warm-up round's dataset indices back from TRL's sampler. ``candidate_fingerprint`` and
``check_same_candidates`` make sure every rank drew the same candidates. Plain numpy, no TRL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audit import finite_or_none, skip_decision
from .engine import RoundOutcome, Scores
from .history import prompt_key
from .selection import Selection


@dataclass
class Round:
    """What one generation round decided, kept until its rewards arrive."""

    scores: Scores  # the engine's view of every candidate (keys, features, predictions)
    dataset_indices: np.ndarray | None  # where each candidate sits in the train dataset (None: not known)
    selection: Selection
    warmup: bool  # a warm-up round of a filtering run (GRPO's own batch while the estimator learns)
    embed_seconds: float = 0.0
    # A reference round (GRPO's own batch after warm-up, its useful share the uniform reference on the current
    # policy); None when the run has no reference steps (depo_reference_every=0), so nothing about them is logged.
    reference: bool | None = None
    filtered: bool = True  # the engine chose this round's prompts (False: GRPO's own batch, kept whole)

    @property
    def keys(self) -> np.ndarray:
        return self.scores.keys

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.predicted


def round_metrics(plan: Round, outcome: RoundOutcome, new_failures: int) -> dict[str, float]:
    """The round's ``depo/*`` metrics (TRL averages each over the rounds of a logging window, so counts are this
    round's own, never running totals)."""
    chosen = plan.selection.indices
    n_candidates, n_chosen = len(plan.scores), len(chosen)
    metrics = {
        "depo/warmup": float(plan.warmup),
        "depo/candidates_scored": float(n_candidates),
        "depo/prompts_rolled_out": float(n_chosen),
        "depo/skipped_share": 1.0 - n_chosen / n_candidates,
        "depo/in_band_share": float(plan.selection.in_band[chosen].mean()),
        "depo/explored_share": plan.selection.n_explored / n_chosen,
        "depo/filled_share": plan.selection.n_filled / n_chosen,
        "depo/embed_seconds": plan.embed_seconds,
        "depo/estimator_seconds": plan.scores.seconds + outcome.seconds,
        "depo/estimator_failures": float(new_failures),
    }
    if np.isfinite(outcome.exploration_yield):
        metrics["depo/exploration_yield"] = float(outcome.exploration_yield)
    if plan.reference is not None:
        metrics["depo/reference"] = float(plan.reference)
    labelled = outcome.labelled
    if labelled.any():
        predicted = outcome.predicted[labelled]
        observed = outcome.observed[labelled]
        metrics["depo/observed_pass_rate"] = float(observed.mean())
        metrics["depo/useful_group_share"] = float(outcome.useful[labelled].mean())
        if plan.reference:
            # Only on reference rounds, so TRL's per-window mean is the mean over the window's reference rounds.
            metrics["depo/reference_useful_group_share"] = metrics["depo/useful_group_share"]
        if np.isfinite(predicted).all():
            metrics["depo/predicted_pass_rate"] = float(predicted.mean())
            # Brier score of the per-completion prediction: mean over groups of mean_j (p - y_j)^2.
            brier = predicted**2 - 2 * predicted * observed + observed
            metrics["depo/brier"] = float(brier.mean())
            metrics["depo/abs_calibration_error"] = float(np.abs(predicted.mean() - observed.mean()))
    return metrics


def audit_record(plan: Round, passes: np.ndarray, trials: np.ndarray, band: tuple[float, float], round_number: int,
                 step: int) -> dict[str, Any]:
    """The round's line of the audit trail (``depo_trl.audit``): every candidate with its decision."""
    n = len(plan.keys)
    decision = [skip_decision(p, *band) for p in plan.predicted]
    observed_passes: list = [None] * n
    observed_trials: list = [None] * n
    for slot, (index, reason) in enumerate(zip(plan.selection.indices, plan.selection.reasons)):
        decision[index] = reason
        observed_passes[index], observed_trials[index] = int(passes[slot]), int(trials[slot])
    indices = plan.dataset_indices
    reference = {} if plan.reference is None else {"reference": plan.reference}
    return {
        "round": round_number,
        "step": step,
        "warmup": plan.warmup,
        **reference,
        "rolled_out": [int(i) for i in plan.selection.indices],  # candidate positions, in rollout order
        "dataset_index": None if indices is None else [int(i) for i in indices],
        "prompt_key": [int(k) for k in plan.keys],
        "tokens": [int(t) for t in plan.scores.token_counts],
        "times_seen": [int(c) for c in plan.scores.times_seen],
        "predicted": finite_or_none(plan.predicted),
        "decision": decision,
        "passes": observed_passes,
        "trials": observed_trials,
    }


def is_reference_step(step: int, warmup_steps: int, every: int, span: int = 1) -> bool:
    """Whether a generation round that starts at ``step`` (optimizer steps done, as ``state.global_step``) and trains
    ``span`` steps is a reference round: after warm-up, the steps ``warmup_steps + every``, ``+ 2 every``, ... (counted
    from 1, i.e. ``step + 1`` is the step being taken) are reference steps, and a round is one when a step it trains
    is (``span`` > 1 when TRL generates less often than once per optimizer step). ``every=0``: never."""
    if every <= 0 or step < warmup_steps:
        return False
    return any((s + 1 - warmup_steps) % every == 0 for s in range(step, step + max(1, span)))


class RolloutCounter:
    """Rollouts of each prompt within the current pass of the candidate walk (``depo_max_rollouts_per_epoch``)."""

    def __init__(self, cap: int | None):
        self.cap = cap
        self.seen: dict[int, tuple[int, int]] = {}  # prompt key -> (walk pass, rollouts in that pass)

    def over_cap(self, key: int, pass_index: int) -> bool:
        """Whether a prompt drawn in walk pass ``pass_index`` was already rolled out the most times in that pass."""
        seen = self.seen.get(int(key))
        return self.cap is not None and seen is not None and seen[0] == pass_index and seen[1] >= self.cap

    def skip_rule(self, key_of: Callable[[dict], int]) -> Callable[[dict, int], bool] | None:
        """The ``skip`` of ``CandidateStream.draw``: a row whose prompt (``key_of(row)``) is at the cap in that walk
        pass is passed over; None without a cap."""
        if self.cap is None:
            return None
        return lambda row, pass_index: self.over_cap(key_of(row), pass_index)

    def count(self, keys, passes) -> None:
        for key, pass_index in zip(keys, passes):
            seen = self.seen.get(int(key))
            count = seen[1] + 1 if seen is not None and seen[0] == int(pass_index) else 1
            self.seen[int(key)] = (int(pass_index), count)

    def state_dict(self) -> dict[str, np.ndarray]:
        keys = np.array(list(self.seen), dtype=np.int64)
        return {
            "keys": keys,
            "passes": np.array([self.seen[int(k)][0] for k in keys], dtype=np.int64),
            "counts": np.array([self.seen[int(k)][1] for k in keys], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = {
            int(k): (int(p), int(c))
            for k, p, c in zip(*(np.asarray(state[f]).reshape(-1) for f in ("keys", "passes", "counts")))
        }


def warmup_indices(recorder, dataset, keys: np.ndarray, candidate_prompt: Callable[[dict], Any]) -> np.ndarray | None:
    """Dataset indices of a warm-up round's prompts, read from TRL's sampler (``usability.IndexRecorder``; None when
    they cannot be known, e.g. a streaming dataset). Each recorded round is checked against the prompts actually
    rolled out; rounds the sampler yielded but training skipped (resume fast-forwards the dataloader) are passed
    over."""
    while recorder is not None:
        indices = recorder.take_round()
        if indices is None or len(indices) != len(keys):
            return None
        rows = [dataset[int(i)] for i in indices]
        if all(prompt_key(candidate_prompt(row)) == int(k) for row, k in zip(rows, keys)):
            return np.asarray(indices, dtype=np.int64)
    return None


def candidate_fingerprint(keys: np.ndarray) -> str:
    """A cheap digest of one rank's candidate list (its prompt keys, in order)."""
    return hashlib.blake2b(np.ascontiguousarray(keys, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


def check_same_candidates(fingerprints: list[str]) -> None:
    """Every rank draws the same candidates without talking (same seed, same walk); a dataset that differs between
    ranks (e.g. shuffled per process) would make rank 0's pick roll out other prompts elsewhere and break the
    G-contiguous layout silently. Given every rank's fingerprint, on every rank, all fail together."""
    if len(set(fingerprints)) > 1:
        raise RuntimeError(
            f"DEPO's ranks drew different candidate prompts this round (fingerprints per rank: {fingerprints}), so "
            "rank 0's selection cannot be applied. Give every process the same train_dataset in the same order "
            "(do not shard or shuffle it per process; DEPO and TRL's sampler split the work themselves)."
        )
