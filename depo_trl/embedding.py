"""Policy embeddings of prompts: one no-grad prefill of the model being trained.

The model is called as TRL calls it (so DDP, ZeRO-3, FSDP and PEFT wrappers do their work) with
``logits_to_keep=1``, in eval mode (dropout off: features carry no noise, and no torch RNG is consumed, so training
draws the same dropout masks it would draw without DEPO), and is put back in the mode it was in; a forward hook on the backbone reads its last hidden state, so no
``output_hidden_states`` tuple of every layer is materialised. Prompts are right-padded (causal attention never
lets a real token see a pad) and pooled by a masked mean or by the last real token.

``embed_and_score_answers`` runs the same prefill with each prompt's reference answer appended: the prompt
positions cannot see the answer (causal attention), so the embedding is unchanged, and the logits kept at the
positions that predict the answer give its teacher-forced log-likelihood under the current policy (the
``answer_likelihood`` feature group) at the cost of a few more prefill tokens.
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
    return _prefill(model, token_ids, None, pad_token_id, pooling, batch_size, device)[0]


def answer_token_ids(tokenizer, answers, prefix: str = "", max_tokens: int = 32) -> list[list[int] | None]:
    """Token ids of ``prefix + str(answer)`` per answer, cut to ``max_tokens``; None for a missing or empty answer.

    Tokenised without special tokens, on their own: the ids are appended to the already-rendered prompt (whose chat
    template ended with the generation prompt), which is how the policy's own completion continues it.
    """
    out: list[list[int] | None] = []
    for answer in answers:
        text = "" if answer is None else str(answer)
        if not text.strip():
            out.append(None)
            continue
        ids = tokenizer(prefix + text, add_special_tokens=False)["input_ids"][:max_tokens]
        out.append(list(ids) or None)
    return out


def embed_and_score_answers(
    model: torch.nn.Module,
    token_ids: list[list[int]],
    answer_ids: list[list[int] | None] | None,
    pad_token_id: int,
    pooling: str = "mean",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled prompt embeddings and the policy's log-likelihood of each reference answer, in one prefill.

    Each row is the prompt followed by its answer tokens. Attention is causal, so the prompt positions never see
    the answer and the pooled embedding is exactly ``embed_token_ids``'s; the logits at the positions that predict
    the answer tokens give the teacher-forced log-probabilities. Returns ``(embeddings, answer_logprobs)`` with
    ``answer_logprobs`` of shape ``(n, 3)``: total, mean per token and first-token log-probability (NaN where the
    answer is ``None`` or empty). ``answer_ids=None`` is ``embed_token_ids`` with ``None`` for the log-likelihoods,
    so callers whose answers are optional need one call. Same collective rule as ``embed_token_ids``.
    """
    if answer_ids is not None and len(answer_ids) != len(token_ids):
        raise ValueError(f"{len(answer_ids)} answers for {len(token_ids)} prompts.")
    return _prefill(model, token_ids, answer_ids, pad_token_id, pooling, batch_size, device)


@torch.no_grad()
def _prefill(model, token_ids, answer_ids, pad_token_id, pooling, batch_size, device):
    backbone = find_backbone(model)
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", output)
        captured["hidden"] = hidden

    handle = backbone.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    pooled = []
    answers_out = []
    try:
        for start in range(0, len(token_ids), batch_size):
            chunk = [ids if len(ids) else [pad_token_id] for ids in token_ids[start : start + batch_size]]
            answers = None if answer_ids is None else [list(a or []) for a in answer_ids[start : start + batch_size]]
            lengths = [len(ids) for ids in chunk]
            rows = chunk if answers is None else [ids + ans for ids, ans in zip(chunk, answers)]
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, ids in enumerate(rows):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, : len(ids)] = 1
            # Position p's logits predict token p + 1: the answer's tokens are predicted from the last prompt
            # position on. Only the positions some row needs are kept (the model slices before its LM head).
            positions = None
            if answers is not None:
                needed = sorted({n - 1 + j for n, ans in zip(lengths, answers) for j in range(len(ans))})
                positions = torch.tensor(needed or [0], dtype=torch.long)
            input_ids, mask = input_ids.to(device), mask.to(device)
            out = model(input_ids=input_ids, attention_mask=mask, use_cache=False,
                        logits_to_keep=1 if positions is None else positions.to(device))
            hidden = captured.pop("hidden").float()
            prompt_mask = mask  # pool over the prompt only, not its appended answer
            if answers is not None:
                prompt_mask = torch.zeros_like(mask)
                for row, n in enumerate(lengths):
                    prompt_mask[row, :n] = 1
            if pooling == "last":
                last = torch.tensor(lengths, device=hidden.device) - 1
                pooled.append(hidden[torch.arange(len(rows), device=hidden.device), last])
            else:
                weights = prompt_mask.unsqueeze(-1).to(hidden.dtype)
                pooled.append((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0))
            if answers is not None:
                logits = (out.logits if hasattr(out, "logits") else out[0]).float()
                logprobs = torch.log_softmax(logits, dim=-1)
                column = {p: i for i, p in enumerate(positions.tolist())}
                stats = torch.full((len(rows), 3), float("nan"))
                for row, (n, ans) in enumerate(zip(lengths, answers)):
                    if ans:
                        cols = torch.tensor([column[n - 1 + j] for j in range(len(ans))], device=logprobs.device)
                        token_lp = logprobs[row, cols, torch.tensor(ans, device=logprobs.device)].cpu()
                        stats[row] = torch.stack([token_lp.sum(), token_lp.mean(), token_lp[0]])
                answers_out.append(stats)
    finally:
        handle.remove()
        model.train(was_training)
    if not pooled:
        return torch.zeros((0, 0), device=device), (None if answer_ids is None else torch.zeros((0, 3), device=device))
    scored = None if answer_ids is None else torch.cat(answers_out).to(device)
    return torch.cat(pooled).to(device), scored
