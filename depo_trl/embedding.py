"""Policy embeddings of prompts: one no-grad prefill of the model being trained.

The model is called as TRL calls it (so DDP, ZeRO-3, FSDP and PEFT wrappers do their work) with
``logits_to_keep=1``, in eval mode (dropout off: features carry no noise, and no torch RNG is consumed, so training
draws the same dropout masks it would draw without DEPO), and is put back in the mode it was in; a forward hook on the backbone reads its last hidden state, so no
``output_hidden_states`` tuple of every layer is materialised. Prompts are right-padded (causal attention never
lets a real token see a pad) and pooled by a masked mean or by the last real token.
"""

from __future__ import annotations

import torch


def find_backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is the final hidden state, through DDP/DeepSpeed/PEFT wrappers."""
    module = model
    for _ in range(4):  # DDP / DeepSpeed engines keep the real model in `.module`
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
    if hasattr(module, "get_base_model"):  # PEFT
        module = module.get_base_model()
    if hasattr(module, "get_decoder"):
        decoder = module.get_decoder()
        if isinstance(decoder, torch.nn.Module):
            return decoder
    if hasattr(module, "model") and isinstance(module.model, torch.nn.Module):
        return module.model
    raise ValueError(
        f"Could not find the backbone of {type(module).__name__} to read prompt embeddings from. "
        "Drop 'embedding' from depo_features, or use a causal LM with `get_decoder()`."
    )


@torch.no_grad()
def embed_token_ids(
    model: torch.nn.Module,
    token_ids: list[list[int]],
    pad_token_id: int,
    pooling: str = "mean",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Pooled last hidden state per prompt, shape ``(len(token_ids), hidden_size)``, float32 on ``device``.

    Every caller on every rank must pass the same number of prompts: the number of forward passes (and so of
    any collective inside them) depends only on ``len(token_ids)`` and ``batch_size``.
    """
    backbone = find_backbone(model)
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", output)
        captured["hidden"] = hidden

    handle = backbone.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    pooled = []
    try:
        for start in range(0, len(token_ids), batch_size):
            chunk = [ids if len(ids) else [pad_token_id] for ids in token_ids[start : start + batch_size]]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, : len(ids)] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1, use_cache=False)
            hidden = captured.pop("hidden").float()
            if pooling == "last":
                last = mask.sum(dim=1) - 1
                pooled.append(hidden[torch.arange(len(chunk), device=hidden.device), last])
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled.append((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0))
    finally:
        handle.remove()
        model.train(was_training)
    if not pooled:
        return torch.zeros((0, 0), device=device)
    return torch.cat(pooled).to(device)
