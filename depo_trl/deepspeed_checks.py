"""DeepSpeed set-up checks that run when a ``DEPOConfig`` is built, before any model is loaded.

A DeepSpeed config whose ``bf16``/``fp16`` disagrees with the recipe's ``bf16``/``fp16`` only fails once the trainer
is built, in transformers' DeepSpeed check (``ds bf16.enabled=True vs hf bf16|bf16_full_eval=False``), which names
neither the file that set it nor the fix. The usual cause: an accelerate config written for GPUs
(``mixed_precision: bf16``, as ``recipes/accelerate_configs/zero3.yaml``) launched with a CPU recipe (``bf16: false``).
``check_deepspeed_precision`` says that, naming both settings and the fix, as soon as the config is parsed.
"""

from __future__ import annotations

import os

_PRECISIONS = ("bf16", "fp16")


def _enabled(section) -> bool | None:
    """True/False for a DeepSpeed ``{"enabled": ...}`` section; None when absent or ``"auto"`` (follows the recipe)."""
    if not isinstance(section, dict) or "enabled" not in section:
        return None
    value = section["enabled"]
    if isinstance(value, str):
        if value.lower() == "auto":
            return None
        return value.lower() == "true"
    return bool(value)


def _deepspeed_source(args) -> str:
    """Where the DeepSpeed config came from, in the words a user would search their files for."""
    if args.deepspeed:
        given = args.deepspeed if isinstance(args.deepspeed, str) else "a dict"
        return f"the DeepSpeed config given as `deepspeed` ({given})"
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if config_file and config_file != "none":
        return f"the DeepSpeed config file {config_file} (accelerate config `deepspeed_config_file`)"
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    return f"the accelerate config (`mixed_precision: {mixed}`, passed to DeepSpeed by `accelerate launch`)"


def check_deepspeed_precision(args) -> None:
    """Raise ``ValueError`` when the DeepSpeed config enables bf16/fp16 and the recipe does not, or the reverse.

    ``args``: a ``TrainingArguments`` (``DEPOConfig``) after ``__post_init__``, which has built the DeepSpeed
    config from ``args.deepspeed`` or from the environment ``accelerate launch`` sets. No DeepSpeed: no check.
    """
    ds_config = None
    if getattr(args, "hf_deepspeed_config", None) is not None and args.deepspeed:
        ds_config = args.hf_deepspeed_config.config
    elif getattr(args, "deepspeed_plugin", None) is not None:
        ds_config = args.deepspeed_plugin.deepspeed_config
    if not isinstance(ds_config, dict):
        return
    for precision in _PRECISIONS:
        ds_value = _enabled(ds_config.get(precision))
        recipe_value = bool(getattr(args, precision, False) or getattr(args, f"{precision}_full_eval", False))
        if ds_value is None or ds_value == recipe_value:
            continue
        source = _deepspeed_source(args)
        if ds_value:
            fix = (
                f"On CPU (or hardware without {precision}), turn it off in the DeepSpeed settings: "
                "launch with recipes/accelerate_configs/zero2_cpu.yaml or zero3_cpu.yaml, or set "
                f"`mixed_precision: 'no'` in your accelerate config (or pass --mixed_precision no to accelerate "
                f"launch), or set `{precision}.enabled` to \"auto\" in the DeepSpeed JSON so it follows the recipe. "
                f"On a GPU with {precision}, set `{precision}: true` in the recipe instead."
            )
        else:
            fix = (
                f"Set `{precision}.enabled` to \"auto\" (or true) in the DeepSpeed config, or `mixed_precision: "
                f"{precision}` in the accelerate config; or set `{precision}: false` in the recipe."
            )
        raise ValueError(
            f"DeepSpeed precision disagrees with the recipe: {source} has {precision}.enabled={ds_value}, but the "
            f"recipe (DEPOConfig) has {precision}={getattr(args, precision, False)}"
            f"{' (or ' + precision + '_full_eval)' if getattr(args, f'{precision}_full_eval', False) else ''}. "
            f"{fix}"
        )
