"""Pass-rate estimators and their registry.

Registered: ``logistic`` (online binomial logistic regression, the default), ``gbdt`` (gradient-boosted trees
refit every few rounds), ``beta`` (per-prompt Beta posterior with forgetting; history only, needs keys) and
``ranking`` (the paper's dual-head MLP with a pairwise ranking loss) and ``hierarchical`` (a content model as
the prior of each prompt's pass rate, the prompt's own record with forgetting as the likelihood; accepts sparse
features). ``warm_start_from_jsonl`` fits any of them
from a file of measured pass rates before training.

``make_estimator`` accepts a registry name (``"logistic"``), a dotted path to a class
(``"my_pkg.my_module.MyEstimator"``) or an already built estimator instance.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import PassRateEstimator, check_labels
from .beta import BetaPassRateEstimator
from .gbdt import GBDTPassRateEstimator
from .hierarchical import HierarchicalPassRateEstimator
from .logistic import LogisticPassRateEstimator
from .ranking import RankingPassRateEstimator
from .warm_start import warm_start_from_jsonl

ESTIMATORS: dict[str, type[PassRateEstimator]] = {
    cls.name: cls
    for cls in (
        LogisticPassRateEstimator,
        GBDTPassRateEstimator,
        BetaPassRateEstimator,
        RankingPassRateEstimator,
        HierarchicalPassRateEstimator,
    )
}


def register_estimator(cls: type[PassRateEstimator]) -> type[PassRateEstimator]:
    """Class decorator: make ``cls`` selectable as ``depo_estimator=cls.name``."""
    ESTIMATORS[cls.name] = cls
    return cls


def resolve_estimator_class(spec: str) -> type[PassRateEstimator]:
    """Turn a registry name or dotted path into an estimator class, with an error that lists the valid names."""
    if spec in ESTIMATORS:
        return ESTIMATORS[spec]
    if "." in spec:
        module_name, _, attr = spec.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"depo_estimator={spec!r} looks like a dotted path, but it could not be imported ({exc}). "
                f"Give an importable 'module.ClassName' or one of the registered names: {sorted(ESTIMATORS)}."
            ) from exc
        return cls
    raise ValueError(
        f"Unknown depo_estimator {spec!r}. Registered estimators: {sorted(ESTIMATORS)}; "
        "a dotted path 'module.ClassName' to your own class also works."
    )


def make_estimator(spec: str | PassRateEstimator, **kwargs: Any) -> PassRateEstimator:
    if isinstance(spec, PassRateEstimator) or (hasattr(spec, "partial_fit") and hasattr(spec, "predict_pass_rate")):
        return spec
    cls = resolve_estimator_class(spec)
    return cls(**kwargs)


__all__ = [
    "ESTIMATORS",
    "BetaPassRateEstimator",
    "GBDTPassRateEstimator",
    "HierarchicalPassRateEstimator",
    "LogisticPassRateEstimator",
    "PassRateEstimator",
    "RankingPassRateEstimator",
    "check_labels",
    "make_estimator",
    "register_estimator",
    "resolve_estimator_class",
    "warm_start_from_jsonl",
]
