"""Run by tests/multiprocess/test_multiprocess.py under ``torchrun --nproc_per_node N``: a short DEPO run on CPU/gloo.

Each rank writes what it saw to ``<out>/rank<r>.json``: the selected prompt keys per round, the rows that
reached its reward function, the estimator's state and the history, so the test can compare ranks.
"""

import json
import os
import sys

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
from datasets import Dataset  # noqa: E402

from depo_trl import DEPOConfig, DEPOTrainer  # noqa: E402
from depo_trl.history import prompt_key  # noqa: E402
from depo_trl.tiny import build_model, build_tokenizer  # noqa: E402
from worker_exit import exit_after_report  # noqa: E402  (this folder: sys.path[0] when run as a script)


def main(out_dir: str, per_device_batch: int, backend: str, features: str = "default") -> None:
    rank = int(os.environ.get("RANK", 0))
    # Easy prompts always pass and hard ones never, whatever the completion: a group's observed pass rate must
    # be exactly 1 or 0, which breaks if rewards are attributed to the wrong prompt.
    rows = [{"prompt": [{"role": "user", "content": f"{kind} item {i}"}], "kind": kind, "answer": f"{i}"}
            for i in range(40) for kind in ("easy", "hard")]
    dataset = Dataset.from_list(rows)
    reward_rows = []

    def reward(completions, kind, prompts, **kwargs):
        reward_rows.extend(prompt_key(p) for p in prompts)
        return [1.0 if k == "easy" else 0.0 for k in kind]

    args = DEPOConfig(
        output_dir=os.path.join(out_dir, "run"), per_device_train_batch_size=per_device_batch, num_generations=4,
        max_completion_length=4, max_steps=5, learning_rate=1e-4, bf16=False, use_cpu=True, report_to="none",
        save_strategy="no", disable_tqdm=True, seed=0, depo_warmup_steps=2, depo_candidate_multiplier=3,
        ddp_backend="gloo", activation_checkpointing=False,
        # "answer": the answer likelihood rides in the sharded embedding prefill and is gathered like the embedding.
        **({"depo_features": ["length", "history", "embedding", "answer_likelihood"]} if features == "answer" else {}),
    )
    selected = []

    class Recording(DEPOTrainer):
        def _learn_from_round(self, plan, rewards):
            selected.append([int(k) for k in plan.keys[plan.selection.indices]])
            super()._learn_from_round(plan, rewards)

    tokenizer = build_tokenizer()
    trainer = Recording(model=build_model(tokenizer), reward_funcs=reward, args=args, train_dataset=dataset,
                        processing_class=tokenizer)
    standin = None
    if backend == "vllm-server-standin":
        sys.path.insert(0, os.path.dirname(__file__))
        from vllm_standin import install

        standin = install(trainer)
    trainer.train()
    history = trainer.depo_history.lookup(np.array([prompt_key(r["prompt"]) for r in rows]))
    report = {
        "world_size": trainer.accelerator.num_processes,
        "selected": selected,
        "reward_rows": reward_rows,
        "estimator": {k: np.asarray(v).tolist() for k, v in trainer.depo_estimator.state_dict().items()},
        "history_seen": history["seen"].tolist(),
        "history_last_rate": history["last_rate"].tolist(),
        "kinds": [r["kind"] for r in rows],
        "rounds": trainer.depo_stats.rounds,
        "rows_per_rank": per_device_batch,
        "generation_calls": standin.calls if standin else None,
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    trainer.end()  # as a real script ends (depo_trl/scripts/depo.py): wait for every rank, then destroy the group


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:5])
    exit_after_report()
