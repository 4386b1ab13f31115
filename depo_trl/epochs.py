"""What an epoch means under DEPO, and TRL's dataloader cut to match it.

GRPO's epoch is one pass of TRL's ``RepeatSampler``: N / U generation rounds of U prompts each (N prompts in the
dataset, U = generation_batch_size / num_generations). A filtering DEPO round scores a pool of K x U candidates, so
GRPO's epoch would be K passes of DEPO's candidate walk: every prompt offered K times, some rolled out up to K times,
others never. Under DEPO **one epoch is one pass of the candidate walk**: ``N // pool`` generation rounds (at least
one), in which every prompt is offered as a candidate once. ``num_train_epochs``, ``max_steps``, the logged ``epoch``
and the progress bar all count these epochs, because TRL's dataloader is given exactly that many rounds per epoch
(``EpochOfRounds``). Warm-up rounds count as rounds of the epoch they fall in; they roll out GRPO's own batch, so the
walk's first pass starts after them. ``depo_max_rollouts_per_epoch`` caps how often one prompt is rolled out within
one pass of the walk (warm-up rollouts included).

TRL's dataloader keeps yielding batches, which a filtering round ignores (DEPO draws its own rows). ``LoadWhenUsed``
stands between the dataloader and the dataset: once filtering has begun it hands out a placeholder instead of reading
the row, so those batches cost nothing to load (not with reference steps, ``depo_reference_every``: they roll out
TRL's batch, so every batch is loaded). The switch only turns on (filtering never stops once begun), and a
batch fetched ahead while it was still off is merely loaded in vain. With ``dataloader_num_workers > 0`` the workers
hold their own copy of the switch, which stays off: rows are then loaded as before (correct, just not saved).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, Sampler
from transformers import TrainerCallback

PLACEHOLDER = {"prompt": ""}  # what a discarded batch holds once filtering has begun


class EpochOfRounds(Sampler):
    """TRL's train sampler, read as one continuous stream and cut into epochs of ``length`` indices.

    The indices are exactly the ones TRL's sampler yields, in its order, across its own epoch boundaries: warm-up
    (which rolls out TRL's batches) sees the very sequence GRPOTrainer would, only the epoch bookkeeping changes.
    (Each epoch's new DataLoader iterator draws a seed from torch's global RNG, so from the first DEPO epoch boundary
    on, sampled completions differ from GRPOTrainer's, though the prompts do not.)
    """

    def __init__(self, sampler: Sampler, length: int):
        if length < 1:
            raise ValueError(f"An epoch needs at least one index, got length={length}.")
        self.sampler = sampler
        self.length = int(length)
        self._stream: Iterator[int] | None = None

    def _indices(self) -> Iterator[int]:
        while True:
            yield from iter(self.sampler)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if self._stream is None:
            self._stream = self._indices()
        for _ in range(self.length):
            yield next(self._stream)


class LoadSwitch:
    """``skip`` turns on when DEPO starts filtering; from then on ``LoadWhenUsed`` reads no more rows."""

    def __init__(self):
        self.skip = False


class LoadWhenUsed(Dataset):
    """A map-style dataset that stops reading rows once its switch is on (see the module docstring)."""

    def __init__(self, dataset, switch: LoadSwitch):
        self.dataset = dataset
        self.switch = switch
        self.rows_loaded = 0
        self.rows_skipped = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if self.switch.skip:
            self.rows_skipped += 1
            return dict(PLACEHOLDER)
        self.rows_loaded += 1
        return self.dataset[index]

    def __getitems__(self, indices):
        if self.switch.skip:
            self.rows_skipped += len(indices)
            return [dict(PLACEHOLDER) for _ in indices]
        self.rows_loaded += len(indices)
        many = getattr(self.dataset, "__getitems__", None)
        return many(list(indices)) if many is not None else [self.dataset[i] for i in indices]

    @property
    def column_names(self):
        return getattr(self.dataset, "column_names", None)


class LoadSwitchCallback(TrainerCallback):
    """Turns off row loading for TRL's discarded batches as soon as the trainer filters (``trainer.depo_filtering``;
    checked at the start of training and after every optimizer step). Never with reference steps: those roll out
    TRL's batch, and the dataloader fetches ahead, so the switch would have to know which batch is whose."""

    def __init__(self, trainer):
        self.trainer = trainer

    def _update(self) -> None:
        self.trainer.depo_load_switch.skip = (self.trainer.depo_filtering
                                              and not getattr(self.trainer.args, "depo_reference_every", 0))

    def on_train_begin(self, args, state, control, **kwargs):
        self._update()

    def on_step_end(self, args, state, control, **kwargs):
        self._update()
