"""The trainers compared by the end-to-end benchmark, all through TRL's own GRPO machinery.

Every method is a thin subclass that overrides ``_generate_and_score_completions`` narrowly and calls ``super()``
for generation, rewards and advantages; none copies a TRL method body.

- ``CountingGRPO`` (uniform / plain GRPO): ``trl.GRPOTrainer`` plus a ledger. Its override of
  ``_generate_and_score_completions`` sits directly above TRL's in every method's MRO, so it sees *every* call that
  generates completions (dynamic sampling's refills included) and counts rows, generated tokens and the pass count
  of every group, from the gathered rewards captured by wrapping ``_calculate_rewards``.
- ``DynamicSamplingTrainer`` (DAPO): walks the training set in random order, generates groups, drops those whose
  passes are all 0 or all G and refills (asking for exactly the missing number of groups, the cheapest possible
  dynamic sampling) until U groups are kept; every completion generated is counted, kept or not. The kept rows of
  the per-call outputs are concatenated (re-padded) and ``num_items_in_batch`` is recomputed from the kept rows'
  loss mask, so the loss is normalised over what is trained on. After ``max_calls`` calls the batch is topped up
  with the latest dropped groups (zero advantage), so the batch size stays fixed; that is counted in ``topped_up``.
- ``GRESOTrainer``: walks the training set in random order and skips a prompt whose last z observed groups were
  all-pass (all-fail) with probability ``1 - max(p_easy**z, 0.01)`` (``p_hard``); p_easy and p_hard start at 0.5
  and move by 0.01 per round toward target shares of 1/12 all-pass and 1/6 all-fail among rolled-out groups,
  clamped to [0.05, 0.95]. It fills the batch from non-skipped prompts; when ``max_examined`` candidates were
  examined without filling it, the remaining slots go to skipped ones in random order.
- ``CountingDEPO``: ``depo_trl.DEPOTrainer`` with the same ledger (MRO: CountingDEPO -> DEPOTrainer ->
  CountingGRPO -> GRPOTrainer).

All of them are single-process (the benchmark runs on one CPU process); they say so if started on more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import time

import numpy as np
import torch
from trl import GRPOTrainer

from benchmarks.baselines import GRESOSelector
from depo_trl import DEPOTrainer

PASS_THRESHOLD = 0.5

# Output keys of GRPOTrainer._generate_and_score_completions that dynamic sampling knows how to subset/concatenate.
_LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}
_RIGHT_PADDED = {
    "completion_ids": "pad", "completion_mask": 0, "old_per_token_logps": 0.0, "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0, "importance_sampling_ratio": 0.0, "tool_mask": 1,
}
_PER_ROW = {"advantages"}


@dataclass
class Ledger:
    """Running totals over training, counted where TRL generates."""

    generate_calls: int = 0
    completions: int = 0  # every completion generated in training
    tokens: int = 0  # every completion token generated in training (end-of-sequence included)
    groups: int = 0  # groups generated
    useful_groups: int = 0  # groups generated with 0 < passes < G
    all_pass: int = 0
    all_fail: int = 0
    trained_groups: int = 0  # groups in the batches handed to the optimizer
    trained_useful: int = 0
    topped_up: int = 0  # dynamic sampling: zero-advantage groups used to top up a batch it could not fill
    rounds: int = 0
    generate_seconds: float = 0.0  # inside TRL's _generate_and_score_completions (generation, rewards, advantages)
    round_seconds: float = 0.0  # whole training rounds: the above plus the method's own choosing and learning
    round_useful_share: list = field(default_factory=list)  # per round: useful share of the groups generated
    round_pass_rate: list = field(default_factory=list)  # per round: mean pass rate of the groups trained on
    # per task family (where the dataset has a ``family`` column): groups generated, and how many were useful
    family_groups: dict = field(default_factory=dict)
    family_useful: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _check_single_process(trainer) -> None:
    if trainer.accelerator.num_processes != 1:
        raise RuntimeError(f"{type(trainer).__name__} is a single-process benchmark trainer.")


class CountingGRPO(GRPOTrainer):
    """``trl.GRPOTrainer`` that counts every completion it generates in training (see the module docstring)."""

    method_name = "GRPO"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_single_process(self)
        self.ledger = Ledger()
        self._captured_rewards: torch.Tensor | None = None
        self.last_passes: np.ndarray | None = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._captured_rewards = rewards.detach().float().cpu()
        return rewards

    def group_passes(self, rewards: torch.Tensor) -> np.ndarray:
        """Passes per group of G contiguous rows (the first reward function decides a pass)."""
        column = rewards[:, 0].numpy()
        passed = np.isfinite(column) & (column >= PASS_THRESHOLD)
        return passed.reshape(-1, self.num_generations).sum(axis=1)

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._captured_rewards = None
        t0 = time.perf_counter()
        output = super()._generate_and_score_completions(inputs)
        self.ledger.generate_seconds += time.perf_counter() - t0
        passes = self.group_passes(self._captured_rewards)
        G = self.num_generations
        ledger = self.ledger
        ledger.generate_calls += 1
        ledger.completions += len(inputs)
        ledger.tokens += int(output["completion_mask"].sum())
        ledger.groups += len(passes)
        ledger.useful_groups += int(((passes > 0) & (passes < G)).sum())
        ledger.all_pass += int((passes == G).sum())
        ledger.all_fail += int((passes == 0).sum())
        for row, k in zip(inputs[::G], passes):  # G contiguous rows per prompt
            if isinstance(row, dict) and "family" in row:
                family = str(row["family"])
                ledger.family_groups[family] = ledger.family_groups.get(family, 0) + 1
                ledger.family_useful[family] = ledger.family_useful.get(family, 0) + int(0 < k < G)
        self.last_passes = passes
        return output

    def round_start(self) -> tuple[int, int, float]:
        """What ``training_batch_done`` needs to book the round that starts now."""
        return self.ledger.groups, self.ledger.useful_groups, time.perf_counter()

    def training_batch_done(self, passes: np.ndarray, groups_generated_before: int, useful_before: int,
                            started: float) -> None:
        """Book one round: the groups trained on, the useful share of the groups generated, the round's time."""
        G = self.num_generations
        ledger = self.ledger
        ledger.rounds += 1
        ledger.round_seconds += time.perf_counter() - started
        ledger.trained_groups += len(passes)
        ledger.trained_useful += int(((passes > 0) & (passes < G)).sum())
        generated = ledger.groups - groups_generated_before
        ledger.round_useful_share.append((ledger.useful_groups - useful_before) / max(generated, 1))
        ledger.round_pass_rate.append(float(np.mean(passes)) / G if len(passes) else float("nan"))


class UniformGRPO(CountingGRPO):
    """Plain GRPO: TRL's own sampler and batch."""

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        before = self.round_start()
        output = super()._generate_and_score_completions(inputs)
        self.training_batch_done(self.last_passes, *before)
        return output


class CountingDEPO(DEPOTrainer, CountingGRPO):
    """``DEPOTrainer`` with the ledger (its ``super()`` calls reach CountingGRPO, then TRL)."""

    method_name = "DEPO"

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        before = self.round_start()
        output = super()._generate_and_score_completions(inputs)
        self.training_batch_done(self.last_passes, *before)
        return output


# -------------------------------------------------------------------------------------------- prompt walk
class EpochWalker:
    """Dataset indices in a fresh seeded permutation each epoch, one at a time; never the same index twice in one
    round (a repeat across an epoch boundary is held back to the next round)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.position = int(n), int(seed), 0, 0
        self.order = np.random.default_rng([self.seed, 0]).permutation(self.n)
        self.held_back: list[int] = []
        self._round: set[int] = set()

    def start_round(self) -> None:
        self._round = set()

    def next(self) -> int | None:
        """The next index not yet taken this round, or None when every index was taken this round."""
        for i, index in enumerate(self.held_back):
            if index not in self._round:
                del self.held_back[i]
                self._round.add(index)
                return index
        if len(self._round) >= self.n:
            return None
        while True:
            if self.position >= self.n:
                self.epoch += 1
                self.position = 0
                self.order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            index = int(self.order[self.position])
            self.position += 1
            if index in self._round:
                self.held_back.append(index)
                continue
            self._round.add(index)
            return index

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            index = self.next()
            if index is None:
                break
            out.append(index)
        return out


def _rows(trainer, indices) -> list[dict]:
    G = trainer.num_generations
    return [trainer.train_dataset[int(i)] for i in indices for _ in range(G)]


# -------------------------------------------------------------------------------------------- dynamic sampling
def _pad_to(t: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    missing = width - t.size(1)
    if missing <= 0:
        return t
    pad = torch.full((t.size(0), missing), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def concat_rows(parts: list[tuple[dict, torch.Tensor]], pad_token_id: int) -> dict:
    """Concatenate the selected rows of several ``_generate_and_score_completions`` outputs.

    ``parts`` holds ``(output, row_index_tensor)``. Prompt tensors are left-padded and completion-side tensors
    right-padded to a common width; ``num_items_in_batch`` is recomputed as the kept rows' loss-mask sum (the
    loss normaliser TRL's token-level losses use). Unknown keys (multimodal inputs) raise."""
    keys = set(parts[0][0])
    for output, _ in parts:
        if set(output) != keys:
            raise ValueError(f"Outputs to merge have different keys: {sorted(keys)} vs {sorted(output)}")
    unknown = keys - set(_LEFT_PADDED) - set(_RIGHT_PADDED) - _PER_ROW - {"num_items_in_batch"}
    if unknown:
        raise NotImplementedError(f"Dynamic sampling cannot merge output keys {sorted(unknown)} (multimodal?).")
    merged = {}
    for key in keys - {"num_items_in_batch"}:
        pieces = [output[key][rows] for output, rows in parts]
        if key in _PER_ROW or pieces[0].dim() == 1:
            merged[key] = torch.cat(pieces)
            continue
        left = key in _LEFT_PADDED
        value = (_LEFT_PADDED if left else _RIGHT_PADDED)[key]
        value = pad_token_id if value == "pad" else value
        width = max(p.size(1) for p in pieces)
        merged[key] = torch.cat([_pad_to(p, width, value, left) for p in pieces])
    loss_mask = merged["completion_mask"] if "tool_mask" not in merged else merged["completion_mask"] * merged["tool_mask"]
    merged["num_items_in_batch"] = loss_mask.sum().to(parts[0][0]["num_items_in_batch"].dtype)
    return merged


class DynamicSamplingTrainer(CountingGRPO):
    """DAPO's dynamic sampling (see the module docstring)."""

    method_name = "DS"

    def __init__(self, *args, max_calls: int = 16, **kwargs):
        super().__init__(*args, **kwargs)
        if self.scale_rewards == "batch":
            raise ValueError("Dynamic sampling merges groups from several generation calls: use scale_rewards='group'.")
        self.max_calls = int(max_calls)
        self.walker = EpochWalker(len(self.train_dataset), self.args.seed)

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        G = self.num_generations
        n_groups = len(inputs) // G
        before = self.round_start()
        kept: list[tuple[dict, list[int], np.ndarray]] = []  # (output, kept group slots, their passes)
        dropped: list[tuple[dict, int, int]] = []  # (output, group slot, passes)
        n_kept, calls = 0, 0
        self.walker.start_round()
        while n_kept < n_groups and calls < self.max_calls:
            indices = self.walker.take(n_groups - n_kept)
            if not indices:
                break
            output = super()._generate_and_score_completions(_rows(self, indices))
            calls += 1
            passes = self.last_passes
            useful = np.flatnonzero((passes > 0) & (passes < G))[: n_groups - n_kept]
            if len(useful):
                kept.append((output, useful.tolist(), passes[useful]))
                n_kept += len(useful)
            dropped.extend((output, int(s), int(passes[s])) for s in np.flatnonzero((passes == 0) | (passes == G)))
        if n_kept < n_groups:  # could not fill: top up with the latest dropped groups (zero advantage)
            top_up = dropped[::-1][: n_groups - n_kept]
            self.ledger.topped_up += len(top_up)
            for output, slot, p in top_up:
                kept.append((output, [slot], np.array([p])))
        parts, all_passes = [], []
        for output, slots, p in kept:
            rows = torch.tensor([s * G + j for s in slots for j in range(G)], dtype=torch.long)
            parts.append((output, rows.to(output["advantages"].device)))
            all_passes.append(p)
        merged = concat_rows(parts, self.processing_class.pad_token_id)
        self.training_batch_done(np.concatenate(all_passes), *before)
        return merged


# -------------------------------------------------------------------------------------------- GRESO
class GRESOTrainer(CountingGRPO):
    """GRESO's pre-rollout skipping rule (see the module docstring)."""

    method_name = "GRESO"

    def __init__(self, *args, target_all_pass: float = 1 / 12, target_all_fail: float = 1 / 6, start: float = 0.5,
                 step: float = 0.01, bounds=(0.05, 0.95), min_keep: float = 0.01, max_examined_multiplier: int = 8,
                 **kwargs):
        super().__init__(*args, **kwargs)
        n = len(self.train_dataset)
        self.walker = EpochWalker(n, self.args.seed)
        self.rng = np.random.default_rng(self.args.seed + 1)
        # The skipping rule and its adaptation are the replay benchmark's GRESO, shared, not restated.
        self.rule = GRESOSelector(n, self.num_generations, target_all_pass, target_all_fail, start, step, bounds,
                                  min_keep)
        self.max_examined_multiplier = int(max_examined_multiplier)
        self.skipped = 0
        self.examined = 0

    @property
    def p_easy(self) -> float:
        return self.rule.p_easy

    @property
    def p_hard(self) -> float:
        return self.rule.p_hard

    def keep_probability(self, index: int) -> float:
        return float(self.rule.keep_probability(np.array([index]))[0])

    def _choose(self, n_groups: int) -> list[int]:
        self.walker.start_round()
        picked, skipped = [], []
        limit = self.max_examined_multiplier * n_groups
        examined = 0
        while len(picked) < n_groups and examined < limit:
            index = self.walker.next()
            if index is None:
                break
            examined += 1
            if self.rng.random() < self.keep_probability(index):
                picked.append(index)
            else:
                skipped.append(index)
        if len(picked) < n_groups:
            order = self.rng.permutation(len(skipped))
            picked += [skipped[i] for i in order[: n_groups - len(picked)]]
        self.examined += examined
        self.skipped += examined - len(picked)  # examined but not rolled out
        return picked

    def _observe(self, indices: list[int], passes: np.ndarray) -> None:
        self.rule.observe(None, np.asarray(indices), np.asarray(passes))

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        n_groups = len(inputs) // self.num_generations
        before = self.round_start()
        indices = self._choose(n_groups)
        output = super()._generate_and_score_completions(_rows(self, indices))
        self._observe(indices, self.last_passes)
        self.training_batch_done(self.last_passes, *before)
        return output


METHODS = {"GRPO": UniformGRPO, "DS": DynamicSamplingTrainer, "GRESO": GRESOTrainer, "DEPO": CountingDEPO}
