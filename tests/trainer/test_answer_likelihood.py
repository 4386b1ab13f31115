"""The ``answer_likelihood`` feature group: the policy's teacher-forced log-likelihood of the reference answer."""

import numpy as np
import pytest
import torch

from depo_trl import DEPOTrainer, PromptSelector
from depo_trl.embedding import answer_token_ids, embed_and_score_answers, embed_token_ids
from depo_trl.features import AnswerLikelihoodFeatures, CandidateBatch, Featurizer
from depo_trl.graded_tasks import graded_dataset, graded_reward


def _ids(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_one_prefill_gives_the_embedding_and_the_teacher_forced_log_likelihood(tokenizer, tiny_model):
    prompts = _ids(tokenizer, ["what is 2 + 3?", "spell cat backwards, please"])
    answers = answer_token_ids(tokenizer, ["5", "tac"])
    for pooling in ("mean", "last"):
        plain = embed_token_ids(tiny_model, prompts, tokenizer.pad_token_id, pooling=pooling)
        embedded, logprobs = embed_and_score_answers(tiny_model, prompts, answers, tokenizer.pad_token_id,
                                                     pooling=pooling, batch_size=2)
        # Causal attention: appending the answer leaves the prompt's pooled hidden state unchanged.
        torch.testing.assert_close(embedded, plain, atol=1e-5, rtol=0)
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        with torch.no_grad():
            logits = tiny_model(input_ids=torch.tensor([prompt + answer])).logits[0]
        token_lp = torch.log_softmax(logits.float(), -1)[torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1),
                                                        torch.tensor(answer)]
        expected = torch.stack([token_lp.sum(), token_lp.mean(), token_lp[0]])
        torch.testing.assert_close(logprobs[row], expected, atol=1e-4, rtol=0)


def test_missing_answers_are_nan_and_flagged(tokenizer, tiny_model):
    prompts = _ids(tokenizer, ["a question", "another one", "third"])
    answers = answer_token_ids(tokenizer, ["x", None, "  "])
    assert answers[1] is None and answers[2] is None
    _, logprobs = embed_and_score_answers(tiny_model, prompts, answers, tokenizer.pad_token_id)
    assert torch.isfinite(logprobs[0]).all() and torch.isnan(logprobs[1:]).all()
    block = AnswerLikelihoodFeatures().transform(
        CandidateBatch(keys=np.arange(3), texts=["a", "b", "c"], answer_logprobs=logprobs.numpy()))
    assert block.shape == (3, 5) and np.isfinite(block).all()
    np.testing.assert_array_equal(block[:, -1], [0.0, 1.0, 1.0])  # the missing flag
    np.testing.assert_array_equal(block[1:, :-1], 0.0)
    assert 0.0 < block[0, 3] <= 1.0 and block[0, 3] == pytest.approx(np.exp(block[0, 0]))
    with pytest.raises(ValueError, match="2 answers for 3 prompts"):
        embed_and_score_answers(tiny_model, prompts, answers[:2], tokenizer.pad_token_id)


def test_engine_asks_for_answer_logprobs_and_reads_the_answer_column():
    selector = PromptSelector(8, features=["length", "answer_likelihood"],
                              feature_options={"answer_likelihood": {"column": "solution"}})
    assert selector.answer_likelihood.column == "solution" and selector.metadata_columns == ["solution"]
    with pytest.raises(ValueError, match="no answer_logprobs were passed.*embed_and_score_answers"):
        selector.score(["q1", "q2"], metadata={"solution": ["1", "2"]})
    with pytest.raises(ValueError, match=r"answer_logprobs must be \(n_prompts=2, 3\)"):
        selector.score(["q1", "q2"], metadata={"solution": ["1", "2"]}, answer_logprobs=np.zeros((2, 2)))
    scores = selector.score(["q1", "q2"], metadata={"solution": ["1", "2"]},
                            answer_logprobs=np.array([[-0.1, -0.1, -0.1], [-9.0, -3.0, -5.0]]))
    assert scores.features.shape == (2, 6 + 5)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        Featurizer(["answer_likelihood"], options={"answer_likelihood": {"max_tokens": 0}})


def test_a_likely_answer_is_learnt_as_an_easy_prompt():
    """With the answer's probability as its only input, the estimator learns that likely answers pass."""
    rng = np.random.default_rng(0)
    selector = PromptSelector(8, features=["answer_likelihood"], exploration=0.0, seed=0)
    for _ in range(20):
        p = rng.uniform(0.01, 0.99, size=32)
        lp = np.log(p)
        logprobs = np.column_stack([lp, lp, lp])
        texts = [f"q{i}" for i in range(32)]
        scores = selector.score(texts, metadata={"answer": ["a"] * 32}, answer_logprobs=logprobs)
        passes = rng.binomial(8, p)
        selector.observe(scores, np.arange(32), passes, np.full(32, 8))
    probe = np.log(np.array([0.05, 0.5, 0.95]))
    predicted = selector.score(["a", "b", "c"], metadata={"answer": ["a"] * 3},
                               answer_logprobs=np.column_stack([probe] * 3)).predicted
    assert predicted[0] < 0.25 < predicted[1] < 0.75 < predicted[2]


def _graded_trainer(tokenizer, args):
    from depo_trl.tiny import build_model

    return DEPOTrainer(model=build_model(tokenizer, seed=0), reward_funcs=graded_reward, args=args,
                       train_dataset=graded_dataset(48, families=["add", "compare"], levels=[1, 2]),
                       processing_class=tokenizer)


@pytest.mark.parametrize("refresh_every", [1, 100])
def test_trainer_scores_candidates_by_the_answer_likelihood(tokenizer, config_factory, refresh_every):
    args = config_factory(max_steps=3, depo_warmup_steps=1, depo_embedding_refresh_every=refresh_every,
                          depo_features=["length", "history", "embedding", "answer_likelihood"])
    trainer = _graded_trainer(tokenizer, args)
    seen_by_reward = []
    original = trainer.reward_funcs[0]

    def reward(completions, **kwargs):
        seen_by_reward.append(sorted(kwargs))
        return original(completions, **kwargs)

    reward.__name__ = "graded_reward"
    trainer.reward_funcs[0] = reward
    trainer.train()
    assert trainer.depo_stats.rounds == 3 and trainer.depo_stats.estimator_failures == 0
    row = trainer.train_dataset[0]
    encoded = trainer.depo_encoder.encode([row["prompt"]], metadata={"answer": [row["answer"]]})
    embeddings, answer_logprobs = encoded.embeddings, encoded.answer_logprobs
    assert embeddings.shape[0] == 1 and answer_logprobs.shape == (1, 3) and np.isfinite(answer_logprobs).all()
    assert answer_logprobs[0, 0] < 0  # a log-probability of a real answer under a random tiny model
    width = trainer._features([row["prompt"]], {"answer": [row["answer"]]}).shape[1]
    assert trainer.depo_estimator.n_features_in_ == width
    # The answer column reaches the reward exactly as it would under GRPOTrainer (it is a dataset column).
    assert all("answer" in kw for kw in seen_by_reward)


def test_trainer_refuses_an_answer_column_the_dataset_lacks(tokenizer, config_factory):
    args = config_factory(depo_features=["length", "answer_likelihood"],
                          depo_feature_options={"answer_likelihood": {"column": "solution"}})
    with pytest.raises(ValueError, match=r"reads columns \['solution'\].*lacks.*answer_likelihood"):
        _graded_trainer(tokenizer, args)


def test_adapter_off_without_peft_is_refused_when_only_the_answer_prefill_reads_the_model(tokenizer, config_factory):
    """The refusal follows what the groups declare: the answer prefill reads the model as the embedding does."""
    args = config_factory(depo_features=["length", "answer_likelihood"], depo_embedding_adapter="off")
    with pytest.raises(ValueError, match="depo_embedding_adapter='off' embeds with the PEFT adapter disabled, but"):
        _graded_trainer(tokenizer, args)
