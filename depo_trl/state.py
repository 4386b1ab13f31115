"""Saving DEPO's state without pickle: nested dicts become one JSON file plus one ``.npz`` of arrays.

Arrays are stored under their slash-joined path in the nested dict and loaded with ``allow_pickle=False``;
everything else must be JSON (numbers, strings, lists, dicts). Reading a checkpoint therefore never executes
code from it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

STATE_JSON = "depo_state.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
STATE_ARRAYS = "depo_state.npz"
_ARRAY_MARK = "__array__"


def _split(tree: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        return {str(k): _split(v, f"{path}/{k}" if path else str(k), arrays) for k, v in tree.items()}
    if isinstance(tree, np.ndarray):
        arrays[path] = tree
        return {_ARRAY_MARK: path}
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, (list, tuple)):
        return [_split(v, f"{path}/{i}", arrays) for i, v in enumerate(tree)]
    return tree


def _join(tree: Any, arrays) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY_MARK}:
            return np.asarray(arrays[tree[_ARRAY_MARK]])
        return {k: _join(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays) for v in tree]
    return tree


def save_state(state: dict[str, Any], directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    skeleton = _split(state, "", arrays)
    np.savez(os.path.join(directory, STATE_ARRAYS), **arrays)
    with open(os.path.join(directory, STATE_JSON), "w") as f:
        json.dump(skeleton, f)


def load_state(directory: str) -> dict[str, Any] | None:
    """The saved state, or ``None`` when ``directory`` holds none."""
    path = os.path.join(directory, STATE_JSON)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        skeleton = json.load(f)
    with np.load(os.path.join(directory, STATE_ARRAYS), allow_pickle=False) as arrays:
        return _join(skeleton, {k: arrays[k] for k in arrays.files})


def folder_holding(run_dir: str, filename: str) -> str | None:
    """``run_dir`` when it holds ``filename``, else its highest-numbered ``checkpoint-N`` that does, else None."""
    if os.path.isfile(os.path.join(run_dir, filename)):
        return run_dir
    checkpoints = [
        (int(m.group(1)), name)
        for name in os.listdir(run_dir)
        if (m := _CHECKPOINT.fullmatch(name)) and os.path.isfile(os.path.join(run_dir, name, filename))
    ]
    return os.path.join(run_dir, max(checkpoints)[1]) if checkpoints else None
