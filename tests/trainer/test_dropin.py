"""Drop-in means drop-in: GRPOTrainer features that must keep working, unchanged, under DEPO filtering.

Each test here failed before the fix it names (issue 10 of the project). Filtering is active from the first step
(``depo_warmup_steps=0``) unless the test is about warm-up.
"""

import json
import random

import numpy as np
import pytest
import torch
from trl import GRPOTrainer

from depo_trl import DEPOTrainer
from depo_trl.tasks import controlled_dataset, letters_dataset, letters_reward


def _build(tokenizer, args, dataset=None, reward_funcs=letters_reward, cls=DEPOTrainer, seed=0, **kwargs):
    from depo_trl.tiny import build_model

    return cls(model=build_model(tokenizer, seed=seed), reward_funcs=reward_funcs, args=args,
               train_dataset=dataset if dataset is not None else letters_dataset(64),
               processing_class=tokenizer, **kwargs)


# ---------------------------------------------------------------- 1. every row is its own object
def test_rollout_func_extra_fields_reach_their_own_completion(tokenizer, config_factory, monkeypatch):
    """TRL merges a rollout_func's per-completion extra fields into the input rows in place."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    seen = []

    def rollout(prompts, trainer):
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        prompt_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        letter = tokenizer.convert_tokens_to_ids("a")
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [[letter, tokenizer.eos_token_id] for _ in prompts],
            "logprobs": [[0.0, 0.0] for _ in prompts],
            "env_score": list(range(len(prompts))),  # one value per completion
        }

    def reward(completions, env_score, **kwargs):
        seen.append(list(env_score))
        return [float(s % 2) for s in env_score]

    args = config_factory(max_steps=2, depo_warmup_steps=0, depo_candidate_multiplier=2)
    trainer = _build(tokenizer, args, reward_funcs=reward, rollout_func=rollout)
    trainer.train()
    assert trainer.depo_stats.rounds == 2 and trainer.depo_stats.candidates_scored == 2 * 2 * 4
    assert seen == [list(range(16))] * 2  # was [3, 3, 3, 3, 7, 7, 7, 7, ...]: the group's last value, G times


def test_rows_of_a_group_share_no_container(tokenizer, config_factory):
    """In-place edits of one completion's row (multi-turn code appends to its prompt) stay in that row."""
    lengths = []

    class EditsPrompts(DEPOTrainer):
        def _calculate_rewards(self, inputs, *args, **kwargs):
            assert len({id(x) for x in inputs}) == len(inputs)
            assert len({id(x["prompt"]) for x in inputs}) == len(inputs)
            for x in inputs:  # a turn appended in place, as multi-turn rollout code does
                x["prompt"].append({"role": "assistant", "content": "a"})
            lengths.append([len(x["prompt"]) for x in inputs])
            return super()._calculate_rewards(inputs, *args, **kwargs)

    args = config_factory(max_steps=2, depo_warmup_steps=0, depo_candidate_multiplier=2)
    trainer = _build(tokenizer, args, cls=EditsPrompts)
    trainer.train()
    assert lengths == [[2] * 16] * 2  # was [5, 5, 5, 5, ...]: G siblings shared one message list
    assert len(trainer.train_dataset[0]["prompt"]) == 1  # the dataset itself is untouched


def test_copy_row_copies_containers_and_shares_heavy_leaves():
    from depo_trl.candidates import copy_row

    image = np.zeros((64, 64, 3), dtype=np.uint8)
    row = {"prompt": [{"role": "user", "content": [{"type": "image", "image": image}]}], "images": [image],
           "meta": {"tags": ["a"]}, "n": 3}
    copy = copy_row(row)
    assert copy["prompt"] is not row["prompt"] and copy["prompt"][0] is not row["prompt"][0]
    assert copy["meta"]["tags"] is not row["meta"]["tags"] and copy["meta"] == row["meta"]
    assert copy["images"] is not row["images"] and copy["images"][0] is image  # the pixels are not duplicated
    assert copy["prompt"][0]["content"][0]["image"] is image and copy["n"] == 3


# ---------------------------------------------------------------- 2. config combinations
def _column_spy_reward(log):
    def reward(completions, **kwargs):
        log.append(sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric")))
        return [float(len(c[0]["content"]) % 2) for c in completions]

    return reward


def test_remove_unused_columns_with_metadata_features(tokenizer, config_factory):
    """Metadata columns reach DEPO's features in warm-up and filtered rounds, while reward functions get exactly
    the columns GRPOTrainer gives them with remove_unused_columns=True, in both kinds of round."""
    depo_kwargs, grpo_kwargs = [], []
    common = dict(max_steps=3, remove_unused_columns=True)
    args = config_factory(**common, depo_warmup_steps=1, depo_candidate_multiplier=2,
                          depo_features=["length", "metadata"],
                          depo_feature_options={"metadata": {"columns": ["set_size"]}})
    trainer = _build(tokenizer, args, reward_funcs=_column_spy_reward(depo_kwargs))
    trainer.train()  # raised KeyError: 'set_size' in the first (warm-up) round
    assert trainer.depo_stats.rounds == 3 and trainer.depo_estimator.n_updates_ == 3
    _build(tokenizer, config_factory(grpo=True, **common), reward_funcs=_column_spy_reward(grpo_kwargs),
           cls=GRPOTrainer).train()
    assert depo_kwargs == grpo_kwargs  # warm-up and filtered rounds alike: no 'allowed', no 'set_size'
    assert "set_size" not in depo_kwargs[0] and "allowed" not in depo_kwargs[-1]


def test_filtered_rows_carry_the_columns_trl_would_keep(tokenizer, config_factory):
    kwargs_seen = []
    args = config_factory(max_steps=2, remove_unused_columns=True, depo_warmup_steps=1, depo_candidate_multiplier=2)
    _build(tokenizer, args, reward_funcs=_column_spy_reward(kwargs_seen)).train()
    assert kwargs_seen[0] == kwargs_seen[1]  # warm-up (TRL's batch) and filtered (DEPO's rows): same kwargs
    kwargs_seen.clear()
    args = config_factory(max_steps=2, depo_warmup_steps=1, depo_candidate_multiplier=2)
    _build(tokenizer, args, reward_funcs=_column_spy_reward(kwargs_seen)).train()
    assert kwargs_seen[0] == kwargs_seen[1] and "allowed" in kwargs_seen[1]  # nothing stripped by default


def _write_passrates(path, rows, with_metadata=True):
    with open(path, "w") as f:
        for row in rows:
            line = {"prompt": row["prompt"], "pass_rate": row["set_size"] / 94, "n_samples": 128}
            if with_metadata:
                line["set_size"] = row["set_size"]
            f.write(json.dumps(line) + "\n")


def test_warm_start_with_metadata_features(tokenizer, config_factory, tmp_path):
    rows = letters_dataset(64)
    features = dict(depo_features=["length", "metadata"], depo_feature_options={"metadata": {"columns": ["set_size"]}})
    path = tmp_path / "passrates.jsonl"
    _write_passrates(path, rows)
    args = config_factory(max_steps=1, depo_warmup_steps=0, depo_warm_start_path=str(path), **features)
    trainer = _build(tokenizer, args)
    trainer.train()  # raised ValueError in the first round: the warm start had no metadata to featurise
    assert trainer.depo_estimator.n_updates_ == 2  # the warm start, then the first round

    bare = tmp_path / "bare.jsonl"
    _write_passrates(bare, rows, with_metadata=False)
    args = config_factory(max_steps=1, depo_warmup_steps=0, depo_warm_start_path=str(bare), **features)
    with pytest.raises(ValueError, match=r"reads columns \['set_size'\], but rows of depo_warm_start_path"):
        _build(tokenizer, args)  # refused at construction, before any compute


# ---------------------------------------------------------------- 3. zero-variance masking
def test_mask_zero_variance_refuses_losses_it_cannot_change(config_factory):
    for loss_type in ("grpo", "dr_grpo", "sapo", "luspo"):
        with pytest.raises(ValueError, match=f"no effect with loss_type='{loss_type}'.*token-normalised"):
            config_factory(loss_type=loss_type, depo_mask_zero_variance=True)
    for loss_type in ("dapo", "bnpo", "cispo", "vespo"):
        config_factory(loss_type=loss_type, depo_mask_zero_variance=True)


class _MaskSpy(DEPOTrainer):
    """Records TRL's output before and after DEPO's masking."""

    records: list

    def _mask_zero_variance_groups(self, output, rewards):
        before = {k: v.clone() for k, v in output.items() if isinstance(v, torch.Tensor)}
        super()._mask_zero_variance_groups(output, rewards)
        self.records.append((before, dict(output), rewards.clone()))


def _none_for_last_of_group(group):
    """Kind-decided rewards, with None for the last completion of every group: easy groups are [1, 1, 1, None]."""
    rng = random.Random(0)

    def reward(completions, kind, **kwargs):
        out = []
        for i, k in enumerate(kind):
            value = 1.0 if k == "easy" else 0.0 if k == "hard" else float(rng.random() < 0.5)
            out.append(None if i % group == group - 1 else value)
        return out

    return reward


def test_mask_zero_variance_follows_trl_advantages_and_leaves_attention_alone(tokenizer, config_factory):
    args = config_factory(max_steps=2, depo_warmup_steps=0, depo_candidate_multiplier=2,
                          depo_mask_zero_variance=True, loss_type="dapo")
    _MaskSpy.records = []
    trainer = _build(tokenizer, args, dataset=controlled_dataset(32), reward_funcs=_none_for_last_of_group(4),
                     cls=_MaskSpy)
    trainer.train()
    assert len(_MaskSpy.records) == 2
    for before, after, rewards in _MaskSpy.records:
        # The attention mask of the training forward is TRL's, untouched.
        assert torch.equal(after["completion_mask"], before["completion_mask"])
        loss_mask = after["completion_mask"] * after["tool_mask"]
        assert float(after["num_items_in_batch"]) == float(loss_mask.sum())
        advantages = before["advantages"].view(-1, 4)
        masked = (loss_mask.view(-1, 4, loss_mask.size(1)).sum(dim=(1, 2)) == 0)
        # Masked exactly where TRL's advantages are all (numerically) zero, e.g. [1, 1, 1, None].
        assert torch.equal(masked, advantages.abs().amax(dim=1) < 1e-3)
        assert masked.any() and not masked.all()


def test_mask_zero_variance_with_normalize_then_sum_keeps_groups_with_advantages(tokenizer, config_factory):
    """Pass reward alternates [1, 0, 1, 0] and a second reward [0, .5, 0, .5] with weight 2: the weighted sum is
    constant, but TRL normalises each function per group first, so the group has non-zero advantages."""
    def alternating(completions, **kwargs):
        return [float(i % 2 == 0) for i in range(len(completions))]

    def complement(completions, **kwargs):
        return [0.5 * float(i % 2 == 1) for i in range(len(completions))]

    args = config_factory(max_steps=2, depo_warmup_steps=0, depo_candidate_multiplier=2,
                          depo_mask_zero_variance=True, multi_objective_aggregation="normalize_then_sum",
                          reward_weights=[1.0, 2.0], depo_pass_reward="alternating")
    _MaskSpy.records = []
    _build(tokenizer, args, reward_funcs=[alternating, complement], cls=_MaskSpy).train()
    for before, after, _ in _MaskSpy.records:
        assert before["advantages"].abs().min() > 0.1  # TRL gives every completion a real advantage ...
        assert torch.equal(after["tool_mask"], torch.ones_like(after["tool_mask"]))  # ... so nothing is masked


# ---------------------------------------------------------------- 6. rendering like TRL
def test_candidates_are_rendered_with_trls_own_rendering(config_factory):
    """chat_template_kwargs (and tools, chat_template) reach the candidates' tokens, as they reach generation."""
    from depo_trl import _trl_compat

    template = ("{% if greeting %}HELLO {% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
    from depo_trl.tiny import build_tokenizer

    local = build_tokenizer()  # its own tokenizer, so the session one keeps its template
    local.chat_template = template
    args = config_factory(max_steps=1, depo_warmup_steps=0, chat_template_kwargs={"greeting": True})
    trainer = _build(local, args)
    prompts = [trainer.train_dataset[i]["prompt"] for i in range(3)]
    texts, token_ids, _ = trainer._render(prompts)
    assert all(text.startswith("HELLO ") for text in texts)  # was rendered without the kwargs
    generation_ids = trainer._tokenize_prompts(prompts)[0]
    assert [list(ids) for ids in token_ids] == [list(ids) for ids in generation_ids]
    assert _trl_compat.tokenize_prompts(trainer, prompts) == [list(ids) for ids in generation_ids]


def test_plain_text_candidates_get_the_special_tokens_generation_gets(config_factory):
    """TRL tokenises plain-text prompts with the tokenizer's special tokens; the candidates must see them too."""
    from depo_trl.tiny import build_tokenizer

    local = build_tokenizer()
    local._tokenizer.post_processor = __import__("tokenizers").processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", local.convert_tokens_to_ids("<|im_start|>"))])
    args = config_factory(max_steps=1, depo_warmup_steps=0)
    trainer = _build(local, args, dataset=letters_dataset(64, conversational=False))
    prompt = trainer.train_dataset[0]["prompt"]
    _, token_ids, _ = trainer._render([prompt])
    generation_ids = trainer._tokenize_prompts([prompt])[0][0]
    assert generation_ids[0] == local.convert_tokens_to_ids("<|im_start|>")
    assert list(token_ids[0]) == list(generation_ids)  # was one short: tokenised without special tokens


# ---------------------------------------------------------------- 4. warm start rendered like training
def test_warm_start_prompt_features_match_the_dataset_prompt(tokenizer, config_factory, tmp_path):
    """The shipped pass-rate files hold plain strings while training prompts are system + user chats: a prompt's
    features (and key) must be the same whether it came from the warm-start file or from the dataset."""
    from datasets import Dataset

    plain = letters_dataset(64, conversational=False)
    system = {"role": "system", "content": "Reply with a single character."}
    dataset = Dataset.from_list([{"prompt": [system, {"role": "user", "content": r["prompt"]}],
                                  "allowed": r["allowed"], "set_size": r["set_size"]} for r in plain])
    path = tmp_path / "passrates.jsonl"
    with open(path, "w") as f:
        for row in plain:
            f.write(json.dumps({"problem": row["prompt"], "pass_rate": row["set_size"] / 94}) + "\n")
    args = config_factory(max_steps=1, depo_warmup_steps=0, depo_warm_start_path=str(path),
                          depo_features=["length", "text", "embedding"], depo_feature_options={"text": {"dim": 32}})
    trainer = _build(tokenizer, args, dataset=dataset)
    fitted = {}
    original = trainer.depo_estimator.partial_fit

    def record(X, passes, trials, keys=None):
        fitted.update(X=np.array(X), keys=np.array(keys))
        return original(X, passes, trials, keys=keys)

    trainer.depo_estimator.partial_fit = record
    trainer._warm_start()
    prompts = [dataset[i]["prompt"] for i in range(len(dataset))]
    from_dataset = trainer._features(prompts)
    from depo_trl.history import prompt_key

    np.testing.assert_array_equal(fitted["keys"], [prompt_key(p) for p in prompts])  # history keys match
    np.testing.assert_allclose(fitted["X"], from_dataset, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- 8. the small ones
def test_prompt_key_of_an_image_prompt_is_its_content():
    from PIL import Image

    from depo_trl.history import prompt_key

    def chat(image):
        return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}]

    same = [Image.new("RGB", (8, 8), (10, 20, 30)) for _ in range(2)]
    other = Image.new("RGB", (8, 8), (10, 20, 31))
    assert prompt_key(chat(same[0])) == prompt_key(chat(same[1]))  # was keyed by str(): the object's address
    assert prompt_key(chat(same[0])) != prompt_key(chat(other))
    assert prompt_key([{"role": "user", "content": "hi"}]) == prompt_key([{"content": "hi", "role": "user"}])


def test_resume_reuses_cached_embeddings_and_does_not_repeat_audit_rounds(tokenizer, config_factory):
    from depo_trl.audit import read_decisions

    dataset = letters_dataset(32)
    args = config_factory(max_steps=4, depo_warmup_steps=0, depo_candidate_multiplier=4, learning_rate=5e-2,
                          depo_embedding_refresh_every=100, save_strategy="steps", save_steps=2)
    _build(tokenizer, args, dataset=dataset).train()
    first = {r["round"]: r for r in read_decisions(args.output_dir)}
    assert sorted(first) == [1, 2, 3, 4]
    resumed = _build(tokenizer, args, dataset=dataset, seed=1)
    resumed.train(resume_from_checkpoint=f"{args.output_dir}/checkpoint-2")
    records = read_decisions(args.output_dir)
    assert [r["round"] for r in records] == [1, 2, 3, 4]  # was [1, 2, 3, 4, 3, 4]
    # Round 3 depends only on the checkpointed state: with the embedding cache restored it is decided identically
    # (rounds 1-2 embedded all 32 prompts; round 3 reuses those embeddings, as the first run did).
    third = next(r for r in records if r["round"] == 3)
    assert third["prompt_key"] == first[3]["prompt_key"]
    np.testing.assert_allclose(third["predicted"], first[3]["predicted"], rtol=1e-9)


def test_depo_state_is_in_the_checkpoint_before_it_is_pushed(tokenizer, config_factory):
    import os

    args = config_factory(max_steps=1, depo_warmup_steps=0)
    trainer = _build(tokenizer, args)
    trainer.train()
    pushed = []
    trainer._push_from_checkpoint = lambda folder: pushed.append(os.path.exists(os.path.join(folder, "depo_state.json")))
    trainer.args.push_to_hub = True
    trainer._save_checkpoint(trainer.model, None)
    assert pushed == [True]  # was [False]: Trainer pushed before DEPO wrote its state


def test_embedding_adapter_off_without_peft_is_refused(tokenizer, config_factory):
    args = config_factory(max_steps=1, depo_embedding_adapter="off")
    with pytest.raises(ValueError, match="depo_embedding_adapter='off' embeds with the PEFT adapter disabled, but"):
        _build(tokenizer, args)


def test_ranks_that_drew_different_candidates_fail_loudly(tokenizer, config_factory):
    trainer = _build(tokenizer, config_factory(max_steps=1, depo_warmup_steps=0))
    scores, _ = trainer._score([trainer.train_dataset[i]["prompt"] for i in range(4)])
    trainer._check_same_candidates(scores)  # one rank agrees with itself
    trainer._gather_fingerprints = lambda mine: [mine, "0123456789abcdef"]  # as if rank 1 drew other prompts
    with pytest.raises(RuntimeError, match="ranks drew different candidate prompts"):
        trainer._check_same_candidates(scores)


# ---------------------------------------------------------------- 7. epochs
def _distinct_letters(n):
    """letters_dataset repeats a few prompts (e.g. every 94-character set is the same text); the cap counts a prompt,
    not a row, so these tests use distinct prompts."""
    from datasets import Dataset

    rows, seen = [], set()
    for row in letters_dataset(4 * n):
        if row["allowed"] not in seen and len(rows) < n:
            seen.add(row["allowed"])
            rows.append(row)
    return Dataset.from_list(rows)


def test_one_epoch_is_one_pass_of_the_candidate_walk(tokenizer, config_factory):
    """64 prompts, pools of K x U = 16: an epoch is 4 rounds, in which every prompt is offered once and no prompt is
    rolled out twice; num_train_epochs, max_steps and the logged epoch agree."""
    from depo_trl.audit import read_decisions

    args = config_factory(max_steps=-1, num_train_epochs=1, depo_warmup_steps=0, depo_candidate_multiplier=4)
    trainer = _build(tokenizer, args, dataset=_distinct_letters(64))
    trainer.train()
    assert trainer.state.max_steps == 4 and trainer.state.global_step == 4  # was 16: K passes of the walk
    assert trainer.state.epoch == pytest.approx(1.0)
    records = read_decisions(args.output_dir)
    offered = [i for r in records for i in r["dataset_index"]]
    assert sorted(offered) == list(range(64))  # every prompt offered exactly once
    rolled = [r["dataset_index"][i] for r in records for i in r["rolled_out"]]
    assert len(rolled) == 16 and len(set(rolled)) == 16


def test_rollout_cap_counts_warmup_and_discarded_batches_are_not_loaded(tokenizer, config_factory):
    from depo_trl.audit import read_decisions

    args = config_factory(max_steps=-1, num_train_epochs=1, depo_warmup_steps=1, depo_candidate_multiplier=4)
    trainer = _build(tokenizer, args, dataset=_distinct_letters(64))
    trainer.train()
    records = read_decisions(args.output_dir)
    assert [r["warmup"] for r in records] == [True, False, False, False]
    warmup_keys = set(records[0]["prompt_key"])
    later = [k for r in records[1:] for k in r["prompt_key"]]
    assert len(warmup_keys) == 4 and not warmup_keys & set(later)  # rolled out once this epoch: not offered again
    offered = [i for r in records[1:] for i in r["dataset_index"]]
    assert len(offered) == len(set(offered)) == 48
    # TRL's dataloader still yields 4 batches of U x G = 16 rows; after warm-up their rows are not read.
    loader = trainer.depo_loader_dataset
    assert loader.rows_loaded + loader.rows_skipped == 64
    assert loader.rows_loaded <= 32 and loader.rows_skipped >= 32  # warm-up batch, at most one fetched ahead


def test_rollout_cap_is_validated_and_can_be_lifted(tokenizer, config_factory):
    with pytest.raises(ValueError, match="depo_max_rollouts_per_epoch must be an integer >= 1 or None"):
        config_factory(depo_max_rollouts_per_epoch=0)
    args = config_factory(max_steps=2, depo_warmup_steps=1, depo_max_rollouts_per_epoch=None)
    trainer = _build(tokenizer, args, dataset=letters_dataset(64))
    trainer.train()
    assert trainer.depo_stats.rounds == 2
