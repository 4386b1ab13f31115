"""Faults during training, the audit trail, streaming data, and resume that matches an uninterrupted run."""

import numpy as np
import pytest
from datasets import Dataset, IterableDataset

from depo_trl import DEPOTrainer
from depo_trl.audit import DecisionLog, read_decisions
from depo_trl.tasks import letters_dataset, letters_reward


def _trainer(tokenizer, args, dataset=None, reward=letters_reward, seed=0, **kwargs):
    from depo_trl.tiny import build_model

    return DEPOTrainer(model=build_model(tokenizer, seed=seed), reward_funcs=reward, args=args,
                       train_dataset=dataset if dataset is not None else letters_dataset(96),
                       processing_class=tokenizer, **kwargs)


def test_audit_trail_records_every_decision(tokenizer, config_factory):
    args = config_factory(max_steps=3, depo_warmup_steps=1)
    trainer = _trainer(tokenizer, args)
    trainer.train()
    rounds = read_decisions(args.output_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert rounds[0]["warmup"] and len(rounds[0]["dataset_index"]) == 4  # GRPO's batch: rows from TRL's sampler
    last = rounds[-1]
    assert len(last["prompt_key"]) == 16 and len(last["dataset_index"]) == 16
    rolled = [i for i, d in enumerate(last["decision"]) if not d.startswith("skip_")]
    assert len(rolled) == 4
    assert all(last["trials"][i] == 4 for i in rolled)  # observed outcome of every rolled-out prompt
    for i, d in enumerate(last["decision"]):
        if d == "skip_too_easy":
            assert last["predicted"][i] > 0.85
        if d == "skip_too_hard":
            assert last["predicted"][i] < 0.15
        if d.startswith("skip_"):
            assert last["passes"][i] is None


def test_audit_trail_is_bounded(tmp_path):
    log = DecisionLog(str(tmp_path), max_bytes=2_000)
    for i in range(200):
        log.write({"round": i, "payload": "x" * 100})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["depo_decisions.1.jsonl", "depo_decisions.jsonl"]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 2 * 2_000 + 200
    assert read_decisions(str(tmp_path))[-1]["round"] == 199


def test_unscorable_groups_are_not_labels(tokenizer, config_factory):
    """A reward function that returns None for some completions: those groups teach the estimator nothing."""
    calls = {"n": 0}

    def flaky_reward(completions, allowed, **kwargs):
        calls["n"] += 1
        rewards = letters_reward(completions, allowed)
        if calls["n"] % 2 == 0:  # every other round, the first completion cannot be scored
            rewards[0] = None
        return rewards

    args = config_factory(max_steps=4, depo_warmup_steps=0)
    trainer = _trainer(tokenizer, args, reward=flaky_reward)
    trainer.train()
    rounds = read_decisions(args.output_dir)
    broken = [r for r in rounds if r["round"] % 2 == 0]
    for r in broken:
        first_rolled = r["rolled_out"][0]  # the group whose first completion was unscorable
        assert r["trials"][first_rolled] == 0  # the whole group was set aside
    assert trainer.depo_stats.labelled_groups == 4 * 4 - 2
    assert trainer.depo_stats.rounds == 4


def test_non_binary_rewards_are_thresholded(tokenizer, config_factory):
    def shaped(completions, allowed, **kwargs):
        return [0.9 if r else 0.2 for r in letters_reward(completions, allowed)]

    args = config_factory(max_steps=2, depo_warmup_steps=0, depo_pass_threshold=0.8)
    trainer = _trainer(tokenizer, args, reward=shaped)
    trainer.train()
    for r in read_decisions(args.output_dir):
        for p, t in zip(r["passes"], r["trials"]):
            if t is not None:
                assert 0 <= p <= t  # counts of passes, not sums of shaped rewards


def test_long_prompts_are_truncated_for_embedding_only(tokenizer, config_factory):
    long_rows = [{"prompt": [{"role": "user", "content": "x" * 3000 + f" Answer with one character from: {c}"}],
                  "allowed": c} for c in "abcdefghijklmnopqrstuvwxyz" * 3]
    args = config_factory(max_steps=1, depo_warmup_steps=0, depo_embedding_max_length=64, max_completion_length=2)
    trainer = _trainer(tokenizer, args, dataset=Dataset.from_list(long_rows))
    seen_lengths = []
    original = trainer._embed

    def spy(token_ids, pad_token_id, answer_ids=None):
        seen_lengths.extend(len(t) for t in token_ids)
        return original(token_ids, pad_token_id, answer_ids)

    trainer._embed = spy
    trainer.train()
    assert seen_lengths and max(seen_lengths) == 64
    rounds = read_decisions(args.output_dir)
    assert min(rounds[0]["tokens"]) > 3000  # the token count feature (and generation) saw the whole prompt


def test_streaming_dataset(tokenizer, config_factory):
    rows = list({row["allowed"]: row for row in letters_dataset(96)}.values())[:64]  # distinct prompts
    stream = IterableDataset.from_generator(lambda: iter(rows))
    args = config_factory(max_steps=4, depo_warmup_steps=1)
    trainer = _trainer(tokenizer, args, dataset=stream)
    trainer.train()
    assert trainer.depo_stats.rounds == 4
    assert trainer.depo_stats.candidates_scored == 4 + 3 * 16
    state = trainer.depo_candidates.state_dict()
    assert state["consumed"] == 48  # three filtering rounds of 16 candidates from the stream


def test_streaming_dataset_too_small_is_a_clear_error(tokenizer, config_factory):
    rows = list(letters_dataset(64))[:10]
    args = config_factory(max_steps=2, depo_warmup_steps=0)
    trainer = _trainer(tokenizer, args, dataset=IterableDataset.from_generator(lambda: iter(rows)))
    with pytest.raises(ValueError, match="fewer than 16 distinct prompts, one candidate pool"):
        trainer.train()


def test_resumed_run_makes_the_same_selections_as_an_uninterrupted_one(tokenizer, config_factory):
    from transformers import TrainerCallback

    dataset = letters_dataset(128)
    args = config_factory(max_steps=6, depo_warmup_steps=1, save_strategy="steps", save_steps=3)

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt  # the job dies right after its step-3 checkpoint

    uninterrupted = _trainer(tokenizer, config_factory(max_steps=6, depo_warmup_steps=1), dataset=dataset)
    uninterrupted.train()
    crashed = _trainer(tokenizer, args, dataset=dataset, callbacks=[Crash()])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    resumed = _trainer(tokenizer, args, dataset=dataset, seed=123)  # different init: the checkpoint must win
    resumed.train(resume_from_checkpoint=f"{args.output_dir}/checkpoint-3")

    def rolled_keys(directory):
        return {r["round"]: [k for k, d in zip(r["prompt_key"], r["decision"]) if not d.startswith("skip_")]
                for r in read_decisions(directory)}

    full = rolled_keys(uninterrupted.args.output_dir)
    after = rolled_keys(args.output_dir)  # crashed run's rounds 1-3, then the resumed run's 4-6
    assert sorted(after) == [1, 2, 3, 4, 5, 6]
    for round_index in (4, 5, 6):
        assert after[round_index] == full[round_index], f"round {round_index} differs after resume"
    np.testing.assert_allclose(resumed.depo_estimator.coef_, uninterrupted.depo_estimator.coef_, rtol=1e-9)


def test_every_candidate_out_of_band_still_fills_the_batch(tokenizer, config_factory):
    from depo_trl.estimators import LogisticPassRateEstimator

    class SureEverythingIsEasy(LogisticPassRateEstimator):
        def predict_pass_rate(self, X, keys=None):
            return np.full(len(X), 0.99)

    args = config_factory(max_steps=3, depo_warmup_steps=0, depo_exploration=0.0)
    trainer = _trainer(tokenizer, args, estimator=SureEverythingIsEasy())
    trainer.train()
    assert trainer.depo_stats.prompts_rolled_out == 12  # 3 full batches of U = 4
    decisions = [d for r in read_decisions(args.output_dir) for d in r["decision"]]
    assert decisions.count("fill") == 12 and decisions.count("skip_too_easy") == 36
