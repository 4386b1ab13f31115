"""Shared test set-up: offline Hugging Face libraries, a tiny model, and a config factory."""

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# The tiny models here run faster on one thread than on two (thread hand-offs cost more than the matmuls).
torch.set_num_threads(1)

# The real data beside the repository (../shared/data), or wherever $DEPO_BENCH_DATA points, as for the benchmarks.
SHARED_DATA = os.environ.get("DEPO_BENCH_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


@pytest.fixture(scope="session")
def tokenizer():
    from depo_trl.tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    from depo_trl.tiny import build_model

    return build_model(tokenizer, seed=0)


def make_config(tmp_path, grpo=False, **overrides):
    """A DEPOConfig (or, with ``grpo=True``, the matching GRPOConfig without depo_* fields) sized for CPU
    tests: small batches, short completions, no saving or reporting."""
    from trl import GRPOConfig

    from depo_trl import DEPOConfig

    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=6,
        max_steps=4,
        learning_rate=1e-3,
        bf16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        activation_checkpointing=False,  # recomputing activations only costs time on a tiny CPU model
    )
    defaults.update(overrides)
    if grpo:
        defaults = {k: v for k, v in defaults.items() if not k.startswith("depo_")}
        defaults["output_dir"] += "-grpo"
        return GRPOConfig(**defaults)
    return DEPOConfig(**defaults)


@pytest.fixture
def config_factory(tmp_path):
    """``config_factory(**overrides)`` -> DEPOConfig; ``config_factory(grpo=True, ...)`` -> GRPOConfig."""
    return lambda **overrides: make_config(tmp_path, **overrides)
