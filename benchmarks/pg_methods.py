"""The proving ground's training loop and its arms: GRPO, DS (as DAPO runs it), GRESO on DS, the oracle, DEPO.

One plain torch loop trains every arm the same way (on-policy GRPO: G completions per prompt at T=1, group-scaled
advantages, token-level loss over the batch, one AdamW step per batch, no KL); the arms differ only in which
prompts they roll out and which groups they hand to the update:

- ``GRPO``: the next U prompts of a seeded per-epoch walk over the pool.
- ``DS``: DAPO's dynamic sampling: whole generation batches of U prompts are drawn from the walk and generated
  until the training batch holds U groups with 0 < passes < G, at most ``ds_max_draws`` draws per step (reported;
  a batch still short is topped up with zero-variance groups, which carry no gradient; every completion counts).
- ``GRESO``: GRESO's probabilistic pre-rollout skip rule (``benchmarks.baselines.GRESOSelector``) on the walk,
  inside DS's refill loop, as in its paper.
- ``ORACLE``: DEPO's loop with the true current pass rate instead of a prediction (``pg_task.measured_pass_rate``:
  ``oracle_samples`` completions per candidate, not counted: a ceiling, not a method): the ceiling of selection
  under the same candidate walk.
- ``DEPO``: ``depo_trl.PromptSelector`` with its own defaults (estimator, features length + history + policy
  embedding, band, exploration, revisit floor), driven the way ``DEPOTrainer`` drives it: K x U candidates per
  round from ``depo_trl.candidates.CandidateStream`` with the per-epoch rollout cap, ``warmup`` uniform rounds
  first (observed, not filtered), mean-pooled policy embeddings from one prefill of the candidates (counted).

Every DEPO arm also records, every second filtering round, how well its predictions rank the candidates' measured
pass rates (``diagnose_samples`` completions each; Spearman; AUC for telling in-band candidates apart) and the
in-band share of the candidates (``f``); that measurement is not counted, as it is not part of the method, and is
noisy (a measured rate of k / n, not the exact one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import pg_task as T
from depo_trl.history import prompt_key
from depo_trl.selection import REASON_EXPLORE

from .baselines import GRESOSelector


CLASS_BLOCK = 40  # steps per block of the ledger's class_blocks


@dataclass
class Ledger:
    steps: int = 0
    completions: int = 0
    generated_tokens: int = 0
    prefill_tokens: int = 0  # DEPO's / the oracle's candidate prefill (not GRPO's own prompt processing)
    generate_calls: int = 0
    groups: int = 0
    useful_groups: int = 0
    trained_groups: int = 0
    trained_useful: int = 0
    topped_up: int = 0
    draws_per_step: list = field(default_factory=list)
    train_seconds: float = 0.0  # wall time of training steps (evaluation and diagnostics excluded)
    select_seconds: float = 0.0  # the method's own choosing: prefill + estimator + selection
    diagnostics_seconds: float = 0.0
    ranking: list = field(default_factory=list)  # per filtering round: spearman, auc, in-band share, picked in band
    exploration: list = field(default_factory=list)  # per filtering round: [exploration yield ratio, share used]
    # exploration picks by side of the band they were predicted on: side -> [groups, useful groups]
    exploration_sides: dict = field(default_factory=lambda: {"below": [0, 0], "above": [0, 0]})
    # rolled-out groups by the prompt's difficulty class, per block of CLASS_BLOCK steps: [{class: [groups, useful]}]
    class_blocks: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class EpochWalk:
    """Pool indices in a fresh seeded permutation each epoch (the same walk for every arm of one seed)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.position = n, seed, 0, 0
        self.order = np.random.default_rng([seed, 0]).permutation(n)

    def next(self) -> int:
        if self.position >= self.n:
            self.epoch += 1
            self.position = 0
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        index = int(self.order[self.position])
        self.position += 1
        return index

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            i = self.next()
            if i not in out:
                out.append(i)
        return out


def _rankdata(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    # average ties
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def spearman(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
        return float("nan")
    return float(np.corrcoef(_rankdata(a), _rankdata(b))[0, 1])


def auc(score, label) -> float:
    score, label = np.asarray(score, float), np.asarray(label, bool)
    n1, n0 = label.sum(), (~label).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _rankdata(score)
    return float((r[label].sum() - n1 * (n1 - 1) / 2) / (n1 * n0))


class Run:
    """One arm, one seed: the policy, its optimizer, the ledger and the rollout/update primitives."""

    def __init__(self, model, codec: T.Codec, pool: list[dict], spec: T.TaskSpec, size: dict, seed: int):
        self.model, self.codec, self.pool, self.spec, self.size, self.seed = model, codec, pool, spec, size, seed
        self.G, self.U = size["group"], size["prompts_per_step"]
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed + 101)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=size["lr"], weight_decay=0.0)
        self.ledger = Ledger()
        self.walk = EpochWalk(len(pool), seed)
        self.measure_generator = torch.Generator().manual_seed(seed + 999)  # oracle / diagnostics, not training
        model.train()

    # -------------------------------------------------------------------------------- primitives
    def rollout(self, indices: list[int]) -> list[dict]:
        """G completions per prompt; one group dict per prompt (completion ids, rewards, passes)."""
        G = self.G
        prompts = [self.pool[i]["prompt"] for i in indices for _ in range(G)]
        completions = T.sample(self.model, self.codec, prompts, self.spec.max_new_tokens, self.generator)
        groups = []
        led = self.ledger
        while len(led.class_blocks) <= led.steps // CLASS_BLOCK:
            led.class_blocks.append({})
        block = led.class_blocks[led.steps // CLASS_BLOCK]
        for k, i in enumerate(indices):
            comps = completions[k * G: (k + 1) * G]
            rewards = np.array([T.reward(self.codec.decode(c), self.pool[i]["answer"]) for c in comps])
            passes = int(rewards.sum())
            groups.append({"index": i, "completions": comps, "rewards": rewards, "passes": passes})
            led.useful_groups += int(0 < passes < G)
            counts = block.setdefault(self.pool[i]["cls"], [0, 0])
            counts[0] += 1
            counts[1] += int(0 < passes < G)
        led.generate_calls += 1
        led.completions += len(prompts)
        led.generated_tokens += sum(len(c) for c in completions)
        led.groups += len(indices)
        return groups

    def update(self, groups: list[dict]) -> None:
        """One GRPO step on ``groups`` (advantages scaled per group; zero-variance groups carry no gradient but
        count in the token normaliser, as in TRL's loss over a merged batch)."""
        G = self.G
        prompts, comps, advs = [], [], []
        for g in groups:
            r = g["rewards"]
            adv = (r - r.mean()) / (r.std(ddof=1) + 1e-4) if G > 1 else r * 0
            for c, a in zip(g["completions"], adv):
                prompts.append(self.codec.encode(self.pool[g["index"]]["prompt"]))
                comps.append(c if c else [self.codec.eos])
                advs.append(a)
        logps, mask = T.sequence_logprobs(self.model, self.codec, prompts, comps)
        adv = torch.tensor(advs, dtype=torch.float32)[:, None]
        loss = -(adv * logps * mask).sum() / mask.sum()
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        led = self.ledger
        led.steps += 1
        led.trained_groups += len(groups)
        led.trained_useful += sum(0 < g["passes"] < G for g in groups)

    def diagnose(self, candidates: list[int], predicted: np.ndarray, picked: np.ndarray) -> None:
        """How well ``predicted`` ranks the candidates' true pass rates (not counted as the method's cost)."""
        t0 = time.perf_counter()
        true = T.measured_pass_rate(self.model, self.codec, [self.pool[i] for i in candidates],
                                    self.size["diagnose_samples"], self.spec.max_new_tokens, self.measure_generator)
        in_band = (true >= 0.15) & (true <= 0.85)
        self.ledger.ranking.append({
            "spearman": spearman(predicted, true), "auc_in_band": auc(-np.abs(predicted - 0.5), in_band),
            "in_band_share": float(in_band.mean()), "picked_in_band": float(in_band[picked].mean()),
            "mean_abs_error": float(np.abs(predicted - true).mean()),
        })
        self.ledger.diagnostics_seconds += time.perf_counter() - t0

    # -------------------------------------------------------------------------------- one step (arm)
    def step(self) -> None:
        raise NotImplementedError


class GRPOArm(Run):
    def step(self):
        groups = self.rollout(self.walk.take(self.U))
        self.ledger.draws_per_step.append(1)
        self.update(groups)


class DSArm(Run):
    """Dynamic sampling: refill whole generation batches until U non-zero-variance groups (cap ``ds_max_draws``)."""

    def candidates(self) -> list[int]:
        return self.walk.take(self.U)

    def observe(self, groups: list[dict]) -> None:
        pass

    def step(self):
        G, U = self.G, self.U
        kept, dropped, draws = [], [], 0
        while len(kept) < U and draws < self.size["ds_max_draws"]:
            groups = self.rollout(self.candidates())
            self.observe(groups)
            draws += 1
            for g in groups:
                (kept if 0 < g["passes"] < G else dropped).append(g)
        kept = kept[:U]
        if len(kept) < U:
            top_up = dropped[::-1][: U - len(kept)]
            self.ledger.topped_up += len(top_up)
            kept += top_up
        self.ledger.draws_per_step.append(draws)
        self.update(kept)


class GRESOArm(DSArm):
    """GRESO's skip rule picks each generation batch from the walk; DS's refill loop around it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rule = GRESOSelector(len(self.pool), self.G)
        self.rng = np.random.default_rng(self.seed + 1)
        self.skipped = 0

    def candidates(self) -> list[int]:
        picked, skipped, examined = [], [], 0
        while len(picked) < self.U and examined < 8 * self.U:
            i = self.walk.next()
            if i in picked or i in skipped:
                continue
            examined += 1
            keep = float(self.rule.keep_probability(np.array([i]))[0])
            (picked if self.rng.random() < keep else skipped).append(i)
        self.skipped += examined - len(picked)
        if len(picked) < self.U:
            picked += [skipped[j] for j in self.rng.permutation(len(skipped))[: self.U - len(picked)]]
        return picked

    def observe(self, groups):
        self.rule.observe(None, np.array([g["index"] for g in groups]), np.array([g["passes"] for g in groups]))


def _metadata(row: dict, column: str):
    """A pool row's dataset column for the ``metadata`` feature group; ``cell`` is its (shift, length) cell, what a
    dataset's difficulty-level column would be."""
    return f"{row['shift']}-{row['length']}" if column == "cell" else row[column]


CELL_REFERENCE, CELL_SAMPLES = 24, 4  # ORACLE-cell: reference prompts per cell, samples per reference prompt


class SelectorArm(Run):
    """DEPO's round through ``PromptSelector`` (``oracle=True``: the true pass rate replaces the prediction).

    ``hide_exploration=True`` (a diagnostic): exploration groups are trained on as usual but their outcomes never
    reach the estimator or the history (they are observed as unlabelled), which separates what exploration teaches
    the policy from what it teaches the predictor."""

    def __init__(self, *args, oracle: bool = False, selector_settings: dict | None = None, K: int = 4,
                 warmup: int = 10, max_rollouts_per_epoch: int | None = 1, diagnose: bool = True,
                 pooling: str = "mean", oracle_exploration: float = 0.0, hide_exploration: bool = False,
                 oracle_warmup: int = 0, oracle_cell: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        from depo_trl import PromptSelector
        from depo_trl.candidates import CandidateStream

        self.oracle, self.K, self.cap, self.do_diagnose = oracle, int(K), max_rollouts_per_epoch, diagnose
        self.pooling, self.oracle_exploration = pooling, float(oracle_exploration)
        self.hide_exploration = bool(hide_exploration)
        self.warmup = int(oracle_warmup) if oracle else int(warmup)
        # oracle_cell (a diagnostic): the oracle knows the true mean pass rate of each candidate's (shift, length)
        # cell, measured on a fixed reference sample of the cell, and nothing about the prompt itself: what a
        # perfect content predictor without per-prompt knowledge could reach.
        self.oracle_cell = bool(oracle_cell)
        if self.oracle_cell:
            by_cell: dict[tuple[int, int], list[int]] = {}
            for i, row in enumerate(self.pool):
                by_cell.setdefault((row["shift"], row["length"]), []).append(i)
            pick = np.random.default_rng([self.seed, 7])
            self.cell_reference = {c: [self.pool[j] for j in pick.permutation(v)[:CELL_REFERENCE]]
                                   for c, v in by_cell.items()}
        # The trainer's wiring: DEPOConfig field names; what is not given takes the engine's default, except the
        # feature groups, where DEPOTrainer's default (with the policy embedding) differs from the bare engine's.
        settings = {"depo_features": ["length", "history", "embedding"]} | dict(selector_settings or {})
        self.selector = PromptSelector.from_config(settings, group_size=self.G, seed=self.seed)
        self.stream = CandidateStream(len(self.pool), seed=self.seed)
        self.rows = [{"i": i} for i in range(len(self.pool))]
        self.rollouts: dict[int, tuple[int, int]] = {}  # index -> (walk pass, rollouts in it)

    def _over_cap(self, row: dict, pass_index: int) -> bool:
        seen = self.rollouts.get(row["i"])
        return self.cap is not None and seen is not None and seen[0] == pass_index and seen[1] >= self.cap

    def _count(self, indices, passes) -> None:
        for i, p in zip(indices, passes):
            seen = self.rollouts.get(int(i))
            self.rollouts[int(i)] = (int(p), seen[1] + 1 if seen is not None and seen[0] == int(p) else 1)

    def _score(self, indices: list[int]):
        rows = [self.pool[i] for i in indices]
        texts = [r["prompt"] for r in rows]
        keys = np.array([prompt_key(t) for t in texts], dtype=np.int64)
        counts = np.array([len(t) for t in texts])
        if self.oracle and self.oracle_cell:  # each cell's mean over its reference prompts (not counted)
            cells = sorted({(r["shift"], r["length"]) for r in rows})
            reference = [r for c in cells for r in self.cell_reference[c]]
            rates = T.measured_pass_rate(self.model, self.codec, reference, CELL_SAMPLES, self.spec.max_new_tokens,
                                         self.measure_generator)
            mean, start = {}, 0
            for c in cells:
                n = len(self.cell_reference[c])
                mean[c], start = float(rates[start: start + n].mean()), start + n
            true = np.array([mean[(r["shift"], r["length"])] for r in rows])
            return None, true, keys, np.zeros((len(rows), 1))
        if self.oracle:  # measured by sampling, not counted: the oracle is a ceiling, not a method
            true = T.measured_pass_rate(self.model, self.codec, rows, self.size["oracle_samples"],
                                        self.spec.max_new_tokens, self.measure_generator)
            features = np.zeros((len(rows), 1))
            return None, true, keys, features
        embeddings = None
        if self.selector.needs_embedding:
            self.ledger.prefill_tokens += int(counts.sum())
            embeddings = T.embed(self.model, self.codec, rows, pooling=self.pooling)
        metadata = {c: [_metadata(r, c) for r in rows] for c in self.selector.metadata_columns} or None
        scores = self.selector.score(texts, keys=keys, token_counts=counts, embeddings=embeddings, metadata=metadata)
        return scores, scores.predicted, keys, scores.features

    def step(self):
        t0 = time.perf_counter()
        U = self.U
        filtering = self.ledger.steps >= self.warmup
        if filtering:
            indices, _ = self.stream.draw(self.rows, self.K * U, skip=self._over_cap if self.cap else None)
        else:
            indices, _ = self.stream.draw(self.rows, U, skip=self._over_cap if self.cap else None)
        indices = [int(i) for i in indices]
        walk_passes = self.stream.last_passes
        scores, predicted, keys, _ = self._score(indices)
        reasons = None
        if not filtering:
            picked = np.arange(len(indices))
        elif self.oracle:
            from depo_trl.selection import select

            low, high = self.selector.band
            picked = select(self.selector.selection, predicted, U, self.G, self.selector.rng, low=low, high=high,
                            exploration=self.oracle_exploration).indices
        else:
            selection = self.selector.select(scores, U)
            picked, reasons = selection.indices, selection.reasons
        picked = np.asarray(picked, dtype=np.int64)
        self._count([indices[k] for k in picked], walk_passes[picked])
        self.ledger.select_seconds += time.perf_counter() - t0
        if filtering and self.do_diagnose and not self.oracle and self.ledger.steps % 2 == 0:
            t_diag = time.perf_counter()
            self.diagnose(indices, predicted, picked)
            t0 += time.perf_counter() - t_diag  # diagnostics are not the method's time
        groups = self.rollout([indices[k] for k in picked])
        explored = [r == REASON_EXPLORE for r in reasons] if reasons is not None else [False] * len(groups)
        for k, e, g in zip(picked, explored, groups):  # a diagnostic (not the method's time): side of the band, yield
            if e:
                side = self.ledger.exploration_sides["above" if predicted[k] > self.selector.band[1] else "below"]
                side[0] += 1
                side[1] += int(0 < g["passes"] < self.G)
        t1 = time.perf_counter()
        if scores is not None:
            passes = [g["passes"] for g in groups]
            trials = [self.G] * len(groups)
            if self.hide_exploration:  # trials 0: no label for the estimator or history
                passes = [0 if e else p for p, e in zip(passes, explored)]
                trials = [0 if e else t for t, e in zip(trials, explored)]
            share = self.selector.exploration_yield.share()  # the share this round's selection used
            outcome = self.selector.observe(scores, picked, passes, trials)
            if filtering:
                self.ledger.exploration.append([round(outcome.exploration_yield, 4), round(share, 4)])
        self.ledger.select_seconds += time.perf_counter() - t1
        self.ledger.draws_per_step.append(1)
        self.update(groups)


ARMS = {"GRPO": GRPOArm, "DS": DSArm, "GRESO": GRESOArm, "DEPO": SelectorArm}
