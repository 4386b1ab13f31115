"""The engine stands alone: its modules import with trl, torch, transformers, accelerate and vllm blocked.

Each check runs in a fresh interpreter with a meta-path finder in front that refuses those packages (an import of
one fails, and the attempt is recorded even when the importing code catches the error), then imports one module.
``import depo_trl`` itself must not load them either: the package's public names are imported on first use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BLOCKED = ("trl", "torch", "transformers", "accelerate", "vllm")

# Modules an RL loop outside TRL uses, and the modules they rest on.
STANDALONE = (
    "depo_trl",
    "depo_trl.engine",
    "depo_trl.estimators",
    "depo_trl.estimators.base",
    "depo_trl.estimators.beta",
    "depo_trl.estimators.gbdt",
    "depo_trl.estimators.hierarchical",
    "depo_trl.estimators.logistic",
    "depo_trl.estimators.warm_start",
    "depo_trl.features",
    "depo_trl.selection",
    "depo_trl.history",
    "depo_trl.state",
    "depo_trl.audit",
    "depo_trl.labels",
    "depo_trl.rounds",
    "depo_trl.trainer_setup",
    "depo_trl.completions",
    "depo_trl.rewards",
    "depo_trl.graded_tasks",
)

_PROBE = r"""
import importlib, importlib.abc, importlib.machinery, json, sys

BLOCKED = set(sys.argv[2].split(","))
attempts = []


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        attempts.append(spec.name)
        raise ImportError(f"{spec.name} is blocked in this test")

    def exec_module(self, module):
        raise ImportError(f"{module.__name__} is blocked in this test")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, _Refuse())  # no origin: find_spec() callers see no file
        return None


sys.meta_path.insert(0, _Blocker())
error = None
try:
    importlib.import_module(sys.argv[1])
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
print(json.dumps({"error": error, "attempts": attempts, "loaded": loaded}))
"""


def _probe(module: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", _PROBE, module, ",".join(BLOCKED)], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": root}, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", STANDALONE)
def test_module_imports_without_trl_or_torch(module):
    found = _probe(module)
    assert found["error"] is None, f"import {module} failed with {BLOCKED} blocked: {found['error']}"
    assert found["attempts"] == [], f"import {module} tried to import {found['attempts']}"
    assert found["loaded"] == []


def test_the_blocker_blocks():
    """The check above could pass vacuously if the finder refused nothing: a module that needs torch must fail."""
    found = _probe("depo_trl.estimators.ranking")
    assert found["error"] is not None and "torch" in found["attempts"]


def test_ranking_estimator_loads_on_first_use():
    """The registry lists ``ranking`` without importing torch, and hands out the class when asked."""
    probe = ("import sys, depo_trl.estimators as e; names = sorted(e.ESTIMATORS); before = 'torch' in sys.modules; "
             "cls = e.ESTIMATORS['ranking']; print(names, before, cls.__name__, cls is e.RankingPassRateEstimator)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "['beta',", "'gbdt',", "'hierarchical',", "'logistic',", "'ranking']", "False", "RankingPassRateEstimator",
        "True",
    ]


def test_public_names_resolve():
    import depo_trl

    assert set(depo_trl.__all__) <= set(dir(depo_trl))
    for name in depo_trl.__all__:
        assert getattr(depo_trl, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        depo_trl.nope  # noqa: B018


def test_no_import_cycle_between_rewards_and_graded_tasks():
    """``graded_tasks`` and ``rewards`` share the completion-text helper through ``completions``, not each other."""
    import ast

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "depo_trl")
    with open(os.path.join(root, "graded_tasks.py")) as f:
        tree = ast.parse(f.read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "rewards" not in imported
