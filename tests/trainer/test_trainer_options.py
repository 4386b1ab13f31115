"""The library's estimators, feature groups and policies, used through DEPOConfig in the real trainer."""

import json

import numpy as np
import pytest

from depo_trl import DEPOTrainer
from depo_trl.estimators import ESTIMATORS
from depo_trl.tasks import letters_dataset, letters_reward


def _trainer(tokenizer, args, dataset=None, seed=0, **kwargs):
    from depo_trl.tiny import build_model

    return DEPOTrainer(model=build_model(tokenizer, seed=seed), reward_funcs=letters_reward, args=args,
                       train_dataset=dataset if dataset is not None else letters_dataset(96),
                       processing_class=tokenizer, **kwargs)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_registered_estimator_trains(tokenizer, config_factory, estimator):
    args = config_factory(max_steps=3, depo_warmup_steps=1, depo_estimator=estimator)
    trainer = _trainer(tokenizer, args)
    trainer.train()
    assert trainer.depo_stats.rounds == 3 and trainer.depo_stats.estimator_failures == 0
    assert trainer.depo_stats.prompts_rolled_out == 12


@pytest.mark.parametrize("policy", ["band", "usefulness", "thompson"])
def test_every_selection_policy_trains(tokenizer, config_factory, policy):
    args = config_factory(max_steps=3, depo_warmup_steps=1, depo_selection=policy)
    trainer = _trainer(tokenizer, args)
    trainer.train()
    assert trainer.depo_stats.prompts_rolled_out == 12 and trainer.depo_stats.estimator_failures == 0


def test_metadata_and_text_features(tokenizer, config_factory):
    args = config_factory(max_steps=2, depo_warmup_steps=1, depo_features=["length", "text", "metadata"],
                          depo_feature_options={"text": {"dim": 32}, "metadata": {"columns": ["set_size"]}})
    trainer = _trainer(tokenizer, args)
    trainer.train()
    width = trainer._features([letters_dataset(2)[0]["prompt"]], {"set_size": [3]}).shape[1]
    assert trainer.depo_estimator.n_features_in_ == width > 6 + 32  # length + text + a metadata block
    with pytest.raises(ValueError, match=r"reads columns \['level'\].*lacks"):
        _trainer(tokenizer, config_factory(depo_features=["metadata"],
                                           depo_feature_options={"metadata": {"columns": ["level"]}}))
    with pytest.raises(ValueError, match="depo_feature_options has options for \\['text'\\]"):
        config_factory(depo_features=["length"], depo_feature_options={"text": {"dim": 8}})
    with pytest.raises(ValueError, match="depo_selection: Unknown selection policy"):
        config_factory(depo_selection="greedy")


def test_warm_start_from_a_pass_rate_file(tokenizer, config_factory, tmp_path):
    rows = letters_dataset(64)
    path = tmp_path / "passrates.jsonl"
    with open(path, "w") as f:
        for row in rows:  # the true pass rate of a set of size s under a uniform first character is about s/94
            f.write(json.dumps({"prompt": row["prompt"], "pass_rate": row["set_size"] / 94, "n_samples": 128}) + "\n")
    args = config_factory(max_steps=1, depo_warmup_steps=0, depo_warm_start_path=str(path))
    trainer = _trainer(tokenizer, args)
    assert trainer.depo_estimator.n_updates_ == 0
    trainer.train()
    assert trainer.depo_estimator.n_updates_ == 2  # the warm start, then the first round
    easy = [r["prompt"] for r in rows if r["set_size"] >= 80][:4]
    hard = [r["prompt"] for r in rows if r["set_size"] <= 2][:4]
    predicted = trainer._score(easy + hard)[0].predicted
    assert predicted[:4].mean() > predicted[4:].mean() + 0.3
    with pytest.raises(ValueError, match="depo_warm_start_path .* does not exist"):
        config_factory(depo_warm_start_path=str(tmp_path / "nope.jsonl"))


def test_mask_zero_variance_shrinks_the_loss_normaliser(tokenizer, config_factory):
    from depo_trl.tasks import ControlledReward, controlled_dataset
    from depo_trl.tiny import build_model

    normalisers = {}
    for mask in (False, True):
        class Spy(DEPOTrainer):
            def _generate_and_score_completions(self, inputs):
                output = super()._generate_and_score_completions(inputs)
                normalisers.setdefault(mask, []).append(
                    (float(output["num_items_in_batch"]),
                     int((output["completion_mask"] * output.get("tool_mask", 1)).sum())))
                return output

        args = config_factory(max_steps=2, depo_warmup_steps=0, depo_mask_zero_variance=mask)
        Spy(model=build_model(tokenizer), reward_funcs=ControlledReward(0), args=args,
            train_dataset=controlled_dataset(32), processing_class=tokenizer).train()
    for (n_off, _), (n_on, kept) in zip(normalisers[False], normalisers[True]):
        assert n_on == kept < n_off  # easy/hard groups are all-equal: their tokens leave the count


def test_embedding_with_the_adapter_off_does_not_drift(tokenizer, config_factory):
    from peft import LoraConfig

    probe = [r["prompt"] for r in letters_dataset(8)]
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    embeddings = {}
    for adapter in ("on", "off"):
        args = config_factory(max_steps=3, depo_warmup_steps=1, learning_rate=5e-2, depo_embedding_adapter=adapter)
        trainer = _trainer(tokenizer, args, peft_config=lora)
        before = trainer.depo_encoder.encode(probe).embeddings
        trainer.train()
        embeddings[adapter] = (before, trainer.depo_encoder.encode(probe).embeddings)
    np.testing.assert_allclose(*embeddings["off"], atol=1e-6)  # the frozen base model's view
    assert not np.allclose(*embeddings["on"], atol=1e-4)  # the trained policy's view moved


def test_embedding_refresh_cadence_reuses_cached_embeddings(tokenizer, config_factory):
    args = config_factory(max_steps=3, depo_warmup_steps=0, depo_embedding_refresh_every=100)
    trainer = _trainer(tokenizer, args, dataset=letters_dataset(32))
    embedded = []
    original = trainer._embed
    trainer._embed = lambda ids, pad, answers=None: embedded.append(len(ids)) or original(ids, pad, answers)
    trainer.train()
    # 3 rounds x 16 candidates from 32 prompts: the third round's candidates were all embedded before.
    assert sum(embedded) <= 32 and trainer.depo_stats.rounds == 3


def test_warmup_flag_marks_only_warmup_rounds_of_a_filtering_run(tokenizer, config_factory):
    """K = 1 never filters, so it has no warm-up: depo/warmup and the audit's `warmup` are 0 / False throughout (they
    used to read 1 forever); with K = 4 the first depo_warmup_steps rounds are warm-up and the rest are not."""
    from depo_trl.audit import read_decisions

    for multiplier, expected in ((1, [0.0, 0.0]), (4, [1.0, 0.0])):
        args = config_factory(max_steps=2, depo_warmup_steps=1, depo_candidate_multiplier=multiplier,
                              output_dir=config_factory().output_dir + f"-k{multiplier}")
        trainer = _trainer(tokenizer, args)
        trainer.train()
        logged = [row["depo/warmup"] for row in trainer.state.log_history if "depo/warmup" in row]
        assert logged == expected
        assert [r["warmup"] for r in read_decisions(args.output_dir)] == [bool(w) for w in expected]
