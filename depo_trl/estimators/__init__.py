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
from collections.abc import Iterator, MutableMapping
from typing import Any

from .base import PassRateEstimator, check_labels
from .beta import BetaPassRateEstimator
from .gbdt import GBDTPassRateEstimator
from .hierarchical import HierarchicalPassRateEstimator
from .logistic import LogisticPassRateEstimator
from .warm_start import warm_start_from_jsonl

# Registered names whose class is imported on first use: ``ranking`` needs torch, which the engine does not.
_LAZY = {"ranking": (".ranking", "RankingPassRateEstimator")}


class EstimatorRegistry(MutableMapping):
    """Registry name -> estimator class. A lazy entry (a module and class name) is imported when it is looked up,
    so listing the names (``sorted(ESTIMATORS)``) imports nothing."""

    def __init__(self, entries):
        # a class, or a lazy (name, (module, class name)) pair; registration order is kept
        self._classes: dict[str, Any] = dict(e if isinstance(e, tuple) else (e.name, e) for e in entries)

    def __getitem__(self, name: str) -> type[PassRateEstimator]:
        entry = self._classes[name]
        if isinstance(entry, tuple):
            module, attr = entry
            entry = self._classes[name] = getattr(importlib.import_module(module, __name__), attr)
        return entry

    def __setitem__(self, name: str, cls: type[PassRateEstimator]) -> None:
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"EstimatorRegistry({sorted(self._classes)})"


ESTIMATORS = EstimatorRegistry((
    LogisticPassRateEstimator,
    GBDTPassRateEstimator,
    BetaPassRateEstimator,
    ("ranking", _LAZY["ranking"]),
    HierarchicalPassRateEstimator,
))


def register_estimator(cls: type[PassRateEstimator] | None = None, *, overwrite: bool = False):
    """Class decorator: make ``cls`` selectable as ``depo_estimator=cls.name``.

    A name already registered is refused (two classes under one name would make a recipe mean whichever was
    imported last); ``@register_estimator(overwrite=True)`` replaces it on purpose.
    """

    def register(cls: type[PassRateEstimator]) -> type[PassRateEstimator]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} needs a class attribute `name` (a non-empty string) to be registered.")
        if name in ESTIMATORS and not overwrite and ESTIMATORS._classes[name] is not cls:
            raise ValueError(
                f"An estimator is already registered as {name!r}. Give {cls.__name__} another `name`, or replace "
                "the registered one on purpose with @register_estimator(overwrite=True)."
            )
        ESTIMATORS[name] = cls
        return cls

    return register if cls is None else register(cls)


def __getattr__(name: str):
    for registered, (module, attr) in _LAZY.items():
        if name == attr:
            return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
