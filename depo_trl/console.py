"""A console people can read: the progress bar, one compact DEPO line every few steps, a summary table at the end.

Transformers' default progress callback writes every logged dict in full: with GRPO and DEPO that is ~50 numbers
per step. ``DEPOConsole`` replaces it for the console only; every metric still reaches ``report_to`` and
``trainer_state.json`` (the ``depo-trl report`` input), because those are fed by the trainer's own ``log()``, not by
this callback. Every ``every`` optimizer steps it writes one line over the logged windows since the last line::

    [DEPO] step 10/40 | reward 0.41 | rolled out 4/16 | useful 75% | pass rate pred 0.47 obs 0.41 | \
        completions 320, saved ~96 vs warm-up's 60% useful | 12.3 s/step

- *rolled out / scored*: prompts rolled out / candidate prompts scored per generation round, over the line's
  filtering rounds only (over its warm-up rounds when it has no filtering round: then both are GRPO's batch;
  logged windows made only of reference steps are left out when the line has others);
- *useful*: share of rolled-out groups with 0 < passes < G (the groups GRPO learns from; reference-only windows
  are left out when the line has others: they measure uniform sampling, not DEPO);
- *pass rate pred / obs*: mean predicted vs observed pass rate of the rolled-out prompts (calibration at a glance);
- *completions N, saved ~M vs warm-up's R useful*: completions generated so far, and how many fewer than uniform
  sampling would have needed for the same number of useful groups if its useful share were R, the share observed
  in the warm-up rounds (when DEPO does not filter, so the batch is GRPO's uniform draw). Shown once the run has
  both warm-up and filtering rounds; the policy changes after warm-up, so it is a reference, not a counterfactual,
  and the summary table states how many warm-up groups it rests on.

With reference steps (``depo_reference_every``: every N-th step after warm-up rolls out GRPO's own uniform batch on
the current policy) the reference is theirs instead, as soon as one has been logged::

    ... | completions 1280, saved ~356 vs uniform's 55% useful (reference steps, 12 groups) | ...

R is then the useful share over all reference steps so far (``depo/reference_useful_group_share``, weighted by
reference rounds per logged window), measured on the policy as it moves through the same run the saving counts;
all of them rather than the latest few, because a handful of U-prompt rounds is a small sample. The summary table
says how many groups and reference steps it rests on. With none logged yet, the warm-up reference stands in.

Evaluation logs give one ``[eval]`` line. At the end of training it prints one summary table: totals (exact, from
the trainer's DEPO statistics when it is given the trainer, else estimated from the logged means), the reference
and its size, reward and held-out reward at the first and last logged windows, and wall time with seconds per step
in warm-up and in filtering rounds (DEPO's scoring costs time as well as saving completions).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from transformers.trainer_callback import PrinterCallback, ProgressCallback

REWARD_KEY = "reward"
EVAL_REWARD_KEY = "eval_reward"


def _mean(windows: list[dict], key: str) -> float:
    """Step-weighted mean of ``key`` over logged windows (each window's value is already a mean over its steps)."""
    pairs = [(w[key], w["_steps"]) for w in windows if isinstance(w.get(key), (int, float)) and math.isfinite(w[key])]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else float("nan")


def _fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


class DEPOConsole(ProgressCallback):
    """Progress bar plus one compact DEPO line every ``every`` steps and a summary table at the end.

    Args:
        every: optimizer steps between two DEPO lines (at least one logged window apart: set ``logging_steps`` <=
            ``every`` to see every line).
        trainer: the ``DEPOTrainer``, for exact run totals (``depo_stats``); without it totals are estimated from
            the logged per-round means.
        write: where lines go; default the progress bar's ``write`` (keeps the bar intact), else ``print``.
    """

    def __init__(self, every: int = 5, trainer=None, write: Callable[[str], None] | None = None):
        super().__init__()
        if every < 1:
            raise ValueError(f"DEPOConsole(every={every}): print every N >= 1 steps.")
        self.every = int(every)
        self.trainer = trainer
        self._write = write
        self.windows: list[dict] = []  # every training window logged (depo metrics + reward), with its step count
        self.eval_windows: list[dict] = []
        self._pending: list[dict] = []  # windows since the last line
        self._last_logged_step = 0
        self._last_line_step = 0
        self._line_time = None
        self._start_time = None
        self._log_time = None
        self.lines: list[str] = []  # everything written, for tests and notebooks

    # ------------------------------------------------------------------ output
    def write(self, text: str) -> None:
        self.lines.append(text)
        if self._write is not None:
            self._write(text)
        elif self.training_bar is not None:
            self.training_bar.write(text)
        else:
            print(text, flush=True)

    # ------------------------------------------------------------------ callback events
    def on_train_begin(self, args, state, control, **kwargs):
        if not args.disable_tqdm:
            super().on_train_begin(args, state, control, **kwargs)
        else:
            self.training_bar, self.current_step = None, 0
        self._start_time = self._line_time = self._log_time = time.perf_counter()
        self._last_logged_step = self._last_line_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            super().on_step_end(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Deliberately not super().on_log: that is the full-dict printing this callback replaces.
        if not state.is_world_process_zero or not logs:
            return
        if any(k.startswith("eval_") for k in logs):
            self.eval_windows.append({**logs, "_step": state.global_step, "_steps": 1})
            self.write(self._eval_line(state.global_step, logs))
            return
        if "train_runtime" in logs or not any(k.startswith("depo/") or k == REWARD_KEY for k in logs):
            return  # the end-of-training summary dict, or a log this console has nothing to say about
        now = time.perf_counter()
        window = {**logs, "_step": state.global_step, "_steps": max(state.global_step - self._last_logged_step, 1),
                  "_seconds": now - (self._log_time or now)}
        self._log_time = now
        self._last_logged_step = state.global_step
        self.windows.append(window)
        self._pending.append(window)
        if state.global_step - self._last_line_step >= self.every or state.global_step >= state.max_steps:
            self.write(self._line(args, state))
            self._pending, self._last_line_step = [], state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            super().on_train_end(args, state, control, **kwargs)
        if state.is_world_process_zero and self.windows:
            self.write(self.summary_table(args, state))

    # ------------------------------------------------------------------ lines
    def _line(self, args, state) -> str:
        w = self._pending
        now = time.perf_counter()
        steps = state.global_step - self._last_line_step
        seconds = (now - self._line_time) / max(steps, 1)
        self._line_time = now
        # Per-round counts differ between warm-up (U of U) and filtering (U of K x U): never average the two.
        filtering, warmup = _filtering(w), _warmup(w)
        selecting = [x for x in filtering if not _reference_only(x)]  # reference steps roll out GRPO's batch
        rounds = selecting or filtering or warmup or w
        depo_rounds = [x for x in w if not _reference_only(x)] or w
        if not filtering and not warmup:  # TRL averaged warm-up and filtering rounds into one logged window
            phase = " (warm-up and filtering in one logged window: logging_steps > 1)"
        elif not filtering:
            phase = " (warm-up)"
        elif len(filtering) < len(w):
            phase = f" (filtering from step {filtering[0]['_step']})"
        else:
            phase = ""
        parts = [
            f"[DEPO] step {state.global_step}/{state.max_steps}{phase}",
            f"reward {_fmt(_mean(w, REWARD_KEY))}",
            f"rolled out {_fmt(_mean(rounds, 'depo/prompts_rolled_out'), '.0f')}/"
            f"{_fmt(_mean(rounds, 'depo/candidates_scored'), '.0f')}",
            f"useful {_fmt(_mean(depo_rounds, 'depo/useful_group_share'), '.0%')}",
            f"pass rate pred {_fmt(_mean(w, 'depo/predicted_pass_rate'))} obs {_fmt(_mean(w, 'depo/observed_pass_rate'))}",
        ]
        generated, saved = self.completions(args)
        if self.reference_source() == "reference steps":
            reference = (f" vs uniform's {self.uniform_reference():.0%} useful (reference steps, "
                         f"{self.uniform_reference_groups(args):.0f} groups)")
        else:
            reference = f" vs warm-up's {self.uniform_reference():.0%} useful"
        reference = reference if math.isfinite(saved) else ""
        saved_text = f", saved ~{saved:.0f}{reference}" if math.isfinite(saved) else ""
        parts.append(f"completions {generated:.0f}{saved_text}")
        parts.append(f"{seconds:.1f} s/step")
        return " | ".join(parts)

    def _eval_line(self, step: int, logs: dict) -> str:
        rewards = [f"{k[len('eval_rewards/'):-len('/mean')]} {v:.3f}" for k, v in logs.items()
                   if k.startswith("eval_rewards/") and k.endswith("/mean") and isinstance(v, (int, float))]
        head = f"[eval] step {step} | held-out reward {_fmt(logs.get(EVAL_REWARD_KEY, float('nan')), '.3f')}"
        return " | ".join([head] + rewards)

    # ------------------------------------------------------------------ totals
    def _rounds_per_step(self, args) -> float:
        """Generation rounds per optimizer step: TRL generates once per steps_per_generation x num_iterations
        micro-steps, and an optimizer step is gradient_accumulation_steps micro-steps."""
        per_generation = (getattr(args, "steps_per_generation", None) or args.gradient_accumulation_steps)
        return args.gradient_accumulation_steps / (per_generation * getattr(args, "num_iterations", 1))

    def totals(self, args) -> dict:
        """Run totals: exact from the trainer's DEPO statistics when available, else estimated from the logs."""
        stats = getattr(self.trainer, "depo_stats", None) if self.trainer is not None else None
        if stats is not None and hasattr(stats, "state_dict"):
            stats = stats.state_dict()
        if isinstance(stats, dict) and stats.get("rounds"):
            return {**stats, "exact": True}
        rounds = self._rounds_per_step(args)
        rolled = sum(w.get("depo/prompts_rolled_out", 0.0) * w["_steps"] * rounds for w in self.windows)
        useful = sum(w.get("depo/prompts_rolled_out", 0.0) * w.get("depo/useful_group_share", 0.0) * w["_steps"] * rounds
                     for w in self.windows)
        scored = sum(w.get("depo/candidates_scored", 0.0) * w["_steps"] * rounds for w in self.windows)
        return {
            "exact": False, "candidates_scored": scored, "prompts_rolled_out": rolled, "useful_groups": useful,
            "labelled_groups": rolled, "completions_generated": rolled * args.num_generations,
            "prompts_skipped": scored - rolled, "skipped_by_reason": {},
        }

    def reference_source(self) -> str:
        """Where the uniform reference comes from: ``"reference steps"`` once one has been logged, else
        ``"warm-up"``."""
        return "reference steps" if _reference_windows(self.windows) else "warm-up"

    def uniform_reference(self) -> float:
        """The uniform useful-group share: the mean over the reference steps logged so far
        (``depo/reference_useful_group_share``, each window weighted by its reference rounds) when there are any,
        else over the logged windows made only of warm-up (unfiltered, uniform) rounds."""
        reference = _reference_windows(self.windows)
        if reference:
            pairs = [(w[REFERENCE_SHARE_KEY], _reference_steps(w)) for w in reference]
            return sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
        return _mean(_warmup(self.windows), "depo/useful_group_share")

    def uniform_reference_groups(self, args) -> float:
        """How many rolled-out groups the reference rests on (its size)."""
        rounds = self._rounds_per_step(args)
        reference = _reference_windows(self.windows)
        if reference:
            return sum(w.get("depo/prompts_rolled_out", 0.0) * _reference_steps(w) * rounds for w in reference)
        return sum(w.get("depo/prompts_rolled_out", 0.0) * w["_steps"] * rounds for w in _warmup(self.windows))

    def completions(self, args) -> tuple[float, float]:
        """(completions generated so far, completions saved vs uniform at the warm-up useful share; NaN if none)."""
        t = self.totals(args)
        generated = float(t.get("completions_generated", 0.0))
        reference = self.uniform_reference()
        if not (_filtering(self.windows) and math.isfinite(reference) and reference > 0):
            return generated, float("nan")
        return generated, t.get("useful_groups", 0.0) / reference * args.num_generations - generated

    def summary_table(self, args, state) -> str:
        t = self.totals(args)
        generated, saved = self.completions(args)
        scored, rolled = float(t.get("candidates_scored", 0)), float(t.get("prompts_rolled_out", 0))
        labelled = float(t.get("labelled_groups", 0)) or 1.0
        reasons = t.get("skipped_by_reason") or {}
        k = max(1, min(self.every, len(self.windows) // 2))  # first and last `every` windows: one window is noisy
        first, last = self.windows[:k], self.windows[-k:]
        elapsed = time.perf_counter() - (self._start_time or time.perf_counter())
        steps_done = max(state.global_step, 1)
        rows = [
            ("optimizer steps", f"{state.global_step}"),
            ("candidate prompts scored", f"{scored:.0f}"),
            ("prompts rolled out", f"{rolled:.0f} ({_fmt(rolled / scored if scored else float('nan'), '.0%')} of scored)"),
        ]
        if reasons:
            rows.append(("skipped: too easy / too hard / not needed",
                         f"{reasons.get('too_easy', 0)} / {reasons.get('too_hard', 0)} / {reasons.get('in_band_not_needed', 0)}"))
        rows += [
            ("useful groups (0 < passes < G)", f"{float(t.get('useful_groups', 0)):.0f} ({_fmt(t.get('useful_groups', 0) / labelled, '.0%')})"),
            (f"uniform reference: {self.reference_source()} useful", self._reference_text(args)),
            ("completions generated", f"{generated:.0f}"),
            ("completions saved vs that reference", self._saved_text(saved)),
            (f"reward, first -> last {k} window" + ("s" if k > 1 else ""), f"{_fmt(_mean(first, REWARD_KEY))} -> {_fmt(_mean(last, REWARD_KEY))}"),
        ]
        if self.eval_windows:
            rows.append(("held-out reward, first -> last eval",
                         f"{_fmt(self.eval_windows[0].get(EVAL_REWARD_KEY, float('nan')), '.3f')} -> "
                         f"{_fmt(self.eval_windows[-1].get(EVAL_REWARD_KEY, float('nan')), '.3f')}"))
        rows += [
            ("pass rate pred / obs (after warm-up)", self._calibration()),
            ("wall time", f"{elapsed:.1f} s ({elapsed / steps_done:.2f} s/step; {self._step_times()})"),
        ]
        width = max(len(name) for name, _ in rows)
        source = "exact totals" if t.get("exact") else "totals estimated from logged means"
        lines = [f"DEPO summary ({source}; all metrics: trainer_state.json, report_to, `depo-trl report`)"]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)

    def _reference_text(self, args) -> str:
        reference = _reference_windows(self.windows)
        if reference:
            steps = round(sum(_reference_steps(w) for w in reference))
            return (f"{_fmt(self.uniform_reference(), '.0%')} of {self.uniform_reference_groups(args):.0f} groups "
                    f"({steps} reference step{'s' if steps != 1 else ''})")
        warm = _warmup(self.windows)
        if not warm:
            return "n/a (no warm-up round: depo_warmup_steps=0 or not logged)"
        steps = sum(w["_steps"] for w in warm)
        return (f"{_fmt(self.uniform_reference(), '.0%')} of {self.uniform_reference_groups(args):.0f} groups "
                f"({steps} warm-up step{'s' if steps != 1 else ''})")

    def _saved_text(self, saved: float) -> str:
        if math.isfinite(saved) and self.reference_source() == "reference steps":
            return f"~{saved:.0f} (uniform's useful share measured on the same policy, at the reference steps)"
        if math.isfinite(saved):
            return f"~{saved:.0f} (a reference, not a counterfactual: the policy changes after warm-up)"
        if not _filtering(self.windows):
            return "n/a (no filtering round: every round was warm-up)"
        return "n/a (no warm-up reference)"

    def _step_times(self) -> str:
        """Seconds per step in warm-up windows and in filtering windows (scoring costs time too)."""
        parts = []
        filtering = _filtering(self.windows)
        for name, windows in (("warm-up", _warmup(self.windows)),
                              ("filtering", [w for w in filtering if not _reference_only(w)]),
                              ("reference", [w for w in filtering if _reference_only(w)])):
            steps = sum(w["_steps"] for w in windows)
            if steps:
                parts.append(f"{name} {sum(w.get('_seconds', 0.0) for w in windows) / steps:.2f}")
        return " s/step, ".join(parts) + " s/step" if parts else "no rounds logged"

    def _calibration(self) -> str:
        filtered = [w for w in self.windows if w.get("depo/warmup", 1.0) <= 0.001]
        return f"{_fmt(_mean(filtered, 'depo/predicted_pass_rate'))} / {_fmt(_mean(filtered, 'depo/observed_pass_rate'))}"


def _warmup(windows: list[dict]) -> list[dict]:
    """Logged windows made only of warm-up rounds (unfiltered: GRPO's own batch)."""
    return [w for w in windows if w.get("depo/warmup", 0.0) >= 0.999]


def _filtering(windows: list[dict]) -> list[dict]:
    """Logged windows made only of rounds after warm-up (filtering rounds, and reference steps, which are not
    warm-up)."""
    return [w for w in windows if w.get("depo/warmup", 1.0) <= 0.001]


REFERENCE_SHARE_KEY = "depo/reference_useful_group_share"


def _reference_steps(window: dict) -> float:
    """Reference steps in a logged window (``depo/reference`` is the share of its rounds that were reference)."""
    return window.get("depo/reference", 1.0) * window["_steps"]


def _reference_windows(windows: list[dict]) -> list[dict]:
    """Logged windows holding at least one reference step with a useful share (``depo_reference_every``)."""
    return [w for w in windows if isinstance(w.get(REFERENCE_SHARE_KEY), (int, float))
            and math.isfinite(w[REFERENCE_SHARE_KEY]) and _reference_steps(w) > 0]


def _reference_only(window: dict) -> bool:
    """A logged window made only of reference steps."""
    return window.get("depo/reference", 0.0) >= 0.999


def use_depo_console(trainer, every: int = 5) -> DEPOConsole:
    """Replace the trainer's full-dict console printing (progress or printer callback) with a ``DEPOConsole``.

    ``DEPOTrainer`` does this itself with ``depo_console="depo"`` (the default); call it to change ``every`` later or
    to give a ``GRPOTrainer``-like trainer the same console."""
    from transformers.trainer import DEFAULT_PROGRESS_CALLBACK

    for callback in {ProgressCallback, PrinterCallback, DEFAULT_PROGRESS_CALLBACK}:
        trainer.remove_callback(callback)
    for callback in [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, DEPOConsole)]:
        trainer.remove_callback(callback)  # called again (DEPOTrainer installs one by default): replace it
    console = DEPOConsole(every=every, trainer=trainer)
    trainer.add_callback(console)
    if hasattr(trainer, "depo_console"):
        trainer.depo_console = console
    return console
