"""End to end: GRPO vs dynamic sampling vs GRESO vs DEPO through the real trainers, on CPU.

    python -m benchmarks.e2e [--quick | --full] [--methods GRPO,DS,GRESO,DEPO] [--threads 1]
    python -m benchmarks.e2e --render benchmarks/results/e2e.json   # redraw table/plot/docs, no training

A tiny char-level Qwen2 (built in code, seeded) is warm-started by a short supervised stage on string reversal
(``benchmarks/e2e_task.py``; the string length is the difficulty knob) so that pass rates under sampling at
temperature 1 spread over (0, 1) across lengths; the spread is measured and printed. From that same checkpoint
and with the same seed, every method trains for the same number of optimizer steps with the same batch
(U prompts x G completions), learning rate and reward (exact match, binary). Methods are in
``benchmarks/e2e_methods.py``.

Every ``eval_every`` steps the policy is evaluated on a fixed held-out set (strings never trained on): held-out
accuracy is the mean exact-match rate of ``eval_samples`` completions per prompt sampled at temperature 1 (the
quantity GRPO optimises; a fixed generation seed that does not disturb training), and greedy accuracy is reported
beside it. Accuracy curves are smoothed by a trailing mean over 3 evaluations before thresholds are read.

Targets (chosen after the runs, from GRPO's curve, and printed): ``grpo_final`` = GRPO's smoothed accuracy at its
last evaluation (the issue's target: "reach GRPO's final held-out accuracy"); ``grpo_90`` = the start accuracy
plus 90% of GRPO's gain. For each method and target: completions generated, generated tokens and training wall
time (evaluation excluded) at the first evaluation whose smoothed accuracy reaches the target. Also the share of
generated groups that were useful (0 < passes < G) and the final held-out accuracy.

Writes ``benchmarks/results/e2e.json`` and ``e2e.png`` (``e2e_quick.*`` with ``--quick``, ``e2e_full.*`` with
``--full``) and the section of ``docs/benchmarks.md`` between ``<!-- e2e:start -->`` and ``<!-- e2e:end -->``
(not with ``--quick`` unless ``--docs`` is given). The default size takes about 13 minutes on 2 quiet cores with
the warm start trained (about 30 s; cached afterwards) and ``--quick`` about one minute. One run, one seed: quote
ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
DOCS = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")
SECTION = "e2e"

# Sizes: how long each method trains and how it is measured. The task/model/warm start is shared by all sizes
# (one cached checkpoint), except --full, which may train longer.
SIZES = {
    "quick": {"n_train": 256, "n_heldout": 90, "prompts_per_step": 8, "group": 8, "steps": 40, "eval_every": 5,
              "eval_samples": 4, "lr": 3e-4, "depo_warmup_steps": 5},
    "default": {"n_train": 512, "n_heldout": 270, "prompts_per_step": 16, "group": 8, "steps": 150, "eval_every": 5,
                "eval_samples": 4, "lr": 2e-4, "depo_warmup_steps": 10},
    "full": {"n_train": 1024, "n_heldout": 540, "prompts_per_step": 16, "group": 8, "steps": 400, "eval_every": 10,
             "eval_samples": 4, "lr": 2e-4, "depo_warmup_steps": 10},
}
CORE_METHODS = ("GRPO", "DS", "GRESO", "DEPO")
# Every other registered estimator costs about what logistic costs per step, so default and full runs add them.
ALL_METHODS = CORE_METHODS + ("DEPO-gbdt", "DEPO-beta", "DEPO-ranking")
SIZE_METHODS = {"quick": CORE_METHODS, "default": ALL_METHODS, "full": ALL_METHODS}
SMOOTH = 3  # trailing window (evaluations) for reading thresholds


def _offline():
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------------------ one method
def _make_callback(trainer_ref: dict, evaluate, every: int, curve: list, timer: dict):
    from transformers import TrainerCallback

    class HeldoutEval(TrainerCallback):
        """Evaluates on the held-out set before training and every ``every`` steps; eval time is not training time."""

        def _record(self, step: int):
            t0 = time.perf_counter()
            trainer = trainer_ref["trainer"]
            sampled, greedy = evaluate(trainer.model)
            ledger = trainer.ledger
            train_seconds = t0 - timer["start"] - timer["eval"]
            curve.append({
                "step": step, "completions": ledger.completions, "tokens": ledger.tokens,
                "train_seconds": train_seconds, "accuracy": sampled, "greedy_accuracy": greedy,
                "useful_groups": ledger.useful_groups, "groups": ledger.groups,
            })
            timer["eval"] += time.perf_counter() - t0

        def on_train_begin(self, args, state, control, **kwargs):
            timer["start"], timer["eval"] = time.perf_counter(), 0.0
            self._record(0)

        def on_step_end(self, args, state, control, **kwargs):
            due = state.global_step % every == 0 or state.global_step == state.max_steps
            if due and (not curve or curve[-1]["step"] != state.global_step):
                self._record(state.global_step)

    return HeldoutEval()


def method_specs(names: list[str]) -> list[tuple[str, str, dict]]:
    """(label, class key, extra kwargs) per method name; ``DEPO-<estimator>`` picks a registered estimator."""
    specs = []
    for name in names:
        if name == "DEPO" or name.startswith("DEPO-"):
            estimator = name.split("-", 1)[1] if "-" in name else "logistic"
            specs.append((name if "-" in name else "DEPO", "DEPO", {"depo_estimator": estimator}))
        elif name in ("GRPO", "DS", "GRESO"):
            specs.append((name, name, {}))
        else:
            raise ValueError(f"Unknown method {name!r}: use GRPO, DS, GRESO, DEPO or DEPO-<estimator>.")
    return specs


def run_method(label: str, key: str, extra: dict, size: dict, spec, warm_state: dict, train, heldout, seed: int,
               workdir: str, reward_func=None, log=print) -> dict:
    import torch
    from trl import GRPOConfig

    from depo_trl import DEPOConfig

    from . import e2e_methods, e2e_task

    tokenizer, model = e2e_task.build(spec)
    model.load_state_dict(warm_state)
    common = {
        "output_dir": os.path.join(workdir, label), "per_device_train_batch_size": size["prompts_per_step"] * size["group"],
        "num_generations": size["group"], "max_completion_length": spec.max_completion_length, "max_steps": size["steps"],
        "learning_rate": size["lr"], "lr_scheduler_type": "constant", "warmup_steps": 0, "temperature": 1.0, "beta": 0.0,
        "bf16": False, "use_cpu": True, "report_to": "none", "logging_steps": max(1, size["eval_every"]), "save_strategy": "no",
        "seed": seed, "disable_tqdm": True, "activation_checkpointing": False,
    }
    if key == "DEPO":
        config = DEPOConfig(**common, depo_warmup_steps=size["depo_warmup_steps"], depo_audit_log=False, **extra)
    else:
        config = GRPOConfig(**common)

    def evaluate(policy):
        sampled = e2e_task.pass_rates(policy, tokenizer, heldout, size["eval_samples"],
                                      spec.max_completion_length, do_sample=True, seed=seed + 12345)
        greedy = e2e_task.pass_rates(policy, tokenizer, heldout, 1, spec.max_completion_length, do_sample=False)
        return float(sampled.mean()), float(greedy.mean())

    curve: list[dict] = []
    timer: dict = {}
    holder: dict = {}
    callback = _make_callback(holder, evaluate, size["eval_every"], curve, timer)
    cls = e2e_methods.METHODS[key]
    trainer = cls(model=model, reward_funcs=reward_func or e2e_task.reversal_reward, args=config, train_dataset=train,
                  processing_class=tokenizer, callbacks=[callback])
    holder["trainer"] = trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # the benchmark prints its own summary
    trainer.remove_callback(ProgressCallback)
    log(f"[{label}] training {size['steps']} steps ...")
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    ledger = trainer.ledger.as_dict()
    train_seconds = curve[-1]["train_seconds"]
    result = {
        "method": label, "class": cls.__name__, "extra": extra, "curve": curve, "ledger": ledger,
        "train_seconds": train_seconds, "eval_seconds": timer["eval"], "total_seconds": total,
        "useful_share_generated": ledger["useful_groups"] / max(ledger["groups"], 1),
        "useful_share_trained": ledger["trained_useful"] / max(ledger["trained_groups"], 1),
        "all_pass_share": ledger["all_pass"] / max(ledger["groups"], 1),
        "all_fail_share": ledger["all_fail"] / max(ledger["groups"], 1),
    }
    if key == "DEPO":
        result["depo_stats"] = trainer.depo_stats.state_dict()
        result["depo_summary"] = trainer.depo_summary()
    if key == "GRESO":
        result["greso"] = {"p_easy": trainer.p_easy, "p_hard": trainer.p_hard, "examined": trainer.examined,
                           "skipped": trainer.skipped}
    log(f"[{label}] {total:.0f} s ({timer['eval']:.0f} s evaluating); {ledger['completions']} completions, "
        f"useful share {result['useful_share_generated']:.2f}, final accuracy {curve[-1]['accuracy']:.3f}")
    del trainer, model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return result


# ------------------------------------------------------------------------------------------------ analysis
def smoothed(curve: list[dict], window: int = SMOOTH) -> list[float]:
    values = [point["accuracy"] for point in curve]
    return [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
            for i in range(len(values))]


def first_reach(curve: list[dict], target: float) -> dict | None:
    """The first evaluation whose smoothed accuracy reaches ``target`` (None if never)."""
    for point, value in zip(curve, smoothed(curve)):
        if value >= target - 1e-12:
            return {k: point[k] for k in ("step", "completions", "tokens", "train_seconds")} | {"smoothed": value}
    return None


def analyse(results: list[dict]) -> dict:
    by = {r["method"]: r for r in results}
    grpo = by.get("GRPO")
    if grpo is None:
        return {"targets": {}, "note": "GRPO was not run: no targets."}
    start = grpo["curve"][0]["accuracy"]
    final = smoothed(grpo["curve"])[-1]
    targets = {
        "grpo_final": {"value": final, "how": f"GRPO's accuracy at its last evaluation, trailing mean of {SMOOTH} "
                                              "evaluations"},
        "grpo_90": {"value": start + 0.9 * (final - start), "how": "start accuracy + 90% of GRPO's gain"},
    }
    for r in results:
        r["final_accuracy"] = r["curve"][-1]["accuracy"]
        r["final_accuracy_smoothed"] = smoothed(r["curve"])[-1]
        r["final_greedy_accuracy"] = r["curve"][-1]["greedy_accuracy"]
        r["reach"] = {name: first_reach(r["curve"], t["value"]) for name, t in targets.items()}

    def ratio(a, b, name, what):
        ra, rb = by[a]["reach"][name] if a in by else None, by[b]["reach"][name] if b in by else None
        if ra is None or rb is None or not rb[what]:
            return None
        return ra[what] / rb[what]

    verdict = {}
    depo_labels = [m for m in by if m == "DEPO" or m.startswith("DEPO-")]
    for label in depo_labels:
        v = {}
        for name in targets:
            v[name] = {
                "completions_vs_grpo": ratio(label, "GRPO", name, "completions"),
                "completions_vs_ds": ratio(label, "DS", name, "completions"),
                "tokens_vs_grpo": ratio(label, "GRPO", name, "tokens"),
                "seconds_vs_grpo": ratio(label, "GRPO", name, "train_seconds"),
                "seconds_vs_ds": ratio(label, "DS", name, "train_seconds"),
            }
        c_grpo = v["grpo_final"]["completions_vs_grpo"]
        c_ds = v["grpo_final"]["completions_vs_ds"]
        v["issue_targets"] = {
            "half_of_grpo_completions": c_grpo is not None and c_grpo <= 0.5,
            "third_of_ds_completions": c_ds is not None and c_ds <= 1 / 3,
            "final_accuracy_not_below_grpo": by[label]["final_accuracy_smoothed"] >= final - 1e-12,
        }
        verdict[label] = v
    return {"targets": targets, "start_accuracy": start, "verdict": verdict}


# ------------------------------------------------------------------------------------------------ output
def _fmt(x, spec=".0f", none="never"):
    return none if x is None else format(x, spec)


def table(results: list[dict], analysis: dict) -> str:
    targets = analysis.get("targets", {})
    lines = [
        (
            "| method | completions | tokens | train s | useful share (generated / trained) | final acc T=1 "
            "| final greedy | grpo_final reached at: step | completions | tokens | train s "
            "| grpo_90 reached at: completions |"
        ),
    ]
    lines.append("|" + "---|" * (lines[0].count("|") - 1))
    for r in results:
        ledger = r["ledger"]
        reach = r.get("reach", {})
        full, ninety = reach.get("grpo_final"), reach.get("grpo_90")
        lines.append(
            f"| {r['method']} | {ledger['completions']:,} | {ledger['tokens']:,} | {r['train_seconds']:.0f} "
            f"| {r['useful_share_generated']:.2f} / {r['useful_share_trained']:.2f} "
            f"| {r.get('final_accuracy_smoothed', r['curve'][-1]['accuracy']):.3f} "
            f"| {r['curve'][-1]['greedy_accuracy']:.3f} | {_fmt(full and full['step'], 'd')} "
            f"| {_fmt(full and full['completions'], ',')} | {_fmt(full and full['tokens'], ',')} "
            f"| {_fmt(full and full['train_seconds'])} | {_fmt(ninety and ninety['completions'], ',')} |"
        )
    if targets:
        lines.append("")
        lines.append("Targets: " + "; ".join(f"{k} = {v['value']:.3f} ({v['how']})" for k, v in targets.items())
                     + f"; held-out accuracy before training {analysis['start_accuracy']:.3f}. Final acc: trailing "
                     f"mean of the last {SMOOTH} evaluations.")
    by = {r["method"]: r for r in results}
    for label, v in analysis.get("verdict", {}).items():
        f = v["grpo_final"]
        lines.append("")
        if f["completions_vs_grpo"] is None:
            reach = f"{label} did not reach grpo_final within its run (final acc {by[label]['final_accuracy_smoothed']:.3f})"
        else:
            reach = (
                f"{label} to grpo_final: completions x{f['completions_vs_grpo']:.2f} of GRPO's, "
                f"x{_fmt(f['completions_vs_ds'], '.2f', 'n/a')} of DS's; tokens x{f['tokens_vs_grpo']:.2f} of GRPO's; "
                f"wall time x{_fmt(f['seconds_vs_grpo'], '.2f', 'n/a')} of GRPO's, "
                f"x{_fmt(f['seconds_vs_ds'], '.2f', 'n/a')} of DS's"
            )
        lines.append(reach + ". Issue targets: "
                     + ", ".join(f"{k} {'MET' if ok else 'NOT MET'}" for k, ok in v["issue_targets"].items()) + ".")
    return "\n".join(lines)


def _rolling(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
            for i in range(len(values))]


def plot(results: list[dict], analysis: dict, path: str, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return False
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for r in results:
        xs = [p["completions"] for p in r["curve"]]
        line, = ax.plot(xs, smoothed(r["curve"]), marker=".", label=r["method"])
        shares = r["ledger"]["round_useful_share"]
        ax2.plot(range(1, len(shares) + 1), _rolling(shares, 10), color=line.get_color(), label=r["method"])
    for name, t in analysis.get("targets", {}).items():
        ax.axhline(t["value"], color="grey", linestyle="--" if name == "grpo_final" else ":", linewidth=1)
        ax.text(ax.get_xlim()[1], t["value"], f" {name}", va="center", fontsize=7, color="grey")
    ax.set_xlabel("completions generated (training)")
    ax.set_ylabel(f"held-out accuracy (T=1, trailing mean of {SMOOTH} evals)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("useful share of generated groups (10-step mean)")
    ax2.set_ylim(0, 1.02)
    ax2.set_title("0 < passes < G among groups generated", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def update_docs_section(body: str, path: str = DOCS, section: str = SECTION) -> None:
    """Replace the text between this benchmark's markers in ``path`` (markers appended when absent)."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = "# Benchmarks\n"
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def accuracy_at(curve: list[dict], completions: int) -> float:
    """Smoothed accuracy at the last evaluation with at most ``completions`` generated."""
    values = smoothed(curve)
    best = values[0]
    for point, value in zip(curve, values):
        if point["completions"] <= completions:
            best = value
    return best


def docs_body(payload: dict, table_text: str, png_rel: str) -> str:
    meta, size, task = payload["meta"], payload["meta"]["size"], payload["meta"]["task"]
    spread = payload["warm_start"]["pass_rate_by_length"]
    spread_text = ", ".join(f"{n}: {v:.2f}" for n, v in spread.items())
    by = {r["method"]: r for r in payload["methods"]}
    topped = by.get("DS", {}).get("ledger", {}).get("topped_up", 0)

    setup = (
        f"Command: `{meta['command']}`. Machine: {meta['machine']}; load average when started: "
        f"{meta['load_average_start']} (the cores are shared; ratios taken side by side in one run are what to "
        f"quote, not absolute times). Total run time {meta['total_seconds']:.0f} s, warm start included "
        f"({'loaded from the cache' if payload['warm_start']['info'].get('cached') else 'trained in this run'})."
    )
    task_text = (
        f"Task: string reversal, lengths {task['min_length']}..{task['max_length']} (the length is the difficulty "
        f"knob), exact-match binary reward. Model: char-level Qwen2, {task['num_layers']} layers, hidden "
        f"{task['hidden_size']} ({meta['parameters']:,} parameters), warm-started by {task['warm_steps']} supervised "
        f"steps. Pass rate at temperature 1 after the warm start, by length: {spread_text}; expected useful-group "
        f"share under uniform sampling {payload['warm_start']['expected_useful_share_uniform']:.2f}. Each method: "
        f"{size['steps']} optimizer steps of {size['prompts_per_step']} prompts x {size['group']} completions, lr "
        f"{size['lr']}, same checkpoint and seed; held-out set of {size['n_heldout']} unseen strings evaluated every "
        f"{size['eval_every']} steps ({size['eval_samples']} samples per prompt at T=1; greedy accuracy beside it)."
    )
    methods = (
        "Methods (`benchmarks/e2e_methods.py`, each a narrow override of TRL's `_generate_and_score_completions` "
        "that calls `super()`): GRPO = `trl.GRPOTrainer` as is; DS = DAPO dynamic sampling (generate, drop groups "
        "whose passes are all 0 or all G, refill with exactly the missing number of groups until the batch is full; "
        "every completion generated counts"
        + (f"; {topped} groups had to be topped up with zero-variance ones" if topped else "")
        + "); GRESO = skip a prompt after z all-pass (all-fail) groups in a row with probability "
        "1 - max(p^z, 0.01), p adapted toward 1/12 all-pass and 1/6 all-fail; DEPO = `depo_trl.DEPOTrainer` with "
        "its defaults (K = 4 candidates per rollout, band [0.15, 0.85], exploration 0.1, features length + history "
        f"+ policy embedding; the first {size['depo_warmup_steps']} steps are plain GRPO while the estimator "
        "learns), one row per registered estimator."
    )
    findings = []
    if "GRPO" in by and by["GRPO"]["useful_share_generated"] > 0:
        u = by["GRPO"]["useful_share_generated"]
        filters = [label for label in by if label == "GRESO" or label == "DEPO" or label.startswith("DEPO-")]
        parts = ", ".join(f"{label} x{by[label]['useful_share_generated'] / u:.2f}" for label in filters)
        findings.append(
            f"Headroom: GRPO's own useful share on this task is {u:.2f}, so a perfect pre-rollout filter could train "
            f"on at most x{1 / u:.2f} as many useful groups per completion as GRPO; useful groups per completion "
            f"relative to GRPO: {parts}."
        )
        budget = by["GRPO"]["ledger"]["completions"]
        at_budget = ", ".join(f"{label} {accuracy_at(r['curve'], budget):.3f}" for label, r in by.items())
        findings.append(f"Held-out accuracy (smoothed) at GRPO's budget of {budget:,} completions: {at_budget}.")
    return "\n\n".join([
        "## End to end (real trainers, CPU)", setup, task_text, methods, table_text, *findings,
        f"![held-out accuracy vs completions generated]({png_rel})",
        (
            "Completions, tokens and train s are totals over the run (train s excludes evaluation); the `reached at` "
            f"columns are read at the first evaluation whose trailing mean of {SMOOTH} evaluations reaches the target "
            "('never': not within the run). Useful share: groups with 0 < passes < G among groups generated / among "
            "groups trained on. One run, one seed: differences of a few points of accuracy are within run-to-run "
            "noise. Full numbers: `benchmarks/results/" + os.path.basename(meta["json"]) + "`."
        ),
    ])


def render(payload: dict, docs_path: str | None, png_path: str, log=print) -> str:
    """Table, plot and (if ``docs_path``) docs section from a payload (a fresh run's or a saved JSON's)."""
    results, analysis = payload["methods"], payload["analysis"]
    table_text = table(results, analysis)
    size = payload["meta"]["size"]
    title = (f"String reversal, tiny Qwen2 ({payload['meta']['parameters']:,} params): {size['steps']} steps x "
             f"{size['prompts_per_step']} prompts x {size['group']}")
    if plot(results, analysis, png_path, title):
        log(f"wrote {png_path}")
    if docs_path:
        png_rel = os.path.relpath(png_path, os.path.dirname(os.path.abspath(docs_path)))
        update_docs_section(docs_body(payload, table_text, png_rel), docs_path)
        log(f"updated the {SECTION} section of {docs_path}")
    return table_text


# ------------------------------------------------------------------------------------------------ main
def run_benchmark(size: dict, spec, methods: list[str], out_dir: str, name: str, command: str,
                  docs_path: str | None, seed: int = 0, threads: int = 1, cache_dir: str | None = None,
                  reward_func=None, log=print) -> dict:
    """Warm start (cached), every method, analysis, table, JSON, PNG and (if ``docs_path``) the docs section."""
    import warnings
    from dataclasses import asdict

    import datasets
    import torch
    import transformers
    import trl

    from . import e2e_task

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    load_start = _load_average()
    log(f"e2e benchmark ({command}): {size}; load average {load_start}")

    train, heldout = e2e_task.make_splits(spec, size["n_train"], size["n_heldout"], seed=seed)
    t0 = time.perf_counter()
    exclude = e2e_task.heldout_words(spec, seed)
    tokenizer, model, info = e2e_task.warm_start(spec, exclude=exclude, cache_dir=cache_dir, log=log)
    warm_seconds = time.perf_counter() - t0
    rates = e2e_task.pass_rates(model, tokenizer, heldout, 8, spec.max_completion_length, do_sample=True,
                                seed=seed + 999)
    spread = e2e_task.spread_by_length(rates, heldout["length"])
    G = size["group"]
    useful_if_uniform = float((1 - rates**G - (1 - rates) ** G).mean())
    log("warm start: pass rate at T=1 by length (8 samples per held-out prompt): "
        + ", ".join(f"{n}: {v:.2f}" for n, v in spread.items()))
    log(f"warm start: mean {rates.mean():.3f}; share of prompts with 0 < rate < 1: "
        f"{float(((rates > 0) & (rates < 1)).mean()):.2f}; expected useful-group share under uniform sampling "
        f"(G={G}): {useful_if_uniform:.2f}")
    warm_state = copy.deepcopy(model.state_dict())
    parameters = sum(p.numel() for p in model.parameters())

    workdir = tempfile.mkdtemp(prefix="e2e-")
    results = []
    try:
        for label, key, extra in method_specs(methods):
            results.append(run_method(label, key, extra, size, spec, warm_state, train, heldout, seed, workdir,
                                      reward_func=reward_func, log=log))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    analysis = analyse(results)
    os.makedirs(out_dir, exist_ok=True)
    json_path, png_path = os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.png")
    payload = {
        "meta": {
            "command": command, "size": size, "task": asdict(spec), "methods": methods,
            "machine": f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
                       f"torch {torch.__version__} ({threads} thread{'s' if threads > 1 else ''}), "
                       f"trl {trl.__version__}, transformers {transformers.__version__}, datasets {datasets.__version__}",
            "load_average_start": load_start, "load_average_end": _load_average(),
            "total_seconds": time.perf_counter() - t_start, "seed": seed, "parameters": parameters,
            "json": os.path.relpath(json_path, os.path.dirname(HERE)) if out_dir == RESULTS else json_path,
        },
        "warm_start": {"info": {k: v for k, v in info.items() if k != "path"}, "seconds_this_run": warm_seconds,
                       "pass_rate_by_length": spread, "mean_pass_rate": float(rates.mean()),
                       "expected_useful_share_uniform": useful_if_uniform},
        "analysis": analysis,
        "methods": results,
    }
    with open(json_path, "w") as f:
        json.dump(payload, f, indent=1, default=float)
    log(f"wrote {json_path}")
    table_text = render(payload, docs_path, png_path, log=log)
    log("")
    log(table_text)
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="tiny run (about 3 minutes)")
    group.add_argument("--full", action="store_true", help="longer run, bigger pools")
    parser.add_argument("--methods", default=None,
                        help="comma-separated: GRPO, DS, GRESO, DEPO, DEPO-<estimator> (e.g. DEPO-gbdt); default: "
                             f"{','.join(CORE_METHODS)} with --quick, else also every other registered estimator")
    parser.add_argument("--steps", type=int, default=None, help="override the size's optimizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machine)")
    parser.add_argument("--out", default=RESULTS, help="folder for the JSON and PNG")
    parser.add_argument("--docs", default=None,
                        help=f"markdown file whose e2e section is replaced (default {os.path.relpath(DOCS)}; "
                             "--quick touches it only when --docs is given)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the docs section")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="no training: redraw the table, PNG and docs section from a saved results JSON")
    args = parser.parse_args(argv)
    _offline()
    if args.render:
        with open(args.render) as f:
            payload = json.load(f)
        docs = None if args.no_docs else args.docs if args.docs is not None else DOCS
        print(render(payload, docs, os.path.splitext(args.render)[0] + ".png"))
        return payload
    from . import e2e_task

    size_name = "quick" if args.quick else "full" if args.full else "default"
    size = dict(SIZES[size_name])
    if args.steps is not None:
        size["steps"] = args.steps
    spec = e2e_task.TaskSpec(seed=args.seed)
    name = "e2e_quick" if args.quick else "e2e_full" if args.full else "e2e"
    command = "python -m benchmarks.e2e " + " ".join(argv if argv is not None else sys.argv[1:])
    docs = None if args.no_docs else args.docs if args.docs is not None else (None if args.quick else DOCS)
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else list(SIZE_METHODS[size_name]))
    return run_benchmark(size, spec, methods, args.out, name, command.strip(), docs, seed=args.seed,
                         threads=args.threads)


if __name__ == "__main__":
    main()
