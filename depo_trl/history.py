"""Per-prompt history of observed pass rates, bounded in memory.

Prompts are identified by a stable 64-bit key derived from their content (``prompt_key``), so history survives
dataset reshuffles, streaming datasets and resume. Each prompt occupies one slot in flat numpy arrays; when
``max_prompts`` slots are taken, the least recently seen prompt is evicted (it then looks unseen again, which
is the safe direction: it gets the prior, never a stale verdict). Eviction frees the oldest 1% at once, so
inserting into a full history costs amortised O(1) rather than a scan per prompt.

The Beta posterior uses forgetting: before each new observation the old pseudo-counts are shrunk toward the
prior by ``forgetting`` per round elapsed, because the policy (and so the pass rate) moves.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def _content(value: Any) -> str:
    """A JSON stand-in for a non-JSON leaf of a prompt (an image, an array, a tensor): a digest of its content, so
    two equal images are one key however they were loaded (``str()`` of a PIL image names its memory address)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, (bytes, bytearray, memoryview)):
        payload, kind = bytes(value), "bytes"
    elif hasattr(value, "tobytes"):  # PIL images (mode and size matter too), numpy arrays (dtype and shape)
        described = [type(value).__name__] + [str(getattr(value, a, "")) for a in ("mode", "size", "dtype", "shape")]
        payload, kind = value.tobytes(), "|".join(described)
    else:
        return str(value)
    return f"<{kind} {hashlib.blake2b(payload, digest_size=16).hexdigest()}>"


def prompt_key(prompt: Any) -> int:
    """A stable signed 64-bit key for a prompt (a string or a list of chat messages, whose parts may hold images:
    those are keyed by their content)."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=_content)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class PromptHistory:
    """Observed outcomes per prompt key.

    Args:
        max_prompts: most prompts remembered at once.
        ema: weight of the newest observation in the smoothed pass rate.
        forgetting: per-round shrink factor of the Beta pseudo-counts toward the prior.
        prior: ``(alpha, beta)`` of the Beta prior.
    """

    _ARRAYS = ("count", "last_rate", "ema_rate", "last_round", "alpha", "beta", "slot_key")

    def __init__(self, max_prompts: int = 1_000_000, ema: float = 0.5, forgetting: float = 0.9, prior=(1.0, 1.0)):
        if max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1, got {max_prompts}.")
        self.max_prompts = int(max_prompts)
        self.ema = float(ema)
        self.forgetting = float(forgetting)
        self.prior = (float(prior[0]), float(prior[1]))
        self._slots: dict[int, int] = {}
        capacity = min(self.max_prompts, 1024)
        self.count = np.zeros(capacity, dtype=np.int32)
        self.last_rate = np.zeros(capacity, dtype=np.float32)
        self.ema_rate = np.zeros(capacity, dtype=np.float32)
        self.last_round = np.zeros(capacity, dtype=np.int64)
        self.alpha = np.zeros(capacity, dtype=np.float32)
        self.beta = np.zeros(capacity, dtype=np.float32)
        self.slot_key = np.zeros(capacity, dtype=np.int64)
        self._free: list[int] = list(range(capacity - 1, -1, -1))  # unused slots; pop() takes the lowest
        self.round = 0

    def __len__(self) -> int:
        return len(self._slots)

    def _grow(self) -> None:
        new = min(self.max_prompts, 2 * len(self.count))
        for name in self._ARRAYS:
            old = getattr(self, name)
            grown = np.zeros(new, dtype=old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def _slot_for(self, key: int) -> int:
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        if not self._free:
            if len(self.count) < self.max_prompts:
                start = len(self.count)
                self._grow()
                self._free = list(range(len(self.count) - 1, start - 1, -1))
            else:
                self._evict()
        slot = self._free.pop()
        self._slots[key] = slot
        self.count[slot] = 0
        self.alpha[slot], self.beta[slot] = self.prior
        self.slot_key[slot] = key
        return slot

    def _evict(self) -> None:
        """Forget the least recently seen 1% of prompts at once (amortised: one partial sort per 1% of inserts)."""
        n_evict = max(1, self.max_prompts // 100)
        oldest = np.argpartition(self.last_round, n_evict - 1)[:n_evict]
        for slot in oldest:
            del self._slots[int(self.slot_key[slot])]
        self.last_round[oldest] = np.iinfo(np.int64).max  # free slots never look "oldest" again before reuse
        self._free = [int(s) for s in oldest]

    def update(self, keys, passes, trials) -> None:
        """Record one round of observations; call once per round (it advances the round counter)."""
        self.round += 1
        for key, s, n in zip(keys, passes, trials):
            if n <= 0:
                continue
            slot = self._slot_for(int(key))
            rate = s / n
            if self.count[slot] == 0:
                self.ema_rate[slot] = rate
            else:
                self.ema_rate[slot] = self.ema * rate + (1 - self.ema) * self.ema_rate[slot]
                shrink = self.forgetting ** (self.round - self.last_round[slot])
                self.alpha[slot] = self.prior[0] + shrink * (self.alpha[slot] - self.prior[0])
                self.beta[slot] = self.prior[1] + shrink * (self.beta[slot] - self.prior[1])
            self.alpha[slot] += s
            self.beta[slot] += n - s
            self.last_rate[slot] = rate
            self.count[slot] += 1
            self.last_round[slot] = self.round

    def lookup(self, keys) -> dict[str, np.ndarray]:
        """History of each key as arrays; unseen prompts get ``seen=0`` and prior values."""
        n = len(keys)
        get = self._slots.get  # plain Python ints (tolist) hash faster than numpy scalars
        slots = np.array([get(k, -1) for k in np.asarray(keys, dtype=np.int64).tolist()], dtype=np.int64)
        seen = slots >= 0
        s = slots[seen]
        a0, b0 = self.prior
        out = {
            "seen": seen.astype(np.float64),
            "count": np.zeros(n),
            "last_rate": np.full(n, a0 / (a0 + b0)),
            "ema_rate": np.full(n, a0 / (a0 + b0)),
            "rounds_since": np.zeros(n),
            "alpha": np.full(n, a0),
            "beta": np.full(n, b0),
        }
        out["count"][seen] = self.count[s]
        out["last_rate"][seen] = self.last_rate[s]
        out["ema_rate"][seen] = self.ema_rate[s]
        out["rounds_since"][seen] = self.round - self.last_round[s]
        out["alpha"][seen] = self.alpha[s]
        out["beta"][seen] = self.beta[s]
        return out

    def state_dict(self) -> dict[str, Any]:
        slots = np.fromiter(self._slots.values(), dtype=np.int64, count=len(self._slots))
        state: dict[str, Any] = {"round": self.round, "used": len(slots)}
        for name in self._ARRAYS:
            state[name] = getattr(self, name)[slots].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        used = int(state["used"])
        self.round = int(state["round"])
        capacity = min(self.max_prompts, max(1024, used))
        if used > self.max_prompts:
            raise ValueError(f"The saved history holds {used} prompts, more than max_prompts={self.max_prompts}.")
        for name in self._ARRAYS:
            template = getattr(self, name)
            array = np.zeros(capacity, dtype=template.dtype)
            array[:used] = np.asarray(state[name])[:used]
            setattr(self, name, array)
        self._slots = {int(k): i for i, k in enumerate(self.slot_key[:used])}
        self._free = list(range(capacity - 1, used - 1, -1))
