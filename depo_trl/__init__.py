"""depo_trl: Difficulty-Estimated Policy Optimization for Hugging Face TRL.

``DEPOTrainer`` is a drop-in ``trl.GRPOTrainer`` that predicts each prompt's pass rate before rollout and
generates completions only for prompts worth learning from. ``PromptSelector`` is the same loop with no TRL or
torch inside, for any other RL loop.
"""

from .depo_config import DEPOConfig
from .depo_trainer import DEPOTrainer
from .engine import PromptSelector, RoundOutcome, Scores, SelectorStats
from .estimators import ESTIMATORS, LogisticPassRateEstimator, PassRateEstimator, register_estimator
from .features import FEATURE_GROUPS
from .selection import SELECTION_POLICIES, expected_usefulness, select, select_in_band

__version__ = "0.1.0"

__all__ = [
    "DEPOConfig",
    "DEPOTrainer",
    "ESTIMATORS",
    "FEATURE_GROUPS",
    "LogisticPassRateEstimator",
    "PassRateEstimator",
    "PromptSelector",
    "RoundOutcome",
    "Scores",
    "SelectorStats",
    "SELECTION_POLICIES",
    "expected_usefulness",
    "register_estimator",
    "select",
    "select_in_band",
]
