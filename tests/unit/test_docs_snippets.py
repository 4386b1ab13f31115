"""docs/engine.md's "Where to change what": the model-reading feature group it shows runs as written and gets the
policy's embeddings through the same ``PromptEncoder`` the trainer and ``route`` use, and every place its table
names exists where it says.
"""

from __future__ import annotations

import importlib
import pathlib
import re

import numpy as np
import pytest

from depo_trl.features import FEATURE_GROUPS
from depo_trl.prompt_encoder import PromptEncoder

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECTION = (ROOT / "docs" / "engine.md").read_text().split("## Where to change what", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def snippet():
    """The section's Python block, executed; the group it registers is removed afterwards."""
    code = re.search(r"```python\n(.*?)```", SECTION, re.S).group(1)
    assert 5 <= len([line for line in code.splitlines() if line.strip()]) <= 12
    before = set(FEATURE_GROUPS)
    namespace: dict = {}
    exec(compile(code, "docs/engine.md", "exec"), namespace)
    yield namespace
    for name in set(FEATURE_GROUPS) - before:
        del FEATURE_GROUPS[name]


class _Chars:
    pad_token_id = 0


def test_the_model_reading_group_gets_the_prefill_embeddings(snippet):
    selector = snippet["selector"]
    assert FEATURE_GROUPS["embedding_norm"] is snippet["EmbeddingNorm"]
    assert selector.model_inputs == ("embeddings",)
    calls = []

    def prefill(token_ids, pad_token_id, answer_ids):  # a policy stand-in: a deterministic 3-d state per prompt
        calls.append(token_ids)
        return np.array([[len(ids), sum(ids) % 7, 1.0] for ids in token_ids], dtype=float), None

    encoder = PromptEncoder(selector, _Chars(), render=lambda ps, envs: (list(ps), [[ord(c) for c in p] for p in ps]),
                            embed=prefill)
    prompts = ["reverse abc", "reverse abcdefgh"]
    scores, _ = encoder.score(prompts)
    assert len(calls) == 1  # one prefill, because the group declared `embeddings`
    states = prefill(calls[0], 0, None)[0]
    np.testing.assert_allclose(scores.features[:, -1], np.linalg.norm(states, axis=1))
    # the engine asks for what the group declared when no encoder is in between
    with pytest.raises(ValueError, match="no embeddings were passed"):
        selector.score(prompts)


def test_the_places_the_table_names_exist():
    table = SECTION.split("```python", 1)[0]
    for path in re.findall(r"`(depo_trl/[\w/]+(?:\.py)?)`", table):
        assert (ROOT / path).exists(), path
    features = importlib.import_module("depo_trl.features")
    selection = importlib.import_module("depo_trl.selection")
    estimators = importlib.import_module("depo_trl.estimators")
    for module, names in ((features, ["GROUP_INPUTS", "register_feature_group"]),
                          (selection, ["select", "SELECTION_POLICIES", "check_band", "check_exploration",
                                       "SKIP_REASONS"]),
                          (estimators, ["register_estimator", "PassRateEstimator"])):
        for name in names:
            assert f"`{name}`" in table or f"`depo_trl.{name}`" in table, name
            assert hasattr(module, name), (module.__name__, name)
    for policy in selection.SELECTION_POLICIES:  # the table names every policy there is
        assert f"`{policy}`" in table, policy
    assert set(features.GROUP_INPUTS) == {"embeddings", "answer_logprobs", "history"}
    # the TRL side, read as text: importing the trainer is the trainer tier's business
    trainer = (ROOT / "depo_trl" / "depo_trainer.py").read_text()
    assert "def _generate_and_score_completions(" in trainer and "def _calculate_rewards(" in trainer
    compat = (ROOT / "depo_trl" / "_trl_compat.py").read_text()
    assert '"_generate_and_score_completions",' in compat and '"_calculate_rewards",' in compat
    assert "OVERRIDDEN_METHODS = (" in compat and "CALLED_METHODS = (" in compat
