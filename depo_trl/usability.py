"""What stands between a new user and a first run: ``DEPOTrainer``'s small helpers for names, hints and bad input.

- ``resolve_tiny_model``: ``model="depo-tiny"`` builds the tiny model and tokenizer of ``depo_trl.tiny`` in Python,
  as ``model_name_or_path: depo-tiny`` does in a recipe (no hub look-up, no ``OSError`` after half a minute).
- ``cpu_hint``: the advice for a CPU run left at GPU-minded defaults (activation checkpointing on, every core for
  torch), measured on the tiny model; ``None`` when there is nothing to say.
- ``checked_reward_funcs``: reward functions wrapped, for one call, so a reward returning strings (or anything but
  one number or ``None`` per completion) fails with its own name and the fix, not with ``torch.tensor``'s "too many
  dimensions 'str'".
- ``IndexRecorder``: the dataset indices TRL's sampler yields, so warm-up rounds (which roll out TRL's own batch) log
  the real row indices in ``depo_decisions.jsonl``.
"""

from __future__ import annotations

import collections
import numbers
from collections.abc import Callable, Iterator

TINY_MODEL = "depo-tiny"


def resolve_tiny_model(model, processing_class, args):
    """``(model, processing_class)`` with the name ``depo-tiny`` replaced by the built model and its tokenizer.

    Under ``args.use_vllm`` it is built at ``vllm_cpu.TINY_VLLM_HIDDEN_SIZE`` (vLLM's CPU attention has no kernel for
    the default width's head size 8) and saved to ``<output_dir>/vllm-model``, since TRL's vLLM loads it from disk.
    """
    if not (isinstance(model, str) and model == TINY_MODEL):
        return model, processing_class
    from . import tiny

    tokenizer = processing_class if processing_class is not None else tiny.build_tokenizer()
    if not getattr(args, "use_vllm", False):
        return tiny.build_model(tokenizer, seed=args.seed), tokenizer
    from .vllm_cpu import TINY_VLLM_HIDDEN_SIZE, save_for_vllm

    model = tiny.build_model(tokenizer, seed=args.seed, hidden_size=TINY_VLLM_HIDDEN_SIZE)
    return save_for_vllm(model, tokenizer, args.output_dir), tokenizer


def cpu_hint(args, device_type: str, torch_threads: int) -> str | None:
    """Advice for a CPU run with several torch threads or activation checkpointing on (TRL's default); None when
    neither applies or the run is not on CPU.

    Measured on the tiny model (20 steps of 8 prompts x 8 completions, 2 cores shared with other jobs): 3.5 s/step
    with 2 threads and checkpointing on, 2.3 s/step with 2 threads and it off, 0.18 s/step with 1 thread either way.
    """
    checkpointing = getattr(args, "activation_checkpointing", None)
    if checkpointing is None:  # transformers before the rename
        checkpointing = getattr(args, "gradient_checkpointing", False)
    if device_type != "cpu" or not (checkpointing or torch_threads > 1):
        return None
    advice = []
    if torch_threads > 1:
        advice.append(
            f"torch uses {torch_threads} threads; for a small model, or on a machine shared with other busy "
            "processes, one thread is often much faster: call torch.set_num_threads(1) before training (the tiny "
            "model here: 2.3-3.5 s per step with 2 threads, 0.18 s with 1)."
        )
    if checkpointing:
        advice.append(
            "activation_checkpointing=True (TRL's default) recomputes activations in the backward pass to save "
            "memory, not time: set DEPOConfig(activation_checkpointing=False, ...) unless memory is short."
        )
    return "Training on CPU: " + " ".join(advice) + " (This hint is printed for CPU runs only.)"


def _bad_reward_value(values) -> object | None:
    """The first value that is not a number, a bool or None (a 0-d tensor or numpy scalar counts as a number)."""
    if isinstance(values, (str, bytes, numbers.Number)) or not hasattr(values, "__iter__"):
        return values  # not one value per completion at all
    for value in values:
        if value is None or isinstance(value, (bool, numbers.Real)):
            continue
        if getattr(value, "ndim", None) == 0:  # torch / numpy scalars
            continue
        return value
    return None


def check_reward_output(name: str, values) -> None:
    """Raise a ``TypeError`` naming reward ``name`` when ``values`` is not one number (or None) per completion."""
    bad = _bad_reward_value(values)
    if bad is None:
        return
    if bad is values:
        got = f"a single {type(values).__name__} ({values!r:.60})"
    else:
        got = f"{type(bad).__name__} values (first: {bad!r:.60})"
    raise TypeError(
        f"The reward function {name!r} returned {got}; a reward function must return a list with one number (or None, "
        "'does not apply') per completion. Convert in the function, e.g. `return [1.0 if ok else 0.0 for ok in "
        "checks]` or `return [float(r) for r in rewards]`."
    )


def checked_reward_funcs(reward_funcs: list, names: list[str]) -> list:
    """``reward_funcs`` with each plain synchronous function wrapped by ``check_reward_output`` (models, async
    functions and anything else left as they are: TRL treats those differently)."""
    import inspect

    import torch

    def wrap(func: Callable, name: str) -> Callable:
        def checked(*args, **kwargs):
            values = func(*args, **kwargs)
            check_reward_output(name, values)
            return values

        return checked

    out = []
    for func, name in zip(reward_funcs, names):
        plain = callable(func) and not isinstance(func, torch.nn.Module) and not inspect.iscoroutinefunction(func)
        plain = plain and not inspect.iscoroutinefunction(getattr(func, "__call__", None))
        out.append(wrap(func, name) if plain else func)
    return out


class IndexRecorder:
    """A sampler wrapper that remembers the indices it yields, so a warm-up round can name its dataset rows.

    TRL's ``RepeatSampler`` yields each generation round as one chunk: U indices, each repeated G times, the chunk
    repeated ``num_iterations x steps_per_generation`` times. ``take_round`` pops one round's worth and returns its U
    distinct indices in order. ``active`` is turned off once DEPO filters (its own draw knows its indices), and at
    most ``max_rounds`` rounds are kept, so the record stays small.
    """

    def __init__(self, sampler, rows_per_round: int, repeats: int, group: int, max_rounds: int = 64):
        self.sampler = sampler
        self.rows_per_round = int(rows_per_round)  # U x G: generation_batch_size
        self.round_size = self.rows_per_round * int(repeats)  # what the sampler yields per generation round
        self.group = int(group)
        self.active = True
        self.indices: collections.deque[int] = collections.deque(maxlen=max_rounds * self.round_size)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[int]:
        for index in self.sampler:
            if self.active:
                self.indices.append(int(index))
            yield index

    def take_round(self) -> list[int] | None:
        """The distinct dataset indices of the oldest recorded round (None when a whole round is not recorded)."""
        if len(self.indices) < self.round_size:
            return None
        chunk = [self.indices.popleft() for _ in range(self.round_size)]
        return chunk[: self.rows_per_round][:: self.group]

    def __getattr__(self, name):  # set_epoch and anything else TRL or accelerate asks the sampler for
        return getattr(self.__dict__["sampler"], name)
