"""TRL's own GRPO scenarios, run with DEPOTrainer filtering from the first step.

Our own versions of the scenarios of TRL's ``tests/test_grpo_trainer.py`` (TRL's repository, July 2026 snapshot,
against the installed trl 1.16) that need no GPU, vLLM or hub: tiny models and tokenizers built in code, local
datasets. Every DEPO run filters from its first step (``depo_warmup_steps=0``, ``depo_candidate_multiplier=2``).
Each test asserts what TRL's test asserts (training logs a loss, parameters change, the scenario's own metrics)
and, for DEPO, the invariants every round must keep (``_check_depo_rounds``):

- the rows that reach the reward functions are U x G: U prompts, each in G contiguous rows;
- exactly U of the round's candidates were rolled out, and the candidates were one pool;
- the pass count DEPO learned for each rolled-out prompt is the one its own G rewards give (labels reach the
  right prompt), and every rolled-out prompt that a reward scores is a label.

Scenarios where equivalence is the point run with both ``GRPOTrainer`` and ``DEPOTrainer`` (``kind``); the GRPO
half of the long ones is marked ``slow``.
"""

from __future__ import annotations

import json
import os
import warnings
from unittest.mock import patch

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import GRPOTrainer

from depo_trl import DEPOTrainer
from depo_trl.history import prompt_key
from depo_trl.tasks import letters_dataset

os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"  # rollout_func / environment_factory are experimental in TRL

from conftest import make_config  # noqa: E402

FILTER_NOW = dict(depo_warmup_steps=0, depo_candidate_multiplier=2)
BOTH = pytest.mark.parametrize("kind", ["depo", "grpo"])
BOTH_GRPO_SLOW = pytest.mark.parametrize("kind", ["depo", pytest.param("grpo", marks=pytest.mark.slow)])


# ---------------------------------------------------------------------------------------------- rewards and data
def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def letters_with_variety(completions, allowed, **kwargs) -> list[float]:
    """1 when the first character is allowed (the pass), plus 0.01 per distinct character: a shaped reward whose
    groups almost never tie (so parameters change, as TRL's length rewards ensure) and whose pass at the default
    threshold 0.5 is exactly the letters pass."""
    out = []
    for completion, chars in zip(completions, allowed):
        text = _text(completion)
        out.append(float(bool(text.lstrip()) and text.lstrip()[0] in chars) + 0.01 * len(set(text)))
    return out


def reward_len(completions, **kwargs) -> list[float]:
    return [float(len(_text(c))) for c in completions]


def reward_unique(completions, **kwargs) -> list[float]:
    return [float(len(set(_text(c)))) for c in completions]


async def async_reward_unique(completions, **kwargs) -> list[float]:
    return [float(len(set(_text(c)))) for c in completions]


def plain_text_letters(n: int, seed: int = 0) -> Dataset:
    return letters_dataset(n, seed=seed, conversational=False)


def tiny_reward_model(tokenizer, seed: int = 1):
    """A randomly initialised 2-layer Qwen2 sequence classifier with one score (TRL's tiny reward model)."""
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.config._name_or_path = f"tiny-reward-model-{seed}"  # TRL names a reward model's metrics by its path
    return model


# ---------------------------------------------------------------------------------------------- running a scenario
class _Recording:
    """Mixin: records, per training round, the rows reaching the reward functions and the rewards TRL gathered."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training:
            self.rounds_seen.append({
                "keys": [prompt_key(_row_prompt(self, x)) for x in inputs],
                "columns": [sorted(x) for x in inputs],
                "rows": [dict(x) for x in inputs],
                "rewards": rewards.detach().float().cpu().numpy(),
            })
        return rewards


def _row_prompt(trainer, row):
    return trainer._candidate_prompt(row) if isinstance(trainer, DEPOTrainer) else row.get("prompt")


class RecordingDEPO(_Recording, DEPOTrainer):
    pass


class RecordingGRPO(_Recording, GRPOTrainer):
    pass


def build(kind, tokenizer, tmp_path, reward_funcs=letters_with_variety, dataset="letters", model=None,
          trainer_kwargs=None, **config):
    """A recording GRPOTrainer or DEPOTrainer (filtering from the first step) on a tiny model built in code."""
    from depo_trl.tiny import build_model

    base = dict(max_steps=2, per_device_train_batch_size=8, num_generations=4, learning_rate=0.1)
    base.update(config)
    if kind == "depo":
        base = {**FILTER_NOW, **base}
    args = make_config(tmp_path, grpo=kind == "grpo", **base)
    if isinstance(dataset, str):
        dataset = letters_dataset(48) if dataset == "letters" else plain_text_letters(48)
    cls = RecordingDEPO if kind == "depo" else RecordingGRPO
    trainer = cls(model=model if model is not None else build_model(tokenizer, seed=0), reward_funcs=reward_funcs,
                  args=args, train_dataset=dataset, processing_class=tokenizer, **(trainer_kwargs or {}))
    trainer.rounds_seen = []
    return trainer


def train_and_check(trainer, changed="all", patch_generate=None):
    """Train; assert what TRL's tests assert (a final train_loss, parameters changed) and DEPO's round invariants."""
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    if patch_generate is None:
        trainer.train()
    else:
        with patch.object(trainer.model, "generate", side_effect=patch_generate):
            trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    moved = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(before[n], p)]
    if changed == "all":
        assert set(moved) == set(before), f"unchanged: {sorted(set(before) - set(moved))[:5]}"
    elif changed == "some":
        assert moved, "no parameter changed"
    elif changed == "none":
        assert not moved, f"changed: {moved[:5]}"
    if isinstance(trainer, DEPOTrainer):
        _check_depo_rounds(trainer)
    return trainer


def _decisions(trainer) -> list[dict]:
    with open(os.path.join(trainer.args.output_dir, "depo_decisions.jsonl")) as f:
        return [json.loads(line) for line in f]


def _expected_passes(trainer, rewards: np.ndarray) -> tuple[float, float]:
    """A group's (passes, trials), restated: the first pass reward that scores the whole group decides; a reward
    that scores none of it does not apply (the next one is asked); one that scores part of it gives no label."""
    for index in trainer.depo_pass_order:
        column = rewards[:, index]
        finite = np.isfinite(column)
        if finite.all():
            return float((column >= trainer.args.depo_pass_threshold).sum()), float(len(column))
        if finite.any():
            return 0.0, 0.0
    return 0.0, 0.0


def _check_depo_rounds(trainer, expect_labels=True):
    group = trainer.num_generations
    unique = trainer.args.generation_batch_size // group
    decisions = _decisions(trainer)
    assert len(decisions) == len(trainer.rounds_seen) == trainer.depo_stats.rounds > 0
    for decision, seen in zip(decisions, trainer.rounds_seen):
        assert not decision["warmup"]  # filtering from the first step
        assert len(decision["prompt_key"]) == trainer.depo_pool_size > unique  # one pool of candidates ...
        assert len(decision["rolled_out"]) == len(set(decision["rolled_out"])) == unique  # ... exactly U rolled out
        assert len(seen["keys"]) == unique * group  # U x G rows reached the rewards
        for slot, position in enumerate(decision["rolled_out"]):
            rows = slice(slot * group, (slot + 1) * group)
            assert set(seen["keys"][rows]) == {decision["prompt_key"][position]}  # G contiguous rows of that prompt
            passes, trials = _expected_passes(trainer, seen["rewards"][rows])
            assert (decision["passes"][position], decision["trials"][position]) == (passes, trials)
            if expect_labels:
                assert trials == group, "a rolled-out prompt got no label"
        for row in seen["rows"]:  # each row reaching the rewards is the dataset row of its prompt
            if "allowed" in row and isinstance(row.get("prompt"), list):
                assert row["prompt"][-1]["content"].endswith(row["allowed"])
    labelled = [decision["prompt_key"][p] for decision in decisions for p in decision["rolled_out"]
                if decision["trials"][p]]
    assert (trainer.depo_history.lookup(np.array(labelled, dtype=np.int64))["seen"] == 1).all()  # the history has them
    assert trainer.depo_stats.prompts_rolled_out == unique * trainer.depo_stats.rounds
    logged = [h["depo/prompts_rolled_out"] for h in trainer.state.log_history if "depo/prompts_rolled_out" in h]
    assert logged and all(v == unique for v in logged)


# ---------------------------------------------------------------------------------------------- basic training
@BOTH
@pytest.mark.parametrize("dataset", ["letters", "plain"], ids=["conversational", "standard"])
def test_train_dataset_format(kind, dataset, tokenizer, tmp_path):
    train_and_check(build(kind, tokenizer, tmp_path, dataset=dataset))


@BOTH_GRPO_SLOW
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"])
def test_train_loss_types(kind, loss_type, tokenizer, tmp_path):
    trainer = build(kind, tokenizer, tmp_path, loss_type=loss_type, gradient_accumulation_steps=2,
                    importance_sampling_level="sequence" if loss_type == "luspo" else "token",
                    per_device_train_batch_size=4)
    train_and_check(trainer)


@BOTH_GRPO_SLOW
@pytest.mark.parametrize("scale_rewards", [False, "group", "batch", True, "none"])
def test_train_scale_rewards(kind, scale_rewards, tokenizer, tmp_path):
    train_and_check(build(kind, tokenizer, tmp_path, scale_rewards=scale_rewards))


@BOTH_GRPO_SLOW
def test_train_multiple_iterations(kind, tokenizer, tmp_path):
    trainer = train_and_check(build(kind, tokenizer, tmp_path, num_iterations=2, max_steps=4))
    if kind == "depo":
        assert trainer.depo_stats.rounds == 2  # one round feeds num_iterations steps


@BOTH_GRPO_SLOW
def test_train_steps_per_generation(kind, tokenizer, tmp_path):
    trainer = train_and_check(build(kind, tokenizer, tmp_path, steps_per_generation=2, max_steps=4,
                                    per_device_train_batch_size=4))
    if kind == "depo":
        assert trainer.args.generation_batch_size == 8 and trainer.depo_stats.rounds == 2


@BOTH_GRPO_SLOW
def test_one_generation_batch_feeds_steps_per_generation_times_num_iterations_micro_steps(kind, tokenizer, tmp_path):
    """TRL's test_prepare_input_called_with_correct_data: gradient_accumulation_steps=3, steps_per_generation=4,
    num_iterations=2, 6 rows per micro-step, G = 4: a generation batch of 24 rows (6 prompts) serves 8 micro-steps."""
    trainer = build(kind, tokenizer, tmp_path, gradient_accumulation_steps=3, steps_per_generation=4, num_iterations=2,
                    per_device_train_batch_size=6, max_steps=3, shuffle_dataset=False)
    calls = {"micro_steps": 0, "rounds": 0}
    step, generate = trainer.training_step, trainer._generate_and_score_completions

    def counting_step(*args, **kwargs):
        calls["micro_steps"] += 1
        return step(*args, **kwargs)

    def counting_generate(inputs):
        calls["rounds"] += 1
        assert len(inputs) == 24  # the whole generation batch: 6 prompts x 4 completions
        return generate(inputs)

    trainer.training_step, trainer._generate_and_score_completions = counting_step, counting_generate
    train_and_check(trainer)
    assert calls == {"micro_steps": 9, "rounds": 2}  # rounds at micro-steps 0 and 8
    assert len(trainer.rounds_seen) == 2


@BOTH_GRPO_SLOW
def test_train_beta_non_zero_and_sync_ref_model(kind, tokenizer, tmp_path):
    from depo_trl.tiny import build_model

    # TRL builds the reference model from the policy's path, so the tiny model goes to disk first.
    build_model(tokenizer, seed=0).save_pretrained(tmp_path / "tiny-model")
    trainer = build(kind, tokenizer, tmp_path, model=str(tmp_path / "tiny-model"), beta=0.1, sync_ref_model=True,
                    ref_model_sync_steps=2)
    assert trainer.ref_model is not None
    ref_before = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    train_and_check(trainer)
    assert "kl" in trainer.state.log_history[-2]
    assert all(not torch.equal(ref_before[n], p) for n, p in trainer.ref_model.named_parameters())


@BOTH_GRPO_SLOW
def test_train_peft_config(kind, tokenizer, tmp_path):
    from peft import LoraConfig

    trainer = build(kind, tokenizer, tmp_path, trainer_kwargs={"peft_config": LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")})
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora" not in n}
    train_and_check(trainer, changed="some")
    for n, p in trainer.model.named_parameters():
        if "lora_B" in n:
            assert not torch.equal(p, torch.zeros_like(p)), f"LoRA {n} did not train"
        elif n in base:
            assert torch.equal(base[n], p), f"frozen base parameter {n} changed"


@BOTH_GRPO_SLOW
def test_train_with_iterable_dataset(kind, tokenizer, tmp_path):
    dataset = letters_dataset(48).to_iterable_dataset()
    trainer = build(kind, tokenizer, tmp_path, dataset=dataset)
    assert trainer.args.accelerator_config.dispatch_batches is False
    train_and_check(trainer)


KNOBS = {  # TRL's one-option training tests: each must train, and filter, under DEPO too
    "pad_to_multiple_of": dict(pad_to_multiple_of=8),
    "off_policy_mask": dict(off_policy_mask_threshold=0.5),
    "bias_correction_kl": dict(beta=0.1, use_bias_correction_kl=True),
    "static_entropy": dict(entropy_coef=0.1),
    "adaptive_entropy": dict(entropy_coef=0.01, use_adaptive_entropy=True, entropy_target=15.0),
    "entropy_filter": dict(top_entropy_quantile=0.2),
    "delta_clipping": dict(delta=2.0),
    "sequence_importance_sampling": dict(num_iterations=2, importance_sampling_level="sequence", max_steps=4),
    "cast_lm_head_to_fp32": dict(cast_lm_head_to_fp32=True),
    "generation_kwargs": dict(generation_kwargs={"top_k": 8}, chat_template_kwargs={"enable_thinking": False}),
    "num_generations_larger_than_batch": dict(num_generations=6, per_device_train_batch_size=3,
                                              gradient_accumulation_steps=2),
}


@BOTH_GRPO_SLOW
@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_train_with_config_option(kind, knob, tokenizer, tmp_path):
    config = dict(KNOBS[knob])
    model = None
    if config.get("beta"):  # TRL builds the reference model from the policy's path
        from depo_trl.tiny import build_model

        build_model(tokenizer, seed=0).save_pretrained(tmp_path / "tiny-model")
        model = str(tmp_path / "tiny-model")
    train_and_check(build(kind, tokenizer, tmp_path, model=model, **config),
                    changed="some" if knob == "entropy_filter" else "all")


@pytest.mark.parametrize("eval_options", [{}, {"num_generations_eval": 2, "eval_on_start": True}],
                         ids=["eval", "num_generations_eval+eval_on_start"])
def test_train_with_eval_is_not_filtered(eval_options, tokenizer, tmp_path):
    trainer = build("depo", tokenizer, tmp_path, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=8,
                    trainer_kwargs={"eval_dataset": letters_dataset(16, seed=1)}, **eval_options)
    train_and_check(trainer)
    if eval_options:
        assert len([h for h in trainer.state.log_history if "eval_reward" in h]) == 2  # at the start and step 2
    rounds = trainer.depo_stats.rounds
    metrics = trainer.evaluate()
    assert "eval_reward" in metrics and "eval_loss" in metrics
    assert trainer.depo_stats.rounds == rounds  # evaluation went straight to GRPO


# ---------------------------------------------------------------------------------------------- several rewards
@BOTH
def test_train_multiple_reward_funcs_with_weights(kind, tokenizer, tmp_path, recwarn):
    trainer = build(kind, tokenizer, tmp_path, reward_funcs=[letters_with_variety, reward_unique],
                    reward_weights=[0.7, 0.3])
    if kind == "depo":  # one warning names the choice, the threshold and the fix, at the user's line
        choice = [w for w in recwarn.list if "decides a pass" in str(w.message)]
        assert len(choice) == 1 and choice[0].filename == __file__
        message = str(choice[0].message)
        assert "'letters_with_variety'" in message and "depo_pass_threshold=0.5" in message
        assert trainer.depo_pass_order == [0, 1]
    train_and_check(trainer)
    log = trainer.state.log_history[-2]
    for name in ("letters_with_variety", "reward_unique"):
        assert f"rewards/{name}/mean" in log and f"rewards/{name}/std" in log


@BOTH_GRPO_SLOW
def test_train_sync_and_async_reward_funcs(kind, tokenizer, tmp_path):
    def constant_one(completions, **kwargs):
        return [1 for _ in completions]

    train_and_check(build(kind, tokenizer, tmp_path,
                          reward_funcs=[letters_with_variety, constant_one, async_reward_unique]))


@BOTH
def test_train_multiple_reward_funcs_with_none_output(kind, tokenizer, tmp_path):
    def non_applicable(completions, **kwargs):
        return [None] * len(completions)

    # TRL's order (applicable first) and the reverse: the pass reward that returns None everywhere falls back.
    for funcs in ([letters_with_variety, non_applicable], [non_applicable, letters_with_variety]):
        trainer = build(kind, tokenizer, tmp_path / funcs[0].__name__, reward_funcs=funcs)
        train_and_check(trainer)


@BOTH_GRPO_SLOW
def test_multitask_rewards_returning_none_keep_every_prompt_learnable(kind, tokenizer, tmp_path):
    """TRL's multi-task pattern: each reward scores only the prompts of its task and returns None for the rest.
    DEPO judges each prompt by the first reward that applies to it, so both tasks' prompts become labels."""
    rows = [dict(r, task="upper" if i % 2 else "letters") for i, r in enumerate(letters_dataset(48))]
    dataset = Dataset.from_list(rows)

    def letters_task(completions, allowed, task, **kwargs):
        scores = letters_with_variety(completions, allowed)
        return [s if t == "letters" else None for s, t in zip(scores, task)]

    def upper_task(completions, task, **kwargs):
        return [float(any(ch.isupper() for ch in _text(c))) + 0.01 * len(set(_text(c))) if t == "upper" else None
                for c, t in zip(completions, task)]

    trainer = build(kind, tokenizer, tmp_path, reward_funcs=[letters_task, upper_task], dataset=dataset, max_steps=3)
    train_and_check(trainer)  # for DEPO: every rolled-out group, of either task, was a label
    if kind == "depo":
        tasks = {row["task"] for seen in trainer.rounds_seen for row in seen["rows"]}
        assert tasks == {"letters", "upper"}
        assert trainer.depo_stats.labelled_groups == trainer.depo_stats.prompts_rolled_out


def test_explicit_pass_reward_list_and_a_warning_when_none_applies(tokenizer, tmp_path):
    rows = [dict(r, task="upper" if i % 2 else "letters") for i, r in enumerate(letters_dataset(48))]

    def letters_task(completions, allowed, task, **kwargs):
        return [s if t == "letters" else None for s, t in zip(letters_with_variety(completions, allowed), task)]

    def upper_task(completions, task, **kwargs):
        return [float(any(ch.isupper() for ch in _text(c))) if t == "upper" else None
                for c, t in zip(completions, task)]

    trainer = build("depo", tokenizer, tmp_path, reward_funcs=[letters_task, upper_task],
                    dataset=Dataset.from_list(rows), depo_pass_reward="letters_task")
    expected = r"got None from every pass reward \['letters_task'\].*depo_pass_reward"
    with pytest.warns(RuntimeWarning, match=expected) as caught:
        trainer.train()
    assert [w.filename for w in caught if "every pass reward" in str(w.message)] == [__file__]  # the train() line
    unlabelled = [d for d in _decisions(trainer) for p in d["rolled_out"] if d["trials"][p] == 0]
    assert unlabelled  # the 'upper' prompts: the user named only letters_task
    _check_depo_rounds(trainer, expect_labels=False)


def test_pass_order_rule_per_group(tokenizer, tiny_model, tmp_path):
    """The rule itself, on hand-made gathered rewards (columns: first, second reward; G = 4)."""
    def first(completions, **kwargs):
        return [0.0] * len(completions)

    def second(completions, **kwargs):
        return [0.0] * len(completions)

    args = make_config(tmp_path, per_device_train_batch_size=8, num_generations=4, **FILTER_NOW)
    with pytest.warns(UserWarning, match="decides a pass with the first, 'first'"):
        trainer = DEPOTrainer(model=tiny_model, reward_funcs=[first, second], args=args,
                              train_dataset=letters_dataset(16), processing_class=tokenizer)
    nan = float("nan")
    rewards = torch.tensor([
        [1, 0], [1, 0], [0, 0], [0.7, 0],  # the first reward scores the group: 3 passes
        [nan, 1], [nan, 1], [nan, 0], [nan, 1],  # it does not apply: the second decides, 3 passes
        [1, 1], [nan, 1], [1, 1], [1, 1],  # it applies but failed on one completion: no label
        [nan, nan], [nan, nan], [nan, nan], [nan, nan],  # nothing applies: no label
    ], dtype=torch.float32)
    passes, trials = trainer._group_outcomes(rewards, 4)
    assert passes.tolist() == [3, 3, 0, 0] and trials.tolist() == [4, 4, 0, 0]
    trainer.depo_pass_order = [0]  # depo_pass_reward="first": the second reward is never asked
    with pytest.warns(RuntimeWarning, match=r"2 of 4 prompts this round got None from every pass reward \['first'\]"):
        passes, trials = trainer._group_outcomes(rewards, 4)
    assert passes.tolist() == [3, 0, 0, 0] and trials.tolist() == [4, 0, 0, 0]


def test_a_pass_threshold_that_never_splits_is_warned_about_once(tokenizer, tiny_model, tmp_path):
    """TRL's length rewards pass everything at the default threshold 0.5: DEPO says so after 5 rounds."""
    trainer = DEPOTrainer(model=tiny_model, reward_funcs=reward_len, args=make_config(tmp_path, **FILTER_NOW),
                          train_dataset=letters_dataset(32), processing_class=tokenizer)
    lengths = torch.arange(16, dtype=torch.float32).view(16, 1) + 1  # G = 4, 4 groups, every reward >= 0.5
    for _ in range(4):
        trainer._group_outcomes(lengths, 4)
    with pytest.warns(RuntimeWarning, match=r"first 5 rounds, all of 80 scored completions passed.*reward_len"):
        trainer._group_outcomes(lengths, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer._group_outcomes(lengths, 4)  # once only
    mixed = DEPOTrainer(model=tiny_model, reward_funcs=reward_len, args=make_config(tmp_path, **FILTER_NOW),
                        train_dataset=letters_dataset(32), processing_class=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(6):
            mixed._group_outcomes(lengths - 8, 4)  # some fail: the threshold splits


@BOTH_GRPO_SLOW
@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_reward_metric_reflects_reward_weights(kind, aggregation, tokenizer, tmp_path):
    def constant_reward_1(completions, **kwargs):
        return [1.0] * len(completions)

    def constant_reward_0(completions, **kwargs):
        return [0.0] * len(completions)

    trainer = build(kind, tokenizer, tmp_path, reward_funcs=[constant_reward_1, constant_reward_0],
                    reward_weights=[0.7, 0.3], multi_objective_aggregation=aggregation)
    trainer.train()
    assert abs(trainer.state.log_history[-2]["reward"] - 0.7) < 1e-5
    if kind == "depo":
        _check_depo_rounds(trainer)
        assert all(d["passes"][p] == 4 for d in _decisions(trainer) for p in d["rolled_out"])


@BOTH_GRPO_SLOW
def test_train_multiple_mixed_reward_funcs_and_reward_models(kind, tokenizer, tmp_path):
    """A reward function plus two reward models (sequence classifiers built in code, with their own tokenizer)."""
    reward_models = [tiny_reward_model(tokenizer, seed=1), tiny_reward_model(tokenizer, seed=2)]
    trainer = build(kind, tokenizer, tmp_path, reward_funcs=[letters_with_variety, *reward_models],
                    trainer_kwargs={"reward_processing_classes": [None, tokenizer, tokenizer]})
    train_and_check(trainer)
    assert len([k for k in trainer.state.log_history[-2] if k.startswith("rewards/") and k.endswith("/mean")]) == 3


@BOTH_GRPO_SLOW
def test_train_reward_model_only(kind, tokenizer, tmp_path):
    """TRL's most common test set-up: a reward model is the only reward, so it is the pass reward (threshold 0.5 on
    an unbounded score: DEPO still counts passes per group from it)."""
    trainer = build(kind, tokenizer, tmp_path, reward_funcs=tiny_reward_model(tokenizer),
                    trainer_kwargs={"reward_processing_classes": tokenizer})
    train_and_check(trainer)


def test_reward_func_sees_trainer_state_and_logs_extra(tokenizer, tmp_path):
    steps = []

    def stateful_reward(completions, allowed, trainer_state, log_extra=None, log_metric=None, **kwargs):
        steps.append(trainer_state.global_step)
        if log_metric is not None:
            log_metric("my_metric", 0.25)
        return letters_with_variety(completions, allowed)

    trainer = train_and_check(build("depo", tokenizer, tmp_path, reward_funcs=stateful_reward))
    assert steps == [0, 1]
    assert trainer.state.log_history[-2]["my_metric"] == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------- data and masking
@BOTH
def test_remove_unused_columns_gives_rewards_the_columns_trl_would(kind, tokenizer, tmp_path):
    """With remove_unused_columns=True, TRL's dataloader keeps only the prompt (and image) columns; filtered rows
    must reach the rewards with exactly those columns too."""
    def reward_without_columns(completions, **kwargs):
        return [0.01 * len(set(_text(c))) + float(_text(c)[:1].isalpha()) for c in completions]

    trainer = build(kind, tokenizer, tmp_path, reward_funcs=reward_without_columns, remove_unused_columns=True)
    train_and_check(trainer)
    columns = {tuple(c) for seen in trainer.rounds_seen for c in seen["columns"]}
    assert columns == {("prompt",)}, columns


def _rollout_func(trainer_group):
    """A rollout_func that 'generates' fixed completions and returns a per-completion extra field."""

    def rollout_func(prompts, trainer):
        tok = trainer.processing_class
        prompt_ids = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
                      if isinstance(p, list) else tok(p)["input_ids"] for p in prompts]
        completions = [f"{'abcdefgh'[: 1 + i % trainer_group]}" for i in range(len(prompts))]
        completion_ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids,
                "logprobs": [[-1.0] * len(c) for c in completion_ids],
                "env_score": [float(i % trainer_group) for i in range(len(prompts))]}

    return rollout_func


@BOTH
def test_rollout_func_extra_fields_reach_each_completion(kind, tokenizer, tmp_path):
    seen_scores = []

    def env_reward(completions, env_score, **kwargs):
        seen_scores.append(list(env_score))
        return [float(s) for s in env_score]

    trainer = build(kind, tokenizer, tmp_path, reward_funcs=env_reward,
                    trainer_kwargs={"rollout_func": _rollout_func(4)})
    train_and_check(trainer, changed="some")
    assert seen_scores and all(s == [0.0, 1.0, 2.0, 3.0] * 2 for s in seen_scores), seen_scores


def _fake_generate(tokenizer, max_len, truncated_every=3, all_truncated=False):
    """Completions for a patched ``model.generate``: every ``truncated_every``-th row hits the length limit without
    EOS, the others end with EOS (some exactly at the limit)."""

    def fake_generate(input_ids, **kwargs):
        rows = []
        for i in range(input_ids.shape[0]):
            body = [tokenizer.convert_tokens_to_ids(c) for c in "abcdefgh"[: max_len]]
            if all_truncated or i % truncated_every == 0:
                ids = body[:max_len]
            elif i % truncated_every == 1:
                ids = body[:2] + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (max_len - 3)
            else:
                ids = body[: max_len - 1] + [tokenizer.eos_token_id]
            rows.append(ids)
        return torch.cat([input_ids, torch.tensor(rows, device=input_ids.device)], dim=1)

    return fake_generate


@BOTH_GRPO_SLOW
def test_train_with_mask_truncated_completions(kind, tokenizer, tmp_path):
    trainer = build(kind, tokenizer, tmp_path, mask_truncated_completions=True, loss_type="dapo",
                    max_completion_length=6, reward_funcs=[letters_with_variety])
    train_and_check(trainer, changed="some", patch_generate=_fake_generate(tokenizer, 6))


@BOTH_GRPO_SLOW
def test_train_with_mask_truncated_completions_all_masked(kind, tokenizer, tmp_path):
    trainer = build(kind, tokenizer, tmp_path, mask_truncated_completions=True, loss_type="dapo",
                    max_completion_length=6)
    train_and_check(trainer, changed="none", patch_generate=_fake_generate(tokenizer, 6, all_truncated=True))
    assert trainer.state.log_history[-1]["train_loss"] == pytest.approx(0.0)


def test_dataset_smaller_than_a_pool_still_trains_with_the_defaults(tokenizer, tmp_path):
    """TRL's 17-row test dataset with DEPO's defaults (K = 4): a smaller pool, not a refusal."""
    from depo_trl.tiny import build_model

    args = make_config(tmp_path, max_steps=2, per_device_train_batch_size=10, num_generations=2, depo_warmup_steps=0)
    with pytest.warns(UserWarning, match="fewer than one candidate pool of 20.*scores all 17") as caught:
        trainer = RecordingDEPO(model=build_model(tokenizer), reward_funcs=letters_with_variety, args=args,
                                train_dataset=letters_dataset(17), processing_class=tokenizer)
    assert [w.filename for w in caught if "candidate pool" in str(w.message)] == [__file__]
    trainer.rounds_seen = []
    train_and_check(trainer)
    assert trainer.depo_pool_size == 17


def test_dataset_no_larger_than_one_round_trains_as_grpo_with_a_warning(tokenizer, tmp_path):
    from depo_trl.tiny import build_model

    args = make_config(tmp_path, max_steps=2, per_device_train_batch_size=8, num_generations=2, depo_warmup_steps=0)
    with pytest.warns(UserWarning, match="trains it as plain GRPO.*4 prompts, no more than the 4"):
        trainer = DEPOTrainer(model=build_model(tokenizer), reward_funcs=letters_with_variety, args=args,
                              train_dataset=letters_dataset(4), processing_class=tokenizer)
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    assert trainer.depo_stats.rounds == 0 and "plain GRPO" in trainer.depo_summary()


# ---------------------------------------------------------------------------------------------- TRL validates first
def _grpo_or_depo(kind):
    return GRPOTrainer if kind == "grpo" else DEPOTrainer


@pytest.mark.parametrize("kind", ["grpo", "depo"])
def test_trl_messages_come_first(kind, tokenizer, tiny_model, tmp_path):
    """The errors a GRPOTrainer user gets, unchanged under DEPO."""
    cls = _grpo_or_depo(kind)
    args = make_config(tmp_path, grpo=kind == "grpo", max_steps=-1)
    with pytest.raises(ValueError, match="`train_dataset` is required"):
        cls(model=tiny_model, reward_funcs=letters_with_variety, args=args, processing_class=tokenizer)
    with pytest.raises(ValueError, match="No reward source provided"):
        cls(model=tiny_model, args=args, train_dataset=letters_dataset(16), processing_class=tokenizer)


@pytest.mark.parametrize("kind", ["grpo", "depo"])
def test_trl_construction_warnings_point_at_user_code(kind, tokenizer, tiny_model, tmp_path):
    cls = _grpo_or_depo(kind)
    args = make_config(tmp_path, grpo=kind == "grpo", max_steps=1)
    with patch.dict(os.environ, {"TRL_EXPERIMENTAL_SILENCE": "0"}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls(model=tiny_model, reward_funcs=letters_with_variety, args=args, train_dataset=letters_dataset(16),
            processing_class=tokenizer, rollout_func=_rollout_func(4))
    experimental = [w for w in caught if "'rollout_func', which is an experimental feature" in str(w.message)]
    assert len(experimental) == 1 and experimental[0].filename == __file__
    # A warning issued before TRL refuses the arguments still reaches the user, at the same line.
    with patch.dict(os.environ, {"TRL_EXPERIMENTAL_SILENCE": "0"}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="No reward source provided"):
            cls(model=tiny_model, args=args, train_dataset=letters_dataset(16), processing_class=tokenizer,
                rollout_func=_rollout_func(4))
    experimental = [w for w in caught if "'rollout_func', which is an experimental feature" in str(w.message)]
    assert len(experimental) == 1 and experimental[0].filename == __file__


# ---------------------------------------------------------------------------------------------- tools and environments
def multiply_tool(a: int, b: int) -> int:
    """
    Multiplies two integers.

    Args:
        a: The first integer.
        b: The second integer.

    Returns:
        The product of the two integers.
    """
    return a * b


@pytest.fixture(scope="module")
def tool_tokenizer():
    """A character tokenizer with Qwen3's chat template and tool-call tokens, so TRL parses tool calls."""
    from depo_trl.tiny import build_tool_tokenizer

    return build_tool_tokenizer()


def _tool_generate(tok, first_call_texts, n_first):
    """A patched ``model.generate``: the first call of a round answers each row with ``first_call_texts`` (cycled),
    later calls (after tool results) answer 'Done!'."""

    def encode(texts):
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, ids))
        return torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids])

    def fake_generate(input_ids, **kwargs):
        n = input_ids.shape[0]
        texts = ([first_call_texts[i % len(first_call_texts)] for i in range(n)] if n == n_first
                 else ["Done!<|im_end|>"] * n)
        return torch.cat([input_ids, encode(texts).to(input_ids.device)], dim=-1)

    return fake_generate


def _tool_scenario(kind, tok, tmp_path, **kwargs):
    from depo_trl.tiny import build_model

    dataset = kwargs.pop("dataset", Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} times 4?"}]} for i in range(24)]))
    config = dict(max_steps=2, per_device_train_batch_size=6, num_generations=3, learning_rate=0.1,
                  max_completion_length=64)
    config.update(kwargs.pop("config", {}))
    if kind == "depo":
        config = {**FILTER_NOW, **config}
    args = make_config(tmp_path, grpo=kind == "grpo", **config)
    cls = RecordingDEPO if kind == "depo" else RecordingGRPO
    trainer = cls(model=build_model(tok), args=args, train_dataset=dataset, processing_class=tok, **kwargs)
    trainer.rounds_seen = []
    return trainer


TOOL_CALLS = ['<tool_call>\n{"name": "multiply_tool", "arguments": {"a": 3, "b": 4}}\n</tool_call><|im_end|>',
              '<tool_call>\n{"name": "multiply_tool", "arguments": {"a": 3, "c": 4}}\n</tool_call><|im_end|>',
              "I don't know any tool<|im_end|>"]


@BOTH_GRPO_SLOW
def test_train_with_tools(kind, tool_tokenizer, tmp_path):
    trainer = _tool_scenario(kind, tool_tokenizer, tmp_path, reward_funcs=reward_len, tools=[multiply_tool])
    train_and_check(trainer, changed="some", patch_generate=_tool_generate(tool_tokenizer, TOOL_CALLS, 6))
    log = trainer.state.log_history[-2]
    assert log["tools/call_frequency"] == pytest.approx(2 / 3)
    assert log["tools/failure_frequency"] == pytest.approx(1 / 2)


class CounterEnvironment:
    resets: list = []

    def reset(self, **kwargs):
        CounterEnvironment.resets.append(kwargs)
        self._counter = 0

    def increment(self, step: int) -> int:
        """
        Increment the internal counter.

        Args:
            step: Value to add to the counter.

        Returns:
            The updated counter value.
        """
        self._counter += step
        return self._counter


INCREMENT_CALLS = ['<tool_call>\n{"name": "increment", "arguments": {"step": 1}}\n</tool_call><|im_end|>',
                   '<tool_call>\n{"name": "decrement", "arguments": {"step": 2}}\n</tool_call><|im_end|>',
                   "I won't increment<|im_end|>"]


@BOTH
def test_environment_owned_data_trains_as_plain_grpo_with_one_warning(kind, tool_tokenizer, tmp_path, recwarn):
    trainer = _tool_scenario(kind, tool_tokenizer, tmp_path, reward_funcs=reward_len, dataset=None,
                             environment_factory=CounterEnvironment, config={"max_steps": 3})
    plain = [w for w in recwarn.list if "plain GRPO" in str(w.message)]
    if kind == "depo":
        assert len(plain) == 1 and plain[0].filename == __file__
        assert "environment owns the data" in str(plain[0].message)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with patch.object(trainer.model, "generate", side_effect=_tool_generate(tool_tokenizer, INCREMENT_CALLS, 6)):
        trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert trainer.state.log_history[-2]["tools/call_frequency"] == pytest.approx(2 / 3)
    if kind == "depo":
        assert trainer.depo_stats.rounds == 0 and not os.path.exists(
            os.path.join(trainer.args.output_dir, "depo_decisions.jsonl"))


@BOTH_GRPO_SLOW
def test_environment_factory_with_a_prompt_dataset_is_filtered(kind, tool_tokenizer, tmp_path):
    CounterEnvironment.resets = []
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Count to {i}."}], "target": i}
                                 for i in range(24)])
    trainer = _tool_scenario(kind, tool_tokenizer, tmp_path, reward_funcs=reward_len, dataset=dataset,
                             environment_factory=CounterEnvironment)
    train_and_check(trainer, changed="some", patch_generate=_tool_generate(tool_tokenizer, INCREMENT_CALLS, 6))
    assert trainer.state.log_history[-2]["tools/call_frequency"] == pytest.approx(2 / 3)
    # Every rolled-out row reset its own environment with its own columns.
    targets_reset = [r["target"] for r in CounterEnvironment.resets]
    targets_rolled = [row["target"] for seen in trainer.rounds_seen for row in seen["rows"]]
    assert targets_reset == targets_rolled


@BOTH_GRPO_SLOW
def test_multiple_environments_route_filtered_rows(kind, tool_tokenizer, tmp_path):
    """TRL's multi-environment dataset holds only an ``environment`` column; DEPO scores each row by its columns and
    the rows it picks still reach their own environment's tools."""
    calls = {"increment": 0, "shout": 0}
    resets = []

    class Counter:
        def reset(self, **kwargs):
            resets.append(("counter", kwargs))
            return "Count."

        def increment(self, step: int) -> int:
            """
            Increment the internal counter.

            Args:
                step: Value to add to the counter.

            Returns:
                The updated counter value.
            """
            calls["increment"] += 1
            return step

    class Echo:
        def reset(self, **kwargs):
            resets.append(("echo", kwargs))
            return "Echo."

        def shout(self, text: str) -> str:
            """
            Shout the given text.

            Args:
                text: Text to shout.

            Returns:
                The text in upper case.
            """
            calls["shout"] += 1
            return text.upper()

    answers = {"Count.": '<tool_call>\n{"name": "increment", "arguments": {"step": 1}}\n</tool_call><|im_end|>',
               "Echo.": '<tool_call>\n{"name": "shout", "arguments": {"text": "hi"}}\n</tool_call><|im_end|>'}

    def fake_generate(input_ids, **kwargs):
        texts = []
        for i, row in enumerate(input_ids):
            decoded = tool_tokenizer.decode(row)
            if "<tool_response>" in decoded:  # after the tool's answer
                texts.append("Done!<|im_end|>")
            elif i % 2:  # one sibling of each group calls its environment's tool, the other does not
                texts.append("No.<|im_end|>")
            else:
                texts.append(answers["Count." if "Count." in decoded else "Echo."])
        ids = [tool_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, ids))
        ids = [i + [tool_tokenizer.pad_token_id] * (width - len(i)) for i in ids]
        return torch.cat([input_ids, torch.tensor(ids, device=input_ids.device)], dim=-1)

    dataset = Dataset.from_dict({"environment": ["counter", "echo"] * 12, "level": list(range(24))})
    trainer = _tool_scenario(kind, tool_tokenizer, tmp_path, reward_funcs=reward_len, dataset=dataset,
                             environment_factory={"counter": Counter, "echo": Echo},
                             config={"per_device_train_batch_size": 8, "num_generations": 2, "max_steps": 2})
    train_and_check(trainer, changed="some", patch_generate=fake_generate)
    assert all("environment" not in kwargs for _, kwargs in resets)
    routed = [(name, kwargs["level"] % 2) for name, kwargs in resets]
    assert all((name == "counter") == (parity == 0) for name, parity in routed)  # each row reached its environment
    assert calls["increment"] and calls["shout"]
    log = trainer.state.log_history[-2]
    assert log["tools/call_frequency"] == pytest.approx(1 / 2) and log["tools/failure_frequency"] == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["grpo", "depo"])
def test_environment_errors_are_trls(kind, tool_tokenizer, tmp_path):
    from depo_trl.tiny import build_model

    cls = _grpo_or_depo(kind)
    model = build_model(tool_tokenizer)

    def args(**kw):
        return make_config(tmp_path, grpo=kind == "grpo", **kw)

    with pytest.raises(ValueError, match="max_steps"):
        cls(model=model, reward_funcs=reward_len, args=args(max_steps=-1), processing_class=tool_tokenizer,
            environment_factory=CounterEnvironment)
    with pytest.raises(ValueError, match="requires a `train_dataset`"):
        cls(model=model, reward_funcs=reward_len, args=args(max_steps=1), processing_class=tool_tokenizer,
            environment_factory={"a": CounterEnvironment, "b": CounterEnvironment})
    unknown = Dataset.from_list([{"prompt": [{"role": "user", "content": f"q{i}"}], "environment": "unknown"}
                                 for i in range(8)])
    small = dict(max_steps=1, per_device_train_batch_size=4, num_generations=2)
    if kind == "depo":
        small.update(FILTER_NOW)
    trainer = cls(model=model, reward_funcs=reward_len, args=args(**small), train_dataset=unknown,
                  processing_class=tool_tokenizer, environment_factory={"counter": CounterEnvironment})
    with pytest.raises(ValueError, match="not among the environments"):
        trainer.train()


@BOTH_GRPO_SLOW
def test_environment_owned_rewards_of_mixed_environments(kind, tool_tokenizer, tmp_path):
    """An environment's get_reward is one more reward source (None for rollouts of other environments): DEPO's
    pass reward is the first (format) reward; prompts are judged by the next one that scores them otherwise."""

    class Scored:
        def reset(self, **kwargs):
            return "Go."

        def act(self, x: int) -> int:
            """
            Act.

            Args:
                x: A value.

            Returns:
                The value.
            """
            return x

        def get_reward(self) -> float:
            return 1.0

    class Plain:
        def reset(self, **kwargs):
            return "Go."

        def play(self, x: int) -> int:
            """
            Play.

            Args:
                x: A value.

            Returns:
                The value.
            """
            return x

    def format_reward(completions, environment, **kwargs):  # applies only to the plain environment's rows
        return [float(len(_text(c))) if env == "plain" else None for c, env in zip(completions, environment)]

    dataset = Dataset.from_dict({"environment": ["scored", "plain"] * 12, "level": list(range(24))})
    trainer = _tool_scenario(kind, tool_tokenizer, tmp_path, reward_funcs=format_reward, dataset=dataset,
                             environment_factory={"scored": Scored, "plain": Plain},
                             config={"per_device_train_batch_size": 8, "num_generations": 2})
    assert trainer.reward_func_names == ["format_reward", "Scored"]
    train_and_check(trainer, changed="some",
                    patch_generate=_tool_generate(tool_tokenizer, ["Hello<|im_end|>", "Hi!<|im_end|>"], 8))
