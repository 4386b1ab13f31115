"""Built-in synthetic tasks: offline datasets and reward functions for the demo, tests and benchmarks.

- ``letters``: "Answer with one character from: <set>". A completion passes when its first character is in the
  set. The set size is the difficulty knob: under a near-uniform tiny policy the pass rate is about
  ``|set| / |alphabet|``, so prompts range from nearly always failing (1 character) to nearly always passing
  (the whole alphabet). The policy can learn it, so pass rates move during training.
- ``controlled``: three kinds of prompts whose reward ignores the completion: ``easy`` always passes, ``hard``
  never does, ``coin`` passes with probability 0.5. The ideal filter rolls out only ``coin`` prompts.
"""

from __future__ import annotations

import random
import string

LETTERS_ALPHABET = string.ascii_letters + string.digits + string.punctuation


def letters_dataset(n_prompts: int = 512, seed: int = 0, conversational: bool = True):
    """A ``datasets.Dataset`` with ``prompt`` and ``allowed`` columns (and ``set_size`` as metadata)."""
    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for _ in range(n_prompts):
        size = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55, 80, 94])
        allowed = "".join(sorted(rng.sample(LETTERS_ALPHABET, size)))
        text = f"Answer with one character from: {allowed}"
        prompt = [{"role": "user", "content": text}] if conversational else text
        rows.append({"prompt": prompt, "allowed": allowed, "set_size": size})
    return Dataset.from_list(rows)


def _completion_text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return completion[0]["content"] if completion else ""
    return completion


def letters_reward(completions, allowed, **kwargs) -> list[float]:
    """1.0 when the completion's first non-blank character is one of the allowed ones, else 0.0."""
    rewards = []
    for completion, chars in zip(completions, allowed):
        text = _completion_text(completion).lstrip()
        rewards.append(1.0 if text and text[0] in chars else 0.0)
    return rewards


CONTROLLED_KINDS = ("easy", "hard", "coin")


def controlled_dataset(n_per_kind: int = 64, seed: int = 0):
    """Prompts of three kinds (``kind`` column); see ``ControlledReward``."""
    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for i in range(n_per_kind):
        for kind in CONTROLLED_KINDS:
            # The text says nothing about the kind beyond one word, so only history (or the embedding of
            # that word) can tell them apart.
            rows.append({"prompt": [{"role": "user", "content": f"{kind} task number {i}"}], "kind": kind})
    rng.shuffle(rows)
    return Dataset.from_list(rows)


class ControlledReward:
    """Reward that ignores the completion: ``easy`` -> 1, ``hard`` -> 0, ``coin`` -> Bernoulli(0.5), seeded."""

    __name__ = "controlled_reward"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def __call__(self, completions, kind, **kwargs) -> list[float]:
        return [1.0 if k == "easy" else 0.0 if k == "hard" else float(self.rng.random() < 0.5) for k in kind]
