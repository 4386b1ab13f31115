"""Run by tests/real_vllm/test_vllm.py (and benchmarks/vllm_generation.py), one training run per process: vLLM keeps
process-wide state (its distributed group, platform, compiled kernels), so each run gets a fresh interpreter.

Usage: ``python tests/real_vllm/vllm_worker.py RESULT_JSON --trainer grpo|depo --mode colocate|server|none
--model DIR ...``

Trains GRPOTrainer (built inside ``depo_trl.vllm_cpu.trl_vllm_settings``) or DEPOTrainer on the letters task and
writes what the test asserts on to RESULT_JSON:

- ``syncs``: for every weight sync TRL ran (colocate), the largest |vLLM weight - policy weight| over all parameters
  just before and just after it; vLLM's fused ``qkv_proj`` / ``gate_up_proj`` are compared with the policy's
  q/k/v and gate/up weights stacked (and its vocabulary padding rows left out), so every policy parameter is covered;
- ``generate_calls``: the prompt rows each generation call received (vLLM, or the policy's ``generate`` with
  ``--mode none``) and its wall time;
- ``reward_calls``: per call of the reward function, each row's prompt key and reward;
- ``logp_difference``: TRL's per-step ``sampling/sampling_logp_difference/mean`` (vLLM's vs the policy's logprobs);
- timings: trainer construction (vLLM start included) and training.
"""

import argparse
import json
import os
import sys
import time

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def vllm_model(trainer):
    return trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model


def vllm_vs_policy(trainer) -> tuple[float, int, int]:
    """(max |vLLM - policy| over every matched element, policy tensors covered, policy tensors)."""
    import torch

    policy = {n: p.detach() for n, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}
    largest, covered = 0.0, set()
    for name, param in vllm_model(trainer).named_parameters():
        names = [name]
        for fused, pieces in FUSED.items():
            if f".{fused}." in name:
                names = [name.replace(fused, piece) for piece in pieces]
        if not all(n in policy for n in names):
            continue
        reference = torch.cat([policy[n] for n in names], 0) if len(names) > 1 else policy[names[0]]
        if param.shape[0] > reference.shape[0] and param.shape[1:] == reference.shape[1:]:
            param = param[: reference.shape[0]]  # vLLM pads the vocabulary (embedding rows) to a multiple of 64
        if reference.shape != param.shape:
            raise AssertionError(f"vLLM {name} {tuple(param.shape)} vs policy {names} {tuple(reference.shape)}")
        largest = max(largest, (param.detach().float() - reference.float()).abs().max().item())
        covered.update(names)
    return largest, len(covered), len(policy)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("result")
    parser.add_argument("--trainer", choices=("grpo", "depo"), default="grpo")
    parser.add_argument("--mode", choices=("colocate", "server", "none"), default="colocate")
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--G", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4, help="prompts rolled out per step (U)")
    parser.add_argument("--multiplier", type=int, default=2, help="DEPO candidate multiplier K")
    parser.add_argument("--completion-length", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--features", default="length,history,embedding")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-sync-check", action="store_true",
                        help="time the syncs without comparing weights (benchmarks: the comparison is not free)")
    parser.add_argument("--reward", choices=("letters", "soft"), default="letters",
                        help="soft: the share of the completion's characters in the allowed set (a real model's "
                             "first character rarely varies within a group, so its letters reward has no spread)")
    options = parser.parse_args()

    import torch

    torch.set_num_threads(options.threads)
    from trl import GRPOConfig, GRPOTrainer

    from depo_trl import DEPOConfig, DEPOTrainer
    from depo_trl.history import prompt_key
    from depo_trl.rewards import letters_reward
    from depo_trl.tasks import letters_dataset
    from depo_trl.vllm_cpu import trl_vllm_settings

    reward_calls = []

    def soft_letters_reward(completions, allowed):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [sum(ch in chars for ch in text) / max(len(text), 1) for text, chars in zip(texts, allowed)]

    def recorded_letters_reward(prompts, completions, allowed, **kwargs):
        score = letters_reward if options.reward == "letters" else soft_letters_reward
        rewards = score(completions, allowed)
        reward_calls.append({"keys": [prompt_key(p) for p in prompts], "rewards": rewards})
        return rewards

    out_dir = os.path.join(os.path.dirname(os.path.abspath(options.result)), f"run-{options.trainer}")
    common = dict(
        output_dir=out_dir, per_device_train_batch_size=options.G * options.prompts, num_generations=options.G,
        max_completion_length=options.completion_length, learning_rate=options.lr, max_steps=options.steps,
        beta=0.0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=42,
        activation_checkpointing=False, disable_tqdm=True,
    )
    if options.mode == "colocate":
        common.update(use_vllm=True, vllm_mode="colocate", vllm_max_model_length=256)
    elif options.mode == "server":
        common.update(use_vllm=True, vllm_mode="server", vllm_server_host="127.0.0.1",
                      vllm_server_port=options.port, vllm_server_timeout=120)
    dataset = letters_dataset(64, seed=0)
    started = time.perf_counter()
    if options.trainer == "grpo":
        args = GRPOConfig(**common)
        with trl_vllm_settings(args, options.model):
            trainer = GRPOTrainer(model=options.model, reward_funcs=recorded_letters_reward, args=args,
                                  train_dataset=dataset)
    else:
        args = DEPOConfig(**common, depo_candidate_multiplier=options.multiplier, depo_warmup_steps=1,
                          depo_features=options.features.split(","), depo_console="trl")
        trainer = DEPOTrainer(model=options.model, reward_funcs=recorded_letters_reward, args=args,
                              train_dataset=dataset)
    init_s = time.perf_counter() - started

    syncs, generate_calls = [], []
    if options.mode == "none":  # transformers generation: TRL calls the (unwrapped) policy's generate
        model_generate = trainer.model.generate

        def timed_model_generate(*a, **k):
            started = time.perf_counter()
            output = model_generate(*a, **k)
            generate_calls.append({"rows": int(output.shape[0]), "seconds": time.perf_counter() - started})
            return output

        trainer.model.generate = timed_model_generate
    else:
        generation = trainer.vllm_generation
        sync, generate = generation.sync_weights, generation.generate

        compare = options.mode == "colocate" and not options.no_sync_check

        def measured_sync(*a, **k):
            record = {"step": trainer.state.global_step}
            if compare:
                record["before"] = vllm_vs_policy(trainer)[0]
            started = time.perf_counter()
            sync(*a, **k)
            record["seconds"] = time.perf_counter() - started
            if compare:
                record["after"], record["covered"], record["tensors"] = vllm_vs_policy(trainer)
            syncs.append(record)

        def recorded_generate(prompts, *a, **k):
            started = time.perf_counter()
            output = generate(prompts, *a, **k)
            generate_calls.append({"rows": len(prompts), "distinct": len({tuple(p) for p in prompts}),
                                   "seconds": time.perf_counter() - started})
            return output

        generation.sync_weights, generation.generate = measured_sync, recorded_generate

    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    moved = max((p.detach() - initial[n]).abs().max().item() for n, p in trainer.model.named_parameters())
    history = trainer.state.log_history
    result = {
        "trainer": options.trainer, "mode": options.mode, "steps": options.steps, "G": options.G,
        "U": options.prompts, "init_s": init_s, "train_s": train_s, "policy_moved": moved,
        "syncs": syncs, "generate_calls": generate_calls, "reward_calls": reward_calls,
        "logp_difference": [h["sampling/sampling_logp_difference/mean"] for h in history
                            if "sampling/sampling_logp_difference/mean" in h],
        "step_time": [h["step_time"] for h in history if "step_time" in h],
        "rewards": [h["reward"] for h in history if "reward" in h],
        "output_dir": out_dir,
        "vllm_dtype": str(next(vllm_model(trainer).parameters()).dtype) if options.mode == "colocate" else None,
    }
    if options.trainer == "depo":
        result["depo_pool_size"] = trainer.depo_pool_size
        result["depo_rounds"] = trainer.depo_stats.rounds
        result["depo_prompts_rolled_out"] = trainer.depo_stats.prompts_rolled_out
        result["depo_timings"] = {k: [h[k] for h in history if k in h] for k in
                                  {k for h in history for k in h if k.startswith("depo/") and "seconds" in k}}
    with open(options.result, "w") as f:
        json.dump(result, f, indent=1)
    print(f"[vllm_worker] {options.trainer} {options.mode}: init {init_s:.1f}s, train {options.steps} steps "
          f"{train_s:.1f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
