"""The proving ground's task, its tiny policy, the supervised warm start and the batched torch helpers.

Task: **shift-then-reverse**. A prompt is ``"<shift><letters>>"`` (e.g. ``"2abce>"``), letters from a 10-letter
alphabet. The policy writes its working first (every letter shifted ``shift`` places along the alphabet, wrapping),
then ``|``, then the final answer: the shifted letters reversed (``"cdeg|gedc"``), then end-of-sequence. The reward
checks only the text after the last ``|`` (exact match, binary), so the pass rate is not the probability of a
bare answer string: a completion can pass through different working, and the working itself has to be right
for the answer to come out right.

Partial skill (task v2). The warm start has two stages. A shared **base** learns the exact task on lengths
``min_length .. warm_max_length`` (shifts 1 .. ``max_shift``) until its loss is low. Every seed then continues
the base for ``seed_warm_steps`` steps on its own strings from a **noisy teacher**: each letter of the working is
shifted one place too far with probability ``seed_warm_error_rates[shift - 1]`` (the answer reverses the working
the teacher wrote, so working and answer stay consistent). The policy inherits a per-letter slip rate that
depends on the shift, so its pass rate falls with shift and length, roughly ``(1 - e_shift) ** length``: spread
over (0, 1), not bimodal, and not readable from the prompt's surface. The slip is a shared habit, so fixing it on
some prompts generalises to held-out prompts of the same kind: GRPO measurably learns (the first build, where
difficulty was only the length and the partial skill came from stopping a clean warm start early, did not: GRPO's
held-out accuracy fell on the hard pool). Lengths above ``warm_max_length`` are never seen in the warm start and
stay at pass rate 0: RL cannot learn them (no success to reinforce).

Classes (cells of shift x length): ``solved`` = shift 1 (no slips taught), lengths up to ``warm_max_length``;
``frontier`` = shifts 2 .. ``max_shift``, the same lengths; ``beyond`` = longer strings, every shift. A **regime**
is a pool mix over the classes (``REGIMES``); every seed draws its own pool, its own held-out set (from the same
mix as its pool, so forgetting of solved strings shows) and its own warm-start checkpoint.

The true pass rate of a prompt under the current policy is measured by sampling (``measured_pass_rate``), for the
oracle arm and for measuring predictors. The teacher-forced probability of the reference trace
(``true_pass_rate``) is not a substitute: a completion can pass through working other than the reference's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

ALPHABET = "abcdefghij"
SEPARATOR = ">"
WORK_END = "|"
CLASSES = ("solved", "frontier", "beyond")
CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cache", "pg")

REGIMES: dict[str, dict[str, float]] = {
    "hard": {"solved": 0.0, "frontier": 0.2, "beyond": 0.8},
    "easy": {"solved": 0.7, "frontier": 0.3, "beyond": 0.0},
    "balanced": {"solved": 0.34, "frontier": 0.33, "beyond": 0.33},
}


@dataclass(frozen=True)
class TaskSpec:
    min_length: int = 4  # the pools' shortest strings (length 3 has too few distinct strings per shift)
    warm_min_length: int = 3  # the warm start's shortest (the base's loss plateau broke quickly with 3 .. 7)
    warm_max_length: int = 7
    max_length: int = 10
    max_shift: int = 4
    hidden_size: int = 64
    num_layers: int = 2
    warm_steps: int = 8000  # at most: the base's warm start stops once the loss reaches warm_target_loss
    warm_target_loss: float = 0.03  # trailing mean over 50 steps (the loss falls suddenly, at a seed-dependent step)
    warm_batch: int = 64
    warm_lr: float = 3e-3
    seed_warm_steps: int = 400  # per-seed noisy-teacher continuation of the shared base (see ``seed_warm_start``)
    seed_warm_lr: float = 1e-3
    seed_warm_error_rates: tuple = (0.0, 0.1, 0.3, 0.55)  # per shift 1 .. max_shift: the teacher's slip rate

    def __post_init__(self):
        if len(self.seed_warm_error_rates) != self.max_shift:
            raise ValueError(f"seed_warm_error_rates has {len(self.seed_warm_error_rates)} rates for {self.max_shift} "
                             "shifts: give one slip rate per shift 1 .. max_shift.")

    def cells(self, cls: str | None = None) -> list[tuple[int, int]]:
        """The (shift, length) cells of class ``cls`` (every cell when None)."""
        shifts, short = range(1, self.max_shift + 1), range(self.min_length, self.warm_max_length + 1)
        cells = {"solved": [(1, n) for n in short],
                 "frontier": [(s, n) for s in shifts if s > 1 for n in short],
                 "beyond": [(s, n) for s in shifts for n in range(self.warm_max_length + 1, self.max_length + 1)]}
        if cls is None:
            return [c for k in CLASSES for c in cells[k]]
        if cls not in cells:
            raise ValueError(f"Unknown difficulty class {cls!r}; use one of {CLASSES}.")
        return cells[cls]

    def difficulty(self, shift: int, length: int) -> str:
        return next(c for c in CLASSES if (shift, length) in self.cells(c))

    @property
    def max_new_tokens(self) -> int:
        return 2 * self.max_length + 3  # working, '|', answer, eos, one spare

    def key(self, seed: int) -> str:
        base = {k: v for k, v in asdict(self).items() if not k.startswith("seed_warm")}  # the base's key
        blob = json.dumps(base, sort_keys=True) + f"|seed={seed}|task=shift-reverse-v1"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- data
def shifted(word: str, shift: int) -> str:
    return "".join(ALPHABET[(ALPHABET.index(c) + shift) % len(ALPHABET)] for c in word)


def prompt_of(shift: int, word: str) -> str:
    return f"{shift}{word}{SEPARATOR}"


def noisy_trace_of(shift: int, word: str, error_rate: float, rng: random.Random) -> str:
    """A teacher's trace with slips: each letter of the working is shifted one place too far with probability
    ``error_rate``; the answer reverses the working as written (working and answer stay consistent)."""
    s = "".join(ALPHABET[(ALPHABET.index(c) + shift + (rng.random() < error_rate)) % len(ALPHABET)] for c in word)
    return f"{s}{WORK_END}{s[::-1]}"


def trace_of(shift: int, word: str) -> str:
    """The reference completion: working, separator, answer."""
    s = shifted(word, shift)
    return f"{s}{WORK_END}{s[::-1]}"


def answer_of(shift: int, word: str) -> str:
    return shifted(word, shift)[::-1]


def reward(completion: str, answer: str) -> float:
    """1.0 when the text after the last ``|`` is exactly the answer (blanks ignored), else 0.0."""
    if WORK_END not in completion:
        return 0.0
    return 1.0 if completion.rsplit(WORK_END, 1)[1].strip() == answer else 0.0


def _word(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def regime_counts(spec: TaskSpec, regime: str, n: int) -> dict[tuple[int, int], int]:
    """Prompts per (shift, length) cell in a set of ``n`` drawn from ``regime``'s mix (each class's share split
    evenly over its cells; largest-remainder rounding)."""
    if regime not in REGIMES:
        raise ValueError(f"Unknown regime {regime!r}; use one of {sorted(REGIMES)}.")
    weights = {}
    for cls, share in REGIMES[regime].items():
        for cell in spec.cells(cls):
            weights[cell] = weights.get(cell, 0.0) + share / len(spec.cells(cls))
    exact = {k: n * w for k, w in weights.items() if w > 0}
    counts = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def make_sets(spec: TaskSpec, regime: str, n_pool: int, n_heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """A training pool and a held-out set, both from ``regime``'s mix, disjoint, drawn with ``seed``.
    Rows: ``prompt``, ``answer``, ``trace``, ``length``, ``shift``, ``cls``."""
    rng = random.Random(seed * 1_000_003 + 7)
    seen: set[str] = set()

    def draw(n: int) -> list[dict]:
        rows = []
        for (shift, length), count in regime_counts(spec, regime, n).items():
            if count > 0.5 * len(ALPHABET) ** length:
                raise ValueError(f"Too few distinct prompts of shift {shift}, length {length} for {n} rows of "
                                 f"{regime!r}.")
            got = 0
            while got < count:
                word = _word(rng, length)
                prompt = prompt_of(shift, word)
                if prompt in seen:
                    continue
                seen.add(prompt)
                rows.append({"prompt": prompt, "answer": answer_of(shift, word), "trace": trace_of(shift, word),
                             "length": length, "shift": shift, "cls": spec.difficulty(shift, length)})
                got += 1
        rng.shuffle(rows)
        return rows

    heldout = draw(n_heldout)
    return draw(n_pool), heldout


# ---------------------------------------------------------------------------------------------- model
def build(spec: TaskSpec, seed: int):
    from depo_trl.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=spec.hidden_size, num_layers=spec.num_layers, seed=seed)
    return tokenizer, model


class Codec:
    """Character ids without the tokenizer's per-call overhead (the tiny tokenizer is one token per character)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad = tokenizer.pad_token_id
        self.eos = tokenizer.eos_token_id
        vocab = tokenizer.get_vocab()
        self.ids = {c: vocab[c] for c in set(ALPHABET + "0123456789" + SEPARATOR + WORK_END)}
        self.chars = {i: c for c, i in self.ids.items()}

    def encode(self, text: str) -> list[int]:
        return [self.ids[c] for c in text]

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos or i == self.pad:
                break
            out.append(self.chars.get(i, "?"))
        return "".join(out)


def _right_padded(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def sequence_logprobs(model, codec: Codec, prompts: list[list[int]], completions: list[list[int]]) -> torch.Tensor:
    """Per-token log-probabilities of ``completions`` after ``prompts`` (right-padded, (n, width)) and their mask;
    differentiable when grad is on. Returns ``(logps, mask)`` over completion positions."""
    seqs = [p + c for p, c in zip(prompts, completions)]
    ids, mask = _right_padded(seqs, codec.pad)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    comp_mask = torch.zeros_like(logps)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        comp_mask[i, len(p) - 1: len(p) - 1 + len(c)] = 1.0
    return logps, comp_mask


@torch.no_grad()
def true_pass_rate(model, codec: Codec, rows: list[dict], batch: int = 512) -> np.ndarray:
    """``P(reference trace + eos)`` under the policy at T=1, per row (one teacher-forced prefill)."""
    was = model.training
    model.eval()
    out = []
    for start in range(0, len(rows), batch):
        chunk = rows[start: start + batch]
        prompts = [codec.encode(r["prompt"]) for r in chunk]
        traces = [codec.encode(r["trace"]) + [codec.eos] for r in chunk]
        logps, mask = sequence_logprobs(model, codec, prompts, traces)
        out.append(torch.exp((logps * mask).sum(1)).numpy())
    model.train(was)
    return np.concatenate(out).astype(np.float64)


@torch.no_grad()
def embed(model, codec: Codec, rows: list[dict], batch: int = 512, pooling: str = "mean") -> np.ndarray:
    """The policy's last hidden states of each prompt, pooled as ``DEPOTrainer``'s ``depo_embedding_pooling``:
    ``"mean"`` (masked mean, the default) or ``"last"`` (the last prompt token's state)."""
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}.")
    was = model.training
    model.eval()
    out = []
    for start in range(0, len(rows), batch):
        chunk = [codec.encode(r["prompt"]) for r in rows[start: start + batch]]
        ids, mask = _right_padded(chunk, codec.pad)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        if pooling == "last":
            out.append(hidden[torch.arange(len(chunk)), mask.sum(1) - 1].numpy())
        else:
            m = mask[..., None].float()
            out.append(((hidden * m).sum(1) / m.sum(1)).numpy())
    model.train(was)
    return np.concatenate(out).astype(np.float64)


@torch.no_grad()
def sample(model, codec: Codec, prompts: list[str], max_new_tokens: int, generator: torch.Generator,
           batch: int = 1024) -> list[list[int]]:
    """Completions sampled at T=1 (token ids, eos included when emitted), with a KV cache, left-padded batches."""
    was = model.training
    model.eval()
    results: list[list[int]] = []
    for start in range(0, len(prompts), batch):
        chunk = [codec.encode(p) for p in prompts[start: start + batch]]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), codec.pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        position = (mask.cumsum(1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1].float()
        done = torch.zeros(len(chunk), dtype=torch.bool)
        tokens = []
        pos = position[:, -1]
        for _ in range(max_new_tokens):
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, codec.pad), nxt)
            tokens.append(nxt)
            done = done | (nxt == codec.eos)
            if bool(done.all()):
                break
            mask = torch.cat([mask, (~done).long()[:, None] | 1], dim=1)
            pos = pos + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos[:, None],
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1].float()
        gen = torch.stack(tokens, dim=1).tolist()
        for row in gen:
            kept = []
            for t in row:
                if t == codec.pad:
                    break
                kept.append(t)
                if t == codec.eos:
                    break
            results.append(kept)
    model.train(was)
    return results


def measured_pass_rate(model, codec: Codec, rows: list[dict], samples: int, max_new_tokens: int,
                       generator: torch.Generator) -> np.ndarray:
    """The current pass rate of each row measured by sampling ``samples`` completions at T=1 (the oracle's and the
    diagnostics' "true" pass rate; ``generator`` is their own, so training's sampling is untouched)."""
    prompts = [r["prompt"] for r in rows for _ in range(samples)]
    completions = sample(model, codec, prompts, max_new_tokens, generator)
    answers = [r["answer"] for r in rows for _ in range(samples)]
    passed = np.array([reward(codec.decode(c), a) for c, a in zip(completions, answers)])
    return passed.reshape(len(rows), samples).mean(axis=1)


def accuracy(model, codec: Codec, rows: list[dict], samples: int, max_new_tokens: int, seed: int) -> np.ndarray:
    """Per row: the share of ``samples`` completions at T=1 that pass (fixed generator: no training RNG used)."""
    generator = torch.Generator().manual_seed(seed)
    prompts = [r["prompt"] for r in rows for _ in range(samples)]
    completions = sample(model, codec, prompts, max_new_tokens, generator)
    answers = [r["answer"] for r in rows for _ in range(samples)]
    passed = np.array([reward(codec.decode(c), a) for c, a in zip(completions, answers)])
    return passed.reshape(len(rows), samples).mean(axis=1)


# ---------------------------------------------------------------------------------------------- warm start
def warm_start(spec: TaskSpec, seed: int, exclude: set[str], log=print):
    """Supervised warm start on fresh strings of lengths ``min_length .. warm_max_length`` (never a prompt in
    ``exclude``), ``warm_steps`` steps; seeded by ``seed``; cached under ``benchmarks/results/cache/pg``."""
    tokenizer, model = build(spec, seed)
    codec = Codec(tokenizer)
    digest = hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest()[:8]
    path = os.path.join(CACHE_DIR, f"pg-{spec.key(seed)}-{digest}.pt")
    if os.path.exists(path):
        payload = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(payload["state_dict"])
        return tokenizer, model, dict(payload["info"], cached=True)
    torch.manual_seed(seed)
    rng = random.Random(seed * 31 + 5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.warm_lr, weight_decay=0.0)
    model.train()
    t0 = time.perf_counter()
    losses = []
    for step in range(spec.warm_steps):
        prompts, traces = [], []
        while len(prompts) < spec.warm_batch:
            shift, word = rng.randint(1, spec.max_shift), _word(rng, rng.randint(spec.warm_min_length, spec.warm_max_length))
            if prompt_of(shift, word) in exclude:
                continue
            prompts.append(codec.encode(prompt_of(shift, word)))
            traces.append(codec.encode(trace_of(shift, word)) + [codec.eos])
        for group in optimizer.param_groups:
            group["lr"] = spec.warm_lr * min(1.0, (step + 1) / 20)
        logps, mask = sequence_logprobs(model, codec, prompts, traces)
        loss = -(logps * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 250 == 0:
            log(f"warm start s{seed}: step {step + 1}/{spec.warm_steps} loss {np.mean(losses[-50:]):.3f}")
        if len(losses) >= 50 and np.mean(losses[-50:]) <= spec.warm_target_loss:
            break
    model.eval()
    info = {"seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-20:])), "steps": len(losses)}
    os.makedirs(CACHE_DIR, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "info": info}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return tokenizer, model, dict(info, cached=False)


BASE_SEED = 0


def seed_warm_start(spec: TaskSpec, seed: int, base_exclude: set[str], exclude: set[str], log=print):
    """The warm start of one seed: the shared base (``warm_start`` with ``BASE_SEED``, excluding ``base_exclude``;
    the clean task's loss plateau breaks at a seed-dependent step, sometimes not within thousands of steps, so one
    base is shared) then ``seed_warm_steps`` steps of the seed's own strings (never one in ``exclude``) from the
    noisy teacher (``noisy_trace_of`` with ``seed_warm_error_rates``), so every seed starts from its own
    checkpoint with its own slips. Cached per seed."""
    tokenizer, model, base_info = warm_start(spec, BASE_SEED, base_exclude, log=log)
    if spec.seed_warm_steps <= 0:
        return tokenizer, model, dict(base_info, base=True)
    digest = hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest()[:8]
    blob = (f"{spec.key(BASE_SEED)}|{spec.seed_warm_steps}|{spec.seed_warm_lr}|{seed}|{digest}"
            f"|{list(spec.seed_warm_error_rates)}")
    path = os.path.join(CACHE_DIR, f"pg-seed-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.pt")
    if os.path.exists(path):
        payload = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(payload["state_dict"])
        return tokenizer, model, dict(payload["info"], cached=True)
    codec = Codec(tokenizer)
    torch.manual_seed(seed + 77)
    rng = random.Random(seed * 131 + 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.seed_warm_lr, weight_decay=0.0)
    model.train()
    t0, losses = time.perf_counter(), []
    for _ in range(spec.seed_warm_steps):
        prompts, traces = [], []
        while len(prompts) < spec.warm_batch:
            shift, word = rng.randint(1, spec.max_shift), _word(rng, rng.randint(spec.warm_min_length, spec.warm_max_length))
            if prompt_of(shift, word) in exclude:
                continue
            prompts.append(codec.encode(prompt_of(shift, word)))
            error_rate = spec.seed_warm_error_rates[shift - 1]
            traces.append(codec.encode(noisy_trace_of(shift, word, error_rate, rng)) + [codec.eos])
        logps, mask = sequence_logprobs(model, codec, prompts, traces)
        loss = -(logps * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    info = {"base": base_info, "seed_seconds": time.perf_counter() - t0, "seed_final_loss": float(np.mean(losses[-20:])),
            "seed_steps": len(losses)}
    torch.save({"state_dict": model.state_dict(), "info": info}, path + ".tmp")
    os.replace(path + ".tmp", path)
    log(f"warm start s{seed}: base + {len(losses)} seed steps, loss {info['seed_final_loss']:.3f}")
    return tokenizer, model, dict(info, cached=False)
