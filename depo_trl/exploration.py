"""How much an exploration pick is worth, measured online, and the exploration share it earns.

Every selection policy spends a share ``exploration`` of its picks outside what it would pick, so the estimator
keeps seeing the prompts it rules out. What one such pick is worth depends on the pool: where the prompts ruled
out are nearly certain to pass or to fail (a pool mostly beyond reach, or a fixed log), a random pick is a wasted
group; where the estimator cannot tell a nearly-solved prompt at 0.8 from one at 0.95 (a pool mostly solved), a
random pick is often mixed (half as often as a chosen one on the proving ground's easy pool), and it is how the
excluded region keeps being taught. Measured (docs/benchmarks.md): an exploration pick is worth about half a chosen
one on the proving ground's easy and balanced pools and a third on its hard pool and on the replay log. The default
adapts the share to the run: that won the replay log and kept GRPO's accuracy on SmolLM2, where a fixed share lost
it, and costs part of the saving on the easy and balanced pools.

``ExplorationYield`` measures that from the run itself. After each round it updates two forgetful counts of
rolled-out groups and of useful ones (``0 < passes < trials``): the groups the policy picked (band, rank, fill,
revisit) and the groups drawn for exploration. Their useful rates, each with a Beta(1, 1) prior, give the ratio

    rho = useful rate of exploration picks / useful rate of policy picks

(1 before any data). With ``adaptive=True`` the share used in a round is

    exploration * clip((rho - ratio_low) / (ratio_high - ratio_low), floor, 1)

so the full share is kept while an exploration pick is worth at least ``ratio_high`` of a chosen one, and it falls
to ``floor`` times the share when it is worth ``ratio_low`` or less. The defaults, 0.4 and 0.5, sit between the
ratios measured where exploration pays (about 0.5: the easy and balanced pools) and where it is waste (0.33-0.37: the
hard pool, the replay log); the earlier [0.3, 0.6] gave the easy pool only two thirds of the share. The floor keeps
exploring (and measuring): nothing is ruled out for good, and the share comes back if the excluded region starts to
yield. With ``adaptive=False`` (``depo_adaptive_exploration: false``) the share is fixed and ``rho`` is only reported
(``depo/exploration_yield``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .selection import REASON_EXPLORE, REASON_UNIFORM


#: The exploration yields at which the adaptive share is ``floor`` times / all of the configured share.
DEFAULT_YIELD_RANGE = (0.4, 0.5)


def check_yield_range(value, name: str = "exploration_yield_range") -> tuple[float, float]:
    """``(low, high)`` as floats with ``0 <= low < high``; anything else is refused with the fix."""
    numbers = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or not 0.0 <= value[0] < value[1]:
        raise ValueError(f"{name} must be two numbers [low, high] with 0 <= low < high, got {value!r}. They are the "
                         "exploration yields (exploration picks' useful rate over the policy's own) at which the "
                         f"adaptive share is a tenth of the exploration share and all of it; e.g. "
                         f"{list(DEFAULT_YIELD_RANGE)}.")
    return float(value[0]), float(value[1])


class ExplorationYield:
    """Forgetful useful-rate counts of exploration and policy picks, and the exploration share they earn.

    Args:
        exploration: the configured exploration share (the most a round uses).
        adaptive: scale the share by the measured ratio (else report the ratio only).
        ratio_low, ratio_high: the ratio at which the share is ``floor`` times / all of ``exploration``.
        floor: the smallest fraction of ``exploration`` kept (> 0, so exploration never stops).
        decay: per-round weight of the past counts (0.98: about the last 50 rounds).
    """

    def __init__(self, exploration: float, adaptive: bool = True, ratio_low: float = DEFAULT_YIELD_RANGE[0],
                 ratio_high: float = DEFAULT_YIELD_RANGE[1], floor: float = 0.1, decay: float = 0.98):
        if not 0.0 <= ratio_low < ratio_high:
            raise ValueError(f"ratio_low ({ratio_low}) must be >= 0 and below ratio_high ({ratio_high}).")
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {floor}: a zero floor would stop exploring for good.")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}.")
        self.exploration, self.adaptive = float(exploration), bool(adaptive)
        self.ratio_low, self.ratio_high = float(ratio_low), float(ratio_high)
        self.floor, self.decay = float(floor), float(decay)
        # [groups, useful] for the policy's picks and for exploration picks
        self.policy_ = np.zeros(2)
        self.explore_ = np.zeros(2)

    def ratio(self) -> float:
        """Useful rate of exploration picks over that of policy picks (Beta(1, 1) prior on each; 1 with no data)."""
        explore = (self.explore_[1] + 1.0) / (self.explore_[0] + 2.0)
        policy = (self.policy_[1] + 1.0) / (self.policy_[0] + 2.0)
        return float(explore / policy)

    def share(self) -> float:
        """The exploration share for the next round."""
        if not self.adaptive or self.exploration == 0.0:
            return self.exploration
        scale = (self.ratio() - self.ratio_low) / (self.ratio_high - self.ratio_low)
        return self.exploration * float(np.clip(scale, self.floor, 1.0))

    def update(self, reasons, useful, labelled) -> None:
        """One round: ``reasons`` (the selection's reason per rolled-out prompt), ``useful`` and ``labelled``
        (bool per rolled-out prompt, same order). Unlabelled groups, and uniform picks made when the estimator failed,
        count for neither side."""
        explored = np.array([r == REASON_EXPLORE for r in reasons], dtype=bool)
        chosen = np.array([r not in (REASON_EXPLORE, REASON_UNIFORM) for r in reasons], dtype=bool)
        useful, labelled = np.asarray(useful, bool), np.asarray(labelled, bool)
        self.policy_ *= self.decay
        self.explore_ *= self.decay
        for side, mask in ((self.explore_, explored & labelled), (self.policy_, chosen & labelled)):
            side += (mask.sum(), (useful & mask).sum())

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy_.copy(), "explore": self.explore_.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy_ = np.asarray(state["policy"], dtype=np.float64).copy()
        self.explore_ = np.asarray(state["explore"], dtype=np.float64).copy()
