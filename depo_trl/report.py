"""``depo-trl report <output_dir>``: a DEPO run's logged history as a short text summary and five PNG plots.

It reads ``trainer_state.json`` (in ``output_dir``, else in its latest ``checkpoint-N``), whose ``log_history`` holds
DEPO's per-round metrics (``depo/*`` keys, averaged over each logging window), and ``depo_state.json`` beside it
when present (exact run totals). It writes, into ``<output_dir>/depo_report/``:

- ``summary.txt``: what was scored, rolled out and skipped; useful-group share against uniform sampling;
  completions saved; calibration.
- ``calibration.png``: predicted vs observed pass rate of the rolled-out prompts over training, and one against
  the other.
- ``band_share.png``: share of rolled-out prompts predicted in the band, share of candidates skipped, share explored.
- ``rollouts_saved.png``: cumulative candidates scored vs prompts rolled out, and completions generated vs what
  uniform sampling would have needed for the same number of useful groups.
- ``useful_share.png``: share of rolled-out groups that teach something (0 < passes < G) against uniform.
- ``reward.png``: mean reward of the training batches per logged window and, when the run evaluated, the held-out
  reward (``eval_reward``; the accuracy when the reward is 0/1) at each evaluation. The summary states both at the
  start and the end of the run: is the policy learning?

The uniform reference is the useful-group share of GRPO's own uniform batch. With reference steps
(``depo_reference_every``: every N-th step after warm-up rolls out GRPO's batch on the current policy) it is their
mean share (``depo/reference_useful_group_share``, weighted by reference rounds per window), measured through the
same run the saving counts. Without them it is the share observed during the warm-up rounds, when DEPO does not
filter; the policy changes after warm-up, so that is a reference, not a counterfactual, and the summary says so.
Plots use matplotlib's object API (no pyplot), so no display is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .state import folder_holding

REPORT_DIR = "depo_report"
PLOTS = ("calibration.png", "band_share.png", "rollouts_saved.png", "useful_share.png", "reward.png")
TRAINER_STATE = "trainer_state.json"
DEPO_STATE = "depo_state.json"
DECISIONS = "depo_decisions.jsonl"  # DEPOTrainer's per-prompt audit log (depo_audit_log)


@dataclass
class RunHistory:
    """The DEPO part of a run's log history."""

    source: str  # the trainer_state.json that was read
    logs: list[dict]  # training log entries that carry depo/* metrics, in step order
    global_step: int
    stats: dict | None = None  # exact totals (DEPOTrainer.depo_stats) from depo_state.json, when found
    eval_logs: list[dict] = field(default_factory=list)  # evaluation entries (eval_reward), in step order
    rounds_per_step: float = 1.0  # generation rounds per optimizer step
    notes: list[str] = field(default_factory=list)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one metric over the logged windows that have it."""
        points = [(e["step"], e[key]) for e in self.logs if isinstance(e.get(key), (int, float))]
        if not points:
            return np.array([]), np.array([])
        steps, values = zip(*points)
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def find_trainer_state(output_dir: str) -> str:
    """``output_dir/trainer_state.json``, else the one in the highest-numbered ``checkpoint-N``."""
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"{output_dir!r} is not a folder. Pass a run's output_dir.")
    found = folder_holding(output_dir, TRAINER_STATE)
    if found is None:
        raise FileNotFoundError(
            f"No {TRAINER_STATE} in {output_dir!r} or its checkpoint-* folders. The depo_trl training script saves "
            "one at the end; from Python, call trainer.save_state() after trainer.train()."
        )
    return os.path.join(found, TRAINER_STATE)


def load_run(output_dir: str) -> RunHistory:
    """Read the run's ``trainer_state.json`` and, if present, DEPO's saved totals."""
    path = find_trainer_state(output_dir)
    with open(path) as f:
        state = json.load(f)
    logs = [e for e in state.get("log_history", []) if "depo/candidates_scored" in e and "step" in e]
    if not logs:
        raise ValueError(
            f"{path} has no DEPO metrics (depo/* keys) in its log_history. Was the run trained with DEPOTrainer, "
            "with logging_steps smaller than max_steps?"
        )
    logs.sort(key=lambda e: e["step"])
    run = RunHistory(source=path, logs=logs, global_step=int(state.get("global_step") or logs[-1]["step"]))
    run.eval_logs = sorted((e for e in state.get("log_history", []) if "eval_reward" in e and "step" in e),
                           key=lambda e: e["step"])
    for folder in (output_dir, os.path.dirname(path)):
        depo_state = os.path.join(folder, DEPO_STATE)
        if os.path.isfile(depo_state):
            with open(depo_state) as f:
                run.stats = json.load(f).get("stats")
            break
    if run.stats and run.stats.get("rounds") and run.global_step:
        run.rounds_per_step = run.stats["rounds"] / run.global_step
    else:
        run.notes.append("No depo_state.json found: assumed one generation round per optimizer step.")
    decisions = os.path.join(output_dir, DECISIONS)
    if os.path.isfile(decisions):
        run.notes.append(f"Every decision (prompt, prediction, rolled out or skipped and why): {decisions}")
    return run


# ------------------------------------------------------------------------------------------------ numbers


def _window_rounds(run: RunHistory) -> np.ndarray:
    """Generation rounds in each logged window (the per-round metrics are means over them)."""
    steps = np.asarray([e["step"] for e in run.logs], dtype=float)
    return np.diff(np.concatenate([[0.0], steps])) * run.rounds_per_step


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    ok = np.isfinite(values) & (weights > 0)
    return float(np.average(values[ok], weights=weights[ok])) if ok.any() else float("nan")


def _column(run: RunHistory, key: str) -> np.ndarray:
    return np.asarray([e.get(key, np.nan) for e in run.logs], dtype=float)


def uniform_reference(run: RunHistory) -> tuple[float, int]:
    """Useful-group share in the logged windows made only of warm-up (unfiltered) rounds, and their count."""
    warm = _column(run, "depo/warmup") >= 0.999
    useful = _column(run, "depo/useful_group_share")
    rounds = _window_rounds(run)
    if not warm.any():
        return float("nan"), 0
    return _weighted_mean(useful[warm], rounds[warm]), int(warm.sum())


def reference_steps(run: RunHistory) -> tuple[float, float, float]:
    """The reference steps' uniform useful share (mean of ``depo/reference_useful_group_share``, each window weighted
    by its reference rounds), how many reference steps it rests on, and how many rolled-out groups (NaN, 0, 0 when
    the run logged none)."""
    share = _column(run, "depo/reference_useful_group_share")
    steps = np.asarray([e["step"] for e in run.logs], dtype=float)
    n_steps = np.diff(np.concatenate([[0.0], steps])) * np.nan_to_num(_column(run, "depo/reference"), nan=1.0)
    ok = np.isfinite(share) & (n_steps > 0)
    if not ok.any():
        return float("nan"), 0.0, 0.0
    groups = n_steps[ok] * run.rounds_per_step * np.nan_to_num(_column(run, "depo/prompts_rolled_out")[ok])
    return float(np.average(share[ok], weights=n_steps[ok])), float(n_steps[ok].sum()), float(groups.sum())


def cumulative(run: RunHistory) -> dict[str, np.ndarray]:
    """Cumulative candidates scored, prompts rolled out and useful groups at each logged step (estimated from the
    per-round means; exact totals are in ``run.stats``)."""
    rounds = _window_rounds(run)
    rolled = np.nan_to_num(_column(run, "depo/prompts_rolled_out")) * rounds
    useful_share = np.nan_to_num(_column(run, "depo/useful_group_share"))
    return {
        "step": np.asarray([e["step"] for e in run.logs], dtype=float),
        "candidates": np.cumsum(np.nan_to_num(_column(run, "depo/candidates_scored")) * rounds),
        "rolled_out": np.cumsum(rolled),
        "useful": np.cumsum(rolled * useful_share),
    }


def compute_summary(run: RunHistory) -> dict:
    """The numbers the text summary and plots report."""
    rounds = _window_rounds(run)
    warm = _column(run, "depo/warmup") >= 0.999
    filtered = _column(run, "depo/warmup") <= 0.001
    selecting = filtered & ~(_column(run, "depo/reference") >= 0.999)  # reference steps roll out GRPO's batch
    cum = cumulative(run)
    s = run.stats or {}
    candidates = s.get("candidates_scored", cum["candidates"][-1])
    rolled_out = s.get("prompts_rolled_out", cum["rolled_out"][-1])
    useful = s.get("useful_groups", cum["useful"][-1])
    labelled = s.get("labelled_groups", rolled_out)
    group = s["completions_generated"] / s["prompts_rolled_out"] if s.get("prompts_rolled_out") else None
    reference, n_reference = uniform_reference(run)
    source = "warm-up"
    ref_share, ref_steps, ref_groups = reference_steps(run)
    if ref_steps > 0:
        reference, source = ref_share, "reference steps"
    uniform_prompts = useful / reference if reference > 0 else float("nan")
    predicted, observed = _column(run, "depo/predicted_pass_rate"), _column(run, "depo/observed_pass_rate")
    both = filtered & np.isfinite(predicted) & np.isfinite(observed)
    return {
        "source": run.source,
        "exact_totals": run.stats is not None,
        "global_step": run.global_step,
        "windows": len(run.logs),
        "rounds": s.get("rounds", float(rounds.sum())),
        "candidates_scored": candidates,
        "prompts_rolled_out": rolled_out,
        "prompts_skipped": candidates - rolled_out,
        "skipped_by_reason": s.get("skipped_by_reason", {}),
        "group_size": group,
        "completions_generated": s.get("completions_generated"),
        "useful_groups": useful,
        "labelled_groups": labelled,
        "useful_share": useful / labelled if labelled else float("nan"),
        "useful_share_after_warmup": _weighted_mean(_column(run, "depo/useful_group_share")[selecting],
                                                    rounds[selecting]),
        "uniform_reference": reference,
        "uniform_reference_source": source,
        "uniform_reference_windows": n_reference,  # logged warm-up windows
        "reference_steps": ref_steps,
        "reference_groups": ref_groups,
        "uniform_prompts_for_same_useful": uniform_prompts,
        "predicted_after_warmup": _weighted_mean(predicted[both], rounds[both]),
        "observed_after_warmup": _weighted_mean(observed[both], rounds[both]),
        "mean_abs_calibration_error": _weighted_mean(np.abs(predicted - observed)[both], rounds[both]),
        "brier_after_warmup": _weighted_mean(_column(run, "depo/brier")[both], rounds[both]),
        **_learning(run),
        "notes": list(run.notes),
    }


def _learning(run: RunHistory) -> dict:
    """Mean training reward over the first and last few logged windows, and the held-out reward at each eval."""
    steps, reward = run.series("reward")
    k = max(1, min(5, len(reward) // 4))
    return {
        "reward_windows": k,
        "reward_first": float(reward[:k].mean()) if len(reward) else float("nan"),
        "reward_last": float(reward[-k:].mean()) if len(reward) else float("nan"),
        "reward_first_steps": (int(steps[0]), int(steps[k - 1])) if len(reward) else None,
        "reward_last_steps": (int(steps[-k]), int(steps[-1])) if len(reward) else None,
        "eval_rewards": [(int(e["step"]), float(e["eval_reward"])) for e in run.eval_logs],
    }


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.1%}"


def format_summary(summary: dict) -> str:
    """The summary as a few lines of text."""
    s = summary
    totals = "exact totals from depo_state.json" if s["exact_totals"] else "totals estimated from logged means"
    lines = [
        f"DEPO report: {s['source']} ({s['global_step']} steps, {s['windows']} logged windows; {totals})",
        f"Candidates scored: {s['candidates_scored']:.0f}; rolled out: {s['prompts_rolled_out']:.0f}; skipped: "
        f"{s['prompts_skipped']:.0f} ({_pct(s['prompts_skipped'] / max(s['candidates_scored'], 1))}) "
        f"over {s['rounds']:.0f} generation rounds.",
    ]
    if s["skipped_by_reason"]:
        r = s["skipped_by_reason"]
        lines.append(
            f"  skipped as predicted too easy: {r.get('too_easy', 0)}, too hard: {r.get('too_hard', 0)}, "
            f"in band but not needed: {r.get('in_band_not_needed', 0)}"
        )
    lines.append(
        f"Useful groups (0 < passes < G): {s['useful_groups']:.0f}/{s['labelled_groups']:.0f} = "
        f"{_pct(s['useful_share'])} overall, {_pct(s['useful_share_after_warmup'])} after warm-up"
        + (" (reference steps aside)." if s.get("reference_steps") else ".")
    )
    by_reference_steps = s.get("uniform_reference_source") == "reference steps"
    if by_reference_steps or s["uniform_reference_windows"]:
        if by_reference_steps:
            lines.append(
                f"Uniform reference: {_pct(s['uniform_reference'])} useful, measured at {s['reference_steps']:.0f} "
                f"reference steps (~{s['reference_groups']:.0f} groups: GRPO's own uniform batch, rolled out every "
                "depo_reference_every-th step after warm-up on the current policy, through the run the saving counts)."
            )
        else:
            lines.append(
                f"Uniform reference: {_pct(s['uniform_reference'])} useful, observed in the "
                f"{s['uniform_reference_windows']} logged warm-up windows (DEPO does not filter during warm-up, so "
                "those batches are GRPO's uniform draw; the policy changes later, so this is a reference, not a "
                "counterfactual)."
            )
        prompts = s["uniform_prompts_for_same_useful"]
        if np.isfinite(prompts):
            if s["group_size"]:
                uniform = prompts * s["group_size"]
                made = s["completions_generated"]
                lines.append(
                    f"Completions: {made:.0f} generated; uniform sampling would need ~{uniform:.0f} for the same "
                    f"{s['useful_groups']:.0f} useful groups: ~{uniform - made:.0f} saved ({_pct(1 - made / uniform)})."
                )
            else:
                lines.append(
                    f"Prompt groups: {s['prompts_rolled_out']:.0f} rolled out; uniform sampling would need "
                    f"~{prompts:.0f} for the same useful groups."
                )
    else:
        lines.append(
            "Uniform reference: none (no logged window made only of warm-up rounds, and no reference step). Use "
            "depo_reference_every (e.g. 5) for one measured on the current policy, or depo_warmup_steps > 0 and "
            "logging_steps <= depo_warmup_steps."
        )
    if np.isfinite(s["observed_after_warmup"]):
        lines.append(
            f"Calibration after warm-up: mean predicted pass rate {s['predicted_after_warmup']:.3f} vs observed "
            f"{s['observed_after_warmup']:.3f}; mean |predicted - observed| per window "
            f"{s['mean_abs_calibration_error']:.3f}; Brier {s['brier_after_warmup']:.3f}."
        )
    if np.isfinite(s.get("reward_first", float("nan"))):
        (a, b), (c, d) = s["reward_first_steps"], s["reward_last_steps"]
        lines.append(
            f"Mean reward of the training batches: {s['reward_first']:.3f} (steps {a}-{b}) -> {s['reward_last']:.3f} "
            f"(steps {c}-{d}); DEPO picks the batches, so this mixes learning with selection."
        )
    if s.get("eval_rewards"):
        points = ", ".join(f"step {step}: {value:.3f}" for step, value in s["eval_rewards"])
        lines.append(f"Held-out reward (eval_reward, unfiltered; the accuracy for a 0/1 reward): {points}.")
    lines += [f"Note: {note}" for note in s["notes"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plots


def _figure(n_axes: int = 1, width: float = 6.4):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("The report's plots need matplotlib: pip install matplotlib (or 'depo_trl[plots]').") from exc

    fig = Figure(figsize=(width, 4.0), layout="constrained")
    axes = fig.subplots(1, n_axes)
    return fig, np.atleast_1d(axes)


def _shade_warmup(ax, run: RunHistory) -> None:
    steps, warm = run.series("depo/warmup")
    warm_steps = steps[warm > 0]
    if len(warm_steps):
        ax.axvspan(0, warm_steps.max(), color="0.9", label="warm-up (no filtering)")


def plot_calibration(run: RunHistory, path: str) -> None:
    fig, (ax, ax2) = _figure(2, width=10)
    _shade_warmup(ax, run)
    for key, label in (("depo/predicted_pass_rate", "predicted"), ("depo/observed_pass_rate", "observed")):
        steps, values = run.series(key)
        ax.plot(steps, values, marker=".", label=label)
    ax.set(xlabel="step", ylabel="mean pass rate of rolled-out prompts", ylim=(0, 1), title="Pass rate over training")
    ax.legend()
    pred = {e["step"]: e["depo/predicted_pass_rate"] for e in run.logs if "depo/predicted_pass_rate" in e}
    obs = {e["step"]: e["depo/observed_pass_rate"] for e in run.logs if "depo/observed_pass_rate" in e}
    common = sorted(set(pred) & set(obs))
    if common:
        points = ax2.scatter([pred[s] for s in common], [obs[s] for s in common], c=common, cmap="viridis")
        fig.colorbar(points, ax=ax2, label="step")
    ax2.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="perfect calibration")
    ax2.set(xlabel="predicted", ylabel="observed", xlim=(0, 1), ylim=(0, 1), title="Calibration (per logged window)")
    ax2.legend(loc="upper left")
    fig.savefig(path, dpi=110)


def plot_band_share(run: RunHistory, path: str) -> None:
    fig, (ax,) = _figure()
    _shade_warmup(ax, run)
    for key, label in (
        ("depo/in_band_share", "rolled out: predicted in band"),
        ("depo/skipped_share", "candidates skipped"),
        ("depo/explored_share", "rolled out: exploration outside band"),
    ):
        steps, values = run.series(key)
        ax.plot(steps, values, marker=".", label=label)
    ax.set(xlabel="step", ylabel="share", ylim=(0, 1.05), title="Band share and prompts skipped")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def plot_rollouts_saved(run: RunHistory, summary: dict, path: str) -> None:
    fig, (ax, ax2) = _figure(2, width=10)
    cum = cumulative(run)
    ax.plot(cum["step"], cum["candidates"], label="candidates scored")
    ax.plot(cum["step"], cum["rolled_out"], label="prompts rolled out")
    ax.fill_between(cum["step"], cum["rolled_out"], cum["candidates"], alpha=0.2, label="skipped")
    ax.set(xlabel="step", ylabel="prompts (cumulative)", title="Candidates scored vs rolled out")
    ax.legend()
    group = summary["group_size"] or 1
    unit = "completions" if summary["group_size"] else "prompt groups"
    ax2.plot(cum["step"], cum["rolled_out"] * group, label=f"{unit} generated (DEPO)")
    reference = summary["uniform_reference"]
    where = "at reference steps" if summary.get("uniform_reference_source") == "reference steps" else "in warm-up"
    if np.isfinite(reference) and reference > 0:
        ax2.plot(
            cum["step"],
            cum["useful"] / reference * group,
            linestyle="--",
            label=f"uniform, same useful groups (ref. {reference:.0%} useful {where})",
        )
    ax2.set(xlabel="step", ylabel=f"{unit} (cumulative)", title=f"{unit.capitalize()}: DEPO vs uniform")
    ax2.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def plot_useful_share(run: RunHistory, summary: dict, path: str) -> None:
    fig, (ax,) = _figure()
    _shade_warmup(ax, run)
    steps, values = run.series("depo/useful_group_share")
    ax.plot(steps, values, marker=".", label="DEPO: useful groups / rolled out")
    if np.isfinite(summary["uniform_reference"]):
        where = "reference steps" if summary.get("uniform_reference_source") == "reference steps" else "warm-up rounds"
        ax.axhline(summary["uniform_reference"], color="C3", linestyle="--", label=f"uniform ({where})")
    ax.set(xlabel="step", ylabel="share of groups with 0 < passes < G", ylim=(0, 1.05), title="Useful-group share")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def plot_reward(run: RunHistory, path: str) -> None:
    fig, (ax,) = _figure()
    _shade_warmup(ax, run)
    steps, values = run.series("reward")
    ax.plot(steps, values, marker=".", alpha=0.5, label="training batches (picked by DEPO)")
    if len(values) >= 5:
        smooth = np.convolve(values, np.ones(5) / 5, mode="valid")
        ax.plot(steps[4:], smooth, color="C0", label="training, mean of 5 windows")
    if run.eval_logs:
        ax.plot([e["step"] for e in run.eval_logs], [e["eval_reward"] for e in run.eval_logs], marker="o", color="C3",
                label="held-out (eval_reward)")
    ax.set(xlabel="step", ylabel="mean reward", title="Reward over training")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------------ entry point


def write_report(output_dir: str, report_dir: str | None = None) -> dict[str, str]:
    """Write ``summary.txt`` and the PNGs; returns ``{"summary": path, "<plot>.png": path, "text": summary}``."""
    run = load_run(output_dir)
    report_dir = report_dir or os.path.join(output_dir, REPORT_DIR)
    os.makedirs(report_dir, exist_ok=True)
    summary = compute_summary(run)
    text = format_summary(summary)
    summary_path = os.path.join(report_dir, "summary.txt")
    with open(summary_path, "w") as f:  # first, so a missing matplotlib still leaves the summary
        f.write(text + "\n")
    paths = {name: os.path.join(report_dir, name) for name in PLOTS}
    plot_calibration(run, paths["calibration.png"])
    plot_band_share(run, paths["band_share.png"])
    plot_rollouts_saved(run, summary, paths["rollouts_saved.png"])
    plot_useful_share(run, summary, paths["useful_share.png"])
    plot_reward(run, paths["reward.png"])
    paths["summary"] = summary_path
    paths["text"] = text
    return paths


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="depo-trl report", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("output_dir", help="the run's output_dir (holds trainer_state.json or checkpoint-*)")
    parser.add_argument("--out", default=None, help=f"where to write (default: <output_dir>/{REPORT_DIR})")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        paths = write_report(args.output_dir, args.out)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"depo-trl report: error: {exc}", file=sys.stderr)
        return 2
    print(paths.pop("text"))
    print(f"Wrote {paths.pop('summary')} and {', '.join(os.path.basename(p) for p in paths.values())} "
          f"in {os.path.dirname(paths['calibration.png'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(make_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
