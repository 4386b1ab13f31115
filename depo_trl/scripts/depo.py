"""Train with DEPO from a YAML recipe.

Usage:

```bash
# one process (CPU or one GPU)
python -m depo_trl.scripts.depo --config recipes/tiny/depo/config_letters.yaml
# several processes, DeepSpeed or FSDP: accelerate launches the same module
accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m depo_trl.scripts.depo \\
    --config recipes/Qwen2.5-7B-Instruct/depo/config_dapo_math_zero3.yaml
# any key of the recipe can be overridden on the command line
python -m depo_trl.scripts.depo --config recipe.yaml --max_steps 10 --depo_band_low 0.2
```

The keys of a recipe are the fields of ``DEPOScriptArguments`` (below), ``DEPOConfig`` (every ``GRPOConfig`` and
``TrainingArguments`` field plus ``depo_*``), TRL's ``ModelConfig`` (model, dtype, LoRA) and TRL's
``DatasetMixtureConfig`` (``datasets:``, a list of ``load_dataset`` arguments). An unknown key is an error that
names it. At the end the model, ``trainer_state.json`` (the logged history ``depo-trl report`` reads), DEPO's
state, ``depo_run.json`` (what ``depo-trl route`` needs to rebuild the features) and ``depo_summary.txt`` are saved
in ``output_dir``, and the summary is printed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

from ..depo_config import DEPOConfig
from .parser import DEPOParser, UnknownArgumentsError

SUMMARY_FILE = "depo_summary.txt"


@dataclass
class DEPOScriptArguments(ScriptArguments):
    """
    Script arguments for the DEPO training script: TRL's ``ScriptArguments`` (``dataset_name``,
    ``dataset_config``, ``dataset_train_split``, ``dataset_test_split``, ...) plus the fields below.

    Args:
        reward_funcs (`list[str]`, *optional*):
            Reward functions: names from `depo_trl.rewards.REWARD_FUNCS` (`gsm8k_accuracy`, `math_accuracy`,
            `format_reward`, `letters_reward`, `controlled_reward`) or dotted import paths (`my_pkg.rewards.fn`).
        reward_model_name_or_path (`str`, *optional*):
            A reward model (hub id or local folder), used before the reward functions.
        dataset_data_files (`list[str]`, *optional*):
            Files for `datasets.load_dataset(dataset_name, data_files=...)`, e.g. with `dataset_name: json`.
        dataset_format (`str`, *optional*):
            Build `prompt` and `answer` columns from raw rows: `gsm8k` (question/answer) or `math`
            (problem/solution or answer). Leave unset when the dataset already has a `prompt` column.
        system_prompt (`str`, *optional*):
            System prompt for `dataset_format`; defaults to the format's own (final answer in \\boxed{} or after ####).
        dataset_prompt_column (`str`, *optional*):
            Column to use as `prompt` (renamed), when the dataset calls it something else.
        dataset_max_samples (`int`, *optional*):
            Keep only the first rows of the training split (for quick runs); for built-in datasets, rows generated.
        torch_num_threads (`int`, *optional*):
            CPU threads for torch (`torch.set_num_threads`). A tiny model on CPU runs several times faster on one
            thread than on several, especially on a busy machine. Unset: torch's default.
        lora_layers_to_transform (`list[int]`, *optional*):
            With `use_peft`, put LoRA adapters only on these transformer layers (PEFT's `layers_to_transform`;
            negative numbers count from the top, -1 is the last layer). Gradients then flow back only to the lowest
            adapted layer: on a CPU, adapting the top few layers makes the backward pass several times cheaper.
    """

    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward functions: registry names (gsm8k_accuracy, math_accuracy, format_reward, letters_reward, "
            "controlled_reward) or dotted import paths such as my_pkg.rewards.fn."
        },
    )
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Reward model id or local folder, used before the reward functions."}
    )
    dataset_data_files: list[str] | None = field(
        default=None, metadata={"help": "data_files for datasets.load_dataset, e.g. with dataset_name: json."}
    )
    dataset_format: str | None = field(
        default=None,
        metadata={"help": "Build prompt/answer columns from raw rows: 'gsm8k' or 'math'. Unset: use as is."},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System prompt for dataset_format (defaults to the format's own)."}
    )
    dataset_prompt_column: str | None = field(
        default=None, metadata={"help": "Column renamed to 'prompt' when the dataset names it differently."}
    )
    dataset_max_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training rows (built-in datasets: rows generated)."}
    )
    torch_num_threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch; 1 is fastest for tiny models on CPU. Unset: default."}
    )
    lora_layers_to_transform: list[int] | None = field(
        default=None,
        metadata={"help": "LoRA only on these layers (PEFT layers_to_transform; -1 = last layer). Unset: every layer."},
    )
    def __post_init__(self):
        if hasattr(super(), "__post_init__"):
            super().__post_init__()


DATACLASS_TYPES = (DEPOScriptArguments, DEPOConfig, ModelConfig, DatasetMixtureConfig)


def make_parser(prog: str | None = None) -> DEPOParser:
    """The parser of this script: YAML recipe + command-line flags into ``DATACLASS_TYPES``."""
    return DEPOParser(DATACLASS_TYPES, prog=prog)


def parse_args(argv: list[str] | None = None, prog: str | None = None):
    """``(script_args, training_args, model_args, dataset_args)`` from ``--config recipe.yaml`` and flags."""
    return make_parser(prog).parse_args_and_config(argv)


def _describe_plan(trainer) -> str:
    args = trainer.args
    per_round = args.generation_batch_size // args.num_generations
    if args.depo_candidate_multiplier == 1:
        return "DEPO: depo_candidate_multiplier=1, nothing is filtered (plain GRPO; the estimator still learns)."
    return (
        f"DEPO: each generation round scores {args.depo_candidate_multiplier * per_round} candidate prompts and rolls "
        f"out {per_round} (x{args.num_generations} completions), preferring predicted pass rates in "
        f"[{args.depo_band_low}, {args.depo_band_high}]; no filtering during the first {args.depo_warmup_steps} steps. "
        + (f"Training set: {len(trainer.train_dataset)} prompts." if hasattr(trainer.train_dataset, "__len__") else "")
    )


def _layer_indices(layers: list[int], model) -> list[int]:
    """Layer numbers with negatives counted from the top (-1: last layer), checked against the model's depth."""
    if isinstance(model, str):
        from transformers import AutoConfig

        depth = AutoConfig.from_pretrained(model).num_hidden_layers
    else:
        depth = model.config.num_hidden_layers
    resolved = sorted({layer + depth if layer < 0 else layer for layer in layers})
    if not all(0 <= layer < depth for layer in resolved):
        raise ValueError(f"lora_layers_to_transform={layers}: the model has {depth} layers (0..{depth - 1}, or -1..-{depth}).")
    return resolved


def main(script_args, training_args, model_args, dataset_args):
    """Build a ``DEPOTrainer`` from parsed arguments, train, save, print the DEPO summary; returns the trainer."""
    import transformers
    from packaging.version import Version
    from trl import get_peft_config, get_quantization_config

    from ..depo_trainer import DEPOTrainer
    from ..state import save_state
    from .loading import load_datasets, load_model, load_reward_funcs
    from .run_config import SaveRunConfigCallback, run_config, save_run_config

    if script_args.torch_num_threads:
        import torch

        torch.set_num_threads(script_args.torch_num_threads)
    reward_funcs = load_reward_funcs(script_args)
    dataset = load_datasets(script_args, dataset_args, seed=training_args.seed)
    model, processing_class = load_model(model_args, training_args)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        if script_args.dataset_test_split not in dataset:
            raise ValueError(
                f"eval_strategy={training_args.eval_strategy!r} needs a split {script_args.dataset_test_split!r}; "
                f"the dataset has {list(dataset)}. Set dataset_test_split, or eval_strategy: 'no'."
            )
        eval_dataset = dataset[script_args.dataset_test_split]

    peft_config = get_peft_config(model_args)
    if script_args.lora_layers_to_transform:
        if peft_config is None:
            raise ValueError("lora_layers_to_transform needs use_peft: true (it says which layers get LoRA adapters).")
        peft_config.layers_to_transform = _layer_indices(script_args.lora_layers_to_transform, model)
    trainer = DEPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=eval_dataset,
        processing_class=processing_class,
        peft_config=peft_config,
        quantization_config=get_quantization_config(model_args),
    )
    config = run_config(training_args, model_args, script_args)
    trainer.add_callback(SaveRunConfigCallback(config))
    trainer.accelerator.print(_describe_plan(trainer))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json: the logged history that `depo-trl report` reads
    summary = trainer.depo_summary()
    if trainer.accelerator.is_main_process:
        save_state(trainer.depo_state_dict(), training_args.output_dir)
        save_run_config(config, training_args.output_dir)
        with open(os.path.join(training_args.output_dir, SUMMARY_FILE), "w") as f:
            f.write(summary + "\n")
    if training_args.depo_console != "depo":  # the DEPO console has printed its summary table at the end of training
        trainer.accelerator.print(summary)
    trainer.accelerator.print(
        f"Saved to {training_args.output_dir} (summary: {SUMMARY_FILE}). "
        f"Report: depo-trl report {training_args.output_dir}"
    )
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if Version(transformers.__version__) >= Version("5.18.0"):
        trainer.end()  # DEPOTrainer.end waits for every rank before the process group is destroyed
    return trainer


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse, then train; a bad recipe or flag exits with status 2 and a one-paragraph message, no traceback."""
    try:
        parsed = parse_args(argv, prog)
    except (UnknownArgumentsError, FileNotFoundError, ValueError) as exc:  # bad recipe, flag or value
        print(f"{prog or 'depo'}: error: {exc}", file=sys.stderr)
        return 2
    main(*parsed)
    return 0


if __name__ == "__main__":
    sys.exit(run(prog="python -m depo_trl.scripts.depo"))
