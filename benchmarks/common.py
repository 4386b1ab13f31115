"""Helpers shared by the benchmark scripts: data paths, seeds, tables, JSON/PNG output, the docs section writer,
and adapters that iterate over whatever estimators, feature groups and selection policies ``depo_trl`` registers
at run time (so new ones show up in the benchmarks without touching them).

Nothing here is timed or asserted; the scripts decide what to report.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import platform
import random
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
DATA_ENV_VAR = "DEPO_BENCH_DATA"


# ----------------------------------------------------------------------------- data
class DataMissingError(FileNotFoundError):
    """The shared benchmark data is not where the benchmarks look for it."""


def data_dir() -> Path:
    """``$DEPO_BENCH_DATA`` if set, else ``../shared/data`` relative to the repository root."""
    override = os.environ.get(DATA_ENV_VAR)
    return Path(override) if override else (REPO_ROOT.parent / "shared" / "data").resolve()


def data_file(relative: str) -> Path:
    """Path of one shared data file, or a ``DataMissingError`` that says where it was looked for."""
    path = data_dir() / relative
    if not path.exists():
        raise DataMissingError(
            f"Benchmark data file {relative!r} not found at {path}. The benchmarks read the real data from "
            f"'../shared/data/' relative to the repository root ({REPO_ROOT}); point ${DATA_ENV_VAR} at another "
            "copy of that folder if it lives elsewhere. See DESIGN.md section 5 for what the folder holds."
        )
    return path


def data_available(*relatives: str) -> bool:
    return all((data_dir() / r).exists() for r in relatives)


# ---------------------------------------------------------------------------- seeds
def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's and numpy's global generators and return a fresh ``np.random.Generator``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- tables
def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "n/a"
        return format(float(value), floatfmt)
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".3f") -> str:
    """A Markdown pipe table (readable as plain text too)."""
    cells = [[_cell(v, floatfmt) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(values, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


# --------------------------------------------------------------------------- output
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=1, sort_keys=False) + "\n")
    return path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine_info()
    return f"{info['platform']}, {info['cpu_count']} CPUs ({info['processor']}), Python {info['python']}"


def command_line(module: str, argv: Sequence[str]) -> str:
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in argv)])


def relative_to_repo(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


_DOCS_HEADER = (
    "# Benchmarks\n\n"
    "Each section below is written by the benchmark script named in it (between its `<!-- name:start -->` and "
    "`<!-- name:end -->` markers) and is overwritten on every full run: do not edit it by hand. The issue that "
    "defines the benchmarks is #4; DESIGN.md section 5 describes them.\n"
)


def update_docs_section(name: str, body: str, docs_path: Path = DOCS_PATH) -> Path:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``docs_path`` (create the
    file or append the section when missing); everything outside the markers is left untouched."""
    docs_path = Path(docs_path)
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = docs_path.read_text() if docs_path.exists() else _DOCS_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    docs_path.write_text(text)
    return docs_path


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def limit_blas_threads(n: int = 1) -> None:
    """Pin BLAS to ``n`` threads for the rest of the process.

    The estimators solve small dense systems (~100 x 100) every round; with OpenBLAS's default thread pool on a
    busy 2-core machine one such solve measured 38 ms instead of 0.15 ms (threads spinning against each other),
    which made the benchmarks' run time say more about the machine's load than about the methods.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn depends on it, so this is rare; the benchmarks only get slower
        return
    threadpool_limits(limits=n, user_api="blas")
    # OpenMP too (scikit-learn's histogram gradient boosting): on shared cores its spinning threads made one gbdt
    # replay run take ~220 s instead of ~20 s.
    threadpool_limits(limits=n, user_api="openmp")


def run_main(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a benchmark's ``main``; a missing data folder ends it with exit status 2 and a clear message."""
    try:
        main(argv)
    except DataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# ----------------------------------------------------------------- registry adapters
def registered_estimators() -> dict[str, type]:
    """Every estimator registered in ``depo_trl.estimators.ESTIMATORS`` right now."""
    from depo_trl.estimators import ESTIMATORS

    return dict(ESTIMATORS)


def feature_group_names() -> list[str]:
    from depo_trl.features import FEATURE_GROUPS

    return list(FEATURE_GROUPS)


def content_feature_names(include_history: bool) -> list[str]:
    """``history`` (optional) + ``length`` + ``text`` when the ``text`` group is registered."""
    available = feature_group_names()
    names = (["history"] if include_history else []) + ["length"]
    if "text" in available:
        names.append("text")
    return names


#: Width of the dense ``text`` block given to estimators that need dense input (wide text is sparse).
DENSE_TEXT_DIM = 128


def feature_plan(
    estimator_cls, include_history: bool, text_for_record_models: bool = True
) -> tuple[list[str], dict | None]:
    """Feature groups and options a benchmark gives one estimator class.

    Estimators that accept sparse input get the wide sparse TF-IDF ``text`` group (the library default); the
    others a dense ``DENSE_TEXT_DIM``-column one. An estimator that keeps each prompt's own record
    (``keeps_prompt_record``) gets no ``history`` group: it would count the same evidence twice; with
    ``text_for_record_models=False`` it gets no ``text`` either (on a pool whose prompts recur every round, wide
    text lets the content model memorise each prompt: a second, never-forgetting history).
    """
    keeps_record = bool(getattr(estimator_cls, "keeps_prompt_record", False))
    names = content_feature_names(include_history=include_history and not keeps_record)
    if keeps_record and not text_for_record_models:
        names = [n for n in names if n != "text"]
    if "text" in names and not getattr(estimator_cls, "accepts_sparse", False):
        return names, {"text": {"dim": DENSE_TEXT_DIM}}
    return names, None


def selection_policy_names() -> list[str]:
    from depo_trl.selection import SELECTION_POLICIES

    return list(SELECTION_POLICIES)


def call_with_known(fn: Callable, available: dict[str, Any]) -> Any:
    """Call ``fn`` passing, by keyword, every parameter whose name is in ``available``.

    A required parameter that ``available`` cannot fill raises ``TypeError`` naming it, so an API this harness
    does not know shows up as a clear "skipped" entry rather than a wrong result.
    """
    signature = inspect.signature(fn)
    kwargs = {}
    # Extra aliases are never forced on a ``**kwargs`` parameter: they could mean something else there.
    for name, param in signature.parameters.items():
        if param.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        if name in available:
            kwargs[name] = available[name]
        elif param.default is inspect.Parameter.empty:
            raise TypeError(f"{getattr(fn, '__qualname__', fn)} needs a parameter {name!r} this harness cannot fill")
    return fn(**kwargs)


PolicyFn = Callable[..., np.ndarray]


def selection_policies() -> dict[str, PolicyFn]:
    """Name -> ``fn(pass_rate, uncertainty, n_select, group_size, low, high, exploration, rng, rounds_since=None,
    revisit_after=None) -> indices``.

    Uses ``depo_trl.selection.SELECTION_POLICIES`` (with its ``select`` function when present) if that registry
    exists, else just the ``band`` rule (``select_in_band``).
    """
    from depo_trl import selection as sel

    registry = getattr(sel, "SELECTION_POLICIES", None)
    if not registry:
        return {"band": _band_policy}
    select_fn = getattr(sel, "select", None)
    return {str(name): _policy_adapter(str(name), entry, select_fn) for name, entry in registry.items()}


def _band_policy(
    pass_rate, uncertainty, n_select, group_size, low, high, exploration, rng, rounds_since=None, revisit_after=None
) -> np.ndarray:
    from depo_trl.selection import select_in_band

    return select_in_band(pass_rate, n_select, group_size, low, high, exploration, rng).indices


def _indices_of(result: Any) -> np.ndarray:
    indices = getattr(result, "indices", result)
    return np.asarray(indices, dtype=np.int64).reshape(-1)


def _policy_adapter(name: str, entry: Any, select_fn: Callable | None) -> PolicyFn:
    def policy(
        pass_rate,
        uncertainty,
        n_select,
        group_size,
        low,
        high,
        exploration,
        rng,
        rounds_since=None,
        revisit_after=None,
    ) -> np.ndarray:
        available = {
            "policy": name,
            "name": name,
            "policy_name": name,
            "pass_rate": pass_rate,
            "predicted": pass_rate,
            "predicted_pass_rate": pass_rate,
            "uncertainty": uncertainty,
            "pass_rate_std": uncertainty,
            "std": uncertainty,
            "n_select": n_select,
            "group_size": group_size,
            "low": low,
            "high": high,
            "band_low": low,
            "band_high": high,
            "exploration": exploration,
            "rng": rng,
        }
        if revisit_after is not None and rounds_since is not None:
            available.update(rounds_since=rounds_since, revisit_after=revisit_after)
        if callable(select_fn):
            return _indices_of(call_with_known(select_fn, available))
        if inspect.isclass(entry):
            obj = call_with_known(entry, available)
            method = getattr(obj, "select", None) or obj
            return _indices_of(call_with_known(method, available))
        if callable(entry):
            return _indices_of(call_with_known(entry, available))
        method = getattr(entry, "select", None)
        if callable(method):
            return _indices_of(call_with_known(method, available))
        raise TypeError(f"selection policy {name!r} is neither callable nor has a select method")

    return policy


def build_featurizer(names: Sequence[str], fit_batch=None, history=None, options: dict | None = None):
    """A ``depo_trl.features.Featurizer`` for ``names`` (``options``: per-group constructor options, when the
    Featurizer takes them); groups with a ``fit`` method are fitted on ``fit_batch`` (unsupervised: only prompt
    texts, never labels) when one is given."""
    from depo_trl.features import Featurizer

    featurizer = Featurizer(list(names), options=options) if options else Featurizer(list(names))
    if fit_batch is not None:
        for group in featurizer.groups:
            fit = getattr(group, "fit", None)
            if callable(fit):
                call_with_known(fit, {"batch": fit_batch, "texts": list(fit_batch.texts), "history": history})
    return featurizer


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties get half credit); NaN when only one class is present."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
