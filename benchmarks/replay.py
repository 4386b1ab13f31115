"""Benchmark 1, Replay: how well each selector picks useful groups, on a real GRPO run's per-prompt log.

Data: ``passrate/one_shot_rlvr_acc_step_500.json`` (prompt index -> per-epoch accuracy k/8, 8 rollouts per
prompt per epoch, Qwen2.5-Math-1.5B, 1,209 prompts, 44 to 57 epochs each) and the prompt texts in
``passrate/one_shot_rlvr_dsr_sub.parquet`` (row i has ``extra_info.index == i``).

Protocol. Epoch by epoch, a selector may roll out a fixed share of the pool (``--shares``, default 20%, 40%,
60%). The pool of epoch ``e`` is every prompt that has a log entry at ``e`` (lists differ in length: all 1,209
prompts have 44 epochs, fewer have more), and the budget is ``max(1, round(share * |pool|))`` groups. A picked
prompt's outcome is the logged ``k`` of 8; a group is useful when ``0 < k < 8``. The log comes from a run that
rolled out every prompt every epoch, so the replay assumes the policy's trajectory does not depend on which
prompts a selector picks (it measures selection quality, not training dynamics).

Methods, all with the same seeds: uniform (GRPO), dynamic sampling (DAPO; useful share = kept / generated, and
its generation cost = generated / budget), GRESO, MoPPS (see ``benchmarks.baselines``), DEPO with every
estimator in ``depo_trl.estimators.ESTIMATORS`` x every selection policy (``SELECTION_POLICIES`` when that
registry exists, else the band rule), and an oracle that knows the epoch's outcomes. DEPO scores the whole pool
each epoch (candidate multiplier = 1 / share), with the feature groups ``history`` + ``length`` (+ ``text`` when
registered); its estimator and history learn only from the groups it rolled out.

Run: ``python -m benchmarks.replay`` (``--quick`` for a small subset). Writes
``benchmarks/results/replay.json`` and ``.png`` and rewrites the ``replay`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import common
from .baselines import (
    DynamicSamplingSelector,
    GRESOSelector,
    HindsightSelector,
    MoPPSSelector,
    OracleSelector,
    Selector,
    UniformSelector,
    is_useful,
)

NAME = "replay"
LOG_FILE = "passrate/one_shot_rlvr_acc_step_500.json"
TEXT_FILE = "passrate/one_shot_rlvr_dsr_sub.parquet"
GROUP_SIZE = 8
PRIOR_FILE = "passrate/deepscaler_qwen25math7b_passrate.jsonl"
PROMPT_SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."
PRIOR_COLUMN = "offline_pass_rate_logit"
TARGET_SHARE, TARGET_USEFUL, TARGET_MARGIN = 0.4, 0.85, 0.02  # issue 9: >= 0.85 and >= best baseline + 0.02
BASELINE_KEYS = ("uniform", "dynamic_sampling", "greso", "mopps")


# ----------------------------------------------------------------------------- data
@dataclass
class ReplayData:
    outcomes: np.ndarray  # (n_prompts, n_epochs) passes out of 8; -1 where the prompt has no entry that epoch
    texts: list[str]
    prompt_ids: np.ndarray  # index in the original log
    offline_pass_rate: np.ndarray | None = None  # another model's measured pass rate per prompt (NaN: unknown)

    @property
    def n_prompts(self) -> int:
        return self.outcomes.shape[0]

    @property
    def n_epochs(self) -> int:
        return self.outcomes.shape[1]

    def pool(self, epoch: int) -> np.ndarray:
        return np.flatnonzero(self.outcomes[:, epoch] >= 0)

    @staticmethod
    def budget(pool_size: int, share: float) -> int:
        return min(pool_size, max(1, round(share * pool_size)))

    def uniform_truth(self) -> float:
        """Useful share of every logged group in the simulated epochs (what uniform sampling converges to)."""
        logged = self.outcomes >= 0
        return float(is_useful(self.outcomes, GROUP_SIZE)[logged].mean())

    def oracle_truth(self, share: float) -> float:
        useful = generated = 0
        for e in range(self.n_epochs):
            pool = self.pool(e)
            budget = self.budget(len(pool), share)
            useful += min(budget, int(is_useful(self.outcomes[pool, e], GROUP_SIZE).sum()))
            generated += budget
        return useful / generated


def _prompt_text(messages) -> str:
    if isinstance(messages, str):
        return messages
    return "\n".join(str(m["content"]) for m in messages)


def load_replay(n_prompts: int | None = None, epochs: int | None = None, seed: int = 0) -> ReplayData:
    """The log as a matrix; ``n_prompts`` takes a seeded random subset, ``epochs`` the first epochs."""
    import pandas as pd

    log = json.loads(common.data_file(LOG_FILE).read_text())
    frame = pd.read_parquet(common.data_file(TEXT_FILE))
    index_col = frame["extra_info"].map(lambda x: int(x["index"])).to_numpy()
    if not np.array_equal(index_col, np.arange(len(frame))):
        raise ValueError(f"{TEXT_FILE}: expected row i to have extra_info.index == i")
    ids = np.array(sorted(int(k) for k in log), dtype=np.int64)
    if n_prompts is not None and n_prompts < len(ids):
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=n_prompts, replace=False))
    max_len = max(len(log[str(i)]) for i in ids)
    n_epochs = max_len if epochs is None else min(int(epochs), max_len)
    outcomes = np.full((len(ids), n_epochs), -1, dtype=np.int64)
    for row, i in enumerate(ids):
        acc = np.asarray(log[str(i)][:n_epochs], dtype=np.float64)
        outcomes[row, : len(acc)] = np.rint(acc * GROUP_SIZE).astype(np.int64)
    texts = [_prompt_text(frame["prompt"].iloc[int(i)]) for i in ids]
    return ReplayData(outcomes=outcomes, texts=texts, prompt_ids=ids, offline_pass_rate=offline_pass_rates(texts))


def offline_pass_rates(texts: Sequence[str]) -> np.ndarray | None:
    """Each prompt's pass rate under another model, where the DeepScaleR file has its problem (NaN elsewhere).

    The replayed run (Qwen2.5-Math-1.5B) trained on a DeepScaleR subset; ``PRIOR_FILE`` holds Qwen2.5-Math-7B's
    pass rate over 128 samples for 29,895 DeepScaleR problems. A dataset that ships such a column (DeepScaleR's
    AdaRFT difficulty, Big-Math's solve rates, OpenR1's pass rates) gives DEPO it as a ``metadata`` feature before
    any rollout. Problems are matched on their text with the run's instruction suffix removed and whitespace
    collapsed. ``None`` when the file is absent.
    """
    if not common.data_available(PRIOR_FILE):
        return None
    norm = lambda t: " ".join(t.split())  # noqa: E731
    rates = {}
    with common.data_file(PRIOR_FILE).open() as f:
        for line in f:
            row = json.loads(line)
            rates[norm(row["problem"])] = float(row["pass_rate"])
    return np.array([rates.get(norm(t.replace(PROMPT_SUFFIX, "")), np.nan) for t in texts])


# ----------------------------------------------------------------------------- DEPO
class DEPOSelector(Selector):
    """DEPO over the whole pool, driven through the engine users run (``depo_trl.PromptSelector``): score the pool,
    let the selection policy pick the budget, learn (estimator and history) only from the groups rolled out."""

    def __init__(
        self,
        n_prompts: int,
        group_size: int,
        estimator: str,
        policy: str,
        feature_names: Sequence[str],
        texts: Sequence[str],
        low: float,
        high: float,
        exploration: float,
        revisit_after: float | None = None,
        estimator_kwargs: dict | None = None,
        feature_options: dict | None = None,
        metadata: dict[str, Sequence] | None = None,
        adaptive_exploration: bool = False,
    ):
        from depo_trl.engine import PromptSelector
        from depo_trl.history import prompt_key

        super().__init__(n_prompts, group_size)
        # The DEPOConfig fields a run would set, through the one wiring the trainer and ``route`` use.
        settings = {
            "depo_estimator": estimator,
            "depo_estimator_kwargs": estimator_kwargs,
            "depo_features": list(feature_names),
            "depo_feature_options": feature_options,
            "depo_selection": policy,
            "depo_band_low": low,
            "depo_band_high": high,
            "depo_exploration": exploration,
            "depo_adaptive_exploration": adaptive_exploration,
            "depo_revisit_after": revisit_after,
        }
        self.engine = PromptSelector.from_config(settings, group_size=group_size, seed=0)
        self.texts = list(texts)
        self.metadata = {name: list(values) for name, values in (metadata or {}).items()}  # column -> per prompt
        self.keys = np.array([prompt_key(t) for t in self.texts], dtype=np.int64)
        self.estimator = self.engine.estimator
        self._pending = None
        self.predicted, self.observed = [], []  # predicted vs observed pass rate of rolled-out groups

    def choose(self, round_index, pool, budget, rng):
        self.engine.rng = rng  # the harness's seeded generator drives every random choice of the run
        metadata = {name: [values[j] for j in pool] for name, values in self.metadata.items()} or None
        scores = self.engine.score([self.texts[j] for j in pool], keys=self.keys[pool], metadata=metadata)
        if scores.failed:
            raise RuntimeError(f"estimator {type(self.estimator).__name__} failed to predict")
        choice = self.engine.select(scores, budget)
        self._pending = (scores, choice.indices)
        return pool[choice.indices]

    def observe(self, round_index, indices, passes):
        scores, local = self._pending
        passes = np.asarray(passes, dtype=np.float64)
        trials = np.full(len(indices), float(self.group_size))
        outcome = self.engine.observe(scores, local, passes, trials)
        self.predicted.append(outcome.predicted)
        self.observed.append(passes / self.group_size)


# ---------------------------------------------------------------------------- harness
def simulate(selector: Selector, data: ReplayData, share: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    per_epoch_share, useful_total, generated_total, budget_total = [], 0, 0, 0
    for e in range(data.n_epochs):
        pool = data.pool(e)
        if len(pool) == 0:
            continue
        truth = data.outcomes[:, e]
        if isinstance(selector, OracleSelector):
            selector.truth = truth
        budget = data.budget(len(pool), share)
        chosen, passes = selector.rollout(e, pool, budget, lambda idx, t=truth: t[idx], rng)
        useful = int(is_useful(passes, GROUP_SIZE).sum())
        useful_total += useful
        generated_total += len(chosen)
        budget_total += budget
        per_epoch_share.append(useful / max(len(chosen), 1))
    result = {
        "useful_share": useful_total / max(generated_total, 1),
        "useful_groups": useful_total,
        "groups_generated": generated_total,
        "budget_groups": budget_total,
        "generation_cost": generated_total / max(budget_total, 1),
        "per_epoch_useful_share": per_epoch_share,
    }
    if isinstance(selector, DEPOSelector) and len(selector.predicted) > 1:
        pred = np.concatenate(selector.predicted[1:])  # epoch 0 is the prior, before any label
        obs = np.concatenate(selector.observed[1:])
        result["prediction_pearson_r"] = common.pearson(pred, obs)
    return result


def _mean_over_seeds(runs: list[dict]) -> dict:
    out = {}
    for key in ("useful_share", "useful_groups", "groups_generated", "budget_groups", "generation_cost"):
        values = np.array([r[key] for r in runs], dtype=np.float64)
        out[key] = float(values.mean())
        out[key + "_std"] = float(values.std())
    if all("prediction_pearson_r" in r for r in runs):
        out["prediction_pearson_r"] = float(np.nanmean([r["prediction_pearson_r"] for r in runs]))
    out["per_epoch_useful_share"] = np.mean([r["per_epoch_useful_share"] for r in runs], axis=0).tolist()
    out["per_seed_useful_share"] = [r["useful_share"] for r in runs]
    return out


def depo_defaults() -> dict:
    """Band and exploration as a user gets them from ``DEPOConfig``'s defaults."""
    try:
        from depo_trl.depo_config import DEPOConfig

        fields = DEPOConfig.__dataclass_fields__
        revisit = fields["depo_revisit_after"].default if "depo_revisit_after" in fields else None
        return {
            "low": float(fields["depo_band_low"].default),
            "high": float(fields["depo_band_high"].default),
            "exploration": float(fields["depo_exploration"].default),
            "revisit_after": None if revisit is None else float(revisit),
            "adaptive_exploration": bool(getattr(fields.get("depo_adaptive_exploration"), "default", True)),
        }
    except Exception:  # the config could not be imported: the values documented in DESIGN.md section 2
        return {"low": 0.15, "high": 0.85, "exploration": 0.1, "revisit_after": None, "adaptive_exploration": True}


def build_methods(data: ReplayData, args) -> tuple[dict[str, Callable[[], Selector]], dict, list[str]]:
    n = data.n_prompts
    methods: dict[str, Callable[[], Selector]] = {
        "uniform": lambda: UniformSelector(n, GROUP_SIZE),
        "dynamic_sampling": lambda: DynamicSamplingSelector(n, GROUP_SIZE),
        "greso": lambda: GRESOSelector(n, GROUP_SIZE),
        "mopps": lambda: MoPPSSelector(n, GROUP_SIZE, decay=args.mopps_decay),
    }
    info = {
        "uniform": {"label": "uniform (GRPO)", "kind": "baseline"},
        "dynamic_sampling": {"label": "dynamic sampling (DAPO)", "kind": "baseline"},
        "greso": {"label": "GRESO", "kind": "baseline"},
        "mopps": {"label": f"MoPPS (decay {args.mopps_decay:g})", "kind": "baseline"},
    }
    notes: list[str] = []
    estimators = common.registered_estimators()
    policies = common.selection_policy_names()
    for est, cls in estimators.items():
        if args.estimators and est not in args.estimators:
            continue
        features, options = common.feature_plan(cls, include_history=True, text_for_record_models=False)
        variants = [(pol, args.exploration) for pol in policies]
        if getattr(cls, "keeps_prompt_record", False):
            # A per-prompt posterior explores by its own uncertainty: also run it without the uniform share.
            variants += [(pol, 0.0) for pol in policies if args.exploration > 0]
        for pol_name, exploration in variants:
            if args.policies and pol_name not in args.policies:
                continue
            key = f"depo:{est}:{pol_name}" + ("" if exploration == args.exploration else f":explore{exploration:g}")
            methods[key] = lambda est=est, pol=pol_name, features=features, options=options, exploration=exploration: DEPOSelector(
                n,
                GROUP_SIZE,
                est,
                pol,
                features,
                data.texts,
                args.band_low,
                args.band_high,
                exploration,
                args.revisit_after,
                estimator_kwargs=args.estimator_kwargs,
                feature_options=options,
                adaptive_exploration=args.adaptive_exploration,
            )
            info[key] = {
                "label": _depo_label(est, pol_name, exploration, args),
                "exploration": exploration,
                "kind": "depo",
                "estimator": est,
                "policy": pol_name,
                "features": features,
                "feature_options": options,
            }
    if data.offline_pass_rate is not None:
        _add_offline_prior_methods(methods, info, data, args)
    logged = data.outcomes >= 0
    rate = (is_useful(data.outcomes, GROUP_SIZE) & logged).sum(axis=1) / np.maximum(logged.sum(axis=1), 1)
    methods["hindsight"] = lambda: HindsightSelector(n, GROUP_SIZE, rate)
    info["hindsight"] = {"label": "hindsight (per-prompt useful rate)", "kind": "oracle"}
    methods["oracle"] = lambda: OracleSelector(n, GROUP_SIZE)
    info["oracle"] = {"label": "oracle (knows the outcome)", "kind": "oracle"}
    return methods, info, notes


def _depo_label(estimator: str, policy: str, exploration: float, args) -> str:
    """A DEPO method's row label; the exploration share is named only when it differs from the run's."""
    label = f"DEPO {estimator} / {policy}"
    label += "" if exploration == args.exploration else f", exploration {exploration:g}"
    return label + (", adaptive exploration" if getattr(args, "adaptive_exploration", False) and exploration else "")


def _add_offline_prior_methods(methods: dict, info: dict, data: ReplayData, args) -> None:
    """MoPPS and DEPO given another model's pass rate of each prompt (where known) before any rollout.

    MoPPS gets it as each prompt's Beta prior (mean = that pass rate, 2 pseudo-trials, as its uniform Beta(1, 1)
    has); DEPO as a numeric ``metadata`` column (the logit of that pass rate, missing where unknown) that its
    content model learns to weigh against the prompts' own records.
    """
    n = data.n_prompts
    rate = np.clip(data.offline_pass_rate, 0.01, 0.99)
    known = np.isfinite(rate)
    alpha = np.where(known, 2.0 * rate, 1.0)
    beta = np.where(known, 2.0 * (1.0 - rate), 1.0)
    share = f"{known.mean():.0%}"
    methods["mopps_prior"] = lambda: MoPPSSelector(n, GROUP_SIZE, prior=(alpha, beta), decay=args.mopps_decay)
    info["mopps_prior"] = {"label": f"MoPPS + offline pass rate prior ({share} of prompts)", "kind": "baseline",
                           "offline_prior": True}
    logit = np.log(rate / (1.0 - rate))
    column = {PRIOR_COLUMN: [float(v) if k else None for v, k in zip(logit, known)]}
    options = {"metadata": {"columns": {PRIOR_COLUMN: "numeric"}}}
    estimators = common.registered_estimators()
    for est, pol, exploration in (("hierarchical", "usefulness", 0.0), ("logistic", "usefulness", args.exploration)):
        if est not in estimators or (args.estimators and est not in args.estimators):
            continue
        if args.policies and pol not in args.policies:
            continue
        features, _ = common.feature_plan(estimators[est], include_history=True, text_for_record_models=False)
        features = [f for f in features if f != "text"] + ["metadata"]  # the prior column replaces dense text
        key = f"depo:{est}:{pol}:explore{exploration:g}:offline_prior"
        methods[key] = lambda est=est, pol=pol, features=features, exploration=exploration: DEPOSelector(
            n, GROUP_SIZE, est, pol, features, data.texts, args.band_low, args.band_high, exploration,
            args.revisit_after, estimator_kwargs=args.estimator_kwargs, feature_options=options, metadata=column)
        info[key] = {
            "label": _depo_label(est, pol, exploration, args) + " + offline pass rate",
            "exploration": exploration, "kind": "depo", "estimator": est, "policy": pol, "features": features,
            "feature_options": options, "offline_prior": True,
        }


_WORKER: dict = {}


def _run_job(job: tuple[str, float, int]) -> tuple[str, float, int, dict | str, float]:
    key, share, seed = job
    t0 = time.perf_counter()
    try:
        out: dict | str = simulate(_WORKER["methods"][key](), _WORKER["data"], share, seed)
    except Exception as exc:  # an estimator/policy the harness cannot drive: reported, the rest goes on
        out = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    return key, share, seed, out, time.perf_counter() - t0


def run_all(methods: dict, info: dict, data: ReplayData, shares, seeds, jobs: int, notes: list[str]) -> dict:
    """Every (method, share, seed) run, over ``jobs`` forked worker processes (1: in this process)."""
    _WORKER.update(methods=methods, data=data)
    todo = [(key, share, seed) for key in methods for share in shares for seed in seeds]
    # Slow (model-refitting) methods first, so the workers finish together.
    todo.sort(key=lambda job: 0 if info[job[0]].get("estimator") in ("gbdt", "ranking") else 1)
    runs: dict[str, dict] = {key: {} for key in methods}
    seconds = dict.fromkeys(methods, 0.0)
    remaining = {key: len(shares) * len(seeds) for key in methods}

    def collect(outcome):
        key, share, seed, out, took = outcome
        runs[key][(share, seed)] = out
        seconds[key] += took
        remaining[key] -= 1
        if remaining[key] == 0:
            _report_method(key, runs[key], seconds[key], info, shares, seeds, notes, results)

    results: dict[str, dict] = {}
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs, initializer=common.limit_blas_threads) as pool:
            for outcome in pool.imap_unordered(_run_job, todo):
                collect(outcome)
    else:
        for job in todo:
            collect(_run_job(job))
    return {key: results[key] for key in methods}  # in the methods' order


def _report_method(key, runs, seconds, info, shares, seeds, notes, results) -> None:
    errors = sorted({out for out in runs.values() if isinstance(out, str)})
    if errors:
        by_share: dict = {"error": errors[0]}
        notes.append(f"{info[key]['label']} skipped: {errors[0]}")
    else:
        by_share = {str(s): _mean_over_seeds([runs[(s, seed)] for seed in seeds]) for s in shares}
    by_share["seconds"] = seconds
    results[key] = by_share
    status = "skipped" if errors else " ".join(f"{by_share[str(s)]['useful_share']:.3f}" for s in shares)
    print(f"  {info[key]['label']:<40s} {status}  ({seconds:.1f} s of worker time)", flush=True)


# ---------------------------------------------------------------------------- report
def _table(results: dict, info: dict, shares: Sequence[float]) -> str:
    headers = ["method"]
    headers += [f"useful share @{s:.0%}" for s in shares]
    headers += [f"useful groups @{s:.0%}" for s in shares]
    ref = TARGET_SHARE if TARGET_SHARE in shares else shares[len(shares) // 2]
    headers += [f"generated @{ref:.0%}", f"cost @{ref:.0%}", f"pred. r @{ref:.0%}"]
    rows = []
    for key, by_share in results.items():
        if "error" in by_share:
            rows.append([info[key]["label"]] + ["skipped"] * (2 * len(shares) + 3))
            continue
        row = [info[key]["label"]]
        row += [by_share[str(s)]["useful_share"] for s in shares]
        row += [f"{by_share[str(s)]['useful_groups']:.0f}" for s in shares]
        row += [f"{by_share[str(ref)]['groups_generated']:.0f}", f"{by_share[str(ref)]['generation_cost']:.2f}x"]
        row.append(by_share[str(ref)].get("prediction_pearson_r"))
        rows.append(row)
    return common.format_table(headers, rows)


def _targets(results: dict, info: dict, shares: Sequence[float]) -> dict:
    """The issue's target over the methods without the offline prior, and (under ``with_offline_prior``) over
    every method, the offline-prior ones included, against every baseline (MoPPS with the same prior too)."""
    plain = {k: v for k, v in results.items() if not info[k].get("offline_prior")}
    out = _targets_of(plain, info, shares)
    if len(plain) < len(results):
        out["with_offline_prior"] = _targets_of(results, info, shares)
    return out


def _targets_of(results: dict, info: dict, shares: Sequence[float]) -> dict:
    if TARGET_SHARE not in shares:
        return {"evaluated": False, "reason": f"the {TARGET_SHARE:.0%} share was not run"}
    s = str(TARGET_SHARE)
    depo = {k: v[s]["useful_share"] for k, v in results.items() if info[k]["kind"] == "depo" and "error" not in v}
    base = {k: v[s]["useful_share"] for k, v in results.items() if info[k]["kind"] == "baseline" and "error" not in v}
    if not depo:
        return {"evaluated": False, "reason": "no DEPO configuration ran"}
    best_key = max(depo, key=depo.get)
    best_base = max(base, key=base.get) if base else None
    std = {k: results[k][s].get("useful_share_std") for k in (best_key, best_base) if k is not None}
    hindsight = results.get("hindsight", {})
    return {
        "evaluated": True,
        "share": TARGET_SHARE,
        "hindsight_useful_share": hindsight.get(s, {}).get("useful_share") if "error" not in hindsight else None,
        "best_depo": info[best_key]["label"],
        "best_depo_useful_share": depo[best_key],
        "best_depo_seed_std": std.get(best_key),
        "best_baseline_seed_std": std.get(best_base),
        "best_baseline": info[best_base]["label"] if best_base else None,
        "best_baseline_useful_share": base.get(best_base),
        "useful_share_at_least_target": depo[best_key] >= TARGET_USEFUL,
        "above_every_baseline_by_margin": best_base is None or depo[best_key] >= base[best_base] + TARGET_MARGIN,
        "met": depo[best_key] >= TARGET_USEFUL and (best_base is None or depo[best_key] >= base[best_base] + TARGET_MARGIN),
    }


def _plot(results: dict, info: dict, shares: Sequence[float], path: Path, pool_sizes: Sequence[int]) -> Path:
    plt = common.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1]})
    ok = {k: v for k, v in results.items() if "error" not in v}
    styles = {"baseline": "--", "oracle": ":", "depo": "-"}
    fixed = {
        "uniform": "#d62728",
        "dynamic_sampling": "#8c564b",
        "greso": "#ff7f0e",
        "mopps": "#9467bd",
        "hindsight": "0.5",
        "oracle": "k",
    }
    palette = plt.get_cmap("tab20b").colors
    depo_keys = [k for k in ok if k not in fixed]
    colors = {**fixed, **{key: palette[(3 * i) % len(palette)] for i, key in enumerate(depo_keys)}}
    for key, by_share in ok.items():
        y = [by_share[str(s)]["useful_share"] for s in shares]
        kind = info[key]["kind"]
        ax1.plot(
            [100 * s for s in shares],
            y,
            styles[kind],
            marker="o",
            color=colors[key],
            lw=2.2 if kind != "depo" else 1.4,
            label=info[key]["label"],
        )
    ax1.set_xlabel("rollout budget (% of the pool per epoch)")
    ax1.set_ylabel("useful-group share (0 < k < 8)")
    ax1.set_title("Replay: useful share vs budget (mean over seeds)")
    ax1.set_ylim(0.4, 1.02)
    ax1.set_xticks([100 * s for s in shares])
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ref = str(TARGET_SHARE if TARGET_SHARE in shares else shares[len(shares) // 2])
    depo = [k for k in ok if info[k]["kind"] == "depo"]
    shown = [k for k in ok if info[k]["kind"] != "depo"]
    if depo:
        shown.append(max(depo, key=lambda k: ok[k][ref]["useful_share"]))
    for key in shown:
        series = ok[key][ref]["per_epoch_useful_share"]
        kind = info[key]["kind"]
        ax2.plot(range(len(series)), series, styles[kind], color=colors[key], label=info[key]["label"])
    if pool_sizes:
        pool = np.asarray(pool_sizes, dtype=np.float64) / max(pool_sizes)
        ax2.fill_between(range(len(pool)), 0, pool, color="0.85", zorder=0, label="pool size (share of all prompts)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("useful-group share")
    ax2.set_title(f"Per epoch at a {float(ref):.0%} budget (best DEPO shown)")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return common.save_figure(fig, path)


def _pm(std) -> str:
    return "" if std is None else f" (seed std {std:.3f})"


def _docs_body(payload: dict, table: str, plot_path: Path, docs_path: Path) -> str:
    cfg, data, t = payload["config"], payload["data"], payload["targets"]
    plot_rel = common.relative_to_repo(plot_path)
    plot_link = Path(os.path.relpath(Path(plot_path).resolve(), Path(docs_path).resolve().parent))
    if t.get("evaluated"):
        verdict = (
            f"**Target (40% budget: DEPO useful share >= {TARGET_USEFUL} and >= the best baseline + {TARGET_MARGIN}): "
            f"{'met' if t['met'] else 'not met'}.** Best DEPO: {t['best_depo']} at "
            f"{t['best_depo_useful_share']:.3f}{_pm(t.get('best_depo_seed_std'))} (>= {TARGET_USEFUL}: "
            f"{'yes' if t['useful_share_at_least_target'] else 'no'}); best baseline: {t['best_baseline']} at "
            f"{t['best_baseline_useful_share']:.3f}{_pm(t.get('best_baseline_seed_std'))} (margin >= "
            f"{TARGET_MARGIN}: {'yes' if t['above_every_baseline_by_margin'] else 'no'}, by "
            f"{t['best_depo_useful_share'] - t['best_baseline_useful_share']:+.3f})."
        )
    else:
        verdict = f"Target not evaluated: {t.get('reason')}."
    w = t.get("with_offline_prior")
    if w and w.get("evaluated"):
        verdict += (
            f"\n\n**With another model's pass rate as a prior** (the DeepScaleR file's Qwen2.5-Math-7B pass rate, "
            f"known for {data.get('offline_prior_share', 0):.0%} of the prompts; MoPPS gets the same prior): "
            f"{'met' if w['met'] else 'not met'}. Best DEPO: {w['best_depo']} at {w['best_depo_useful_share']:.3f}"
            f"{_pm(w.get('best_depo_seed_std'))} (>= {TARGET_USEFUL}: "
            f"{'yes' if w['useful_share_at_least_target'] else 'no'}); best baseline: {w['best_baseline']} at "
            f"{w['best_baseline_useful_share']:.3f}{_pm(w.get('best_baseline_seed_std'))} (margin by "
            f"{w['best_depo_useful_share'] - w['best_baseline_useful_share']:+.3f})."
        )
    if t.get("hindsight_useful_share") is not None:
        verdict += (
            f" For scale: a selector that knew each prompt's useful rate over the whole log (future epochs "
            f"included; it still cannot know this epoch's draw of 8) reaches {t['hindsight_useful_share']:.3f}."
        )
    lines = [
        "## Replay: selection quality on a real GRPO log",
        "",
        (
            f"Data: `{LOG_FILE}` ({data['n_prompts']} prompts, {data['n_epochs']} epochs simulated, 8 rollouts per "
            f"prompt per epoch). The pool of an epoch is every prompt with a log entry at that epoch "
            f"({data['pool_min']} to {data['pool_max']} prompts: all prompts have 44 epochs, fewer have more); each "
            "method may roll out the given share of the pool; a picked prompt's outcome is the logged k/8, useful when "
            "0 < k < 8. Dynamic sampling's useful share is kept / generated and its cost is generated / budget (every "
            "other method generates exactly the budget). DEPO scores the whole pool (candidate multiplier = 1 / share) "
            f"through the engine (`PromptSelector`) with features {cfg['depo_features']} (dense 128-column text) for "
            "estimators without a per-prompt record; `beta` and `hierarchical` keep their own record of each prompt, "
            "so they get neither `history` (the same evidence twice) nor `text` (wide text lets the content model "
            "memorise each recurring prompt: with it, `hierarchical` / usefulness fell from 0.824 to 0.807 in a "
            f"one-seed trial), so `length` only; band [{cfg['band_low']}, {cfg['band_high']}], exploration "
            f"{cfg['exploration']}"
            f"{' (adaptive: scaled by its measured yield)' if cfg.get('adaptive_exploration') else ''}"
            f", revisit floor {cfg['revisit_after']} rounds (the `DEPOConfig` defaults; one "
            "round = one epoch here), selection policy as named; it learns only from the groups it rolled out, as "
            f"GRESO and MoPPS do. Mean over seeds {cfg['seeds']}."
        ),
        "",
        (
            "Columns: useful share = useful groups / groups generated; useful groups and groups generated are "
            "totals over all epochs (mean over seeds); cost = generated / budget; pred. r = Pearson r between "
            "DEPO's predicted pass rate and the observed k/8 of the groups it rolled out (epochs after the first)."
        ),
        "",
        (
            "Useful share of all logged groups in these epochs (what uniform converges to): "
            f"{data['uniform_truth']:.3f}."
        ),
        "",
        table,
        "",
        verdict,
        "",
    ]
    lines += [f"- {note}" for note in payload.get("notes", [])]
    lines += [
        "",
        (
            f"Command: `{payload['command']}` ({payload['runtime_seconds']:.0f} s). "
            f"Machine: {common.machine_line(payload['machine'])}."
        ),
        "",
        f"Plot: `{plot_rel}`",
        "",
        f"![replay]({plot_link.as_posix()})",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None):
    defaults = depo_defaults()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subset (300 prompts, 12 epochs, one seed)")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.4, 0.6])
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs to simulate (default: every logged epoch)")
    ap.add_argument("--n-prompts", type=int, default=None, help="seeded random subset of the prompts")
    ap.add_argument("--estimators", nargs="*", default=None, help="only these registered estimators")
    ap.add_argument("--policies", nargs="*", default=None, help="only these selection policies")
    ap.add_argument("--band-low", type=float, default=defaults["low"])
    ap.add_argument("--band-high", type=float, default=defaults["high"])
    ap.add_argument("--exploration", type=float, default=defaults["exploration"])
    ap.add_argument("--adaptive-exploration", action=argparse.BooleanOptionalAction,
                    default=defaults["adaptive_exploration"],
                    help="scale the exploration share by its measured yield (depo_adaptive_exploration)")
    ap.add_argument(
        "--revisit-after",
        type=float,
        default=defaults["revisit_after"],
        help="revisit floor for the selection policy (default: DEPOConfig's, if it has one; else off)",
    )
    ap.add_argument("--mopps-decay", type=float, default=1.0, help="MoPPS pseudo-count decay per observation")
    ap.add_argument("--estimator-kwargs", type=json.loads, default=None, metavar="JSON",
                    help='constructor arguments for the DEPO estimators, e.g. \'{"forgetting": 0.8}\'')
    ap.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: up to 2)"
    )
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="re-render the table, plot, JSON and docs of a finished run from its JSON (no simulation)",
    )
    ap.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    ap.add_argument("--docs", type=Path, default=common.DOCS_PATH)
    ap.add_argument(
        "--no-docs", action="store_true", help="do not rewrite the docs section (implied by --quick unless --docs)"
    )
    args = ap.parse_args(argv)
    given = set(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.n_prompts = args.n_prompts or 300
        args.epochs = args.epochs or 12
        args.seeds = args.seeds or [0]
        if "--docs" not in given:
            args.no_docs = True
    args.seeds = args.seeds or [0, 1, 2]
    args.shares = sorted(set(args.shares))
    return args


def compute(args, argv_list: list[str]) -> dict:
    """Run every method and return the payload (without the rendered table and verdict)."""
    started = time.perf_counter()
    data = load_replay(n_prompts=args.n_prompts, epochs=args.epochs)
    methods, info, notes = build_methods(data, args)
    pools = [len(data.pool(e)) for e in range(data.n_epochs)]
    print(
        f"replay: {data.n_prompts} prompts x {data.n_epochs} epochs (pool {min(pools)}-{max(pools)}), "
        f"shares {args.shares}, seeds {args.seeds}, {len(methods)} methods",
        flush=True,
    )
    results = run_all(methods, info, data, args.shares, args.seeds, args.jobs, notes)
    cfg = {
        "shares": args.shares,
        "seeds": args.seeds,
        "epochs": data.n_epochs,
        "n_prompts": data.n_prompts,
        "group_size": GROUP_SIZE,
        "band_low": args.band_low,
        "band_high": args.band_high,
        "exploration": args.exploration,
        "adaptive_exploration": args.adaptive_exploration,
        "revisit_after": args.revisit_after,
        "mopps_decay": args.mopps_decay,
        "depo_features": common.content_feature_names(include_history=True),
        "estimators": list(common.registered_estimators()),
        "selection_policies": list(common.selection_policies()),
        "quick": args.quick,
        "jobs": args.jobs,
    }
    return {
        "benchmark": NAME,
        "command": common.command_line("benchmarks.replay", argv_list),
        "machine": common.machine_info(),
        "runtime_seconds": time.perf_counter() - started,
        "config": cfg,
        "data": {
            "log": LOG_FILE,
            "texts": TEXT_FILE,
            "n_prompts": data.n_prompts,
            "n_epochs": data.n_epochs,
            "pool_sizes": pools,
            "pool_min": min(pools),
            "pool_max": max(pools),
            "uniform_truth": data.uniform_truth(),
            "oracle_truth": {str(s): data.oracle_truth(s) for s in args.shares},
            "offline_prior_file": PRIOR_FILE if data.offline_pass_rate is not None else None,
            "offline_prior_share": (float(np.isfinite(data.offline_pass_rate).mean())
                                    if data.offline_pass_rate is not None else 0.0),
        },
        "methods": info,
        "results": results,
        "notes": notes,
    }


def report(payload: dict, args) -> dict:
    """Table, verdict, plot, JSON and docs section from a payload (fresh, or re-read with ``--from-json``)."""
    cfg, results, info = payload["config"], payload["results"], payload["methods"]
    shares = cfg["shares"]
    table = _table(results, info, shares)
    targets = _targets(results, info, shares)
    payload.update(table=table, targets=targets)
    suffix = "_quick" if cfg.get("quick") else ""
    json_path = args.results_dir / f"{NAME}{suffix}.json"
    png_path = args.results_dir / f"{NAME}{suffix}.png"
    _plot(results, info, shares, png_path, payload["data"].get("pool_sizes", []))
    payload["plot"] = common.relative_to_repo(png_path)
    common.write_json(json_path, payload)
    print()
    print(table)
    print()
    print(f"uniform truth (useful share of every logged group): {payload['data']['uniform_truth']:.3f}")
    if targets.get("evaluated"):
        print(
            f"target @40%: best DEPO {targets['best_depo']} {targets['best_depo_useful_share']:.3f} "
            f"(>= {TARGET_USEFUL}: {targets['useful_share_at_least_target']}), best baseline {targets['best_baseline']} "
            f"{targets['best_baseline_useful_share']:.3f} -> {'MET' if targets['met'] else 'NOT MET'}"
        )
    for note in payload.get("notes", []):
        print("note:", note)
    print(f"wrote {json_path} and {png_path} (benchmark run time {payload['runtime_seconds']:.1f} s)")
    if not args.no_docs:
        docs = common.update_docs_section(NAME, _docs_body(payload, table, png_path, args.docs), args.docs)
        print(f"updated the '{NAME}' section of {docs}")
    return payload


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    common.limit_blas_threads(1)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    if args.from_json is not None:  # re-render a finished run: same numbers, same command and run time
        payload = json.loads(Path(args.from_json).read_text())
        if payload.get("benchmark") != NAME:
            raise ValueError(f"{args.from_json} is not a {NAME} result (benchmark={payload.get('benchmark')!r})")
    else:
        payload = compute(args, argv_list)
    return report(payload, args)


if __name__ == "__main__":
    common.run_main(main)
