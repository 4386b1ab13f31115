"""GPU check (prepared, run only when a GPU is lent): DEPO's own share of a training step at realistic shapes.

    python -m benchmarks.gpu_check            # on one GPU: bf16, Qwen2 body of Qwen2.5-0.5B, G=8, U=16, 1024 tokens
    python -m benchmarks.gpu_check --tiny     # CPU smoke path: 2-layer tiny model, 2 steps, seconds

What it measures: ``DEPOTrainer`` training steps with completions forced to ``--completion-tokens`` tokens
(``min_new_tokens`` = ``max_completion_length``), U prompts x G completions per step, K = 4 candidates per
rollout, on a Qwen2 built from a config with random weights (no hub: the tokenizer is the package's char-level
one, so the vocabulary is small and the model is the ~0.36B-parameter body of Qwen2.5-0.5B: 24 layers, hidden
896, 14 heads / 2 KV heads, MLP 4864). The reward is a fixed, seeded coin per prompt (pass rates spread over
(0, 1)), so the estimator has something to learn. Per step it records the step time and DEPO's own time
(``depo/embed_seconds``: the policy prefill of the K x U candidates; ``depo/estimator_seconds``: featurise,
predict, select, learn), and prints their share of the step. The first ``--warmup-steps`` steps (DEPO's warm-up,
no filtering and CUDA warm-up) are reported but left out of the summary.

Writes ``$OUT/gpu_check.json`` when ``$OUT`` is set (the device tool's output folder), else
``benchmarks/results/gpu_check.json`` (``gpu_check_tiny.json`` with ``--tiny``).

On the device machine (torch, transformers, peft, accelerate there; trl and datasets are not), carry their wheels
(see the device README), e.g. with ``.whl`` holding trl-1.16.0 and datasets (+ its pure-Python needs)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check --steps 6 2>&1 | tee $OUT/log
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

QWEN2_05B_BODY = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                  "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                  "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
TINY_BODY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": True}


def coin_reward(completions, prompts=None, **kwargs):
    """A seeded coin per (prompt, completion): each prompt has a fixed pass rate in (0, 1) from its hash."""
    out = []
    for i, completion in enumerate(completions):
        prompt = prompts[i] if prompts is not None else ""
        h = int.from_bytes(hashlib.blake2b(str(prompt).encode(), digest_size=8).digest(), "little")
        rate = 0.05 + 0.9 * ((h % 1000) / 1000.0)
        draw = int.from_bytes(hashlib.blake2b(f"{prompt}|{completion}|{i}".encode(), digest_size=8).digest(),
                              "little") % 10_000 / 10_000.0
        out.append(1.0 if draw < rate else 0.0)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke path (2-layer model, short completions)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup-steps", type=int, default=None, help="DEPO warm-up steps (left out of the summary)")
    parser.add_argument("--completion-tokens", type=int, default=None)
    parser.add_argument("--prompts-per-step", type=int, default=None, help="U")
    parser.add_argument("--group", type=int, default=None, help="G")
    args = parser.parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("WANDB_DISABLED", "true")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Qwen2Config, TrainerCallback

    from depo_trl import DEPOConfig, DEPOTrainer
    from depo_trl.tiny import build_tokenizer

    tiny = args.tiny
    if not tiny and not torch.cuda.is_available():
        parser.error("no CUDA device: this check is for a GPU (use --tiny for the CPU smoke path)")
    steps = args.steps or (2 if tiny else 6)
    warmup = args.warmup_steps if args.warmup_steps is not None else (1 if tiny else 2)
    tokens = args.completion_tokens or (8 if tiny else 1024)
    U = args.prompts_per_step or (2 if tiny else 16)
    G = args.group or (2 if tiny else 8)
    if tiny:
        torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, **(TINY_BODY if tiny else QWEN2_05B_BODY))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if tiny else torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    prompts = [f"Question {i}: what is {i} times {i % 7 + 2}?" for i in range(4 * U * (steps + 2))]
    data = Dataset.from_list([{"prompt": p} for p in prompts])
    depo = DEPOConfig(
        output_dir="/tmp/gpu_check", per_device_train_batch_size=U * G, num_generations=G,
        max_completion_length=tokens, generation_kwargs={"min_new_tokens": tokens}, max_steps=steps,
        learning_rate=1e-6, beta=0.0, temperature=1.0, bf16=not tiny, use_cpu=tiny, report_to="none",
        logging_steps=1, save_strategy="no", disable_tqdm=True, activation_checkpointing=False,
        depo_warmup_steps=warmup, depo_audit_log=False, seed=0,
    )
    rows: list[dict] = []

    class StepLog(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            rows.append({"step": state.global_step, "step_seconds": time.perf_counter() - self.t0})

        def on_log(self, a, state, control, logs=None, **kw):
            if rows and logs and "depo/embed_seconds" in logs:
                rows[-1].update({k: float(v) for k, v in logs.items() if k.startswith("depo/") or k == "step_time"})

    trainer = DEPOTrainer(model=model, reward_funcs=coin_reward, args=depo, train_dataset=data,
                          processing_class=tokenizer, callbacks=[StepLog()])
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    for r in rows:
        own = r.get("depo/embed_seconds", 0.0) + r.get("depo/estimator_seconds", 0.0)
        r["depo_share"] = own / r["step_seconds"] if r["step_seconds"] else None
        print(f"step {r['step']}: {r['step_seconds']:.2f} s, embed {r.get('depo/embed_seconds', 0):.3f} s, "
              f"estimator {r.get('depo/estimator_seconds', 0):.3f} s, DEPO share {r['depo_share']:.4f}"
              + (" (warm-up)" if r["step"] <= warmup else ""), flush=True)
    measured = [r for r in rows if r["step"] > warmup] or rows
    summary = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "tiny": tiny,
        "parameters": parameters, "U": U, "G": G, "K": depo.depo_candidate_multiplier, "completion_tokens": tokens,
        "steps": steps, "warmup_steps": warmup, "total_seconds": total,
        "mean_step_seconds": sum(r["step_seconds"] for r in measured) / len(measured),
        "mean_depo_share": sum(r["depo_share"] for r in measured) / len(measured),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}), flush=True)
    out = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gpu_check_tiny.json" if tiny else "gpu_check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
