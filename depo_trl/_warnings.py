"""Warnings that point at the user's code, not at depo_trl's.

``warnings.warn(..., stacklevel=2)`` inside ``GRPOTrainer.__init__`` points at its caller. A user of
``GRPOTrainer`` sees their own line; a user of ``DEPOTrainer`` would see ``depo_trainer.py`` (our ``super()``
call). ``at_user_code()`` re-issues such warnings at the first stack frame outside this package, so both
trainers report the same place; ``warn_user`` does the same for DEPO's own warnings.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


_CONTEXTLIB = os.path.abspath(contextlib.__file__)
# Frameworks between a user's ``trainer.train()`` and a warning DEPO raises mid-run.
_FRAMEWORK_DIRS = tuple(
    os.path.dirname(os.path.abspath(spec.origin)) + os.sep
    for spec in (importlib.util.find_spec(name) for name in ("trl", "transformers", "accelerate", "torch"))
    if spec is not None and spec.origin
)


def _in_package(filename: str) -> bool:
    """Inside depo_trl (or contextlib, whose frames sit between a ``with`` block and its context manager)."""
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR) or path == _CONTEXTLIB


def _user_frame():
    """The innermost stack frame outside depo_trl (None if there is none)."""
    frame = sys._getframe(1)
    while frame is not None and _in_package(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def _in_library(filename: str) -> bool:
    return _in_package(filename) or os.path.abspath(filename).startswith(_FRAMEWORK_DIRS)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside depo_trl and the frameworks it runs under (TRL,
    transformers, accelerate, torch): the user's ``DEPOTrainer(...)`` or ``trainer.train()`` line."""
    frame, level = sys._getframe(0), 1
    while frame is not None and _in_library(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 1)


@contextlib.contextmanager
def at_user_code():
    """Re-issue warnings raised in the block that point into depo_trl at the user's calling line instead.

    Warnings pointing elsewhere (TRL or transformers internals) are re-issued unchanged, so the user's warning
    filters see exactly what ``GRPOTrainer`` would have shown them.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:  # also when the block raises: warnings issued before a TRL error still reach the user
        _reissue(caught)


def _reissue(caught) -> None:
    frame = _user_frame()
    for w in caught:
        if frame is not None and _in_package(w.filename):
            registry = frame.f_globals.setdefault("__warningregistry__", {})
            warnings.warn_explicit(w.message, w.category, frame.f_code.co_filename, frame.f_lineno,
                                   module=frame.f_globals.get("__name__"), registry=registry,
                                   module_globals=frame.f_globals)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
