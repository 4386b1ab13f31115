"""Benchmark 2, Cold start: predicting the pass rate of prompts never seen, from their content alone.

Data: ``passrate/deepscaler_qwen25math7b_passrate.jsonl`` (29,895 DeepScaleR problems, each with a pass rate of
Qwen2.5-Math-7B measured over 128 samples). A seeded 80% of the distinct problem texts is the training split, the
other 20% the test split (split by text: a problem that occurs twice in the file is never on both sides).

Methods: every estimator in ``depo_trl.estimators.ESTIMATORS``, over the feature groups ``length`` + ``text``
(``length`` alone when ``text`` is not registered), fitted with one ``partial_fit`` on the whole training split
(passes = successes, trials = samples; an estimator with a ``window`` gets one as large as the split, as
``warm_start_from_jsonl`` recommends), and a TF-IDF + ridge baseline (scikit-learn). No history: every test
prompt is unseen, so a history-only estimator (``beta``) can only predict its prior.

Metrics on the test split: Pearson r between predicted and true pass rate; ROC AUC of the predicted expected
usefulness ``1 - p^8 - (1-p)^8`` for the label "a group of 8 is useful" (8 Bernoulli(true pass rate) draws per
prompt with a fixed seed; useful when 0 < k < 8); and the true usefulness (mean of ``1 - p^8 - (1-p)^8`` with the
true p) of the 30% of test prompts each method ranks most useful, next to uniform (all test prompts) and an
oracle (the 30% truly most useful).

Run: ``python -m benchmarks.cold_start`` (``--quick`` for a 3,000-prompt subsample). Writes
``benchmarks/results/cold_start.json`` and ``.png`` and rewrites the ``cold_start`` section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import common
from .baselines import TfidfRidgePassRate

NAME = "cold_start"
DATA_FILE = "passrate/deepscaler_qwen25math7b_passrate.jsonl"
GROUP_SIZE = 8
TOP_SHARE = 0.3
TARGET_R = 0.55  # issue 9: best DEPO estimator r >= 0.55 and above TF-IDF + ridge on the same input


@dataclass
class PassRateData:
    texts: list[str]
    pass_rate: np.ndarray
    passes: np.ndarray
    trials: np.ndarray
    answers: list[str] | None = None


def load_passrates(limit_n: int | None = None, seed: int = 0) -> PassRateData:
    """All rows (or a seeded random subsample of ``limit_n``) with their measured passes and trials."""
    texts, rate, passes, trials, answers = [], [], [], [], []
    with open(common.data_file(DATA_FILE)) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            counts = row["successes_of_128"]
            counts = counts if isinstance(counts, list) else [counts]
            n = float(row.get("n_samples") or 128)
            texts.append(str(row["problem"]))
            answers.append(str(row.get("answer") or ""))
            passes.append(float(sum(counts)))
            trials.append(n * len(counts))
            rate.append(float(row["pass_rate"]))
    data = PassRateData(texts, np.asarray(rate), np.asarray(passes), np.asarray(trials), answers)
    if limit_n is not None and limit_n < len(texts):
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit_n, replace=False))
        data = PassRateData([texts[i] for i in keep], data.pass_rate[keep], data.passes[keep], data.trials[keep],
                            [answers[i] for i in keep])
    return data


def split_by_text(texts: list[str], test_share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Seeded train/test split over distinct problem texts, so no test prompt's exact text is in training (some
    problems occur more than once in the file); returns the row indices of each side and how many texts repeat."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(text, []).append(i)
    distinct = list(groups)
    order = rng.permutation(len(distinct))
    n_test = round(test_share * len(distinct))
    test = np.sort(np.array([i for g in order[:n_test] for i in groups[distinct[g]]], dtype=np.int64))
    train = np.sort(np.array([i for g in order[n_test:] for i in groups[distinct[g]]], dtype=np.int64))
    return train, test, sum(len(v) > 1 for v in groups.values())


def usefulness(p: np.ndarray, group_size: int = GROUP_SIZE) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    return 1.0 - p**group_size - (1.0 - p) ** group_size


def top_share_usefulness(score: np.ndarray, true_p: np.ndarray, share: float, rng: np.random.Generator) -> float:
    """True usefulness of the ``share`` of prompts with the highest ``score`` (ties broken at random)."""
    k = max(1, round(share * len(score)))
    order = np.lexsort((rng.random(len(score)), -np.asarray(score, dtype=np.float64)))
    return float(usefulness(true_p[order[:k]]).mean())


def evaluate(pred: np.ndarray, true_p: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from scipy.stats import spearmanr

    pred = np.clip(np.asarray(pred, dtype=np.float64), 0.0, 1.0)
    score = usefulness(pred)
    constant = np.std(pred) < 1e-12
    return {
        "pearson_r": common.pearson(pred, true_p),
        "spearman_r": float("nan") if constant else float(spearmanr(pred, true_p).statistic),
        "auc_useful": common.roc_auc(labels, score),
        "top_usefulness": top_share_usefulness(score, true_p, TOP_SHARE, np.random.default_rng(seed)),
        "mean_prediction": float(pred.mean()),
        "constant_prediction": bool(constant),
    }


def _estimator_kwargs(cls, n_train: int) -> dict:
    """Let an estimator with a bounded window keep the whole training split."""
    params = inspect.signature(cls.__init__).parameters
    return {"window": max(n_train, int(params["window"].default or 0))} if "window" in params else {}


#: The inputs every method is compared on: the problem text alone, and the problem with its reference answer (a
#: dataset column every RLVR dataset carries for its reward, so known before any rollout).
INPUTS = {"prompt": "problem text", "prompt+answer": "problem text + reference answer"}


def plan_for(cls, input_name: str, cache_size: int) -> tuple[list[str], dict]:
    """Feature groups and options of one estimator class on one input (see ``common.feature_plan``)."""
    features, options = common.feature_plan(cls, include_history=False)
    options = {k: dict(v) for k, v in (options or {}).items()}
    if "text" in features:
        text = options.setdefault("text", {})
        text["cache_size"] = cache_size
        if input_name == "prompt+answer":
            text["columns"] = ["answer"]
    return features, options


def run_estimator(name, cls, features, options, train, test, kwargs, featurizers):
    """Fit one estimator through the engine (``PromptSelector.fit`` on the training split, ``score`` on the test
    split: exactly what a user's warm start and first round do). ``featurizers`` shares a fitted featurizer (its
    IDF and row cache) between estimators with the same feature plan, so texts are vectorised once."""
    from depo_trl.engine import PromptSelector

    settings = {"depo_estimator": name, "depo_estimator_kwargs": kwargs, "depo_features": features,
                "depo_feature_options": options, "depo_revisit_after": None}
    selector = PromptSelector.from_config(settings, group_size=GROUP_SIZE, seed=0)
    plan = json.dumps([features, options], sort_keys=True)
    if plan in featurizers:
        selector.featurizer = featurizers[plan]
    featurizers[plan] = selector.featurizer
    t0 = time.perf_counter()
    selector.fit(train["texts"], train["passes"], train["trials"], metadata=train["metadata"])
    t1 = time.perf_counter()
    scores = selector.score(test["texts"], metadata=test["metadata"])
    t2 = time.perf_counter()
    pred = scores.predicted
    if pred.shape != (len(test["texts"]),) or not np.isfinite(pred).all():
        raise RuntimeError(f"{name} returned {pred.shape} / non-finite predictions for {len(test['texts'])} prompts")
    width = scores.features.shape[1]
    return pred, {"fit_seconds": t1 - t0, "predict_seconds": t2 - t1, "kwargs": kwargs, "features": features,
                  "feature_options": options, "n_feature_columns": int(width)}


# ---------------------------------------------------------------------------- report
def _table(results: dict) -> str:
    headers = [
        "input",
        "method",
        "features",
        "Pearson r",
        "Spearman",
        "AUC useful@8",
        f"top-{TOP_SHARE:.0%} usefulness",
        "fit s",
    ]
    rows = []
    for r in results.values():
        if "error" in r:
            rows.append([r.get("input", "-"), r["label"], r.get("features_label", "-"), "skipped", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                r.get("input", "-"),
                r["label"],
                r.get("features_label", "-"),
                r.get("pearson_r"),
                r.get("spearman_r"),
                r.get("auc_useful"),
                r.get("top_usefulness"),
                f"{r['fit_seconds']:.1f}" if r.get("fit_seconds") is not None else "-",
            ]
        )
    return common.format_table(headers, rows)


def _plot(results: dict, path: Path) -> Path:
    plt = common.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 5.2))
    models = {k: r for k, r in results.items() if "error" not in r and r["kind"] == "model"}
    labels = [f"{r['label']} [{r.get('input', '-')}]" for r in models.values()]
    x = np.arange(len(labels))
    r_vals = [np.nan_to_num(r["pearson_r"], nan=0.0) for r in models.values()]
    auc_vals = [np.nan_to_num(r["auc_useful"], nan=0.5) for r in models.values()]
    ax1.bar(x - 0.2, r_vals, 0.4, label="Pearson r")
    ax1.bar(x + 0.2, auc_vals, 0.4, label="AUC (useful group at G=8)")
    ax1.axhline(TARGET_R, color="k", ls=":", lw=1, label=f"target r = {TARGET_R}")
    ax1.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax1.set_ylim(0, 1)
    ax1.set_title("Cold start: content-only prediction on unseen prompts")
    ax1.legend(fontsize=8)
    ax1.grid(axis="y", alpha=0.3)
    top = [r["top_usefulness"] for r in models.values()]
    ax2.bar(x, top, 0.6, color="tab:green")
    ax2.axhline(results["uniform"]["top_usefulness"], color="tab:red", ls="--", label="uniform")
    ax2.axhline(results["oracle"]["top_usefulness"], color="k", ls=":", label="oracle")
    ax2.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("true usefulness of the picks")
    ax2.set_title(f"Top-{TOP_SHARE:.0%} picks by predicted usefulness")
    ax2.legend(fontsize=8)
    ax2.grid(axis="y", alpha=0.3)
    return common.save_figure(fig, path)


def _targets(results: dict) -> dict:
    """Per input: the best DEPO estimator's r, the TF-IDF + ridge baseline's on the same input, and the verdict
    (r >= TARGET_R and above the baseline); met when it holds on some input."""
    per_input = {}
    for input_name in INPUTS:
        depo = {
            k: r["pearson_r"]
            for k, r in results.items()
            if k.startswith("depo:") and r.get("input") == input_name and "error" not in r
            and r.get("pearson_r") is not None and np.isfinite(r["pearson_r"])
        }
        base = results.get(f"tfidf_ridge:{input_name}", {}).get("pearson_r")
        if not depo:
            continue
        best = max(depo, key=depo.get)
        per_input[input_name] = {
            "best_estimator": results[best]["label"],
            "best_pearson_r": depo[best],
            "tfidf_ridge_pearson_r": base,
            "above_baseline": base is None or depo[best] > base,
            "met": depo[best] >= TARGET_R and (base is None or depo[best] > base),
        }
    if not per_input:
        return {"evaluated": False, "reason": "no DEPO estimator gave a non-constant prediction"}
    return {"evaluated": True, "target_pearson_r": TARGET_R, "inputs": per_input,
            "met": any(v["met"] for v in per_input.values())}


def _verdict(t: dict) -> str:
    if not t.get("evaluated"):
        return f"Target not evaluated: {t.get('reason')}."
    parts = []
    for input_name, v in t["inputs"].items():
        base = v["tfidf_ridge_pearson_r"]
        parts.append(
            f"on {INPUTS[input_name]}: best DEPO {v['best_estimator']} r = {v['best_pearson_r']:.3f} vs TF-IDF + "
            f"ridge r = {base:.3f} on the same input ({'met' if v['met'] else 'not met'}: r >= {TARGET_R} "
            f"{'yes' if v['best_pearson_r'] >= TARGET_R else 'no'}, above the baseline "
            f"{'yes' if v['above_baseline'] else 'no'})"
        )
    met = [INPUTS[name] for name, v in t["inputs"].items() if v["met"]]
    missed = [INPUTS[name] for name, v in t["inputs"].items() if not v["met"]]
    status = ("met on every input" if not missed else "not met on any input" if not met
              else f"met on {', '.join(met)}; not met on {', '.join(missed)}")
    return (f"**Target (best DEPO estimator r >= {TARGET_R} and above TF-IDF + ridge on the same input): "
            f"{status}** — " + "; ".join(parts) + ".")


def _docs_body(payload: dict, table: str, plot_path: Path, docs_path: Path) -> str:
    import os

    cfg, t = payload["config"], payload["targets"]
    plot_rel = common.relative_to_repo(plot_path)
    plot_link = os.path.relpath(Path(plot_path).resolve(), Path(docs_path).resolve().parent)
    verdict = _verdict(t)
    lines = [
        "## Cold start: content-only prediction for unseen prompts",
        "",
        (
            f"Data: `{DATA_FILE}` ({cfg['n_total']} problems, pass rate of Qwen2.5-Math-7B over 128 samples). "
            f"Train on a seeded {1 - cfg['test_share']:.0%} of the distinct problem texts ({cfg['n_train']} "
            f"prompts), predict the other {cfg['test_share']:.0%} ({cfg['n_test']}) from content alone; the split is "
            f"by text, so none of the {cfg['texts_occurring_more_than_once']} texts that occur more than once is on "
            "both sides. Two inputs: the problem text alone, and the problem with its reference answer (a dataset "
            "column that every RLVR dataset carries for its reward, so known before any rollout; DEPO reads it "
            "through the `text` group's `columns` option, the baseline gets it appended to the text). Each DEPO "
            "estimator runs through the engine (`PromptSelector.fit` on the training split, then `score`), with "
            "the feature groups in its row (estimators that accept sparse input get the 2^18-column TF-IDF per "
            "source, the others a dense 128-column one). AUC: predicted usefulness "
            "1 - p^8 - (1-p)^8 against a sampled label (8 Bernoulli draws of the true pass rate, seed "
            f"{cfg['label_seed']}; useful when 0 < k < 8). Top-{TOP_SHARE:.0%}: true usefulness of the picks."
        ),
        "",
        table,
        "",
        verdict,
        "",
    ]
    lines += [f"- {note}" for note in payload.get("notes", [])]
    lines += [
        "",
        (
            f"Command: `{payload['command']}` ({payload['runtime_seconds']:.0f} s). "
            f"Machine: {common.machine_line(payload['machine'])}."
        ),
        "",
        f"Plot: `{plot_rel}`",
        "",
        f"![cold start]({Path(plot_link).as_posix()})",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3,000-prompt subsample")
    ap.add_argument("--n", type=int, default=None, help="seeded random subsample of the problems (default: all)")
    ap.add_argument("--test-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0, help="split, label and tie-break seed")
    ap.add_argument("--estimators", nargs="*", default=None, help="only these registered estimators")
    ap.add_argument("--inputs", nargs="*", default=None, choices=list(INPUTS), help="only these inputs")
    ap.add_argument(
        "--feature-options",
        type=json.loads,
        default=None,
        help='per-group feature options as JSON, e.g. \'{"text": {"dim": 1024}}\' (default: the library defaults)',
    )
    ap.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    ap.add_argument("--docs", type=Path, default=common.DOCS_PATH)
    ap.add_argument(
        "--no-docs", action="store_true", help="do not rewrite the docs section (implied by --quick unless --docs)"
    )
    args = ap.parse_args(argv)
    given = set(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.n = args.n or 3000
        if "--docs" not in given:
            args.no_docs = True
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    common.limit_blas_threads(1)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    started = time.perf_counter()
    rng = common.seed_everything(args.seed)
    data = load_passrates(args.n, seed=args.seed)
    n = len(data.texts)
    train, test, n_duplicated = split_by_text(data.texts, args.test_share, rng)
    true_p = data.pass_rate[test]
    k = np.random.default_rng(args.seed + 1).binomial(GROUP_SIZE, np.clip(true_p, 0, 1))
    labels = (k > 0) & (k < GROUP_SIZE)
    answers = data.answers or [""] * n

    def split(rows):
        return {
            "texts": [data.texts[i] for i in rows],
            "metadata": {"answer": [answers[i] for i in rows]},
            "passes": data.passes[rows],
            "trials": data.trials[rows],
        }

    tr, te = split(train), split(test)
    print(
        f"cold start: {n} problems, train {len(train)}, test {len(test)}, inputs {list(INPUTS)}, "
        f"useful label rate {labels.mean():.3f}",
        flush=True,
    )
    results: dict[str, dict] = {}
    notes: list[str] = []
    for input_name in INPUTS:
        if args.inputs and input_name not in args.inputs:
            continue
        featurizers: dict = {}
        for name, cls in common.registered_estimators().items():
            if args.estimators and name not in args.estimators:
                continue
            features, options = plan_for(cls, input_name, cache_size=n + 1)
            for group, extra in (args.feature_options or {}).items():
                if group in features:
                    options.setdefault(group, {}).update(extra)
            key = f"depo:{name}:{input_name}"
            width = (options.get("text") or {}).get("dim")
            feat_label = "+".join(features) + (f" (text {width})" if width else " (text 2^18 sparse)")
            entry = {"label": f"DEPO {name}", "kind": "model", "input": input_name, "estimator": name,
                     "features_label": feat_label}
            try:
                pred, info = run_estimator(name, cls, features, options, tr, te, _estimator_kwargs(cls, len(train)),
                                           featurizers)
                entry.update(info)
                entry.update(evaluate(pred, true_p, labels, args.seed))
                if entry["constant_prediction"] and input_name == next(iter(INPUTS)):  # once, not per input
                    notes.append(
                        f"DEPO {name} predicts one value for every unseen prompt ({entry['mean_prediction']:.3f}): "
                        "it uses no content features (history only), so r and AUC are undefined and its top-30% "
                        "is a random pick."
                    )
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                notes.append(f"DEPO {name} on {input_name} skipped: {entry['error']}")
                traceback.print_exc()
            results[key] = entry
            print(f"  {input_name:<14s} {entry['label']:<22s} r={entry.get('pearson_r', float('nan')):.3f} "
                  f"({entry.get('fit_seconds', float('nan')):.1f} s)", flush=True)

        def joined(rows):
            if input_name == "prompt":
                return [data.texts[i] for i in rows]
            return [f"{data.texts[i]}\n\nAnswer: {answers[i]}" for i in rows]

        t0 = time.perf_counter()
        ridge = TfidfRidgePassRate().fit(joined(train), data.pass_rate[train], seed=args.seed)
        t1 = time.perf_counter()
        pred = ridge.predict(joined(test))
        results[f"tfidf_ridge:{input_name}"] = {
            "label": "TF-IDF + ridge (baseline)",
            "kind": "model",
            "input": input_name,
            "features_label": "tfidf word 1-2g" + (" of problem + answer" if input_name != "prompt" else ""),
            "fit_seconds": t1 - t0,
            "predict_seconds": time.perf_counter() - t1,
            "alpha": ridge.alpha_,
            **evaluate(pred, true_p, labels, args.seed),
        }
        print(f"  {input_name:<14s} {'TF-IDF + ridge':<22s} r={results[f'tfidf_ridge:{input_name}']['pearson_r']:.3f}",
              flush=True)

    results["uniform"] = {
        "label": "uniform (reference)",
        "kind": "reference",
        "top_usefulness": float(usefulness(true_p).mean()),
    }
    results["oracle"] = {
        "label": "oracle (true pass rate)",
        "kind": "reference",
        "pearson_r": 1.0,
        "auc_useful": common.roc_auc(labels, usefulness(true_p)),
        "top_usefulness": top_share_usefulness(usefulness(true_p), true_p, TOP_SHARE, np.random.default_rng(0)),
    }

    runtime = time.perf_counter() - started
    table = _table(results)
    targets = _targets(results)
    suffix = "_quick" if args.quick else ""
    json_path = args.results_dir / f"{NAME}{suffix}.json"
    png_path = args.results_dir / f"{NAME}{suffix}.png"
    payload = {
        "benchmark": NAME,
        "command": common.command_line("benchmarks.cold_start", argv_list),
        "machine": common.machine_info(),
        "runtime_seconds": runtime,
        "config": {
            "n_total": n,
            "n_train": len(train),
            "n_test": len(test),
            "test_share": args.test_share,
            "split": "by distinct problem text",
            "texts_occurring_more_than_once": n_duplicated,
            "seed": args.seed,
            "label_seed": args.seed + 1,
            "inputs": INPUTS,
            "top_share": TOP_SHARE,
            "group_size": GROUP_SIZE,
            "estimators": list(common.registered_estimators()),
            "quick": args.quick,
        },
        "data": {"file": DATA_FILE, "useful_label_rate": float(labels.mean()), "mean_pass_rate": float(true_p.mean())},
        "results": results,
        "targets": targets,
        "notes": notes,
        "table": table,
    }
    _plot(results, png_path)
    payload["plot"] = common.relative_to_repo(png_path)
    common.write_json(json_path, payload)
    print()
    print(table)
    print()
    print(_verdict(targets))
    for note in notes:
        print("note:", note)
    print(f"wrote {json_path} and {png_path} in {runtime:.1f} s")
    if not args.no_docs:
        docs = common.update_docs_section(NAME, _docs_body(payload, table, png_path, args.docs), args.docs)
        print(f"updated the '{NAME}' section of {docs}")
    return payload


if __name__ == "__main__":
    common.run_main(main)
