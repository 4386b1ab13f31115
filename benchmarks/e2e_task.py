"""The end-to-end benchmark's synthetic task, its tiny model and the supervised warm start.

Task: **string reversal**. A prompt is ``"<letters>>"`` (e.g. ``"kqbz>"``), the answer is the letters reversed
(``"zbqk"``) followed by the end-of-sequence token. The difficulty knob is the string length: under sampling at
temperature 1 every answer character is a chance to slip, so after a short warm start the pass rate falls with
length, from nearly always (1-2 letters) to nearly never (the longest strings). The reward is exact match, binary.

The model is the package's char-level tokenizer (``depo_trl.tiny``) and a small Qwen2 built in code and seeded;
the warm start is a plain torch loop (teacher forcing, loss on the answer tokens only) whose length is chosen so
that pass rates spread over (0, 1) across lengths. The warm-started weights are cached under
``benchmarks/results/cache/`` (git-ignored), keyed by every setting that shapes them.

Everything is seeded: the same settings give the same datasets, the same checkpoint and the same spread.
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


@dataclass(frozen=True)
class TaskSpec:
    """Everything that shapes the task, the model and the warm start (the cache key is built from it)."""

    min_length: int = 2
    max_length: int = 10
    hidden_size: int = 128
    num_layers: int = 4
    warm_steps: int = 200
    warm_batch: int = 64
    warm_lr: float = 3e-3
    seed: int = 0

    @property
    def max_completion_length(self) -> int:
        return self.max_length + 2  # the answer, the end-of-sequence token, one spare

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + "|task=reverse-v1"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- data
def make_prompt(letters: str) -> str:
    return letters + SEPARATOR


def _random_word(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(length))


HELDOUT_UNIVERSE = 1080  # every size's held-out set is a prefix of this one, so one warm start serves all sizes
TRAIN_UNIVERSE = 4096


def make_splits(spec: TaskSpec, n_train: int, n_heldout: int, seed: int = 0):
    """Train and held-out ``datasets.Dataset``s with ``prompt``, ``answer`` and ``length`` columns.

    Lengths are balanced over ``[min_length, max_length]``; no string appears in both splits (or twice in one), so
    held-out prompts are never trained on. Both splits are prefixes of fixed seeded universes (``heldout_words``),
    so smaller sizes use subsets of the bigger ones' prompts and the warm start, which excludes the whole held-out
    universe, is the same for every size. A length with few distinct strings (26**n) gives the held-out universe
    at most a quarter of them and the train universe at most half; the other lengths make up the count."""
    from datasets import Dataset

    if n_heldout > HELDOUT_UNIVERSE or n_train > TRAIN_UNIVERSE:
        raise ValueError(f"At most {HELDOUT_UNIVERSE} held-out and {TRAIN_UNIVERSE} train prompts.")
    heldout, train = _universes(spec, seed)

    def dataset(words: list[str], n: int, salt: int):
        rows = [{"prompt": make_prompt(w), "answer": w[::-1], "length": len(w)} for w in words[:n]]
        random.Random(seed * 1_000_003 + salt).shuffle(rows)
        return Dataset.from_list(rows)

    return dataset(train, n_train, 1), dataset(heldout, n_heldout, 2)


def heldout_words(spec: TaskSpec, seed: int = 0) -> list[str]:
    """The whole held-out universe (the warm start never trains on these strings)."""
    return _universes(spec, seed)[0]


def _universes(spec: TaskSpec, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed * 7919 + 17)
    lengths = list(range(spec.min_length, spec.max_length + 1))
    seen: set[str] = set()

    def draw(n: int, share: float) -> list[str]:
        caps = {length: int(share * len(LETTERS) ** length) for length in lengths}
        counts = {length: 0 for length in lengths}
        words, turn = [], 0
        while len(words) < n:  # round-robin over lengths: every prefix is balanced
            open_lengths = [length for length in lengths if counts[length] < caps[length]]
            if not open_lengths:
                raise ValueError(f"Cannot draw {n} distinct strings of lengths {lengths}.")
            length = open_lengths[turn % len(open_lengths)]
            turn += 1
            word = _random_word(rng, length)
            while word in seen:
                word = _random_word(rng, length)
            seen.add(word)
            counts[length] += 1
            words.append(word)
        return words

    heldout = draw(HELDOUT_UNIVERSE, 0.25)
    return heldout, draw(TRAIN_UNIVERSE, 0.5)


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
    """Supervised warm start on freshly drawn strings, never one in ``exclude`` (pass the held-out prompts' strings).
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
            word = _random_word(rng, rng.randint(spec.min_length, spec.max_length))
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
    model.eval()
    info = {"seconds": time.perf_counter() - start, "final_loss": float(np.mean(losses[-20:])), "cached": False}
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
