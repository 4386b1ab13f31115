"""``depo_run.json``: what a later reader of a run's DEPO state needs to rebuild its features, without pickle.

The training script writes it into ``output_dir`` at the end and into every ``checkpoint-N`` (a callback on save).
It records the ``depo_*`` fields of the run's ``DEPOConfig`` (feature groups, their options and seed, embedding
pooling/length/adapter, band), the model name and whether it was trained with LoRA, and how the prompts were
formatted (``dataset_format``, ``system_prompt``), so ``depo-trl route`` can score new prompts exactly as the run
scored its candidates.
"""

from __future__ import annotations

import json
import os
from typing import Any

from transformers import TrainerCallback

RUN_CONFIG = "depo_run.json"
FORMAT = 1


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def run_config(training_args, model_args, script_args) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model_name_or_path": model_args.model_name_or_path,
        "use_peft": bool(model_args.use_peft),
        "seed": training_args.seed,
        "num_generations": training_args.num_generations,
        "dataset_name": script_args.dataset_name,
        "dataset_format": script_args.dataset_format,
        "system_prompt": script_args.system_prompt,
        "depo": {k: _jsonable(v) for k, v in training_args.to_dict().items() if k.startswith("depo_")},
    }


def save_run_config(config: dict[str, Any], directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, RUN_CONFIG)
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return path


def load_run_config(directory: str) -> dict[str, Any] | None:
    path = os.path.join(directory, RUN_CONFIG)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


class SaveRunConfigCallback(TrainerCallback):
    """Writes ``depo_run.json`` into each checkpoint folder, beside the DEPO state the trainer saves there."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(folder):
                save_run_config(self.config, folder)
