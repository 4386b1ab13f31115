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

TINY_SPEC = {"min_length": 2, "max_length": 5, "hidden_size": 32, "num_layers": 2, "warm_steps": 10, "warm_batch": 16}
TINY_SIZE = {"n_train": 48, "n_heldout": 16, "prompts_per_step": 4, "group": 4, "steps": 4, "eval_every": 2, "eval_samples": 1,
                 "lr": 1e-3, "depo_warmup_steps": 1}


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


def test_quick_benchmark_end_to_end(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
    counters = {}

    class PerMethodReward(CountingReward):
        pass

    reward = PerMethodReward()
    calls_before = {}

    def log(message):
        if message.startswith("[") and "training" in message:
            calls_before[message.split("]")[0][1:]] = reward.calls
        if message.startswith("[") and "completions" in message and "training" not in message:
            label = message.split("]")[0][1:]
            counters[label] = reward.calls - calls_before[label]

    spec = e2e_task.TaskSpec(**TINY_SPEC)
    payload = e2e.run_benchmark(
        dict(TINY_SIZE), spec, ["GRPO", "DS", "GRESO", "DEPO"], str(tmp_path / "out"), "e2e_test", "test",
        str(docs), cache_dir=str(tmp_path / "cache"), reward_func=reward, log=log,
    )
    data = json.loads((tmp_path / "out" / "e2e_test.json").read_text())
    assert (tmp_path / "out" / "e2e_test.png").stat().st_size > 0
    assert [m["method"] for m in data["methods"]] == ["GRPO", "DS", "GRESO", "DEPO"]
    per_round = TINY_SIZE["prompts_per_step"] * TINY_SIZE["group"]
    for m in data["methods"]:
        ledger = m["ledger"]
        assert ledger["completions"] == counters[m["method"]]  # every generated completion is counted
        assert ledger["completions"] == TINY_SIZE["group"] * ledger["groups"]
        assert ledger["trained_groups"] == TINY_SIZE["steps"] * TINY_SIZE["prompts_per_step"]
        if m["method"] == "DS":
            assert ledger["completions"] >= TINY_SIZE["steps"] * per_round
        else:
            assert ledger["completions"] == TINY_SIZE["steps"] * per_round
        assert 0 < ledger["tokens"] <= ledger["completions"] * spec.max_completion_length
        steps = [p["step"] for p in m["curve"]]
        assert steps == [0, 2, 4]
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in m["curve"])
        completions = [p["completions"] for p in m["curve"]]
        assert completions[0] == 0 and completions == sorted(completions)
    assert set(data["analysis"]["targets"]) == {"grpo_final", "grpo_90"}
    grpo = next(m for m in data["methods"] if m["method"] == "GRPO")
    assert grpo["reach"]["grpo_final"] is not None  # GRPO reaches its own final accuracy
    assert "DEPO" in data["analysis"]["verdict"]
    text = docs.read_text()
    assert "keep me" in text and text.count("<!-- e2e:start -->") == 1 and "| GRPO |" in text
    # a second run replaces the section in place
    e2e.update_docs_section("replaced", str(docs))
    text = docs.read_text()
    assert "replaced" in text and "| GRPO |" not in text and "keep me" in text
    assert payload["meta"]["command"] == "test"
