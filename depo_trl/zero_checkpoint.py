"""Load the model of a run folder or checkpoint saved under DeepSpeed ZeRO, with or without consolidated weights.

Under ZeRO-3 with ``stage3_gather_16bit_weights_on_model_save`` off (accelerate: ``zero3_save_16bit_model: false``)
the trainer writes no ``model.safetensors``: only ``config.json``, the per-rank shards in ``global_step*/`` (named by
the ``latest`` file) and DeepSpeed's ``zero_to_fp32.py``. ``transformers.from_pretrained`` on such a folder would
build a randomly initialised model (or fail), so ``load_causal_lm`` consolidates the shards in memory with
DeepSpeed's own ``get_fp32_state_dict_from_zero_checkpoint`` (the code ``zero_to_fp32.py`` runs) and loads them
into a model built from ``config.json``. Without DeepSpeed installed it says how to consolidate by hand.
"""

from __future__ import annotations

import glob
import os

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def is_zero_checkpoint(folder: str) -> bool:
    """True when ``folder`` holds DeepSpeed ZeRO shards (``latest`` or ``global_step*/``) and no model weights."""
    if any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        return False
    return os.path.isfile(os.path.join(folder, "latest")) or bool(glob.glob(os.path.join(folder, "global_step*")))


def consolidate_command(folder: str) -> str:
    """The shell commands that write a loadable model folder from ``folder``'s ZeRO shards."""
    out = os.path.join(folder, "consolidated")
    return (f"python {os.path.join(folder, 'zero_to_fp32.py')} {folder} {out} --safe_serialization && "
            f"cp {os.path.join(folder, 'config.json')} {out}/")


def load_causal_lm(folder: str, dtype: str = "float32"):
    """``AutoModelForCausalLM`` from ``folder``: ``from_pretrained`` when it holds weights, else consolidated from its
    ZeRO shards (fp32 master weights, so exactly the weights training held)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not is_zero_checkpoint(folder):
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise ImportError(
            f"{folder!r} is a DeepSpeed ZeRO checkpoint without consolidated weights (no model.safetensors; the run "
            "had zero3_save_16bit_model / stage3_gather_16bit_weights_on_model_save off). Install DeepSpeed to load "
            "it here (DS_BUILD_OPS=0 pip install 'depo_trl[deepspeed]'), or consolidate it yourself: "
            f"`{consolidate_command(folder)}` and pass the model loaded from that folder (route(..., model=...))."
        ) from None
    state = get_fp32_state_dict_from_zero_checkpoint(folder)
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied weight (lm_head = embed_tokens) is saved once; it is loaded through the parameter it shares storage with.
    loaded = {p.data_ptr() for name, p in model.named_parameters(remove_duplicate=False) if name in state}
    params = dict(model.named_parameters(remove_duplicate=False))
    missing = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise ValueError(
            f"The ZeRO shards in {folder!r} do not match the model its config.json describes (missing "
            f"{missing[:5]}, unexpected {list(unexpected)[:5]}). Consolidate by hand: `{consolidate_command(folder)}`."
        )
    return model.eval()
