"""``DEPOTrainer``'s construction-time checks and the small facts about rows it reads, kept out of the trainer.

Everything here runs before any compute (bad input fails with the problem and the fix: ``depo_config_for``,
``check_train_dataset``, ``check_metadata_columns``) or is a pure reading of a dataset row: what DEPO scores for a row (``candidate_prompt``), whether the dataset can be indexed, how a
warm-start prompt is shaped like a training prompt; and the warm start itself (``warm_start``, before the first
round), the same rule as ``estimators.warm_start_from_jsonl`` (``scale_to_trials``).
"""

from __future__ import annotations

import numpy as np

from ._warnings import warn_user
from .estimators.warm_start import read_passrate_jsonl, scale_to_trials


def depo_config_for(model, args):
    """``args``, checked to be a ``DEPOConfig``; without one, a default ``DEPOConfig`` named after the model (as
    ``GRPOTrainer`` names its default ``GRPOConfig``)."""
    from .depo_config import DEPOConfig

    if args is None:
        name = model if isinstance(model, str) else model.config._name_or_path
        return DEPOConfig(f"{name.split('/')[-1]}-DEPO")
    if not isinstance(args, DEPOConfig):
        raise TypeError(
            f"DEPOTrainer needs a DEPOConfig, got {type(args).__name__}. "
            "Build one with the same fields: DEPOConfig(**your_grpo_args.to_dict()), plus any depo_* fields."
        )
    return args


def is_map_style(dataset) -> bool:
    """Indexable with a length (datasets.Dataset, a list); streaming datasets are not."""
    return hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def candidate_prompt(row: dict):
    """What DEPO scores for a dataset row: its prompt. Under a TRL environment a row may carry no prompt (reset()
    writes it from the row's other columns, e.g. ``environment``), so the row is described by those columns, as the
    user turn TRL would otherwise leave empty."""
    if "prompt" in row:
        return row["prompt"]
    return [{"role": "user", "content": "\n".join(f"{name}: {value}" for name, value in sorted(row.items()))}]


def check_train_dataset(dataset, args, environment_factories, environment_owns_data: bool) -> tuple[int, str | None]:
    """Candidate pool size (K x U, or the whole dataset when smaller), and why DEPO cannot filter this run (None
    when it can).

    Runs after ``GRPOTrainer.__init__``, which has already refused what GRPO cannot train. Without a
    ``train_dataset``, TRL's environment supplies every prompt at ``reset()`` and the dataset is a placeholder of
    identical empty prompts: there is nothing to select from, so the run is plain GRPO. A dataset smaller than one
    pool gives a smaller pool (every prompt is a candidate each round); one no larger than a round's U prompts
    leaves nothing to choose, so the run is plain GRPO too.
    """
    unique_per_round = args.generation_batch_size // args.num_generations
    pool = args.depo_candidate_multiplier * unique_per_round
    if environment_owns_data and environment_factories is not None:
        return pool, (
            "the environment owns the data (no train_dataset: every prompt comes from reset()), so there are no "
            "prompts to score before rollout. To let DEPO select, pass a train_dataset whose rows (a 'prompt' "
            "column, or the columns reset() reads) describe each task."
        )
    columns = getattr(dataset, "column_names", None)
    if columns is not None and "prompt" not in columns and environment_factories is None:
        raise ValueError(
            f"The train_dataset has no 'prompt' column (columns: {columns}). DEPO scores and rolls out the "
            "'prompt' column; rename yours, e.g. dataset.rename_column('question', 'prompt')."
        )
    if is_map_style(dataset) and len(dataset) < pool:  # a stream is checked when it is read
        if len(dataset) < unique_per_round:
            raise ValueError(
                f"The train_dataset has {len(dataset)} prompts, fewer than the {unique_per_round} prompts one "
                f"generation round rolls out (generation_batch_size {args.generation_batch_size} / "
                f"num_generations {args.num_generations}); TRL's sampler drops an incomplete round, so training "
                f"would run 0 steps. Add prompts (at least {unique_per_round}; {pool} for DEPO's full candidate "
                "pool), or lower per_device_train_batch_size (or raise num_generations) so that a round needs no "
                f"more than {len(dataset)} prompts."
            )
        if len(dataset) <= unique_per_round:
            return pool, (
                f"the train_dataset has {len(dataset)} prompts, no more than the {unique_per_round} that one "
                "generation round rolls out, so there is nothing to choose from. Add prompts to filter."
            )
        if args.depo_candidate_multiplier > 1:
            warn_user(
                f"The train_dataset has {len(dataset)} prompts, fewer than one candidate pool of {pool} "
                f"(depo_candidate_multiplier={args.depo_candidate_multiplier} x {unique_per_round} prompts per "
                f"generation round): every round scores all {len(dataset)} and rolls out {unique_per_round}. "
                "Add prompts for the full pool, or lower depo_candidate_multiplier to silence this."
            )
        pool = len(dataset)
    return pool, None


def check_metadata_columns(wanted: list[str], dataset) -> None:
    columns = getattr(dataset, "column_names", None)
    missing = [c for c in wanted if columns is not None and c not in columns]
    if missing:
        raise ValueError(
            f"The 'metadata' feature group reads columns {missing}, which the train_dataset lacks "
            f"(columns: {columns}). Fix the 'columns' (or 'column') of depo_feature_options for the group that "
            "reads them ('metadata', 'text' or 'answer_likelihood'), or add the columns."
        )


def read_warm_start_file(path: str, limit: int, metadata_columns: list[str]) -> list[dict]:
    """The warm-start rows (each with ``_prompt``, ``_passes``, ``_trials``), read and checked at construction so a
    bad file fails before any compute."""
    rows, passes, trials, skipped = read_passrate_jsonl(path, limit=limit)
    if not rows:
        raise ValueError(
            f"depo_warm_start_path {path!r} holds no row with a prompt and a pass rate ({skipped} rows skipped). "
            "Each line needs 'prompt' (or 'problem'/'question'/'text') and 'pass_rate', 'passes'+'trials' or "
            "'successes_of_<N>'."
        )
    lacking = sorted({c for row in rows for c in metadata_columns if c not in row})
    if lacking:
        raise ValueError(
            f"The 'metadata' feature group reads columns {lacking}, but rows of depo_warm_start_path {path!r} "
            "lack them. Add those fields to every line of the file, or drop 'metadata' from depo_features."
        )
    for row, p, t in zip(rows, passes, trials):
        row["_passes"], row["_trials"] = float(p), float(t)
    return rows


def render_like_training(prompt, example):
    """A warm-start prompt in the form training prompts take: a plain string becomes the content of the last user
    turn of ``example`` (the first training prompt, so the same system prompt and turns surround it), when training
    prompts are chats; chats, and strings for plain-text training, are used as they are. Features and prompt keys
    then match those of the same prompt drawn from the dataset."""
    if not isinstance(prompt, str) or not isinstance(example, list) or not example:
        return prompt
    users = [i for i, m in enumerate(example) if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        return prompt
    at = users[-1]
    return [dict(m) for m in example[:at]] + [{**example[at], "content": prompt}] + [dict(m) for m in example[at + 1:]]


def first_training_prompt(dataset):
    row = dataset[0] if is_map_style(dataset) else next(iter(dataset))
    return row.get("prompt")


def warm_start(selector, encoder, rows: list[dict], dataset, group_size: int) -> None:
    """Fit ``selector``'s estimator on warm-start ``rows`` (``read_warm_start_file``) with the features training will
    use: prompts rendered as training prompts are, metadata from the file's own columns, embeddings from the initial
    policy (``encoder``, a ``PromptEncoder``). A measurement weighs at most like one group of ``group_size``. A
    failing estimator is counted and warned about, never raised."""
    example = first_training_prompt(dataset) if any(isinstance(r["_prompt"], str) for r in rows) else None
    prompts = [render_like_training(row["_prompt"], example) for row in rows]
    metadata = {c: [row[c] for row in rows] for c in selector.metadata_columns}
    passes, trials = scale_to_trials(np.array([row["_passes"] for row in rows]),
                                     np.array([row["_trials"] for row in rows]), group_size)
    inputs = encoder.encode(prompts, metadata=metadata).selector_inputs(metadata)
    try:
        selector.fit(passes=passes, trials=trials, **inputs)
    except Exception as exc:  # a failing estimator never stops training
        selector._failed("warm start", exc)
