"""Feature groups declare the inputs they read (``requires``); the engine and ``PromptEncoder`` provide exactly those.

A group of one's own, registered with ``register_feature_group``, must get what it declares with no other code
change, and a feature set that reads no model must run no prefill. No torch here: the prefill is a stand-in that
records its calls.
"""

import numpy as np
import pytest

from depo_trl.engine import PromptSelector
from depo_trl.features import FEATURE_GROUPS, GROUP_INPUTS, Featurizer, register_feature_group
from depo_trl.prompt_encoder import PromptEncoder

HIDDEN = 5


class CharTokenizer:
    """One id per character; pad id 0. Enough for rendering and reference-answer ids."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


class RecordingPrefill:
    """Stands in for the policy prefill: the embedding of a prompt is a function of its ids, and every call is kept."""

    def __init__(self):
        self.calls = []

    def __call__(self, token_ids, pad_token_id, answer_ids):
        self.calls.append((token_ids, answer_ids))
        embeddings = np.array([[len(ids), sum(ids) % 97, ids[0], ids[-1], 1.0] for ids in token_ids], dtype=float)
        answers = None if answer_ids is None else np.array([[-float(len(a)), -1.0, -0.5] for a in answer_ids])
        return embeddings, answers


def _render(prompts, environments):
    return list(prompts), [[ord(c) for c in p] for p in prompts]


def _encoder(selector, prefill):
    return PromptEncoder(selector, CharTokenizer(), render=_render, embed=prefill)


@pytest.fixture
def registered():
    """Registers groups for one test and removes them afterwards, so the registry is left as found."""
    names = []

    def register(cls):
        register_feature_group(cls)
        names.append(cls.name)
        return cls

    yield register
    for name in names:
        FEATURE_GROUPS.pop(name, None)


class EmbeddingNorm:
    """A group of one's own that reads the policy: the norm of each prompt's embedding."""

    name = "test_embedding_norm"
    requires = ("embeddings",)
    seen = []

    def transform(self, batch, history=None):
        EmbeddingNorm.seen.append(batch.embeddings)
        return np.linalg.norm(batch.embeddings, axis=1, keepdims=True)


class AnswerLength:
    """A group of one's own that scores a reference answer from its own column, with its own prefix."""

    name = "test_answer_length"
    requires = ("answer_logprobs",)

    def __init__(self, column="gold", prefix=">> ", max_tokens=4):
        self.column, self.prefix, self.max_tokens = column, prefix, max_tokens
        self.columns = [column]

    def transform(self, batch, history=None):
        return batch.answer_logprobs[:, :1]


class TextOnly:
    name = "test_text_only"
    requires = ()
    seen = []

    def transform(self, batch, history=None):
        TextOnly.seen.append((batch.embeddings, batch.answer_logprobs))
        return np.array([[len(t)] for t in batch.texts], dtype=float)


def test_a_registered_group_declaring_embeddings_gets_them_from_the_prefill(registered):
    registered(EmbeddingNorm)
    EmbeddingNorm.seen.clear()
    selector = PromptSelector(8, features=["length", "test_embedding_norm"])
    assert selector.model_inputs == ("embeddings",) and selector.needs_embedding
    prefill = RecordingPrefill()
    encoder = _encoder(selector, prefill)
    assert encoder.needs_prefill
    scores, _ = encoder.score(["what is 2 + 2?", "name a prime"])
    assert len(prefill.calls) == 1 and prefill.calls[0][1] is None  # embeddings only: no answer is scored
    expected = prefill(*_render(["what is 2 + 2?", "name a prime"], None)[1:], 0, None)[0]
    np.testing.assert_array_equal(EmbeddingNorm.seen[-1], expected)
    np.testing.assert_allclose(scores.features[:, -1], np.linalg.norm(expected, axis=1))
    with pytest.raises(ValueError, match="'test_embedding_norm' feature group is on, but no embeddings were passed"):
        selector.score(["a prompt"])


def test_a_registered_group_declaring_answer_logprobs_gets_its_own_answer_scored(registered):
    registered(AnswerLength)
    selector = PromptSelector(8, features=["test_answer_length"])
    assert selector.model_inputs == ("answer_logprobs",) and not selector.needs_embedding
    assert selector.metadata_columns == ["gold"]
    prefill = RecordingPrefill()
    encoded = _encoder(selector, prefill).encode(["q one", "q two"], metadata={"gold": ["7", "42"]})
    (_, answer_ids), = prefill.calls
    assert answer_ids == [[ord(c) for c in ">> 7"], [ord(c) for c in ">> 4"]]  # its prefix, cut to max_tokens=4
    assert encoded.embeddings is None  # computed by the prefill, but no group declared them
    np.testing.assert_array_equal(encoded.answer_logprobs[:, 0], [-4.0, -4.0])
    with pytest.raises(ValueError, match="'test_answer_length' features read the column 'gold'"):
        _encoder(selector, prefill).encode(["q"], metadata={"answer": ["1"]})


@pytest.mark.parametrize("features", [["length", "history"], ["length", "text", "history"]])
def test_features_that_read_no_model_run_no_prefill(features):
    selector = PromptSelector(8, features=features)
    prefill = RecordingPrefill()
    encoder = _encoder(selector, prefill)
    assert selector.model_inputs == () and not encoder.needs_prefill
    encoded = encoder.encode(["a", "bb", "ccc"])
    assert prefill.calls == [] and encoded.embeddings is None and encoded.answer_logprobs is None
    assert not encoder.encode(["dddd"]).selector_inputs(None)["embeddings"]


def test_built_in_groups_declare_what_they_read():
    declared = {name: tuple(cls.requires) for name, cls in FEATURE_GROUPS.items()}
    assert declared["embedding"] == ("embeddings",)
    assert declared["answer_likelihood"] == ("answer_logprobs",)
    assert declared["history"] == ("history",)
    assert declared["length"] == declared["text"] == declared["metadata"] == ()
    f = Featurizer(["answer_likelihood", "history", "embedding"])
    assert f.requires == ("embeddings", "answer_logprobs", "history")  # GROUP_INPUTS order, not the list's
    assert f.model_inputs == ("embeddings", "answer_logprobs") and f.needs_history
    assert set(f.requires) <= set(GROUP_INPUTS)


def test_undeclared_inputs_do_not_reach_the_groups(registered):
    registered(TextOnly)
    TextOnly.seen.clear()
    selector = PromptSelector(8, features=["test_text_only"])
    selector.score(["a", "b"], embeddings=np.ones((2, HIDDEN)), answer_logprobs=np.zeros((2, 3)))
    assert TextOnly.seen == [(None, None)]


def test_registration_refuses_what_could_not_be_wired(registered):
    class NoRequires:
        name = "test_no_requires"

        def transform(self, batch, history=None):
            return np.zeros((len(batch), 1))

    class UnknownInput(NoRequires):
        name = "test_unknown_input"
        requires = ("logits",)

    class TakenName(NoRequires):
        name = "length"
        requires = ()

    with pytest.raises(ValueError, match="needs a class attribute `requires`"):
        register_feature_group(NoRequires)
    with pytest.raises(ValueError, match=r"requires \['logits'\]; a group may declare only"):
        register_feature_group(UnknownInput)
    with pytest.raises(ValueError, match="already registered as 'length'"):
        register_feature_group(TakenName)
    assert "test_no_requires" not in FEATURE_GROUPS and FEATURE_GROUPS["length"] is not TakenName


def test_two_groups_asking_for_different_answers_are_refused(registered):
    registered(AnswerLength)
    with pytest.raises(ValueError, match="declare answer_logprobs for different answers"):
        Featurizer(["answer_likelihood", "test_answer_length"])


def test_a_group_seed_option_overrides_the_run_seed():
    """A feature group's own ``seed`` option (e.g. to choose its hash buckets) is used instead of the run's seed,
    not refused as a duplicate argument; groups without one follow the run's seed."""
    options = {"metadata": {"columns": {"level": "categorical"}, "seed": 7}}
    f = Featurizer(["metadata", "text"], seed=3, options=options)
    assert [g.seed for g in f.groups] == [7, 3]
    assert options["metadata"]["seed"] == 7  # the caller's options are not consumed
