"""depo_trl: Difficulty-Estimated Policy Optimization for Hugging Face TRL.

``DEPOTrainer`` is a drop-in ``trl.GRPOTrainer`` that predicts each prompt's pass rate before rollout and
generates completions only for prompts worth learning from. ``PromptSelector`` is the same loop with no TRL or
torch inside, for any other RL loop.

The names below are imported on first use (PEP 562), so ``import depo_trl`` and ``depo-trl --help`` do not pay for
torch, transformers and TRL until a trainer, config or estimator is actually asked for.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "DEPOConfig": ".depo_config",
    "DEPOTrainer": ".depo_trainer",
    "PromptSelector": ".engine",
    "RoundOutcome": ".engine",
    "Scores": ".engine",
    "SelectorStats": ".engine",
    "ESTIMATORS": ".estimators",
    "LogisticPassRateEstimator": ".estimators",
    "PassRateEstimator": ".estimators",
    "register_estimator": ".estimators",
    "FEATURE_GROUPS": ".features",
    "register_feature_group": ".features",
    "SELECTION_POLICIES": ".selection",
    "expected_usefulness": ".selection",
    "select": ".selection",
    "select_in_band": ".selection",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'depo_trl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
