"""The end-to-end benchmark's synthetic task, its difficulty regimes, its tiny model and the supervised warm start.

Task: **string reversal**. A prompt is ``"<letters>>"`` (e.g. ``"kqbz>"``), the answer is the letters reversed
(``"zbqk"``) followed by the end-of-sequence token. The difficulty knob is the string length. The warm start (a
plain torch loop: teacher forcing, loss on the answer tokens only, stopped once the loss reaches
``warm_target_loss``) trains on lengths ``min_length .. warm_max_length`` only, which splits the lengths into three difficulty classes for the warm-started policy
(measured and printed by the benchmark):

- ``solved``: ``min_length .. solved_max_length``, nearly always right at temperature 1 (groups come out all-pass);
- ``frontier``: ``solved_max_length + 1 .. warm_max_length``, learnable: pass rates spread over (0, 1);
- ``beyond``: ``warm_max_length + 1 .. max_length``, lengths the model never saw: nearly never right (all-fail).

A **regime** is a training pool with a given mix of the classes (``REGIMES``): ``balanced`` is uniform over the
warm-start lengths (solved + frontier, the benchmark's original pool), ``hard`` is mostly beyond the model,
``easy`` mostly solved. The **held-out set** is the same in every regime and for every method: unseen strings of
the frontier lengths, balanced over them: the difficulties on which training can still make a difference.

The model is the package's char-level tokenizer (``depo_trl.tiny``) and a small Qwen2 built in code and seeded.
The warm-started weights are cached under ``benchmarks/results/cache/`` (git-ignored), keyed by every setting that
shapes them. The reward is exact match, binary. Everything is seeded: the same settings give the same datasets,
the same checkpoint and the same spread.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import string
import time
from dataclasses import asdict, dataclass

import numpy as np

LETTERS = string.ascii_lowercase
SEPARATOR = ">"
CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cache")
CLASSES = ("solved", "frontier", "beyond")

# Share of each regime's training pool per difficulty class (uniform over the lengths inside a class).
REGIMES: dict[str, dict[str, float]] = {
    "balanced": {"solved": None, "frontier": None, "beyond": 0.0},  # None: uniform over the warm-start lengths
    "hard": {"solved": 0.0, "frontier": 0.2, "beyond": 0.8},
    "easy": {"solved": 0.8, "frontier": 0.2, "beyond": 0.0},
}


@dataclass(frozen=True)
class TaskSpec:
    """Everything that shapes the task, the model and the warm start (the cache key is built from it)."""

    min_length: int = 2
    solved_max_length: int = 3
    warm_max_length: int = 10
    max_length: int = 13
    hidden_size: int = 128
    num_layers: int = 4
    warm_steps: int = 800  # at most; the warm start stops once the loss reaches warm_target_loss
    warm_target_loss: float = 0.1  # trailing mean over 20 steps (0: always run warm_steps)
    warm_batch: int = 64
    warm_lr: float = 3e-3
    seed: int = 0

    def __post_init__(self):
        if not self.min_length <= self.solved_max_length < self.warm_max_length <= self.max_length:
            raise ValueError(
                "TaskSpec needs min_length <= solved_max_length < warm_max_length <= max_length, got "
                f"{self.min_length}, {self.solved_max_length}, {self.warm_max_length}, {self.max_length}."
            )

    @property
    def max_completion_length(self) -> int:
        return self.max_length + 2  # the answer, the end-of-sequence token, one spare

    def lengths(self, difficulty: str | None = None) -> list[int]:
        """The string lengths of one difficulty class (all lengths when None)."""
        bounds = {
            None: (self.min_length, self.max_length),
            "solved": (self.min_length, self.solved_max_length),
            "frontier": (self.solved_max_length + 1, self.warm_max_length),
            "beyond": (self.warm_max_length + 1, self.max_length),
        }
        if difficulty not in bounds:
            raise ValueError(f"Unknown difficulty class {difficulty!r}; use one of {CLASSES}.")
        low, high = bounds[difficulty]
        return list(range(low, high + 1))

    def difficulty(self, length: int) -> str:
        return next(c for c in CLASSES if length in self.lengths(c))

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + "|task=reverse-v2"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- data
def make_prompt(letters: str) -> str:
    return letters + SEPARATOR


def _random_word(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(length))


HELDOUT_PER_LENGTH = 128  # the held-out universe: this many strings per frontier length (fixed for every size)
TRAIN_PER_LENGTH = 2048  # the train universe: at most this many strings per length


def regime_length_counts(spec: TaskSpec, regime: str, n: int) -> dict[int, int]:
    """How many prompts of each length a pool of ``n`` prompts of ``regime`` holds (largest-remainder rounding)."""
    if regime not in REGIMES:
        raise ValueError(f"Unknown regime {regime!r}; use one of {sorted(REGIMES)}.")
    weights = {}
    mix = REGIMES[regime]
    if any(v is None for v in mix.values()):  # uniform over the warm-start lengths
        warm = spec.lengths("solved") + spec.lengths("frontier")
        weights = {length: 1.0 / len(warm) for length in warm}
    else:
        for cls, share in mix.items():
            for length in spec.lengths(cls):
                weights[length] = share / len(spec.lengths(cls))
    exact = {length: n * w for length, w in weights.items() if w > 0}
    counts = {length: int(x) for length, x in exact.items()}
    for length in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[length] += 1
    return counts


def make_splits(spec: TaskSpec, n_train: int, n_heldout: int, seed: int = 0, regime: str = "balanced"):
    """Train (``regime``'s pool) and held-out ``datasets.Dataset``s with ``prompt``, ``answer`` and ``length``.

    The held-out set is balanced over the frontier lengths and the same for every regime. No string appears in
    both splits (or twice in one), so held-out prompts are never trained on. Both are prefixes of fixed seeded
    universes, so smaller sizes use subsets of the bigger ones' prompts, and the warm start, which excludes the
    whole held-out universe (``heldout_words``), is the same for every size and regime. A length with few
    distinct strings (26**n) gives the train universe at most half of them; the pool takes the missing prompts
    from the other lengths of the same class."""
    from datasets import Dataset

    heldout_by_length, train_by_length = _universes(spec, seed)
    frontier = spec.lengths("frontier")
    if n_heldout > HELDOUT_PER_LENGTH * len(frontier):
        raise ValueError(f"At most {HELDOUT_PER_LENGTH * len(frontier)} held-out prompts.")
    heldout = [heldout_by_length[frontier[i % len(frontier)]][i // len(frontier)] for i in range(n_heldout)]

    counts = regime_length_counts(spec, regime, n_train)
    taken = {length: min(c, len(train_by_length[length])) for length, c in counts.items()}
    for length, c in counts.items():  # a short length's deficit goes to its class's other lengths
        deficit = c - taken[length]
        same_class = [m for m in spec.lengths(spec.difficulty(length)) if m != length]
        for other in same_class:
            extra = min(deficit, len(train_by_length[other]) - taken.get(other, 0))
            if extra > 0:
                taken[other] = taken.get(other, 0) + extra
                deficit -= extra
        if deficit:
            raise ValueError(f"Cannot draw {n_train} distinct prompts for regime {regime!r}: too few of length {length}.")
    train = [w for length in sorted(taken) for w in train_by_length[length][: taken[length]]]

    def dataset(words: list[str], salt: int):
        rows = [{"prompt": make_prompt(w), "answer": w[::-1], "length": len(w)} for w in words]
        random.Random(seed * 1_000_003 + salt).shuffle(rows)
        return Dataset.from_list(rows)

    return dataset(train, 1), dataset(heldout, 2)


def heldout_words(spec: TaskSpec, seed: int = 0) -> list[str]:
    """The whole held-out universe (the warm start never trains on these strings)."""
    return [w for words in _universes(spec, seed)[0].values() for w in words]


def probe_words(spec: TaskSpec, per_length: int, seed: int = 0) -> dict[int, list[str]]:
    """Train-universe strings per length (every length) for measuring the warm start's pass-rate profile."""
    return {length: words[:per_length] for length, words in _universes(spec, seed)[1].items()}


def _universes(spec: TaskSpec, seed: int) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    rng = random.Random(seed * 7919 + 17)
    seen: set[str] = set()

    def draw(length: int, n: int) -> list[str]:
        n = min(n, len(LETTERS) ** length // 2)
        words = []
        while len(words) < n:
            word = _random_word(rng, length)
            if word not in seen:
                seen.add(word)
                words.append(word)
        return words

    heldout = {length: draw(length, HELDOUT_PER_LENGTH) for length in spec.lengths("frontier")}
    train = {length: draw(length, TRAIN_PER_LENGTH) for length in spec.lengths()}
    return heldout, train


def _completion_text(completion) -> str:
    if isinstance(completion, list):  # conversational form
        return completion[0]["content"] if completion else ""
    return completion


def reversal_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion is exactly the reversed string (surrounding blanks ignored), else 0.0."""
    return [1.0 if _completion_text(c).strip() == a else 0.0 for c, a in zip(completions, answer)]


# ---------------------------------------------------------------------------------------------- model
def build(spec: TaskSpec):
    """The tokenizer and a freshly initialised (seeded) model for ``spec``."""
    from depo_trl.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=spec.hidden_size, num_layers=spec.num_layers, seed=spec.seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return tokenizer, model


def _encode_batch(tokenizer, prompts: list[str], answers: list[str]):
    """Right-padded input ids, attention mask and labels (-100 outside the answer + eos)."""
    import torch

    eos = tokenizer.eos_token_id
    seqs, labels = [], []
    for prompt, answer in zip(prompts, answers):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        lab[i, : len(l)] = torch.tensor(l)
    return ids, mask, lab


def warm_start(spec: TaskSpec, exclude=(), cache_dir: str | None = None, log=print):
    """Supervised warm start on freshly drawn strings of lengths ``min_length .. warm_max_length``, never one in
    ``exclude`` (pass the held-out universe, ``heldout_words``).
    Returns ``(tokenizer, model, info)``; cached on disk, keyed by ``spec`` and ``exclude``."""
    import torch

    exclude = set(exclude)
    tokenizer, model = build(spec)
    digest = hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest()[:8]
    cache_dir = cache_dir or CACHE_DIR
    path = os.path.join(cache_dir, f"reverse-{spec.key()}-{digest}.pt")
    if os.path.exists(path):
        payload = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(payload["state_dict"])
        info = dict(payload["info"], cached=True, path=path)
        log(f"warm start: loaded cached checkpoint {path}")
        return tokenizer, model, info

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed + 1_000_003)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.warm_lr, weight_decay=0.0)
    model.train()
    start = time.perf_counter()
    losses = []
    for step in range(spec.warm_steps):
        words = []
        while len(words) < spec.warm_batch:
            word = _random_word(rng, rng.randint(spec.min_length, spec.warm_max_length))
            if word not in exclude:
                words.append(word)
        ids, mask, labels = _encode_batch(tokenizer, [make_prompt(w) for w in words], [w[::-1] for w in words])
        lr = spec.warm_lr * min(1.0, (step + 1) / 20)  # short linear warm-up
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"warm start: step {step + 1}/{spec.warm_steps} loss {np.mean(losses[-50:]):.3f}")
        # Stop on the loss, not a step count: when the loss drops varies a lot between seeds (it falls
        # suddenly), and the pass-rate profile follows the loss.
        if spec.warm_target_loss > 0 and len(losses) >= 20 and np.mean(losses[-20:]) <= spec.warm_target_loss:
            break
    model.eval()
    info = {"seconds": time.perf_counter() - start, "final_loss": float(np.mean(losses[-20:])), "steps": len(losses),
            "cached": False}
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"state_dict": model.state_dict(), "info": info, "spec": asdict(spec)}, tmp)
    os.replace(tmp, path)
    info["path"] = path
    return tokenizer, model, info


# ---------------------------------------------------------------------------------------------- evaluation
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, do_sample: bool, seed: int = 0,
             batch_size: int = 256) -> list[str]:
    """Decoded completions (special tokens dropped), batched, left-padded, under ``torch.no_grad``."""
    import torch

    was_training = model.training
    model.eval()
    texts = []
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=1.0 if do_sample else None,
                    top_k=0 if do_sample else None, top_p=1.0 if do_sample else None,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )
                texts.extend(tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    finally:
        torch.set_rng_state(generator_state)
        model.train(was_training)
    return texts


def pass_rates(model, tokenizer, dataset, samples: int, max_new_tokens: int, do_sample: bool = True,
               seed: int = 0) -> np.ndarray:
    """Per prompt: the share of ``samples`` completions that are exact (greedy: ``samples`` is 1)."""
    prompts = [p for p in dataset["prompt"] for _ in range(samples)]
    answers = [a for a in dataset["answer"] for _ in range(samples)]
    texts = generate(model, tokenizer, prompts, max_new_tokens, do_sample, seed)
    correct = np.array(reversal_reward(texts, answers), dtype=np.float64)
    return correct.reshape(len(dataset), samples).mean(axis=1)


def spread_by_length(rates: np.ndarray, lengths) -> dict[int, float]:
    lengths = np.asarray(lengths)
    return {int(n): float(rates[lengths == n].mean()) for n in sorted(set(lengths.tolist()))}
