"""Statistics, tables, plots and the docs section of the end-to-end benchmark (``benchmarks/e2e.py``).

Per regime, every method ran with several training seeds from the same warm-started checkpoint. All of it is read
from the per-run results (one dict per method x seed, with its held-out curve and ledger):

- Curves are smoothed by a trailing mean over ``SMOOTH`` evaluations before any threshold is read.
- Targets, from GRPO's seeds: ``grpo_final`` = the mean over GRPO's seeds of its smoothed accuracy at the last
  evaluation (the issue's "GRPO's final held-out accuracy"); ``grpo_90`` = GRPO's mean start accuracy plus 90% of
  its mean gain.
- Cost to a target, per seed: completions, generated tokens and training wall time (evaluation excluded; a DEPO
  method's embedding and estimator time included, since they run inside its training rounds) at the first
  evaluation whose smoothed accuracy reaches it; ``None`` when never reached within the run. GRPO's reference
  cost is the mean over its seeds, a seed that never reaches the mean counted at its whole run.
- Ratios vs GRPO (vs DS): per seed, the method's cost over GRPO's (DS's) mean cost, then mean and sample sd over
  seeds. A ratio target "x <= r beyond the spread" is met when every seed reached the target and mean + sd <= r.
- Accuracy at GRPO's budget: per seed, the smoothed accuracy at the last evaluation with at most GRPO's mean
  completion count. Two methods' means differ for real only when the gap exceeds the sum of their seed sds
  (their mean +/- sd bars do not overlap).
"""

from __future__ import annotations

import math
import os

import numpy as np

SMOOTH = 3  # trailing window (evaluations) for reading thresholds
# The issue's targets are checked for these (when present).
DEPO_TARGET_METHODS = ("DEPO", "DEPO-best", "DEPO-answer-K8", "DEPO-answer-K8-w2")


# ------------------------------------------------------------------------------------------------ curves
def smoothed(curve: list[dict], window: int = SMOOTH) -> list[float]:
    values = [point["accuracy"] for point in curve]
    return [float(np.mean(values[max(0, i - window + 1): i + 1])) for i in range(len(values))]


def first_reach(curve: list[dict], target: float) -> dict | None:
    """The first evaluation whose smoothed accuracy reaches ``target`` (None if never)."""
    for point, value in zip(curve, smoothed(curve)):
        if value >= target - 1e-12:
            return {k: point[k] for k in ("step", "completions", "tokens", "train_seconds")} | {"smoothed": value}
    return None


def accuracy_at(curve: list[dict], completions: float) -> float:
    """Smoothed accuracy at the last evaluation with at most ``completions`` generated."""
    values = smoothed(curve)
    best = values[0]
    for point, value in zip(curve, values):
        if point["completions"] <= completions + 1e-9:
            best = value
    return best


def mean_sd(values) -> dict:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return {"mean": None, "sd": None, "n": 0, "min": None, "max": None}
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values), "min": min(values), "max": max(values)}


# ------------------------------------------------------------------------------------------------ analysis
COSTS = ("completions", "tokens", "train_seconds")


def per_seed_summary(run: dict, targets: dict, grpo_budget: float) -> dict:
    ledger = run["ledger"]
    curve = run["curve"]
    return {
        "seed": run["seed"],
        "completions": ledger["completions"], "tokens": ledger["tokens"], "train_seconds": run["train_seconds"],
        "overhead_seconds": run["overhead_seconds"],
        "useful_share_generated": ledger["useful_groups"] / max(ledger["groups"], 1),
        "useful_share_trained": ledger["trained_useful"] / max(ledger["trained_groups"], 1),
        "start_accuracy": curve[0]["accuracy"],
        "final_accuracy": smoothed(curve)[-1],
        "final_greedy_accuracy": curve[-1].get("greedy_accuracy"),
        "accuracy_at_grpo_budget": accuracy_at(curve, grpo_budget),
        "reach": {name: first_reach(curve, t["value"]) for name, t in targets.items()},
    }


def analyse_regime(runs: list[dict]) -> dict:
    """Targets, per-seed summaries, aggregates and verdicts for one regime's runs (any order)."""
    methods: dict[str, list[dict]] = {}
    for run in runs:
        methods.setdefault(run["method"], []).append(run)
    for seeds in methods.values():
        seeds.sort(key=lambda r: r["seed"])
    if "GRPO" not in methods:
        return {"targets": {}, "methods": {}, "note": "GRPO was not run: no targets."}
    grpo = methods["GRPO"]
    start = float(np.mean([r["curve"][0]["accuracy"] for r in grpo]))
    final = float(np.mean([smoothed(r["curve"])[-1] for r in grpo]))
    targets = {
        "grpo_final": {"value": final, "how": f"mean over GRPO's seeds of its accuracy at the last evaluation "
                                              f"(trailing mean of {SMOOTH} evaluations)"},
        "grpo_90": {"value": start + 0.9 * (final - start), "how": "GRPO's start accuracy + 90% of its mean gain"},
    }
    grpo_budget = float(np.mean([r["ledger"]["completions"] for r in grpo]))
    out: dict = {"targets": targets, "start_accuracy": start, "grpo_budget": grpo_budget, "methods": {}}
    for label, seeds in methods.items():
        out["methods"][label] = {"seeds": [per_seed_summary(r, targets, grpo_budget) for r in seeds]}

    def reference(label: str, target: str) -> dict | None:
        """Mean cost over a method's seeds to reach ``target``; a seed that never does counts its whole run."""
        if label not in out["methods"]:
            return None
        ref = {}
        for cost in COSTS:
            values = [(s["reach"][target] or {}).get(cost, s[cost]) for s in out["methods"][label]["seeds"]]
            ref[cost] = float(np.mean(values))
        ref["all_reached"] = all(s["reach"][target] is not None for s in out["methods"][label]["seeds"])
        return ref

    refs = {base: {t: reference(base, t) for t in targets} for base in ("GRPO", "DS")}
    out["references"] = refs
    for label, entry in out["methods"].items():
        seeds = entry["seeds"]
        agg = {key: mean_sd(s[key] for s in seeds) for key in (
            "completions", "tokens", "train_seconds", "overhead_seconds", "useful_share_generated",
            "useful_share_trained", "final_accuracy", "accuracy_at_grpo_budget", "start_accuracy")}
        for target in targets:
            reached = [s["reach"][target] for s in seeds]
            agg[f"{target}_reached"] = sum(r is not None for r in reached)
            for cost in COSTS:
                agg[f"{target}_{cost}"] = mean_sd(r[cost] if r else None for r in reached)
                for base in ("GRPO", "DS"):
                    ref = refs[base][target]
                    ratios = [r[cost] / ref[cost] if (r and ref and ref[cost]) else None for r in reached]
                    agg[f"{target}_{cost}_vs_{base.lower()}"] = mean_sd(ratios)
        entry["aggregate"] = agg
    grpo_acc = out["methods"]["GRPO"]["aggregate"]["accuracy_at_grpo_budget"]
    for label, entry in out["methods"].items():
        acc = entry["aggregate"]["accuracy_at_grpo_budget"]
        delta = acc["mean"] - grpo_acc["mean"]
        spread = acc["sd"] + grpo_acc["sd"]
        enough = acc["n"] > 1 and grpo_acc["n"] > 1  # one seed has no spread: nothing can be called real
        entry["vs_grpo_at_budget"] = {"delta": delta, "spread": spread if enough else None,
                                      "real": enough and abs(delta) > spread}
    return out


def ratio_met(agg: dict, key: str, n_seeds: int, bound: float) -> bool:
    r = agg.get(key) or {}
    return r.get("n", 0) == n_seeds and r["mean"] is not None and r["mean"] + r["sd"] <= bound


def verdicts(regime: str, analysis: dict) -> dict:
    """The issue's targets for the DEPO methods of one regime."""
    out = {}
    for label in DEPO_TARGET_METHODS:
        entry = analysis.get("methods", {}).get(label)
        if entry is None:
            continue
        agg, n = entry["aggregate"], len(entry["seeds"])
        vs = entry["vs_grpo_at_budget"]
        if regime == "balanced":
            out[label] = {"final_accuracy_not_below_grpo_beyond_spread": vs["delta"] >= -(vs["spread"] or 0.0)}
        else:
            out[label] = {
                "half_of_grpo_completions": ratio_met(agg, "grpo_final_completions_vs_grpo", n, 0.5),
                "third_of_ds_completions": ratio_met(agg, "grpo_final_completions_vs_ds", n, 1 / 3),
                "accuracy_at_grpo_budget_not_below_grpo": vs["delta"] >= 0.0,
                "wall_time_0.6_of_grpo": ratio_met(agg, "grpo_final_train_seconds_vs_grpo", n, 0.6),
            }
    return out


# ------------------------------------------------------------------------------------------------ text
def _ms(x: dict | None, fmt: str = ".3f", none: str = "-") -> str:
    if not x or x.get("mean") is None:
        return none
    if x["n"] == 1:
        return format(x["mean"], fmt)
    return f"{format(x['mean'], fmt)} ± {format(x['sd'], fmt)}"


def _reach_cell(agg: dict, target: str, cost: str, n: int, fmt: str) -> str:
    reached = agg[f"{target}_reached"]
    if reached == 0:
        return "never"
    text = _ms(agg[f"{target}_{cost}"], fmt)
    ratio = agg[f"{target}_{cost}_vs_grpo"]
    if ratio["mean"] is not None:
        text += f" (x{_ms(ratio, '.2f')})"
    if reached < n:
        text += f" [{reached}/{n} seeds]"
    return text


def regime_table(analysis: dict) -> str:
    header = ("| method | seeds | completions | useful share generated / trained | final acc | acc at GRPO's budget "
              "| to grpo_final: completions (x GRPO) | tokens (x GRPO) | wall s (x GRPO) "
              "| to grpo_90: completions (x GRPO) | method overhead s |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for label, entry in analysis.get("methods", {}).items():
        agg, n = entry["aggregate"], len(entry["seeds"])
        vs = entry["vs_grpo_at_budget"]
        mark = "" if label == "GRPO" else (" (real)" if vs["real"] else "")
        lines.append(
            f"| {label} | {n} | {_ms(agg['completions'], ',.0f')} "
            f"| {_ms(agg['useful_share_generated'], '.2f')} / {_ms(agg['useful_share_trained'], '.2f')} "
            f"| {_ms(agg['final_accuracy'])} | {_ms(agg['accuracy_at_grpo_budget'])}{mark} "
            f"| {_reach_cell(agg, 'grpo_final', 'completions', n, ',.0f')} "
            f"| {_reach_cell(agg, 'grpo_final', 'tokens', n, ',.0f')} "
            f"| {_reach_cell(agg, 'grpo_final', 'train_seconds', n, '.1f')} "
            f"| {_reach_cell(agg, 'grpo_90', 'completions', n, ',.0f')} | {_ms(agg['overhead_seconds'], '.1f')} |"
        )
    return "\n".join(lines)


def verdict_lines(regime: str, analysis: dict) -> list[str]:
    lines = []
    targets = analysis.get("targets", {})
    if targets:
        lines.append(
            "Targets: " + "; ".join(f"{k} = {v['value']:.3f} ({v['how']})" for k, v in targets.items())
            + f"; mean held-out accuracy before training {analysis['start_accuracy']:.3f}."
        )
    methods = analysis.get("methods", {})
    for label, checks in verdicts(regime, analysis).items():
        agg = methods[label]["aggregate"]
        parts = []
        for base in ("grpo", "ds"):
            r = agg[f"grpo_final_completions_vs_{base}"]
            if r["mean"] is not None:
                parts.append(f"completions x{_ms(r, '.2f')} of {base.upper()}'s")
        r = agg["grpo_final_train_seconds_vs_grpo"]
        if r["mean"] is not None:
            parts.append(f"wall time x{_ms(r, '.2f')} of GRPO's")
        reached = agg["grpo_final_reached"]
        n = len(methods[label]["seeds"])
        head = f"{label}, to grpo_final ({reached}/{n} seeds reached it)" + (": " + ", ".join(parts) if parts else "")
        vs = methods[label]["vs_grpo_at_budget"]
        lines.append(
            f"{head}; accuracy at GRPO's budget {vs['delta']:+.3f} vs GRPO ("
            + ("one seed: no spread" if vs["spread"] is None else
               f"spread {vs['spread']:.3f}: {'real' if vs['real'] else 'within the spread'}")
            + "). Issue targets: "
            + ", ".join(f"{k} {'MET' if ok else 'NOT MET'}" for k, ok in checks.items()) + "."
        )
    return lines


# ------------------------------------------------------------------------------------------------ plot
def _grid_curves(runs: list[dict], n_points: int = 60):
    """Each seed's smoothed accuracy interpolated on a common completions grid (up to the shortest run)."""
    top = min(r["curve"][-1]["completions"] for r in runs)
    grid = np.linspace(0, top, n_points)
    ys = np.array([np.interp(grid, [p["completions"] for p in r["curve"]], smoothed(r["curve"])) for r in runs])
    return grid, ys


def _rolling(values, window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.array([values[max(0, i - window + 1): i + 1].mean() for i in range(len(values))])


def plot_regime(regime: str, runs: list[dict], analysis: dict, path: str, title: str) -> bool:
    """Held-out accuracy vs completions (mean over seeds, band = min..max over seeds) and useful share per step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return False
    by: dict[str, list[dict]] = {}
    for run in runs:
        by.setdefault(run["method"], []).append(run)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for label, seeds in by.items():
        grid, ys = _grid_curves(seeds)
        line, = ax.plot(grid, ys.mean(axis=0), label=f"{label} ({len(seeds)} seeds)")
        if len(seeds) > 1:
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15, linewidth=0)
        shares = np.array([r["ledger"]["round_useful_share"] for r in seeds], dtype=float)
        ax2.plot(np.arange(1, shares.shape[1] + 1), _rolling(shares.mean(axis=0), 5), color=line.get_color(),
                 label=label)
    for name, t in analysis.get("targets", {}).items():
        ax.axhline(t["value"], color="grey", linestyle="--" if name == "grpo_final" else ":", linewidth=1)
        ax.text(ax.get_xlim()[1], t["value"], f" {name}", va="center", fontsize=7, color="grey")
    ax.set_xlabel("completions generated (training)")
    ax.set_ylabel(f"held-out accuracy (T=1, trailing mean of {SMOOTH} evals)")
    ax.set_title(title + "\nline: mean over seeds; band: min..max over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("useful share of generated groups (5-step mean)")
    ax2.set_ylim(0, 1.02)
    ax2.set_title(f"{regime}: 0 < passes < G among groups generated (mean over seeds)", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------ docs
def labels_note(meta: dict) -> str:
    """`` Labels: ...`` when a results file's runs were relabelled after they ran (``meta["relabelled"]``), else ``""``."""
    return f" Labels: {meta['relabelled']}" if meta.get("relabelled") else ""


def update_docs_section(body: str, path: str, section: str) -> None:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->`` (appended when absent)."""
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
