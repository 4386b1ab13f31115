"""Where candidate prompts come from: an endless, seeded walk over the training set.

Two kinds: ``CandidateStream`` for map-style datasets (indexable, with a length) and
``IterableCandidateStream`` for streaming ones. Both expose ``draw(dataset, n) -> (indices, rows)`` and a
``state_dict`` that restores the walk exactly on resume.

Each epoch is a fresh random permutation of the dataset indices (seeded by ``(seed, epoch)``, so every rank
walks the same order without talking). A round takes the next ``n`` indices; when the epoch ends mid-round
the round continues into the next permutation, and any index that would appear twice in one round is held
back and served first in the following round. So within every epoch each prompt is offered as a candidate
exactly once: skipping a prompt this epoch never removes it from the next. ``draw(..., skip=)`` passes over rows for
the rest of their pass (DEPO's cap on rollouts per prompt per epoch).

What is handed to TRL: ``rank_rows`` lays the chosen prompts out as G contiguous rows each (every row its own object,
``copy_row``) and gives each rank its slice; ``TrlColumns`` keeps every row to exactly the columns TRL's own
dataloader would give it under ``remove_unused_columns``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

_PLAIN = (str, bytes, int, float, bool, type(None))


def copy_row(row: dict) -> dict:
    """A row that shares no container with ``row``: TRL writes into its input rows (``rollout_func`` extra fields
    are merged in place, multi-turn code edits the prompt), so each of a group's G rows must be its own object.
    Dicts, lists and tuples are copied all the way down; every other leaf (images, arrays, tensors) is shared, so a
    large image column is never duplicated G times."""
    shared: dict[int, Any] = {}

    def collect(value):
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)
        elif not isinstance(value, _PLAIN):
            shared[id(value)] = value  # deepcopy's memo: this object "is already copied" as itself

    collect(row)
    return copy.deepcopy(row, shared)


def rank_rows(rows: list[dict], group_size: int, num_processes: int, process_index: int) -> list[dict]:
    """This rank's slice of the round's rows: each prompt as ``group_size`` contiguous copies, in global order."""
    global_rows = [copy_row(row) for row in rows for _ in range(group_size)]
    per_rank = len(global_rows) // num_processes
    return global_rows[process_index * per_rank : (process_index + 1) * per_rank]


class TrlColumns:
    """The columns of the rows handed to TRL under ``remove_unused_columns=True``.

    TRL's dataloader keeps only its signature columns (``prompt``, ``image``, ...). DEPO's ``metadata`` features need
    their columns in warm-up batches too, so the dataloader is asked to keep those as well (``widen``), and they are
    taken off again before a row reaches TRL (``for_trl``): reward functions get exactly GRPOTrainer's columns.
    """

    def __init__(self, remove_unused_columns: bool):
        self.remove_unused_columns = bool(remove_unused_columns)
        self.trl: list[str] | None = None  # TRL's own signature columns, once it has set them
        self.hidden: list[str] = []  # metadata columns DEPO asked TRL's dataloader to keep for it

    def widen(self, trl_columns: list[str], metadata_columns: list[str]) -> list[str]:
        """Record TRL's columns; the columns its dataloader should keep: TRL's, then DEPO's metadata columns."""
        self.trl = list(trl_columns)
        self.hidden = [c for c in metadata_columns if c not in self.trl]
        return self.trl + self.hidden

    def for_trl(self, rows: list[dict], drawn: bool) -> list[dict]:
        """``rows`` with exactly TRL's columns. ``drawn`` rows come from the raw dataset (DEPO's candidate walk; call
        after ``widen``); the others came through TRL's dataloader."""
        if not self.remove_unused_columns:
            return rows
        if drawn:
            return [{k: v for k, v in row.items() if k in self.trl} for row in rows]
        if not self.hidden:
            return rows
        return [{k: v for k, v in row.items() if k not in self.hidden} for row in rows]


class CandidateStream:
    def __init__(self, dataset_size: int, seed: int = 0, shuffle: bool = True):
        if dataset_size < 1:
            raise ValueError("The training dataset is empty.")
        self.dataset_size = int(dataset_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self.held_back: list[int] = []
        self.held_back_pass: list[int] = []  # the pass each held-back index belongs to
        self.last_passes = np.zeros(0, dtype=np.int64)
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.dataset_size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)

    def _advance(self) -> tuple[int, int]:
        """The walk's next index and the pass (epoch) it belongs to."""
        if self.position >= self.dataset_size:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        index = int(self._order[self.position])
        self.position += 1
        return index, self.epoch

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` distinct dataset indices."""
        return self.draw(None, n)[0]

    def draw(self, dataset, n: int, skip=None) -> tuple[np.ndarray, list[dict] | None]:
        """The next ``n`` distinct dataset indices and their rows (``dataset=None``: indices only).

        ``skip(row, pass_index)``, when given, passes over a row for the rest of its pass (it is not offered until the
        walk comes back to it): DEPO's cap on rollouts per prompt per epoch. A pass in which every remaining row is
        skipped simply ends, and the next pass offers them again."""
        if n > self.dataset_size:
            raise ValueError(f"Cannot draw {n} distinct candidates from a dataset of {self.dataset_size} prompts.")
        chosen: list[int] = []
        rows: list[dict] = []
        passes: list[int] = []
        taken: set[int] = set()
        pending, self.held_back = self.held_back, []
        pending_passes, self.held_back_pass = self.held_back_pass, []
        budget = 2 * self.dataset_size + len(pending)  # two passes at most: skip() never skips a row of a new pass
        while len(chosen) < n:
            if budget <= 0:
                raise RuntimeError("The candidate walk could not find enough rows to offer; skip() refuses them all.")
            budget -= 1
            if pending:
                index, pass_index = pending.pop(0), pending_passes.pop(0)
            else:
                index, pass_index = self._advance()
            if index in taken:  # crossing into the next pass: serve it first next round, not twice now
                self.held_back.append(index)
                self.held_back_pass.append(pass_index)
                continue
            row = None if dataset is None else dataset[int(index)]
            if skip is not None and row is not None and skip(row, pass_index):
                continue
            chosen.append(index)
            taken.add(index)
            rows.append(row)
            passes.append(pass_index)
        self.held_back = pending + self.held_back  # what was not needed this round keeps its turn
        self.held_back_pass = pending_passes + self.held_back_pass
        self.last_passes = np.asarray(passes, dtype=np.int64)  # the pass each drawn index belongs to
        return np.asarray(chosen, dtype=np.int64), None if dataset is None else rows

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "held_back": np.asarray(self.held_back, dtype=np.int64),
            "held_back_pass": np.asarray(self.held_back_pass, dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.held_back = [int(i) for i in np.asarray(state["held_back"]).reshape(-1)]
        passes = state.get("held_back_pass")
        self.held_back_pass = ([int(p) for p in np.asarray(passes).reshape(-1)] if passes is not None
                               else [self.epoch] * len(self.held_back))
        self._order = self._permutation(self.epoch)


class IterableCandidateStream:
    """A walk over a streaming dataset: each epoch re-opens the stream (shuffled with ``seed + epoch`` when the
    dataset supports it) and takes rows in order. Every rank reads the whole stream itself, so all ranks see the
    same candidates without communicating. Resume skips the rows already consumed in the current epoch.
    A prompt that appears twice within one round is skipped the second time (it comes back next epoch)."""

    def __init__(self, seed: int = 0, shuffle: bool = True, shuffle_buffer: int = 1000):
        self.seed = int(seed)
        self.shuffle = shuffle
        self.shuffle_buffer = int(shuffle_buffer)
        self.epoch = 0
        self.consumed = 0
        self._iterator = None

    def _open(self, dataset):
        stream = dataset
        if self.shuffle and hasattr(stream, "shuffle"):
            stream = stream.shuffle(seed=self.seed + self.epoch, buffer_size=self.shuffle_buffer)
        iterator = iter(stream)
        for _ in range(self.consumed):
            next(iterator)
        return iterator

    def draw(self, dataset, n: int) -> tuple[None, list[dict]]:
        from .history import prompt_key

        if self._iterator is None:
            self._iterator = self._open(dataset)
        rows, keys, wraps = [], set(), 0
        while len(rows) < n:
            try:
                row = next(self._iterator)
            except StopIteration:
                wraps += 1
                if wraps > 1 or self.consumed == 0:  # a whole epoch cannot fill one pool
                    raise ValueError(
                        f"The streaming train_dataset yields fewer than {n} distinct prompts, one candidate pool. "
                        "Add data, or lower depo_candidate_multiplier or the generation batch size."
                    ) from None
                self.epoch += 1
                self.consumed = 0
                self._iterator = self._open(dataset)
                continue
            self.consumed += 1
            key = prompt_key(row["prompt"] if "prompt" in row else row)  # rows without a prompt: a TRL environment
            if key not in keys:
                keys.add(key)
                rows.append(row)
        return None, rows

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        self._iterator = None  # re-opened (and fast-forwarded) at the next draw
