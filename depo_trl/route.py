"""Routing, DEPO's second use (arXiv 2602.06375, Table 3): send the prompts a small policy will fail to a larger model.

A DEPO run ends with an estimator that predicts, for any prompt, the pass rate of the policy it was trained with.
``route`` reads that saved state (``depo_state.json`` + ``.npz``, in ``output_dir`` or a ``checkpoint-N``) and a
set of prompts, predicts each prompt's pass rate under the small model, and for a threshold ``tau`` decides:
predicted pass rate >= ``tau`` stays with the small model, below ``tau`` goes to a larger one.

The features must be rebuilt exactly as the run built them, so ``route`` needs:

- the run's configuration: ``depo_run.json`` (the training script writes it beside the state), or the recipe the
  run was trained with (``config=recipe.yaml``);
- the run's tokenizer (saved in ``output_dir`` and every checkpoint): prompts are rendered with its chat template
  and counted in its tokens, as in training;
- when a feature group of the run reads the policy (declares a model-read input: ``embedding``,
  ``answer_likelihood``), the run's policy: the trained model saved in the run folder (a full model, or a LoRA
  adapter on the base model named in ``adapter_config.json``; with ``depo_embedding_adapter: off`` the base model
  alone), loaded here unless a model is passed. A run whose features read no model (e.g. ``depo_features: [length,
  history]``) routes without loading any.

``history`` features are looked up in the run's prompt history: a prompt the run rolled out is scored with what
was observed for it, an unseen one as unseen. Prompts are formatted like the run's training data (the recorded
``dataset_format`` and ``system_prompt``) when the input rows have no ``prompt`` column.

Command line: ``depo-trl route <run_dir> --prompts prompts.jsonl --tau 0.5 --out routed.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from .state import STATE_JSON, folder_holding, load_state

SMALL, LARGE = "small", "large"
TAU_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Routing:
    """Predicted pass rates and the routing decision for each prompt, in input order."""

    rows: list[dict]  # the input rows
    predicted: np.ndarray  # predicted pass rate under the small model
    tau: float
    state_dir: str  # where the DEPO state was read
    notes: list[str] = field(default_factory=list)

    @property
    def routes(self) -> list[str]:
        return [SMALL if p >= self.tau else LARGE for p in self.predicted]

    def records(self) -> list[dict]:
        return [
            {**row, "predicted_pass_rate": round(float(p), 6), "route": r}
            for row, p, r in zip(self.rows, self.predicted, self.routes)
        ]

    def summary(self) -> str:
        n = len(self.predicted)
        small = int((self.predicted >= self.tau).sum())
        lines = [
            f"Routed {n} prompts with the DEPO state in {self.state_dir} at tau = {self.tau}: {small} stay with the "
            f"small model ({small / max(n, 1):.0%}, mean predicted pass rate "
            f"{_mean(self.predicted[self.predicted >= self.tau])}), {n - small} go to the larger one "
            f"(mean predicted {_mean(self.predicted[self.predicted < self.tau])}).",
            "  tau:         " + " ".join(f"{t:>5.1f}" for t in TAU_GRID),
            "  kept small:  " + " ".join(f"{(self.predicted >= t).mean():>5.0%}" for t in TAU_GRID),
        ]
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)


def _mean(values: np.ndarray) -> str:
    return f"{values.mean():.3f}" if len(values) else "n/a"


# ------------------------------------------------------------------------------------------------ locating a run
def find_state_dir(run_dir: str) -> str:
    """``run_dir`` when it holds DEPO state, else its highest ``checkpoint-N`` that does."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir!r} is not a folder. Pass a DEPO run's output_dir or one of its checkpoints.")
    found = folder_holding(run_dir, STATE_JSON)
    if found is None:
        raise FileNotFoundError(
            f"No DEPO state ({STATE_JSON}) in {run_dir!r} or its checkpoint-* folders. The depo_trl training script "
            "saves one at the end and in every checkpoint; from Python: depo_trl.state.save_state("
            "trainer.depo_state_dict(), output_dir)."
        )
    return found


def _run_config(state_dir: str, run_dir: str, config: str | dict | None) -> dict:
    from .scripts.run_config import RUN_CONFIG, load_run_config

    if isinstance(config, dict):
        return config
    if config is not None:  # the recipe the run was trained with
        from .scripts.depo import parse_args
        from .scripts.run_config import run_config

        script_args, training_args, model_args, _ = parse_args(["--config", config])
        return run_config(training_args, model_args, script_args)
    for folder in (state_dir, run_dir):
        found = load_run_config(folder)
        if found is not None:
            return found
    raise FileNotFoundError(
        f"No {RUN_CONFIG} in {state_dir!r}: routing must rebuild the run's features (which groups, their seed and "
        "options), and that file records them (the depo_trl training script writes it). Pass the recipe the run was "
        "trained with: depo-trl route RUN --config recipe.yaml (route(..., config='recipe.yaml'))."
    )


def _has_model(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("adapter_config.json", "config.json"))


def load_run_model(state_dir: str, run_dir: str, config: dict):
    """The run's policy for the embedding features: a full model or LoRA adapter saved in the run folder."""
    from transformers import AutoModelForCausalLM

    folder = next((d for d in (state_dir, run_dir) if _has_model(d)), None)
    if folder is None:
        raise FileNotFoundError(
            f"The run's features read the policy (e.g. 'embedding', the policy's hidden state of each prompt), so "
            f"routing needs the run's trained model, but neither {state_dir!r} nor {run_dir!r} holds one (config.json "
            "or adapter_config.json). Pass the model (route(..., model=..., tokenizer=...)), or route with a run "
            "trained with depo_features that read no model (e.g. [length, history])."
        )
    adapter = os.path.join(folder, "adapter_config.json")
    if not os.path.isfile(adapter):
        from .zero_checkpoint import load_causal_lm

        return load_causal_lm(folder)  # also a DeepSpeed ZeRO checkpoint without model.safetensors (its shards)
    from peft import PeftModel
    from trl import ModelConfig

    from .depo_config import DEPOConfig
    from .scripts.loading import load_model

    with open(adapter) as f:
        base_name = json.load(f).get("base_model_name_or_path") or config["model_name_or_path"]
    if base_name != config["model_name_or_path"] and not os.path.exists(base_name):
        base_name = config["model_name_or_path"]  # e.g. the built-in depo-tiny or smollm2-135m name
    args = DEPOConfig(output_dir=os.path.join(run_dir, "route-tmp"), use_cpu=True, bf16=False, report_to="none",
                      seed=config.get("seed", 42))
    base, _ = load_model(ModelConfig(model_name_or_path=base_name, dtype="float32"), args)
    if isinstance(base, str):
        base = AutoModelForCausalLM.from_pretrained(base, **(args.model_init_kwargs or {}))
    if config["depo"].get("depo_embedding_adapter") == "off":
        return base.eval()  # the run embedded with the adapter disabled: the frozen base model
    return PeftModel.from_pretrained(base, folder).eval()


def _load_tokenizer(state_dir: str, run_dir: str, config: dict):
    from .tiny import load_saved_tokenizer

    for folder in (state_dir, run_dir):
        if any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
            return load_saved_tokenizer(folder)
    raise FileNotFoundError(
        f"No tokenizer in {state_dir!r} or {run_dir!r} (the trainer saves it with the model). Pass tokenizer=..."
    )


# ------------------------------------------------------------------------------------------------ prompts
def read_prompts(path: str) -> list[dict]:
    """Rows of a JSONL file (one JSON object per line), or plain lines of a .txt file as ``{"prompt": line}``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Prompt file {path!r} not found (working directory: {os.getcwd()}).")
    with open(path) as f:
        if path.endswith(".txt"):
            return [{"prompt": line.rstrip("\n")} for line in f if line.strip()]
        rows = []
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {number} is not JSON ({exc.msg}); expected one object per line.") from None
    return rows


def _prompts_of(rows: list[dict], config: dict, prompt_column: str | None) -> list:
    column = prompt_column or "prompt"
    if all(column in row for row in rows):
        return [row[column] for row in rows]
    if config.get("dataset_format") and prompt_column is None:
        from datasets import Dataset

        from .rewards import format_dataset

        return format_dataset(Dataset.from_list(rows), config["dataset_format"], config.get("system_prompt"))["prompt"]
    missing = sum(column not in row for row in rows)
    raise ValueError(
        f"{missing} of {len(rows)} prompt rows have no {column!r} field. Name the column with --prompt-column "
        "(prompt_column=...), or give rows in the run's dataset_format."
    )


# ------------------------------------------------------------------------------------------------ scoring
def selector_from_run_config(config: dict):
    """The ``PromptSelector`` a run's ``DEPOTrainer`` built (same features, options, seed and estimator), empty."""
    from .engine import PromptSelector

    return PromptSelector.from_config(config["depo"], group_size=config.get("num_generations") or 1,
                                      seed=config.get("seed", 42))


def predict_pass_rates(prompts: list, state: dict, config: dict, tokenizer, model=None, metadata=None) -> np.ndarray:
    """Each prompt's predicted pass rate, scored by the run's engine exactly as ``DEPOTrainer`` scores candidates:
    chat-templated text, token counts, pooled policy embedding, history keyed by the raw prompt."""
    from trl.data_utils import maybe_apply_chat_template

    from .prompt_encoder import PromptEncoder, encoder_settings, sharded_prefill

    selector = selector_from_run_config(config)
    try:
        selector.load_state_dict(state)
    except ValueError as exc:  # an estimator other than the one the config names
        raise ValueError(f"{exc} Pass the recipe the run was really trained with (--config).") from None
    settings = encoder_settings(config["depo"])
    wanted = selector.metadata_columns
    if wanted and (metadata is None or any(c not in metadata for c in wanted)):
        raise ValueError(f"The run's 'metadata' features read columns {wanted}; every prompt row must carry them.")

    def render(prompts, environments):  # the run's chat template, as TRL applies it to a plain dataset
        texts = [maybe_apply_chat_template({"prompt": p}, tokenizer)["prompt"] for p in prompts]
        return texts, tokenizer(texts, add_special_tokens=False)["input_ids"]

    def embed(token_ids, pad_token_id, answer_ids):  # one process, the model's own device
        return sharded_prefill(
            model, token_ids, answer_ids, pad_token_id, pooling=settings["depo_embedding_pooling"],
            batch_size=settings["depo_embedding_batch_size"], device=next(model.parameters()).device,
        )

    encoder = PromptEncoder(selector, tokenizer, render, embed, max_length=settings["depo_embedding_max_length"])
    scores, _ = encoder.score(prompts, metadata={c: metadata[c] for c in wanted} or None)
    if scores.failed:
        raise ValueError("The run's estimator could not predict these prompts (see the warning above).")
    return scores.predicted


def route(run_dir: str, prompts: list | str, tau: float = 0.5, *, config: str | dict | None = None,
          model=None, tokenizer=None, prompt_column: str | None = None) -> Routing:
    """Predict each prompt's pass rate under the run's policy and route it: ``>= tau`` small model, else large.

    ``prompts``: a JSONL path, or a list of rows (dicts with a ``prompt``) or of bare prompts (strings or chat
    message lists). ``config``: the run's recipe path (or a ``depo_run.json`` dict) when the run folder has no
    ``depo_run.json``. ``model``/``tokenizer``: the run's policy and tokenizer, to skip loading them.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau={tau} must be a pass rate in [0, 1] (prompts predicted >= tau stay small).")
    state_dir = find_state_dir(run_dir)
    run_config = _run_config(state_dir, run_dir, config)
    rows = read_prompts(prompts) if isinstance(prompts, str) else [
        p if isinstance(p, dict) else {"prompt": p} for p in prompts
    ]
    if not rows:
        raise ValueError("No prompts to route.")
    texts = _prompts_of(rows, run_config, prompt_column)
    state = load_state(state_dir)
    tokenizer = tokenizer or _load_tokenizer(state_dir, run_dir, run_config)
    notes = []
    model_inputs = selector_from_run_config(run_config).model_inputs  # what the run's feature groups declare
    if model_inputs and model is None:
        model = load_run_model(state_dir, run_dir, run_config)
        notes.append(f"Model-read features ({', '.join(model_inputs)}): computed with the run's saved model.")
    metadata = {key: [row.get(key) for row in rows] for key in rows[0]}
    predicted = predict_pass_rates(texts, state, run_config, tokenizer, model=model, metadata=metadata)
    seen = int(np.sum(_seen(texts, state)))
    if seen:
        notes.append(f"{seen} of the prompts were rolled out during the run; their history features use that.")
    return Routing(rows=rows, predicted=predicted, tau=float(tau), state_dir=state_dir, notes=notes)


def _seen(prompts: list, state: dict) -> np.ndarray:
    from .history import PromptHistory, prompt_key

    history = PromptHistory()
    history.load_state_dict(state["history"])
    return history.lookup(np.array([prompt_key(p) for p in prompts], dtype=np.int64))["seen"] > 0


def write_routing(routing: Routing, path: str) -> None:
    with open(path, "w") as f:
        for record in routing.records():
            f.write(json.dumps(record, default=str) + "\n")


# ------------------------------------------------------------------------------------------------ command line
def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="depo-trl route", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", help="a DEPO run's output_dir, or one of its checkpoint-N folders")
    parser.add_argument("--prompts", required=True, help="JSONL of prompt rows ({'prompt': ...}) or a .txt of lines")
    parser.add_argument("--tau", type=float, default=0.5,
                        help="predicted pass rate >= tau stays with the small model, below goes to the larger one")
    parser.add_argument("--out", default=None, help="output JSONL (default: <prompts>.routed.jsonl)")
    parser.add_argument("--config", default=None, help="the run's recipe, when the run folder has no depo_run.json")
    parser.add_argument("--prompt-column", default=None, help="column holding the prompt (default: prompt)")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        routing = route(args.run_dir, args.prompts, args.tau, config=args.config, prompt_column=args.prompt_column)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"depo-trl route: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or re.sub(r"(\.jsonl|\.txt)?$", ".routed.jsonl", args.prompts, count=1)
    write_routing(routing, out)
    print(routing.summary())
    print(f"Wrote {out}: each row with predicted_pass_rate and route ({SMALL!r} or {LARGE!r}).")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(make_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
