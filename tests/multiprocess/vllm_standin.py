"""A recording stand-in for TRL's ``VLLMGeneration`` in server mode (vLLM itself cannot run here).

It reproduces the part of the server path DEPO relies on: gather every rank's prompt rows, take every G-th row
as the unique prompt (``all_prompts[::num_generations]``), generate G completions each, and give every rank the
slice of rows that matches its own. It asserts the contract that makes that valid -- in the global row order each
prompt occupies G contiguous, identical rows -- and records the row counts each rank passed.
"""

import random

from accelerate.utils import gather_object


class RecordingVLLMServer:
    def __init__(self, accelerator, vocab_size: int, eos_token_id: int, max_tokens: int = 4):
        self.accelerator = accelerator
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.max_tokens = max_tokens
        self.calls: list[dict] = []
        self.weight_syncs = 0

    def sync_weights(self):
        self.weight_syncs += 1

    def generate(self, prompts, images, num_generations, profiler=None):
        all_prompts = gather_object(prompts)
        groups = [all_prompts[i : i + num_generations] for i in range(0, len(all_prompts), num_generations)]
        for index, group in enumerate(groups):
            assert len(group) == num_generations and all(p == group[0] for p in group), (
                f"group {index}: the {num_generations} rows of a prompt are not contiguous identical copies"
            )
        self.calls.append({"local_rows": len(prompts), "global_rows": len(all_prompts), "groups": len(groups)})
        # Seeded by the call count, so every rank draws the same completions (the server broadcasts them).
        rng = random.Random(len(self.calls))
        unique = all_prompts[::num_generations]
        all_prompt_ids = [ids for ids in unique for _ in range(num_generations)]
        all_completions = [
            [rng.randrange(4, self.vocab_size) for _ in range(rng.randrange(1, self.max_tokens))] + [self.eos_token_id]
            for _ in all_prompt_ids
        ]
        all_logprobs = [[[-1.0] for _ in ids] for ids in all_completions]
        start = self.accelerator.process_index * len(prompts)
        window = slice(start, start + len(prompts))
        return all_prompt_ids[window], all_completions[window], all_logprobs[window], None


def install(trainer, max_tokens: int = 4) -> RecordingVLLMServer:
    """Route ``trainer``'s generation through the stand-in, as ``use_vllm=True, vllm_mode="server"`` would."""
    tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    standin = RecordingVLLMServer(trainer.accelerator, len(tokenizer), tokenizer.eos_token_id, max_tokens)
    trainer.use_vllm = True
    trainer.vllm_generation = standin
    trainer._last_loaded_step = -1  # set by GRPOTrainer.__init__ only when use_vllm was on
    trainer.vllm_importance_sampling_correction = False  # the stand-in's log-probs are placeholders
    return standin
