"""Run by tests/multiprocess/test_deepspeed.py under
``accelerate launch --config_file recipes/accelerate_configs/zero{2,3}_cpu.yaml``: a short DEPO run under
DeepSpeed ZeRO on CPU (2 processes, gloo) with the ``embedding`` and ``answer_likelihood`` features, so the policy
prefill runs through the sharded model.

Arguments: ``out_dir max_steps save_steps [resume_checkpoint] [--no-16bit]``. Each rank writes
``<out_dir>/rank<r>.json``: the candidates and selection of every round, the prefill forwards it ran per round, the
estimator's state, and the per-rank sizes of the parameters (ZeRO-3) or optimizer partition (ZeRO-2) it held.
"""

import json
import os
import sys
from types import SimpleNamespace

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from depo_trl import DEPOConfig, DEPOTrainer  # noqa: E402
from depo_trl.embedding import find_backbone  # noqa: E402
from depo_trl.history import prompt_key  # noqa: E402
from depo_trl.scripts.run_config import run_config, save_run_config  # noqa: E402
from depo_trl.state import save_state  # noqa: E402
from depo_trl.tiny import build_model, build_tokenizer  # noqa: E402
from worker_exit import exit_after_report  # noqa: E402  (this folder: sys.path[0] when run as a script)


def sharding(engine) -> dict:
    """What this rank holds: under ZeRO-3 each parameter's full size (ds_numel) and its local partition (ds_tensor);
    under ZeRO-2 the full parameters and this rank's flat fp32 optimizer partition."""
    params = list(engine.module.parameters())
    out = {"param_numel_local": int(sum(p.numel() for p in params))}
    if all(hasattr(p, "ds_numel") for p in params):
        out["full_numel"] = int(sum(p.ds_numel for p in params))
        out["partition_numel"] = int(sum(p.ds_tensor.numel() for p in params))
        out["params_fully_local"] = int(sum(p.ds_tensor.numel() >= p.ds_numel for p in params))
    else:
        out["full_numel"] = out["param_numel_local"]
        groups = getattr(engine.optimizer, "single_partition_of_fp32_groups", [])
        out["partition_numel"] = int(sum(g.numel() for g in groups))
    out["n_params"] = len(params)
    return out


def main(out_dir: str, max_steps: int, save_steps: int, resume: str | None, gather_16bit: bool) -> None:
    rank = int(os.environ.get("RANK", 0))
    torch.set_num_threads(1)
    # Easy prompts always pass, hard ones never, and "coin" prompts pass when the sampled completion has an even
    # length: their groups have non-zero advantages, so the sharded model really trains, and their labels depend on
    # sampling, so a resumed run picks what the uninterrupted one picked only if weights, RNG and DEPO's state all
    # came back. Prompt lengths vary so the prefill pads; the answer column feeds the answer_likelihood features.
    rows = [{"prompt": [{"role": "user", "content": f"{kind} item {i}" + " x" * (i % 5)}], "kind": kind,
             "answer": str(i)} for i in range(30) for kind in ("easy", "hard", "coin")]
    dataset = Dataset.from_list(rows)

    def reward(completions, kind, **kwargs):
        text = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [1.0 if k == "easy" else 0.0 if k == "hard" else float(len(t) % 2 == 0) for k, t in zip(kind, text)]

    args = DEPOConfig(
        output_dir=os.path.join(out_dir, "run"), per_device_train_batch_size=6, num_generations=4,
        max_completion_length=4, max_steps=max_steps, learning_rate=1e-3, bf16=False, use_cpu=True,
        report_to="none", save_strategy="steps", save_steps=save_steps, save_only_model=False, disable_tqdm=True,
        seed=0, depo_warmup_steps=2, activation_checkpointing=False, logging_steps=1,
        # 2 ranks x 6 rows = 3 prompts of 4 per round; x3 candidates = 9, which 2 ranks do not divide: each rank
        # prefills 5 (one padded repeat) in 3 forwards of 2.
        depo_candidate_multiplier=3, depo_embedding_batch_size=2,
        depo_features=["length", "history", "embedding", "answer_likelihood"],
    )
    if not gather_16bit:  # a ZeRO-3 checkpoint without model.safetensors: only the shards and zero_to_fp32.py
        zero = args.deepspeed_plugin.deepspeed_config["zero_optimization"]
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    rounds = []

    class Recording(DEPOTrainer):
        def _embed(self, token_ids, pad_token_id, answer_ids=None):
            # What this rank holds as the prefill starts: under ZeRO-3 only its partition of each parameter.
            self._shard_log.append(sharding(self.model_wrapped))
            calls = []
            handle = find_backbone(self.model).register_forward_hook(lambda *a: calls.append(1))
            try:
                result = super()._embed(token_ids, pad_token_id, answer_ids)
            finally:
                handle.remove()
            self._prefill_log.append(
                {"round": self.depo_stats.rounds, "candidates": len(token_ids), "forwards": len(calls)})
            return result

        def _learn_from_round(self, plan, rewards):
            rounds.append({"round": self.depo_stats.rounds, "candidates": [int(k) for k in plan.keys],
                           "selected": [int(k) for k in plan.keys[plan.selection.indices]]})
            super()._learn_from_round(plan, rewards)

    tokenizer = build_tokenizer()
    trainer = Recording(model=build_model(tokenizer), reward_funcs=reward, args=args, train_dataset=dataset,
                        processing_class=tokenizer)
    trainer._prefill_log, trainer._shard_log = [], []
    trainer.train(resume_from_checkpoint=resume)
    after_training = sharding(trainer.model_wrapped)
    trainer.save_model(args.output_dir)  # as the training script ends: model (or ZeRO shards) + DEPO state
    if trainer.accelerator.is_main_process:
        save_state(trainer.depo_state_dict(), args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        script = SimpleNamespace(dataset_name=None, dataset_format=None, system_prompt=None)
        save_run_config(run_config(args, SimpleNamespace(model_name_or_path="depo-tiny", use_peft=False), script),
                        args.output_dir)
    # The trained estimator's predictions for prompts the run never saw, scored by the trainer itself under ZeRO (a
    # collective prefill on every rank): `depo-trl route` on the saved folder must reproduce them.
    held_out = [{"prompt": [{"role": "user", "content": f"{kind} new {i}"}], "answer": str(i)}
                for i in range(5) for kind in ("easy", "hard", "coin")]
    scores, _ = trainer._score([r["prompt"] for r in held_out], metadata={"answer": [r["answer"] for r in held_out]})
    report = {
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage,
        "backend": torch.distributed.get_backend(),
        "rounds": rounds,
        "prefill": trainer._prefill_log,
        "estimator": {k: np.asarray(v).tolist() for k, v in trainer.depo_estimator.state_dict().items()},
        "history_seen": trainer.depo_history.lookup(
            np.array([prompt_key(r["prompt"]) for r in rows]))["seen"].tolist(),
        "stats_rounds": trainer.depo_stats.rounds,
        "sharding": after_training,
        "sharding_at_prefill": trainer._shard_log,
        "held_out": held_out,
        "held_out_predicted": np.asarray(scores.predicted).tolist(),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    trainer.end()  # waits for every rank, then destroys the group


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--no-16bit"]
    main(argv[0], int(argv[1]), int(argv[2]), argv[3] if len(argv) > 3 and argv[3] != "-" else None,
         "--no-16bit" not in sys.argv)
    exit_after_report()
