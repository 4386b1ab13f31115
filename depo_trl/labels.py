"""Pass labels: which reward decides a pass, and how many completions of each rolled-out group passed (numpy only).

A group's label comes from the first reward in the pass order that applies to it: a reward returning None (NaN) for
every completion of a group does not apply to that prompt (TRL's convention for multi-task rewards, e.g. a math
reward on a code prompt), so the next one is asked. The deciding reward is thresholded at ``depo_pass_threshold``. A
reward that scores only some completions of a group applies but failed to score the rest; such a group is no label
this round (``trials = 0``): failures to score are rarely independent of the outcome (timeouts on long answers, parse
errors), so its pass count may be biased.

``PassLabeller`` applies that rule to each round's rewards and says, once each per run, when the labels cannot teach
the estimator: a threshold that never splits the pass reward, and prompts no pass reward applies to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def resolve_pass_order(names: Sequence[str], wanted, threshold: float) -> tuple[list[int], str | None]:
    """Indices of the reward functions that decide a pass, in priority order, and a note for the user (or None).

    ``wanted`` (``depo_pass_reward``) unset: every reward function in TRL's order, so the first one decides and the
    others only score prompts it returns None for (with a note naming the choice when there are several). Set: the
    named reward(s) only, in the given order (a comma-separated string or a list).
    """
    names = list(names)
    if wanted is None:
        note = None
        if len(names) > 1:
            note = (
                f"There are {len(names)} reward functions {names}; DEPO decides a pass with the first, "
                f"{names[0]!r}: a completion passes when its {names[0]!r} reward is >= depo_pass_threshold="
                f"{threshold}. Prompts that {names[0]!r} returns None for are judged by the next reward that "
                f"scores them, in the order {names[1:]}. This binary signal only trains DEPO's estimator; the "
                "policy still learns from TRL's weighted rewards. To choose, set depo_pass_reward to one of "
                f"{names} (or a comma-separated priority list) and depo_pass_threshold."
            )
        return list(range(len(names))), note
    requested = [w.strip() for w in wanted.split(",")] if isinstance(wanted, str) else [str(w) for w in wanted]
    requested = list(dict.fromkeys(w for w in requested if w))
    unknown = [w for w in requested if w not in names]
    if unknown or not requested:
        raise ValueError(
            f"depo_pass_reward={wanted!r} is not a reward function name (unknown: {unknown}). Choose one of "
            f"{names}, or several separated by commas (the first that scores a prompt decides)."
        )
    return [names.index(w) for w in requested], None


def group_outcomes(values: np.ndarray, pass_order: Sequence[int], threshold: float
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """Passes and scorable completions per group, and how many groups no pass reward applied to.

    ``values``: ``(n_groups, G, n_reward_funcs)`` rewards, NaN where a function returned None.
    """
    n_groups = values.shape[0]
    passes, trials = np.zeros(n_groups), np.zeros(n_groups)
    no_reward_applies = 0
    for g in range(n_groups):
        for index in pass_order:
            column = values[g, :, index]
            scored = np.isfinite(column)
            if not scored.any():
                continue  # this reward does not apply to this prompt: ask the next one
            if scored.all():
                passes[g], trials[g] = float((column >= threshold).sum()), float(len(column))
            break
        else:
            no_reward_applies += 1
    return passes, trials, no_reward_applies


class PassSignalTally:
    """Over the first ``rounds`` labelled rounds, whether every scored completion passed (or every one failed): the
    threshold then does not split this reward (e.g. a shaped length reward at 0.5), so the estimator cannot tell
    prompts apart."""

    def __init__(self, rounds: int = 5):
        self.rounds = rounds
        self.tally = np.zeros(3)  # rounds with labels, passes, trials

    def add(self, passes: np.ndarray, trials: np.ndarray) -> str | None:
        """Count one round; at the ``rounds``-th labelled round, ``"all"`` or ``"none"`` when the signal never
        split (else None)."""
        if trials.sum() == 0:
            return None
        self.tally += (1, passes.sum(), trials.sum())
        n_rounds, n_passed, n_scored = self.tally
        if n_rounds == self.rounds and n_passed in (0, n_scored):
            return "all" if n_passed else "none"
        return None

    @property
    def scored(self) -> int:
        return int(self.tally[2])


def constant_signal_message(verdict: str, tally: PassSignalTally, reward: str, threshold: float) -> str:
    """The warning for a pass signal that never split (``verdict`` from ``PassSignalTally.add``)."""
    return (
        f"In DEPO's first {tally.rounds} rounds, {verdict} of {tally.scored} scored completions passed (pass reward "
        f"{reward!r} >= depo_pass_threshold={threshold}), so its estimator cannot tell prompts apart yet. If that "
        "reward is shaped (a length, a score), set depo_pass_threshold to the value that means a correct answer, or "
        "depo_pass_reward to a 0/1 reward; if it is 0/1, the prompts so far were all too "
        f"{'easy' if verdict == 'all' else 'hard'} for the policy."
    )


def no_pass_reward_message(unlabelled: int, n_groups: int, rewards: list[str]) -> str:
    """The warning for groups that every pass reward returned None for."""
    return (
        f"{unlabelled} of {n_groups} prompts this round got None from every pass reward {rewards}, so DEPO learned "
        "nothing about them. Add a reward that scores them to depo_pass_reward (a comma-separated priority list), "
        "or leave depo_pass_reward unset to fall back to every reward function in order."
    )


class PassLabeller:
    """One round's pass counts from TRL's gathered rewards, and the warnings (each once per run) a user can act on.

    Args:
        reward_names: every reward function's name, in TRL's order.
        threshold: ``depo_pass_threshold``.
    """

    def __init__(self, reward_names: Sequence[str], threshold: float):
        self.reward_names = list(reward_names)
        self.threshold = threshold
        self.tally = PassSignalTally()
        self.warned: set[str] = set()

    def __call__(self, values: np.ndarray, pass_order: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Passes and scorable completions per group of ``values`` (``(n_groups, G, n_reward_funcs)``, NaN where a
        function returned None), and the warnings this round raises for the first time."""
        passes, trials, no_reward_applies = group_outcomes(values, pass_order, self.threshold)
        names = [self.reward_names[i] for i in pass_order]
        notes = []
        never_split = self.tally.add(passes, trials)
        if never_split is not None and "constant" not in self.warned:
            self.warned.add("constant")
            notes.append(constant_signal_message(never_split, self.tally, names[0], self.threshold))
        if no_reward_applies and len(pass_order) < len(self.reward_names) and "no_reward" not in self.warned:
            self.warned.add("no_reward")
            notes.append(no_pass_reward_message(no_reward_applies, len(values), names))
        return passes, trials, notes
