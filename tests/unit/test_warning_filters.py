"""Deprecations attributed to depo_trl fail the tests (pyproject.toml's ``filterwarnings``); DEPO's user-facing
warnings and deprecations pointed at the caller's line do not.

Python attributes a warning to the module of the frame ``stacklevel`` names (its ``__name__``): stacklevel=1 is the
function that calls ``warnings.warn``, stacklevel=2 its caller. So a depo_trl function warning about itself, and a
depo_trl caller of a library API that warns with stacklevel=2 (transformers, torch and TRL do), are depo_trl's; a
warning whose stacklevel reaches past depo_trl into the user's code is the user's.

The in-process tests run under the filters pytest applies around every test; the subprocess test runs a pytest
session of its own with this project's configuration, once as configured and once with ``filterwarnings`` emptied.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SOURCE = """
import warnings


def deprecated_here(category):
    warnings.warn("old depo_trl behaviour", category, stacklevel=1)


def deprecated_for_caller(category):
    warnings.warn("old depo_trl argument", category, stacklevel=2)


def calls(fn, *args):
    return fn(*args)
"""


def _module(name: str) -> types.ModuleType:
    """A module named ``name`` holding the functions above: warnings are attributed by the frame's ``__name__``."""
    module = types.ModuleType(name)
    exec(compile(_SOURCE, f"<{name}>", "exec"), module.__dict__)
    return module


DEPO = _module("depo_trl._warning_probe")
LIBRARY = _module("some_library.api")  # stands in for transformers/torch/TRL
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@pytest.mark.parametrize("category", DEPRECATIONS)
def test_deprecation_raised_in_depo_trl_is_an_error(category):
    with pytest.raises(category, match="old depo_trl behaviour"):
        DEPO.deprecated_here(category)


@pytest.mark.parametrize("category", DEPRECATIONS)
def test_library_deprecation_pointing_at_a_depo_trl_caller_is_an_error(category):
    # the library warns with stacklevel=2: the warning is attributed to depo_trl, which made the deprecated call
    with pytest.raises(category):
        DEPO.calls(LIBRARY.deprecated_for_caller, category)


@pytest.mark.parametrize("category", DEPRECATIONS)
def test_deprecation_pointing_past_depo_trl_is_not_an_error(category):
    # stacklevel=2 from a depo_trl function called here: attributed to this test module (the user's line)
    with pytest.warns(category, match="old depo_trl argument"):
        DEPO.deprecated_for_caller(category)
    # and a library deprecation attributed to the library itself stays a warning
    with pytest.warns(category):
        LIBRARY.deprecated_here(category)


@pytest.mark.parametrize("category", (UserWarning, RuntimeWarning))
def test_depo_user_facing_warnings_stay_warnings(category):
    with pytest.warns(category, match="old depo_trl behaviour"):
        DEPO.deprecated_here(category)


def test_only_depo_trl_and_its_submodules_match():
    with pytest.warns(DeprecationWarning):
        _module("depo_trl_extras.thing").deprecated_here(DeprecationWarning)
    with pytest.raises(DeprecationWarning):
        _module("depo_trl").deprecated_here(DeprecationWarning)


_SESSION_TEST = """
import types, warnings

module = types.ModuleType("depo_trl.probe")
exec("import warnings\\ndef old():\\n    warnings.warn('gone soon', DeprecationWarning)\\n", module.__dict__)


def test_calls_deprecated_depo_code():
    module.old()
"""


def _session(tmp_path, *extra):
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(_SESSION_TEST))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
               os.path.join(REPO, "pyproject.toml"), "--rootdir", str(tmp_path), *extra, str(tmp_path / "test_probe.py")]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_session_with_the_project_config_fails_on_a_depo_trl_deprecation(tmp_path):
    configured = _session(tmp_path)
    assert configured.returncode == 1, configured.stdout + configured.stderr
    assert "DeprecationWarning: gone soon" in configured.stdout
    # the same session without the project's filters passes, the deprecation only listed: the config is the cause
    unfiltered = _session(tmp_path, "-o", "filterwarnings=")
    assert unfiltered.returncode == 0, unfiltered.stdout + unfiltered.stderr
    assert "gone soon" in unfiltered.stdout

