"""Quick cold-start check of every registered estimator on real pass rates (content features only).

Data: 29,895 DeepScaleR problems with pass rates measured on Qwen2.5-Math-7B (128 samples each). A seeded 80/20
split; each estimator is warm-started on the 80% through ``warm_start_from_jsonl`` with the ``length`` and
``text`` feature groups (no policy, no history), then predicts the unseen 20%. Reported per estimator:

- Pearson r between predicted and true pass rate (undefined for a constant prediction);
- true usefulness of its top-30% picks: the mean of 1 - p^G - (1-p)^G (G = 8) using the TRUE pass rate p, over
  the 30% of held-out prompts with the highest *predicted* usefulness; next to uniform (the mean over all held-out
  prompts, what GRPO gets) and an oracle (top 30% by true usefulness).

Usage: python benchmarks/estimator_cold_start_quick.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from depo_trl.estimators import ESTIMATORS, make_estimator, warm_start_from_jsonl
from depo_trl.estimators.warm_start import featurize_prompts, read_passrate_jsonl
from depo_trl.features import Featurizer
from depo_trl.selection import expected_usefulness

DEFAULT_DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "passrate",
    "deepscaler_qwen25math7b_passrate.jsonl",
)


def top_share_usefulness(score: np.ndarray, true_useful: np.ndarray, share: float, rng) -> float:
    """Mean true usefulness of the ``share`` of prompts with the highest score (ties broken at random)."""
    k = int(round(share * len(score)))
    order = np.lexsort((rng.random(len(score)), -score))
    return float(true_useful[order[:k]].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-frac", type=float, default=0.8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--top", type=float, default=0.3)
    parser.add_argument("--text-dim", type=int, default=128)
    parser.add_argument("--estimators", default=",".join(sorted(ESTIMATORS)))
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    if not os.path.exists(args.data):
        raise SystemExit(f"Pass-rate file not found: {args.data} (see shared/data/README.md).")
    rows, passes, trials, _ = read_passrate_jsonl(args.data)
    n = len(rows)
    order = np.random.default_rng(args.seed).permutation(n)
    n_train = int(args.train_frac * n)
    train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
    featurizer = Featurizer(["length", "text"], seed=args.seed, options={"text": {"dim": args.text_dim}})
    t0 = time.perf_counter()
    X_test, keys_test = featurize_prompts(featurizer, [rows[i]["_prompt"] for i in test])
    true_rate = passes[test] / trials[test]
    true_useful = expected_usefulness(true_rate, args.group)
    print(f"{n} prompts: train {len(train)}, test {len(test)}; {X_test.shape[1]} features "
          f"(featurised the test split in {time.perf_counter() - t0:.1f}s)")

    # Windowed estimators keep every warm-start row; everything else is the registry default.
    overrides = {"logistic": {"window": n_train}, "gbdt": {"window": n_train}}
    results = {}
    for name in args.estimators.split(","):
        est = make_estimator(name, **overrides.get(name, {}))
        t0 = time.perf_counter()
        warm_start_from_jsonl(est, featurizer, args.data, indices=[rows[i]["_line"] for i in train])
        fit_seconds = time.perf_counter() - t0
        predicted = est.predict_pass_rate(X_test, keys=keys_test)
        r = float(np.corrcoef(predicted, true_rate)[0, 1]) if np.std(predicted) > 0 else float("nan")
        rng = np.random.default_rng(args.seed)
        top = top_share_usefulness(expected_usefulness(predicted, args.group), true_useful, args.top, rng)
        results[name] = {"pearson_r": r, "top_usefulness": top, "fit_seconds": fit_seconds}

    uniform = float(true_useful.mean())
    oracle = top_share_usefulness(true_useful, true_useful, args.top, np.random.default_rng(args.seed))
    print(f"\n{'estimator':<10} {'Pearson r':>10} {'top-' + str(int(args.top * 100)) + '% useful':>15} "
          f"{'vs uniform':>11} {'fit s':>7}")
    for name, res in results.items():
        print(f"{name:<10} {res['pearson_r']:>10.3f} {res['top_usefulness']:>15.3f} "
              f"{res['top_usefulness'] - uniform:>+11.3f} {res['fit_seconds']:>7.1f}")
    print(f"{'uniform':<10} {'':>10} {uniform:>15.3f}\n{'oracle':<10} {'':>10} {oracle:>15.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "uniform": uniform, "oracle": oracle, "estimators": results}, f, indent=2)


if __name__ == "__main__":
    main()
