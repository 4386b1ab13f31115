"""The proving ground: does DEPO's own predictor save rollouts on a task whose pass rate is not readable from the
bare answer, against faithful baselines and an oracle, with honest statistics?

    python -m benchmarks.proving_ground [--quick] [--regimes hard,easy] [--seeds 0,1,2] [--methods GRPO,DS,...]
    python -m benchmarks.proving_ground --render benchmarks/results/proving_ground.json   # tables/plot/docs only

Task, policy and warm start: ``benchmarks/pg_task.py`` (shift-then-reverse with the policy's own working; every
seed draws its own pool, held-out set and warm-start checkpoint). Arms and the training loop:
``benchmarks/pg_methods.py``. Statistics (one censoring rule, interpolated crossings, area, paired bootstrap over
seeds with GRPO's reference uncertainty): ``benchmarks/pg_stats.py``.

Every arm of one seed and regime starts from the same warm-started weights and makes the same number of optimizer
steps of U prompts x G completions. Held-out accuracy (``eval_samples`` completions per prompt at T=1, a fixed
generator that does not touch training's) is read every ``eval_every`` steps. Costs: completions, compute tokens
(generated + the method's prefilled candidate tokens) and training wall time (evaluation and the DEPO arms'
ranking diagnostics excluded). Per-run JSON goes to ``benchmarks/results/pg_runs/`` (reused when the settings and
code match; ``--fresh`` reruns), the aggregate to ``benchmarks/results/proving_ground.json`` and ``.png``, and the
docs section ``proving-ground`` of ``docs/benchmarks.md`` (not with ``--quick``). One machine, 2 shared cores:
wall times are comparable only within one invocation.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
DOCS = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")
SECTION = "proving-ground"

SIZES = {
    "quick": {"n_pool": 200, "n_heldout": 60, "prompts_per_step": 8, "group": 4, "steps": 6, "eval_every": 3,
              "eval_samples": 1, "lr": 2e-3, "ds_max_draws": 4, "warm_steps": 40, "depo_warmup": 2,
              "oracle_samples": 2, "diagnose_samples": 2, "seeds": [0]},
    "full": {"n_pool": 4000, "n_heldout": 500, "prompts_per_step": 16, "group": 8, "steps": 200, "eval_every": 20,
             "eval_samples": 2, "lr": 3e-4, "ds_max_draws": 16, "warm_steps": None, "oracle_samples": 8,
             "diagnose_samples": 4, "seeds": [0, 1, 2, 3, 4]},
}
REGIMES = ("hard", "easy", "balanced")

# The exploration share fixed at depo_exploration (depo_adaptive_exploration: false, the default until 2026-12-06).
FIXED = {"depo_adaptive_exploration": False}


def _fixed(settings: dict | None = None, **kwargs) -> dict:
    """Arm keyword arguments of an ablation of the fixed-share default: those ablations were measured before the
    default became adaptive, so they keep the fixed share they ran with (and compare against ``DEPO-fixed``)."""
    return {"selector_settings": FIXED | dict(settings or {})} | kwargs


# The (shift, length) cell as a categorical dataset column for the metadata feature group (DEPO-meta and its
# variants); hash seed 1170 puts the 28 cells in 28 distinct buckets of 64.
CELL_COLUMN = {"metadata": {"columns": {"cell": "categorical"}, "buckets": 64, "seed": 1170}}

# label -> (arm, keyword arguments of the arm). The DEPO family drives PromptSelector (see pg_methods).
METHODS: dict[str, tuple[str, dict]] = {
    "GRPO": ("GRPO", {}),
    "DS": ("DS", {}),
    "GRESO": ("GRESO", {}),
    "ORACLE": ("DEPO", {"oracle": True}),
    # PromptSelector's and DEPOTrainer's defaults: K 4, warm-up 10, cap 1 rollout per epoch, adaptive exploration
    "DEPO": ("DEPO", {}),
    "DEPO-fixed": ("DEPO", _fixed()),  # the exploration share fixed at 0.1 (the earlier default)
    # Ablations of the fixed-share default (same seeds, side by side with DEPO-fixed):
    "DEPO-hier": ("DEPO", {"selector_settings": {"depo_estimator": "hierarchical",
                                                 "depo_features": ["length", "embedding"],
                                                 "depo_selection": "usefulness", "depo_exploration": 0.0}}),
    "DEPO-K8": ("DEPO", _fixed(K=8)),
    "DEPO-cap2": ("DEPO", _fixed(max_rollouts_per_epoch=2)),
    "DEPO-w2": ("DEPO", _fixed(warmup=2)),
    "DEPO-gbdt": ("DEPO", _fixed({"depo_estimator": "gbdt"})),
    "DEPO-last": ("DEPO", _fixed(pooling="last")),  # depo_embedding_pooling="last"
    "DEPO-wide": ("DEPO", _fixed({"depo_band_high": 0.95})),  # band [0.15, 0.95]
    "DEPO-useful": ("DEPO", _fixed({"depo_selection": "usefulness"})),
    "DEPO-text": ("DEPO", _fixed({"depo_features": ["length", "history", "embedding", "text"]})),
    "ORACLE-K8": ("DEPO", {"oracle": True, "K": 8}),  # the ceiling of selection with 8 candidates per rollout
    # The oracle with DEPO's exploration share (0.1 of the picks uniform from outside the true band): does a perfect
    # predictor still gain from exploring?
    "ORACLE-x01": ("DEPO", {"oracle": True, "oracle_exploration": 0.1}),
    # Where DEPO's gap to the oracle lies (diagnostics): the oracle after DEPO's 10 uniform warm-up rounds, and an
    # oracle that knows only the true mean pass rate of each candidate's (shift, length) cell, not of the prompt.
    "ORACLE-w10": ("DEPO", {"oracle": True, "oracle_warmup": 10}),
    "ORACLE-cell": ("DEPO", {"oracle": True, "oracle_cell": True}),
    # Per-prompt knowledge from the prompt's own record: the hierarchical estimator (content prior + the prompt's
    # rolled-out groups, conjugate Beta) with every other default:
    "DEPO-hierb": ("DEPO", {"selector_settings": {"depo_estimator": "hierarchical"}}),
    # DEPO told each prompt's (shift, length) cell as a dataset column (the metadata feature group, as a "level"
    # column would be): how close DEPO's own online estimator comes to ORACLE-cell when the cell is known.
    "DEPO-meta": ("DEPO", {"selector_settings": {
        "depo_features": ["length", "history", "embedding", "metadata"],
        "depo_feature_options": CELL_COLUMN}}),
    # Exploration in proportion to doubt (Thompson draws from the estimator's uncertainty) instead of the band and a
    # uniform exploration share, with the default features and with the cell column:
    "DEPO-thompson": ("DEPO", {"selector_settings": {"depo_selection": "thompson"}}),
    "DEPO-meta-thompson": ("DEPO", {"selector_settings": {
        "depo_features": ["length", "history", "embedding", "metadata"], "depo_selection": "thompson",
        "depo_feature_options": CELL_COLUMN}}),
    # ... and the cell alone (no length, history or embedding): DEPO's online estimate of each cell's pass rate
    "DEPO-metaonly": ("DEPO", {"selector_settings": {
        "depo_features": ["metadata"],
        "depo_feature_options": CELL_COLUMN}}),
    # the adaptive share's thresholds before 2026-12-07 (today [0.4, 0.5]: the runs first labelled DEPO-steep, which
    # set them through an arm argument before they were a config field)
    "DEPO-y36": ("DEPO", {"selector_settings": {"depo_exploration_yield_range": [0.3, 0.6]}}),
    # In-band picks at random (the paper's rule) instead of best-first by expected usefulness:
    "DEPO-uband": ("DEPO", _fixed({"depo_selection": "band_uniform"})),
    "ORACLE-uband": ("DEPO", {"oracle": True, "selector_settings": {"depo_selection": "band_uniform"}}),
    # Exploration weighted by expected usefulness (mostly just outside the band) instead of uniform:
    "DEPO-bw": ("DEPO", _fixed({"depo_selection": "band_weighted"})),
    "DEPO-bw05": ("DEPO", _fixed({"depo_selection": "band_weighted", "depo_exploration": 0.05})),
    # Every candidate drawn in proportion to its expected usefulness (no band, no ranking), with / without exploration:
    "DEPO-prop": ("DEPO", _fixed({"depo_selection": "proportional"})),
    "DEPO-prop-x0": ("DEPO", {"selector_settings": {"depo_selection": "proportional", "depo_exploration": 0.0}}),
    "DEPO-x05": ("DEPO", _fixed({"depo_exploration": 0.05})),
    "DEPO-x0": ("DEPO", {"selector_settings": {"depo_exploration": 0.0}}),
    "DEPO-uband-x0": ("DEPO", {"selector_settings": {"depo_selection": "band_uniform", "depo_exploration": 0.0}}),
    "DEPO-x02": ("DEPO", _fixed({"depo_exploration": 0.2})),
    "DEPO-x03": ("DEPO", _fixed({"depo_exploration": 0.3})),
    # Diagnostic: the fixed share's exploration groups trained on but hidden from the estimator and history. Near
    # DEPO-fixed: exploration pays through what it teaches the policy; near DEPO-x0: through what it teaches the
    # predictor.
    "DEPO-fixed-hidex": ("DEPO", _fixed(hide_exploration=True)),
    # The logistic estimator's memory and penalty (decay 0.9 per round; l2 1, 10 before these runs):
    "DEPO-d97": ("DEPO", _fixed({"depo_estimator_kwargs": {"decay": 0.97}})),
    "DEPO-l2": ("DEPO", _fixed({"depo_estimator_kwargs": {"l2": 1.0}})),  # = DEPO-fixed
    "DEPO-l2-10": ("DEPO", _fixed({"depo_estimator_kwargs": {"l2": 10.0}})),  # the default before l2 1
    "DEPO-narrow": ("DEPO", _fixed({"depo_band_high": 0.7})),  # band [0.15, 0.7]: more mixed groups
    "DEPO-e64": ("DEPO", _fixed({"depo_embedding_dim": 64})),  # the whole hidden state, no reduction
}
DEFAULT_METHODS = ("GRPO", "DS", "GRESO", "ORACLE", "DEPO", "DEPO-hier", "DEPO-K8", "DEPO-cap2")
QUICK_METHODS = ("GRPO", "DS", "GRESO", "ORACLE", "DEPO")


def _offline():
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fingerprint(method_label: str) -> str:
    files = [os.path.join(HERE, n) for n in ("pg_task.py", "pg_methods.py", "baselines.py")]
    if METHODS.get(method_label, ("",))[0] == "DEPO":
        for folder, _, names in sorted(os.walk(os.path.join(os.path.dirname(HERE), "depo_trl"))):
            files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def run_one(label: str, spec, size: dict, warm_state: dict, pool, heldout, seed: int, log=print) -> dict:
    import torch

    from . import pg_methods as M
    from . import pg_task as T

    arm, kwargs = METHODS[label]
    tokenizer, model = T.build(spec, seed)
    model.load_state_dict(warm_state)
    codec = T.Codec(tokenizer)
    cls = M.SelectorArm if arm == "DEPO" else M.ARMS[arm]
    if arm == "DEPO" and "depo_warmup" in size:  # --quick: too few steps for the default warm-up
        kwargs = {"warmup": size["depo_warmup"]} | kwargs
    run = cls(model, codec, pool, spec, size, seed, **kwargs)
    curve = []
    eval_seconds = 0.0

    def evaluate(step: int):
        nonlocal eval_seconds
        t0 = time.perf_counter()
        acc = T.accuracy(model, codec, heldout, size["eval_samples"], spec.max_new_tokens, seed + 12345)
        led = run.ledger
        by_class = {c: float(acc[[r["cls"] == c for r in heldout]].mean()) for c in T.CLASSES
                    if any(r["cls"] == c for r in heldout)}
        curve.append({"step": step, "completions": led.completions, "generated_tokens": led.generated_tokens,
                      "prefill_tokens": led.prefill_tokens,
                      "compute_tokens": led.generated_tokens + led.prefill_tokens,
                      "train_seconds": led.train_seconds, "accuracy": float(acc.mean()), "by_class": by_class})
        eval_seconds += time.perf_counter() - t0
        return acc

    start_acc = evaluate(0)
    true_start = T.true_pass_rate(model, codec, heldout)
    for step in range(1, size["steps"] + 1):
        t0 = time.perf_counter()
        diag_before = run.ledger.diagnostics_seconds
        run.step()
        run.ledger.train_seconds += time.perf_counter() - t0 - (run.ledger.diagnostics_seconds - diag_before)
        if step % size["eval_every"] == 0 or step == size["steps"]:
            evaluate(step)
    led = run.ledger.as_dict()
    ranking = led.pop("ranking")
    summary = {k: float(np.nanmean([r[k] for r in ranking])) for k in ranking[0]} if ranking else {}
    result = {"method": label, "seed": seed, "curve": curve, "ledger": led, "ranking_rounds": ranking,
              "ranking": summary, "eval_seconds": eval_seconds,
              "true_vs_sampled_start": float(np.corrcoef(true_start, start_acc)[0, 1]),
              "true_minus_sampled_start": float(true_start.mean() - start_acc.mean())}
    if arm == "DEPO" and not kwargs.get("oracle"):
        result["selector_summary"] = run.selector.summary()
    if label == "GRESO":
        result["greso_skipped"] = run.skipped
    log(f"  [{label} s{seed}] {led['train_seconds']:.0f} s train, {eval_seconds:.0f} s eval; "
        f"{led['completions']} completions, useful {led['useful_groups'] / max(led['groups'], 1):.2f}, "
        f"acc {curve[0]['accuracy']:.3f} -> {curve[-1]['accuracy']:.3f}"
        + (f", ranking spearman {summary['spearman']:.2f} auc {summary['auc_in_band']:.2f} in-band share "
           f"{summary['in_band_share']:.2f} picked in band {summary['picked_in_band']:.2f}" if summary else "")
        + "".join(f", explored {side} the band {n} (useful {u / n:.2f})"
                  for side, (n, u) in led.get("exploration_sides", {}).items() if n))
    del torch
    return result


def run_benchmark(size, methods, regimes, seeds, runs_dir, fresh=False, log=print) -> dict:
    import torch

    from . import pg_task as T

    spec = (T.TaskSpec() if size.get("warm_steps") is None
            else T.TaskSpec(warm_steps=size["warm_steps"], seed_warm_steps=size["warm_steps"]))
    out = {"runs": {r: [] for r in regimes}, "warm": {}, "profile": {}}
    for seed in seeds:
        sets = {r: T.make_sets(spec, r, size["n_pool"], size["n_heldout"], seed) for r in REGIMES}
        exclude = {row["prompt"] for r in REGIMES for row in sets[r][1]}  # every regime's held-out set
        base_sets = {r: T.make_sets(spec, r, size["n_pool"], size["n_heldout"], T.BASE_SEED) for r in REGIMES}
        base_exclude = {row["prompt"] for r in REGIMES for row in base_sets[r][1]}
        tokenizer, model, info = T.seed_warm_start(spec, seed, base_exclude, exclude, log=log)
        warm_state = copy.deepcopy(model.state_dict())
        out["warm"][seed] = info
        codec = T.Codec(tokenizer)
        for regime in regimes:
            pool, heldout = sets[regime]
            true = T.true_pass_rate(model, codec, pool)
            cls = np.array([row["cls"] for row in pool])
            G = size["group"]
            out["profile"].setdefault(regime, {})[seed] = {
                "true_pass_rate_by_class": {c: float(true[cls == c].mean()) for c in T.CLASSES if (cls == c).any()},
                "in_band_share": float(((true >= 0.15) & (true <= 0.85)).mean()),
                "expected_useful_share": float(np.mean(1 - true ** G - (1 - true) ** G)),
            }
            log(f"[{regime} s{seed}] pool profile {out['profile'][regime][seed]}")
            for label in methods:
                key = {"size": size, "spec": T.asdict(spec), "seed": seed, "regime": regime,
                       "method": METHODS[label], "code": _fingerprint(label)}
                path = os.path.join(runs_dir, regime, f"{label}-s{seed}.json")
                result = None
                if not fresh and os.path.exists(path):
                    with open(path) as f:
                        saved = json.load(f)
                    if saved.get("key") == json.loads(json.dumps(key)):
                        result = dict(saved, reused=True)  # the flag lives in the aggregate only
                        log(f"  [{label} s{seed}] reused {os.path.relpath(path)}")
                if result is None:
                    torch.manual_seed(seed)
                    result = run_one(label, spec, size, warm_state, pool, heldout, seed, log=log)
                    result["key"] = key
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "w") as f:
                        json.dump(result, f, indent=1, default=float)
                out["runs"][regime].append(result)
    return out


# ---------------------------------------------------------------------------------------------- analysis
def analyse(payload: dict) -> dict:
    from . import pg_stats as S

    analysis = {}
    for regime, runs in payload["runs"].items():
        by: dict[str, dict[int, dict]] = {}
        for r in runs:
            by.setdefault(r["method"], {})[r["seed"]] = r
        seeds = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
        if "GRPO" not in by or not seeds:
            continue

        def series(r):
            x = [p["completions"] for p in r["curve"]]
            return {"x": x, "acc": [p["accuracy"] for p in r["curve"]],
                    "cost": {"completions": x, "compute_tokens": [p["compute_tokens"] for p in r["curve"]],
                             "train_seconds": [p["train_seconds"] for p in r["curve"]]}}

        table = {m: [series(by[m][s]) for s in seeds] for m in by}
        entry = {"seeds": seeds}
        for cost in ("completions", "compute_tokens", "train_seconds"):
            entry[cost] = S.compare(table, cost=cost)
        extras = {}
        for m, per_seed in by.items():
            rs = [per_seed[s] for s in seeds]
            led = [r["ledger"] for r in rs]
            extras[m] = {
                "useful_generated": float(np.mean([l["useful_groups"] / max(l["groups"], 1) for l in led])),
                "useful_trained": float(np.mean([l["trained_useful"] / max(l["trained_groups"], 1) for l in led])),
                "completions": float(np.mean([l["completions"] for l in led])),
                "prefill_share": float(np.mean([l["prefill_tokens"] / max(l["prefill_tokens"] + l["generated_tokens"],
                                                                           1) for l in led])),
                "select_share_of_train_time": float(np.mean([l["select_seconds"] / max(l["train_seconds"], 1e-9)
                                                             for l in led])),
                "mean_draws": float(np.mean([np.mean(l["draws_per_step"]) for l in led])),
                "max_draws": int(max(max(l["draws_per_step"]) for l in led)),
                "topped_up": float(np.mean([l["topped_up"] for l in led])),
                "final_accuracy": float(np.mean([S.smoothed([p["accuracy"] for p in r["curve"]])[-1] for r in rs])),
                "start_accuracy": float(np.mean([r["curve"][0]["accuracy"] for r in rs])),
                "ranking": ({k: float(np.mean([r["ranking"][k] for r in rs])) for k in rs[0]["ranking"]}
                            if rs[0].get("ranking") else {}),
            }
        entry["extras"] = extras
        if "ORACLE" in by:
            entry["useful_share_of_oracle_gain"] = S.share_of_gain(
                {m: [per_seed[s]["ledger"]["useful_groups"] / max(per_seed[s]["ledger"]["groups"], 1) for s in seeds]
                 for m, per_seed in by.items()})
        analysis[regime] = entry
    return analysis


def _ci(d: dict | None, fmt: str = ".2f") -> str:
    if not d or d.get("value") is None or not np.isfinite(d["value"]):
        return "-"
    if not np.isfinite(d.get("low", np.nan)):
        return format(d["value"], fmt)
    return f"{format(d['value'], fmt)} [{format(d['low'], fmt)}, {format(d['high'], fmt)}]"


def regime_table(entry: dict) -> str:
    comp, tok, wall = entry["completions"], entry["compute_tokens"], entry["train_seconds"]
    head = ("| method | final acc | completions to target (x GRPO) [95% CI] | censored seeds | x DS | share of the "
            "oracle's saving | compute tokens (x GRPO) | wall (x GRPO) | area - GRPO's "
            "| acc at GRPO's budget - GRPO's | useful generated / trained "
            "| useful-share gain as a share of the oracle's "
            "| prefill share | selection time share | DS draws mean/max |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    n = entry["completions"]["n_seeds"]
    for m, c in comp["methods"].items():
        x = entry["extras"][m]
        lines.append(
            f"| {m} | {x['final_accuracy']:.3f} | {_ci(c['ratio'])} | {c['censored']}/{n} "
            f"| {_ci(c.get('ratio_vs_ds'))} | {_ci(c.get('oracle_share'))} | {_ci(tok['methods'][m]['ratio'])} "
            f"| {_ci(wall['methods'][m]['ratio'])} | {_ci(c['area_minus_grpo'], '+.3f')} "
            f"| {_ci(c['acc_at_budget_minus_grpo'], '+.3f')} "
            f"| {x['useful_generated']:.2f} / {x['useful_trained']:.2f} "
            f"| {_ci(entry.get('useful_share_of_oracle_gain', {}).get(m, {}).get('share'))} "
            f"| {x['prefill_share']:.2f} | {x['select_share_of_train_time']:.2f} "
            f"| {x['mean_draws']:.1f}/{x['max_draws']} |")
    return "\n".join(lines)


def ranking_table(entry: dict) -> str:
    lines = ["| method | Spearman(pred, true) | AUC in band | true in-band share of candidates | picked truly in band "
             "| mean abs error |", "|---|---|---|---|---|---|"]
    for m, x in entry["extras"].items():
        r = x["ranking"]
        if r:
            lines.append(f"| {m} | {r['spearman']:.2f} | {r['auc_in_band']:.2f} | {r['in_band_share']:.2f} "
                         f"| {r['picked_in_band']:.2f} | {r['mean_abs_error']:.3f} |")
    return "\n".join(lines)


def class_table(runs: list[dict]) -> str:
    """Where each arm's rollouts went, per block of steps: the share of rolled-out groups on each difficulty class
    and the useful rate of those groups (pooled over the seeds whose ledger recorded ``class_blocks``)."""
    from .pg_methods import CLASS_BLOCK

    pooled: dict[str, list[dict]] = {}
    for r in runs:
        for b, block in enumerate(r["ledger"].get("class_blocks") or []):
            blocks = pooled.setdefault(r["method"], [])
            while len(blocks) <= b:
                blocks.append({})
            for cls, (n, u) in block.items():
                have = blocks[b].setdefault(cls, [0, 0])
                have[0], have[1] = have[0] + n, have[1] + u
    if not pooled:
        return ""
    classes = [c for c in ("solved", "frontier", "beyond") if any(c in b for bl in pooled.values() for b in bl)]
    width = max(len(b) for b in pooled.values())
    head = "| method | class | " + " | ".join(f"steps {b * CLASS_BLOCK + 1}-{(b + 1) * CLASS_BLOCK}"
                                              for b in range(width)) + " |"
    lines = ["Where the rollouts went (seeds pooled; share of rolled-out groups on the class, and in brackets the "
             "share of those groups that were useful):", "", head, "|" + "---|" * (width + 2)]
    for m, blocks in pooled.items():
        for cls in classes:
            cells = []
            for block in blocks:
                total = sum(n for n, _ in block.values())
                n, u = block.get(cls, [0, 0])
                cells.append(f"{n / total:.2f} ({u / n:.2f})" if n else f"{0:.2f}")
            lines.append(f"| {m} | {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_text(regime: str, entry: dict) -> str:
    c = entry["completions"]["methods"].get("DEPO")
    if c is None:
        return ""
    if regime == "balanced":
        d = c["acc_at_budget_minus_grpo"]
        ok = not (d["high"] < 0)
        return f"Target (balanced): DEPO's accuracy at GRPO's budget not below GRPO's beyond the CI: " \
               f"{_ci(d, '+.3f')}: {'MET' if ok else 'NOT MET'}."
    g = entry["extras"]["GRPO"]
    if g["final_accuracy"] <= g["start_accuracy"]:
        return (f"Targets ({regime}): GRPO's held-out accuracy did not rise (start {g['start_accuracy']:.3f}, final "
                f"{g['final_accuracy']:.3f}), so 'completions to GRPO's final accuracy' reads a target at or below "
                "the start: the crossing ratios are not a saving measure here and the issue's ratio targets are NOT "
                "MEASURABLE on this run. Read the area and the accuracy at GRPO's budget (no target needed) and the "
                "useful share instead.")
    r, ds, share = c["ratio"], c.get("ratio_vs_ds"), c.get("oracle_share")
    parts = [f"completions x{_ci(r)} of GRPO's (target <= 0.6 with CI upper < 0.8: "
             f"{'MET' if r['value'] <= 0.6 and r['high'] < 0.8 else 'NOT MET'})"]
    if ds:
        parts.append(f"x{_ci(ds)} of DS's (target <= 0.4: {'MET' if ds['value'] <= 0.4 else 'NOT MET'})")
    if share:
        parts.append(f"{_ci(share)} of the oracle's saving (target >= 0.7: "
                     f"{'MET' if share['value'] >= 0.7 else 'NOT MET'})")
    return f"Targets ({regime}, DEPO defaults): " + "; ".join(parts) + "."


def plot(payload: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    regimes = [r for r in payload["runs"] if payload["runs"][r]]
    fig, axes = plt.subplots(1, len(regimes), figsize=(6.5 * len(regimes), 4.5), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        by: dict[str, list] = {}
        for r in payload["runs"][regime]:
            by.setdefault(r["method"], []).append(r)
        for m, rs in by.items():
            top = min(r["curve"][-1]["completions"] for r in rs)
            grid = np.linspace(0, top, 40)
            ys = np.array([np.interp(grid, [p["completions"] for p in r["curve"]], [p["accuracy"] for p in r["curve"]])
                           for r in rs])
            line, = ax.plot(grid, ys.mean(0), label=f"{m} ({len(rs)} seeds)",
                            linestyle="--" if m.startswith("DEPO-") else "-")
            if len(rs) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.1, linewidth=0)
        target = payload["analysis"].get(regime, {}).get("completions", {}).get("target")
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{regime}: held-out accuracy vs training completions\n(mean over seeds, band min..max; "
                     "dotted: GRPO's final)", fontsize=9)
        ax.set_xlabel("completions generated in training")
        ax.set_ylabel("held-out accuracy (T=1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def render(payload: dict, out_dir: str, docs: str | None, log=print) -> str:
    from . import e2e_analysis

    meta, size = payload["meta"], payload["meta"]["size"]
    texts = []
    for regime, entry in payload["analysis"].items():
        prof = payload["profile"].get(regime, {})
        prof_line = "; ".join(
            f"s{s}: true pass rate by class "
            + ", ".join(f"{c} {v:.2f}" for c, v in p["true_pass_rate_by_class"].items())
            + f", in band {p['in_band_share']:.2f}, expected useful share under uniform "
            + f"{p['expected_useful_share']:.2f}"
            for s, p in prof.items())
        texts.append("\n\n".join(part for part in [
            f"### `{regime}` ({len(entry['seeds'])} seeds: {entry['seeds']})",
            f"Warm-started pools (teacher-forced probability of the reference trace, a lower bound of the pass rate: "
            f"it misses passes through other working): {prof_line}.",
            f"Target: GRPO's final held-out accuracy {entry['completions']['target']:.3f} (mean over seeds, trailing "
            f"mean of 3 evaluations); GRPO's budget {entry['completions']['budget']:,.0f} completions.",
            regime_table(entry),
            "Ranking quality of the DEPO arms over their filtering rounds (predicted vs true pass rate of the "
            "candidates; measured, not counted as cost):",
            ranking_table(entry),
            class_table(payload["runs"][regime]),
            targets_text(regime, entry)] if part))
    body = "\n\n".join(texts)
    png = os.path.join(out_dir, f"{meta['name']}.png")
    if plot(payload, png):
        log(f"wrote {png}")
    if docs:
        header = "\n\n".join([
            "## Proving ground: DEPO's own predictor against faithful baselines and an oracle",
            f"Command: `{meta['command']}`. Machine: {meta['machine']}; load average at start {meta['load']}. "
            f"{'Its parts' if meta.get('parts') else 'This invocation'} took {meta['total_seconds']:.0f} s "
            f"({meta['reused']} runs reused)." + e2e_analysis.labels_note(meta),
            "Task: shift-then-reverse (`benchmarks/pg_task.py`): the policy writes its working (the shifted letters), "
            f"then `|`, then the answer (the shifted letters reversed); the reward checks the answer only. Tiny Qwen2 "
            "(char-level): a shared base learns the task on lengths 3-7, then every seed continues it from a noisy "
            "teacher whose per-letter slip rate grows with the shift (0, 0.1, 0.3, 0.55 for shifts 1-4), so pass "
            "rates spread over shift x length; lengths 8-10 are never taught (pass rate 0, unlearnable by RL). "
            "Classes: solved = shift 1, frontier = shifts 2-4 (lengths 4-7), beyond = lengths 8-10. "
            f"Per seed: its own pool of {size['n_pool']} "
            f"prompts, held-out set of {size['n_heldout']} (same mix as the pool), warm start. {size['steps']} steps "
            "of "
            f"{size['prompts_per_step']} prompts x {size['group']} completions, lr {size['lr']}; DS refills at most "
            f"{size['ds_max_draws']} generation batches per step. Held-out accuracy: {size['eval_samples']} samples "
            f"per prompt at T=1 every {size['eval_every']} steps.",
            "Reading the tables: ratios are a method's mean cost to reach the target over GRPO's (the same censoring "
            "rule for every method: a seed that never reaches the target counts its whole run); brackets: 95% "
            "bootstrap intervals over seeds (paired; target and GRPO's cost recomputed in each resample). Compute "
            "tokens = generated + the method's prefilled candidate tokens; prefill share = prefilled / compute "
            "tokens; selection time share = the method's own choosing (candidate prefill, estimator, selection; "
            "for the oracle its sampled measurement) / training seconds. Wall time excludes evaluation and the "
            "ranking diagnostics. The oracle arm selects on the true current pass rate (measured with "
            f"{size['oracle_samples']} samples per candidate, not counted) under DEPO's candidate walk: its saving is "
            "the ceiling of selection there.",
            body, f"![proving ground]({os.path.relpath(png, os.path.dirname(os.path.abspath(docs)))})",
            f"Full numbers: `benchmarks/results/{meta['name']}.json`."])
        e2e_analysis.update_docs_section(header, docs, SECTION)
        log(f"updated the {SECTION} section of {docs}")
    return body


def merge(paths: list[str], name: str) -> dict:
    """One payload from several invocations' payloads: runs and pool profiles joined per regime (a method and seed
    given twice must be the same run, e.g. GRPO rerun beside ablations: its curve must match exactly, and the first
    is kept, with any ledger diagnostics only the rerun recorded), the commands and times of every part kept in
    ``meta``."""
    out = {"runs": {}, "warm": {}, "profile": {}}
    parts = []
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        for regime, runs in part["runs"].items():
            have = {(r["method"], r["seed"]): r for r in out["runs"].get(regime, [])}
            for r in runs:
                twin = have.get((r["method"], r["seed"]))
                if twin is None:
                    out["runs"].setdefault(regime, []).append(r)
                elif [p["accuracy"] for p in twin["curve"]] != [p["accuracy"] for p in r["curve"]]:
                    # a part that reruns a reference arm (e.g. GRPO beside ablations) must reproduce it exactly
                    raise ValueError(f"{path} has a different {r['method']} seed {r['seed']} run for {regime!r} "
                                     "than a part merged before it: the parts do not describe one experiment.")
                else:  # the same run: keep the first, plus ledger diagnostics recorded since (e.g. exploration_sides)
                    for key, value in r["ledger"].items():
                        twin["ledger"].setdefault(key, value)
        for regime, prof in part["profile"].items():
            out["profile"].setdefault(regime, {}).update(prof)
        out["warm"].update(part.get("warm", {}))
        parts.append(part["meta"])
    first = parts[0]
    if any(p["size"] != first["size"] for p in parts):
        raise ValueError("The parts were run with different sizes; merge only runs of one benchmark size.")
    out["meta"] = dict(first, name=name, command=" ; ".join(p["command"] for p in parts),
                       total_seconds=sum(p["total_seconds"] for p in parts),
                       reused=sum(p["reused"] for p in parts), load=" / ".join(p["load"] for p in parts),
                       seeds=sorted({s for p in parts for s in p["seeds"]}),
                       regimes=list(out["runs"]), methods={m: v for p in parts for m, v in p["methods"].items()},
                       parts=parts)
    out["analysis"] = analyse(out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--regimes", default=None)
    parser.add_argument("--seeds", default=None)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--runs-dir", default=None, help="folder of the per-run JSON (default benchmarks/results/"
                                                          "pg_runs; cache/pg_quick_runs with --quick)")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--render", default=None, metavar="JSON")
    parser.add_argument("--merge", default=None, metavar="JSON,JSON,...",
                        help="combine the runs of several invocations (e.g. one per regime, run side by side on "
                             "two cores) into one result under --name, then render it (tables, plot, docs)")
    args = parser.parse_args(argv)
    _offline()
    if args.merge:
        payload = merge(args.merge.split(","), args.name or "proving_ground")
        path = os.path.join(args.out, f"{payload['meta']['name']}.json")
        os.makedirs(args.out, exist_ok=True)
        with open(path, "w") as f:
            json.dump(payload, f, indent=1, default=float)
        print(f"wrote {path}")
        print(render(payload, args.out, None if args.no_docs else DOCS))
        return payload
    if args.render:
        with open(args.render) as f:
            payload = json.load(f)
        payload["analysis"] = analyse(payload)  # recomputed: the analysis code may be newer than the runs
        with open(args.render, "w") as f:
            json.dump(payload, f, indent=1, default=float)
        print(render(payload, os.path.dirname(os.path.abspath(args.render)), None if args.no_docs else DOCS))
        return payload
    import torch

    from benchmarks.common import limit_blas_threads

    torch.set_num_threads(1)
    limit_blas_threads(1)
    size = copy.deepcopy(SIZES["quick" if args.quick else "full"])
    if args.steps:
        size["steps"] = args.steps
    if args.lr:
        size["lr"] = args.lr
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else size.pop("seeds")
    size.pop("seeds", None)
    regimes = args.regimes.split(",") if args.regimes else (["hard", "easy"] if not args.quick else ["hard"])
    methods = args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else DEFAULT_METHODS)
    unknown = [m for m in methods if m not in METHODS] + [r for r in regimes if r not in REGIMES]
    if unknown:
        parser.error(f"unknown methods/regimes {unknown}; methods: {sorted(METHODS)}, regimes: {REGIMES}")
    name = args.name or ("proving_ground_quick" if args.quick else "proving_ground")
    runs_dir = args.runs_dir or (os.path.join(RESULTS, "cache", "pg_quick_runs") if args.quick
                                 else os.path.join(RESULTS, "pg_runs"))
    t0 = time.perf_counter()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    payload = run_benchmark(size, methods, regimes, seeds, runs_dir, fresh=args.fresh)
    reused = sum(1 for runs in payload["runs"].values() for r in runs if "reused" in r)
    payload["meta"] = {
        "command": "python -m benchmarks.proving_ground " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": size, "seeds": seeds, "regimes": regimes, "methods": {m: METHODS[m] for m in methods}, "name": name,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} (1 thread)",
        "load": load, "total_seconds": time.perf_counter() - t0, "reused": reused}
    payload["analysis"] = analyse(payload)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=float)
    print(f"wrote {path}")
    docs = None if (args.no_docs or args.quick) else DOCS
    print(render(payload, args.out, docs))
    return payload


if __name__ == "__main__":
    main()
