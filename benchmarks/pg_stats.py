"""Statistics of the proving ground: one censoring rule for every method, interpolated crossings, the area under
accuracy-vs-completions, and bootstrap confidence intervals over seeds that carry GRPO's reference uncertainty.

A run's curve is a list of ``(completions, accuracy)`` points (held-out accuracy after that many training
completions). Definitions (the same for every method, GRPO included):

- **smoothed accuracy**: trailing mean over ``SMOOTH`` evaluations (one evaluation is noisy);
- **crossing**: the completions at which the smoothed curve first reaches a target, linearly interpolated between
  the two evaluations around it; a run that never reaches it is **censored**: it counts its whole run (a lower bound
  of its true cost), whatever the method;
- **target**: GRPO's final smoothed accuracy, averaged over the (resampled) seeds;
- **ratio**: a method's mean crossing over the seeds divided by GRPO's mean crossing over the same seeds;
- **area**: the mean accuracy over completions ``[0, budget]`` (trapezoids of the raw curve, the last value held
  past a curve's end), which needs no target and no censoring;
- **bootstrap**: seeds are resampled with replacement (paired: one seed is one pool, held-out set and warm start,
  shared by every method), and the target, GRPO's reference cost and every method's cost are recomputed in each
  resample, so GRPO's own uncertainty is in every interval.
"""

from __future__ import annotations

import numpy as np

SMOOTH = 3
BOOTSTRAP = 2000


def smoothed(acc, window: int = SMOOTH) -> np.ndarray:
    acc = np.asarray(acc, dtype=float)
    return np.array([acc[max(0, i - window + 1): i + 1].mean() for i in range(len(acc))])


def crossing(completions, acc, target: float, window: int = SMOOTH) -> tuple[float, bool]:
    """``(completions at which the smoothed curve first reaches target, censored)``; censored runs count their
    whole run."""
    x, y = np.asarray(completions, dtype=float), smoothed(acc, window)
    for i in range(len(y)):
        if y[i] >= target - 1e-12:
            if i == 0:
                return float(x[0]), False
            x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
            return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0)), False
    return float(x[-1]), True


def area(completions, acc, budget: float) -> float:
    """Mean accuracy over completions [0, budget] (trapezoids; the last value held beyond the curve's end)."""
    x, y = np.asarray(completions, dtype=float), np.asarray(acc, dtype=float)
    if budget <= x[0]:
        return float(y[0])
    if x[-1] < budget:
        x, y = np.append(x, budget), np.append(y, y[-1])
    grid_y = np.interp(budget, x, y)
    keep = x < budget
    xs, ys = np.append(x[keep], budget), np.append(y[keep], grid_y)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / (budget - xs[0]))


def accuracy_at(completions, acc, budget: float) -> float:
    """Smoothed accuracy interpolated at ``budget`` completions (the last value beyond the curve's end)."""
    return float(np.interp(budget, np.asarray(completions, float), smoothed(acc)))


def _stats(runs: dict[str, list[dict]], seeds: np.ndarray, cost: str = "completions") -> dict:
    """Every statistic for one (re)sample of seed positions. ``runs[method][k]`` is seed position k's run:
    ``{"x": completions per evaluation, "acc": accuracies, "cost": {cost name: cost per evaluation}}``."""
    grpo = [runs["GRPO"][k] for k in seeds]
    target = float(np.mean([smoothed(r["acc"])[-1] for r in grpo]))
    budget = float(np.mean([r["x"][-1] for r in grpo]))

    def mean_cost(method: str) -> tuple[float, int]:
        values, censored = [], 0
        for k in seeds:
            r = runs[method][k]
            x_cross, cens = crossing(r["x"], r["acc"], target)
            # the crossing in completions, then read off the run's own cost axis at that point
            values.append(float(np.interp(x_cross, r["x"], r["cost"][cost])))
            censored += cens
        return float(np.mean(values)), censored

    ref, _ = mean_cost("GRPO")
    out = {"target": target, "budget": budget, "methods": {}}
    for method in runs:
        mean, censored = mean_cost(method)
        out["methods"][method] = {
            "cost": mean, "ratio": mean / ref if ref > 0 else float("nan"), "censored": censored,
            "area": float(np.mean([area(runs[method][k]["x"], runs[method][k]["acc"], budget) for k in seeds])),
            "acc_at_budget": float(np.mean([accuracy_at(runs[method][k]["x"], runs[method][k]["acc"], budget)
                                            for k in seeds])),
        }
    for m in out["methods"].values():
        m["area_minus_grpo"] = m["area"] - out["methods"]["GRPO"]["area"]
        m["acc_at_budget_minus_grpo"] = m["acc_at_budget"] - out["methods"]["GRPO"]["acc_at_budget"]
    return out


def compare(runs: dict[str, list[dict]], cost: str = "completions", n_boot: int = BOOTSTRAP, seed: int = 0,
            reference: str = "DS", oracle: str = "ORACLE") -> dict:
    """Point estimates and 95% bootstrap intervals of every method's ratio to GRPO (and to ``reference``), its share
    of the ``oracle``'s saving, its area and accuracy at GRPO's budget minus GRPO's."""
    n = len(runs["GRPO"])
    if any(len(v) != n for v in runs.values()):
        raise ValueError("Every method needs the same seeds (paired bootstrap).")
    point = _stats(runs, np.arange(n), cost)
    rng = np.random.default_rng(seed)
    boots = [_stats(runs, rng.integers(0, n, n), cost) for _ in range(n_boot)] if n > 1 else []

    def derived(stats: dict, method: str) -> dict:
        m = stats["methods"]
        d = {"ratio": m[method]["ratio"], "area_minus_grpo": m[method]["area_minus_grpo"],
             "acc_at_budget_minus_grpo": m[method]["acc_at_budget_minus_grpo"]}
        if reference in m and m[reference]["cost"] > 0:
            d[f"ratio_vs_{reference.lower()}"] = m[method]["cost"] / m[reference]["cost"]
        if oracle in m and 1 - m[oracle]["ratio"] > 1e-9:
            d["oracle_share"] = (1 - m[method]["ratio"]) / (1 - m[oracle]["ratio"])
        return d

    out = {"target": point["target"], "budget": point["budget"], "n_seeds": n, "n_boot": len(boots), "cost": cost,
           "methods": {}}
    for method in runs:
        est = derived(point, method)
        entry = {"cost": point["methods"][method]["cost"], "censored": point["methods"][method]["censored"],
                 "area": point["methods"][method]["area"], "acc_at_budget": point["methods"][method]["acc_at_budget"]}
        for key, value in est.items():
            samples = np.array([derived(b, method).get(key, np.nan) for b in boots], dtype=float)
            samples = samples[np.isfinite(samples)]
            lo, hi = (np.percentile(samples, [2.5, 97.5]) if len(samples) else (np.nan, np.nan))
            entry[key] = {"value": float(value), "low": float(lo), "high": float(hi)}
        out["methods"][method] = entry
    return out


def share_of_gain(values: dict[str, list[float]], base: str = "GRPO", ceiling: str = "ORACLE",
                  n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Per method: ``(v_m - v_base) / (v_ceiling - v_base)`` of a per-seed measure (e.g. the useful share of the
    groups generated), means over paired seeds, with a 95% bootstrap interval over seeds."""
    n = len(values[base])

    def point(idx):
        mean = {m: float(np.mean(np.asarray(v, float)[idx])) for m, v in values.items()}
        gap = mean[ceiling] - mean[base]
        return {m: ((mean[m] - mean[base]) / gap if abs(gap) > 1e-12 else float("nan")) for m in values}, mean

    shares, means = point(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = [point(rng.integers(0, n, n))[0] for _ in range(n_boot)] if n > 1 else []
    out = {}
    for m in values:
        samples = np.array([b[m] for b in boots], float)
        samples = samples[np.isfinite(samples)]
        lo, hi = np.percentile(samples, [2.5, 97.5]) if len(samples) else (np.nan, np.nan)
        out[m] = {"mean": means[m], "share": {"value": shares[m], "low": float(lo), "high": float(hi)}}
    return out
