"""The audit trail: every round's decisions as one JSON line, in a size-bounded file.

``<output_dir>/depo_decisions.jsonl`` holds one object per generation round: the step, whether it was warm-up,
and per candidate its dataset index (when known), prompt key, token count, times seen before, predicted pass
rate, the decision (``band``/``explore``/``fill``/... when rolled out; ``skip_too_easy``, ``skip_too_hard``,
``skip_in_band`` or ``skip_uniform`` when not: ``depo_trl.selection.skip_reason``), the rollout order
(``rolled_out``: candidate positions) and, for rolled-out prompts, the observed passes and scorable completions.
When the file passes ``max_bytes`` it is renamed to ``depo_decisions.1.jsonl`` (replacing an older one) and a new
file is started, so the trail never takes more than about twice ``max_bytes`` on disk. On resume, records of rounds after
the checkpoint are dropped (``discard_after``): the resumed run writes those rounds again.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from .selection import SKIP_IN_BAND, skip_reason

FILE_NAME = "depo_decisions.jsonl"
ROTATED_NAME = "depo_decisions.1.jsonl"


def finite_or_none(values) -> list:
    """JSON has no NaN: non-finite numbers become null."""
    return [float(v) if math.isfinite(v) else None for v in values]


class DecisionLog:
    def __init__(self, directory: str, max_bytes: int = 64 * 2**20):
        self.directory = directory
        self.max_bytes = int(max_bytes)
        self.path = os.path.join(directory, FILE_NAME)

    def write(self, record: dict[str, Any]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.path) and os.path.getsize(self.path) >= self.max_bytes:
            os.replace(self.path, os.path.join(self.directory, ROTATED_NAME))
        line = json.dumps(record, allow_nan=False)
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def discard_after(self, last_round: int) -> int:
        """Drop records of rounds after ``last_round`` (a resumed run is about to redo them, so they would appear
        twice); returns how many were dropped."""
        dropped = 0
        for name in (ROTATED_NAME, FILE_NAME):
            path = os.path.join(self.directory, name)
            if not os.path.exists(path):
                continue
            with open(path) as f:
                lines = [line for line in f if line.strip()]
            kept = [line for line in lines if json.loads(line).get("round", 0) <= last_round]
            if len(kept) != len(lines):
                dropped += len(lines) - len(kept)
                with open(path + ".tmp", "w") as f:
                    f.writelines(kept)
                os.replace(path + ".tmp", path)
        return dropped


def skip_decision(predicted: float, low: float, high: float) -> str:
    """The audit's decision for a candidate that was not rolled out: ``skip_`` + ``selection.skip_reason`` (the
    in-band reason written shorter, ``skip_in_band``)."""
    reason = skip_reason(predicted, low, high)
    return "skip_in_band" if reason == SKIP_IN_BAND else f"skip_{reason}"


def read_decisions(directory: str) -> list[dict[str, Any]]:
    """All rounds still on disk, oldest first."""
    records = []
    for name in (ROTATED_NAME, FILE_NAME):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path) as f:
                records.extend(json.loads(line) for line in f if line.strip())
    return records
