"""DEPOTrainer end to end on a tiny model: it trains, it is GRPO during warm-up, it filters after."""

import numpy as np
import pytest
import torch
from trl import GRPOTrainer

from depo_trl import DEPOTrainer
from depo_trl.tasks import ControlledReward, controlled_dataset, letters_dataset, letters_reward


def _features_and_predictions(trainer, prompts):
    scores = trainer._score(prompts)[0]
    return scores.features, scores.predicted


def _metric(trainer, name):
    return [h[name] for h in trainer.state.log_history if name in h]


def test_training_changes_parameters(tiny_model, tokenizer, config_factory):
    args = config_factory(max_steps=4, depo_warmup_steps=1)
    trainer = DEPOTrainer(
        model=tiny_model, reward_funcs=letters_reward, args=args, train_dataset=letters_dataset(128),
        processing_class=tokenizer,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"
    # Rounds after warm-up scored K x U candidates and rolled out U.
    assert _metric(trainer, "depo/candidates_scored")[-1] == 4 * 4
    assert _metric(trainer, "depo/prompts_rolled_out")[-1] == 4
    assert trainer.depo_stats.rounds == 4
    assert trainer.depo_estimator.n_updates_ == 4  # learned after every round


def test_warmup_longer_than_run_is_exactly_grpo(tokenizer, config_factory, tmp_path):
    """With warm-up covering the whole run DEPO must not change a single thing GRPO does."""
    from depo_trl.tiny import build_model

    dataset = letters_dataset(64)
    depo_args = config_factory(max_steps=3, depo_warmup_steps=100)
    grpo_args = config_factory(grpo=True, max_steps=3)

    runs = {}
    for name, cls, args in (("grpo", GRPOTrainer, grpo_args), ("depo", DEPOTrainer, depo_args)):
        trainer = cls(model=build_model(tokenizer, seed=0), reward_funcs=letters_reward, args=args,
                      train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        runs[name] = trainer
    for key in ("loss", "reward", "frac_reward_zero_std", "completions/mean_length"):
        assert _metric(runs["depo"], key) == _metric(runs["grpo"], key), key
    for (n, p), (_, q) in zip(runs["depo"].model.named_parameters(), runs["grpo"].model.named_parameters()):
        assert torch.equal(p, q), n
    # ... while the estimator still learned from every round.
    assert runs["depo"].depo_estimator.n_updates_ == 3
    assert len(runs["depo"].depo_history) > 0


def test_controlled_difficulty_depo_rolls_out_the_informative_prompts(tokenizer, config_factory, tmp_path):
    """Easy prompts always pass, hard ones never, coin ones half the time: after warm-up DEPO should roll
    out mostly coin prompts, and its zero-std share should fall far below GRPO's on the same data."""
    from depo_trl.tiny import build_model

    dataset = controlled_dataset(n_per_kind=32)
    steps, warmup = 16, 4
    # A small learning rate keeps the policy (and so its prompt embeddings) from drifting much in 16 steps;
    # the test is about selection, not about the policy learning a reward that ignores it.
    common = dict(max_steps=steps, per_device_train_batch_size=32, learning_rate=1e-5)
    # The embedding group's PCA is fitted on the first fit_samples embeddings and outputs zeros until then (256 by
    # default: 7 filtered rounds of this 16-step run). 16 = two warm-up rounds of 8 prompts, so the embedding can
    # tell the kinds apart from the first filtered round. (With fit_samples=32, coin share was 0.79 here.)
    args = config_factory(**common, depo_warmup_steps=warmup, depo_exploration=0.05,
                          depo_feature_options={"embedding": {"fit_samples": 16}})

    rolled_kinds = []

    class Recording(DEPOTrainer):
        # The rows that reach the reward functions are the ones actually rolled out.
        def _calculate_rewards(self, inputs, *args, **kwargs):
            if self.depo_filtering:
                rolled_kinds.extend(x["kind"] for x in inputs[:: self.num_generations])
            return super()._calculate_rewards(inputs, *args, **kwargs)

    depo = Recording(model=build_model(tokenizer), reward_funcs=ControlledReward(0), args=args,
                     train_dataset=dataset, processing_class=tokenizer)
    depo.train()
    grpo = GRPOTrainer(model=build_model(tokenizer), reward_funcs=ControlledReward(0),
                       args=config_factory(grpo=True, **common),
                       train_dataset=dataset, processing_class=tokenizer)
    grpo.train()

    coin_share = rolled_kinds.count("coin") / len(rolled_kinds)
    depo_zero_std = float(np.mean(_metric(depo, "frac_reward_zero_std")[warmup:]))
    grpo_zero_std = float(np.mean(_metric(grpo, "frac_reward_zero_std")[warmup:]))
    print(f"\ncoin share {coin_share:.2f}; frac_reward_zero_std after warm-up: DEPO {depo_zero_std:.3f}, "
          f"GRPO {grpo_zero_std:.3f}")
    # Uniform would give 1/3 coin; a coin group of 4 is all-equal with probability 1/8.
    assert coin_share >= 0.8
    assert grpo_zero_std >= 0.6
    assert depo_zero_std <= grpo_zero_std - 0.4


def test_save_and_resume_restores_predictions(tokenizer, config_factory):
    from transformers import TrainerCallback

    from depo_trl.tiny import build_model

    dataset = letters_dataset(96)
    probe = [dataset[i]["prompt"] for i in range(24)]
    args = config_factory(max_steps=4, depo_warmup_steps=1, save_strategy="steps", save_steps=2)
    seen = {}

    class ScoreAtStep(TrainerCallback):
        """Scores the probe prompts when training (re)starts and right after step 2's checkpoint is written."""

        def __init__(self, tag):
            self.tag, self.trainer = tag, None

        def on_train_begin(self, args, state, control, **kwargs):
            seen.setdefault(f"{self.tag}-begin", _features_and_predictions(self.trainer, probe))

        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                seen[f"{self.tag}-saved"] = _features_and_predictions(self.trainer, probe)

    first_cb = ScoreAtStep("first")
    first = DEPOTrainer(model=build_model(tokenizer), reward_funcs=letters_reward, args=args,
                        train_dataset=dataset, processing_class=tokenizer, callbacks=[first_cb])
    first_cb.trainer = first
    first.train()

    second_cb = ScoreAtStep("second")
    second = DEPOTrainer(model=build_model(tokenizer, seed=1), reward_funcs=letters_reward, args=args,
                         train_dataset=dataset, processing_class=tokenizer, callbacks=[second_cb])
    second_cb.trainer = second
    second.train(resume_from_checkpoint=f"{args.output_dir}/checkpoint-2")

    (features_saved, predicted_saved), (features_resumed, predicted_resumed) = seen["first-saved"], seen["second-begin"]
    assert not np.allclose(predicted_saved, seen["first-begin"][1])  # the estimator did learn before the save
    np.testing.assert_allclose(features_resumed, features_saved, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predicted_resumed, predicted_saved, rtol=1e-9, atol=1e-12)
    # The resumed run then continued to the end, like the first.
    assert second.depo_stats.rounds == first.depo_stats.rounds == 4


def test_lora_through_peft_config(tiny_model, tokenizer, config_factory):
    from peft import LoraConfig

    args = config_factory(max_steps=3, depo_warmup_steps=1)
    trainer = DEPOTrainer(
        model=tiny_model, reward_funcs=letters_reward, args=args, train_dataset=letters_dataset(96),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_before, "no LoRA parameters were created"
    trainer.train()
    lora_after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora_before[n], lora_after[n]) for n in lora_before)
    assert _metric(trainer, "depo/candidates_scored")[-1] == 16
    assert np.isfinite(_metric(trainer, "depo/predicted_pass_rate")).all()


def test_eval_is_not_filtered(tiny_model, tokenizer, config_factory):
    dataset = letters_dataset(96)
    args = config_factory(max_steps=2, depo_warmup_steps=0, eval_strategy="steps", eval_steps=2,
                          per_device_eval_batch_size=8)
    trainer = DEPOTrainer(model=tiny_model, reward_funcs=letters_reward, args=args, train_dataset=dataset,
                          eval_dataset=letters_dataset(16, seed=1), processing_class=tokenizer)
    trainer.train()
    rounds = trainer.depo_stats.rounds
    metrics = trainer.evaluate()
    assert "eval_reward" in metrics
    assert trainer.depo_stats.rounds == rounds  # evaluation went straight to GRPO


def test_a_failing_estimator_never_stops_training(tiny_model, tokenizer, config_factory):
    from depo_trl.estimators import LogisticPassRateEstimator

    class Broken(LogisticPassRateEstimator):
        def predict_pass_rate(self, X, keys=None):
            return np.full(len(X), np.nan)  # NaN predictions: this round falls back to uniform selection

        def partial_fit(self, X, passes, trials, keys=None):
            raise RuntimeError("estimator exploded")

    args = config_factory(max_steps=3, depo_warmup_steps=0)
    trainer = DEPOTrainer(model=tiny_model, reward_funcs=letters_reward, args=args,
                          train_dataset=letters_dataset(96), processing_class=tokenizer, estimator=Broken())
    with pytest.warns(RuntimeWarning, match="failed to predict"):
        trainer.train()
    assert trainer.depo_stats.rounds == 3
    assert trainer.depo_stats.prompts_rolled_out == 12  # every round still rolled out a full batch
    assert trainer.depo_stats.estimator_failures == 6  # 3 predictions + 3 updates
    assert _metric(trainer, "depo/estimator_failures") == [2, 2, 2]  # per round (TRL averages over a log window)
    assert len(trainer.depo_history) > 0  # history still learned


def test_generation_batch_spanning_several_steps_and_iterations(tiny_model, tokenizer, config_factory):
    """steps_per_generation = 2 (from gradient accumulation) and num_iterations = 2: one round every 2 optimizer
    steps, each scoring K x U candidates with U = generation_batch_size / G = 8."""
    args = config_factory(max_steps=4, depo_warmup_steps=0, gradient_accumulation_steps=2, num_iterations=2)
    assert args.generation_batch_size == 32
    trainer = DEPOTrainer(model=tiny_model, reward_funcs=letters_reward, args=args,
                          train_dataset=letters_dataset(128), processing_class=tokenizer)
    trainer.train()
    assert trainer.depo_stats.rounds == 2
    assert trainer.depo_stats.candidates_scored == 2 * 4 * 8
    assert trainer.depo_stats.completions_generated == 2 * 8 * 4


def test_warmup_is_exactly_grpo_with_dropout_and_lora(tokenizer, config_factory):
    """The embedding prefill runs in eval mode: dropout neither adds noise to the features nor consumes the torch
    RNG that training's dropout masks are drawn from, so warm-up stays bit-identical to GRPOTrainer."""
    from peft import LoraConfig

    from depo_trl.tiny import build_model

    def dropout_model():
        model = build_model(tokenizer, seed=0)
        model.config.attention_dropout = 0.2
        for layer in model.model.layers:
            layer.self_attn.attention_dropout = 0.2
        return model

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    dataset = letters_dataset(64)
    runs = {}
    for name, cls, args in (("grpo", GRPOTrainer, config_factory(grpo=True, max_steps=3)),
                            ("depo", DEPOTrainer, config_factory(max_steps=3, depo_warmup_steps=100))):
        trainer = cls(model=dropout_model(), reward_funcs=letters_reward, args=args, train_dataset=dataset,
                      processing_class=tokenizer, peft_config=lora)
        trainer.train()
        runs[name] = trainer
    assert runs["depo"].model.training  # the prefill put the model back in train mode
    for key in ("loss", "reward", "entropy", "completions/mean_length"):
        assert _metric(runs["depo"], key) == _metric(runs["grpo"], key), key
    for (n, p), (_, q) in zip(runs["depo"].model.named_parameters(), runs["grpo"].model.named_parameters()):
        assert torch.equal(p, q), n
    assert runs["depo"].depo_estimator.n_updates_ == 3


def test_warmup_across_depo_epochs_rolls_out_grpos_batches(tokenizer, config_factory):
    """DEPO's epoch is one candidate pass (here 32 prompts / pools of 16 = 2 rounds), shorter than GRPO's (8 rounds).
    TRL's dataloader is cut into those epochs but keeps yielding GRPO's own index sequence, so a warm-up spanning
    several DEPO epochs rolls out exactly GRPO's prompts, round by round. (Bit-identity holds within the first DEPO
    epoch only: each new epoch's DataLoader iterator draws one number from torch's global RNG, so sampling shifts.)"""
    from depo_trl.tiny import build_model

    dataset = letters_dataset(32)
    prompts = {"grpo": [], "depo": []}

    def recording(cls, name):
        class Recording(cls):
            def _calculate_rewards(self, inputs, *args, **kwargs):
                prompts[name].append([x["prompt"][0]["content"] for x in inputs])
                return super()._calculate_rewards(inputs, *args, **kwargs)

        return Recording

    runs = {}
    for name, cls, args in (("grpo", GRPOTrainer, config_factory(grpo=True, max_steps=5)),
                            ("depo", DEPOTrainer, config_factory(max_steps=5, depo_warmup_steps=100))):
        trainer = recording(cls, name)(model=build_model(tokenizer, seed=0), reward_funcs=letters_reward, args=args,
                                       train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        runs[name] = trainer
    assert runs["depo"].depo_rounds_per_epoch == 2 and runs["depo"].state.epoch == pytest.approx(2.5)
    assert len(prompts["depo"]) == 5 and prompts["depo"] == prompts["grpo"]
    # Within the first DEPO epoch the runs are bit-identical.
    assert _metric(runs["depo"], "loss")[:2] == _metric(runs["grpo"], "loss")[:2]
