"""Where candidate prompts come from: an endless, seeded walk over the training set.

Each epoch is a fresh random permutation of the dataset indices (seeded by ``(seed, epoch)``, so every rank
walks the same order without talking). A round takes the next ``n`` indices; when the epoch ends mid-round
the round continues into the next permutation, and any index that would appear twice in one round is held
back and served first in the following round. So within every epoch each prompt is offered as a candidate
exactly once: skipping a prompt this epoch never removes it from the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.dataset_size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` distinct dataset indices."""
        if n > self.dataset_size:
            raise ValueError(f"Cannot draw {n} distinct candidates from a dataset of {self.dataset_size} prompts.")
        chosen: list[int] = []
        taken: set[int] = set()
        pending, self.held_back = self.held_back, []
        for index in pending:
            if len(chosen) < n:
                chosen.append(index)
                taken.add(index)
            else:
                self.held_back.append(index)
        while len(chosen) < n:
            if self.position >= self.dataset_size:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            index = int(self._order[self.position])
            self.position += 1
            if index in taken:
                self.held_back.append(index)
            else:
                chosen.append(index)
                taken.add(index)
        return np.asarray(chosen, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "held_back": np.asarray(self.held_back, dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.held_back = [int(i) for i in np.asarray(state["held_back"]).reshape(-1)]
        self._order = self._permutation(self.epoch)
