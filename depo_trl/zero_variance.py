"""Zero-variance masking (``depo_mask_zero_variance``): groups whose completions all get a zero advantage leave the
loss.

A group of G completions with no reward spread teaches GRPO nothing but still counts in a token-normalised loss's
denominator. These functions find such groups exactly as TRL's advantage arithmetic does and take this rank's rows of
them out of the loss-only mask (never out of the attention mask), recounting the loss normaliser.
"""

from __future__ import annotations

import torch

from . import _trl_compat


def no_spread(values: torch.Tensor) -> torch.Tensor:
    """Over the last axis, ignoring NaN: fewer than two values, or a sample std that ``torch.isclose`` calls 0."""
    scorable = ~torch.isnan(values)
    count = scorable.sum(dim=-1)
    mean = torch.where(scorable, values, 0.0).sum(dim=-1) / count.clamp(min=1)
    spread = torch.where(scorable, (values - mean.unsqueeze(-1)) ** 2, 0.0).sum(dim=-1)
    std = torch.sqrt(spread / (count - 1).clamp(min=1))
    return (count < 2) | torch.isclose(std, torch.zeros_like(std))


def zero_advantage_groups(rewards: torch.Tensor, group: int, aggregation: str, weights: torch.Tensor
                          ) -> torch.Tensor:
    """Per global group: True when TRL's advantage arithmetic gives every completion of it a zero advantage.

    ``rewards`` is TRL's gathered ``(N, n_reward_funcs)`` tensor (NaN where a function returned None). TRL leaves
    NaN out of its group statistics and sets a NaN advantage to 0, so a group counts as zero when the quantity TRL
    normalises per group has fewer than two scorable values or zero spread (TRL's own ``isclose(std, 0)`` test; its
    advantage is then ``0 / (0 + 1e-4)`` up to float rounding). That quantity is the weighted reward sum under
    ``sum_then_normalize`` (so ``[1, 1, 1, None]`` is zero, as TRL says), and every reward function separately under
    ``normalize_then_sum`` (a group whose functions vary but whose weighted sum is constant still has non-zero
    advantages there, and is kept)."""
    if aggregation == "sum_then_normalize":
        total = torch.nansum(rewards * weights.detach().float().cpu(), dim=1)
        total[torch.isnan(rewards).all(dim=1)] = torch.nan
        return no_spread(total.view(-1, group))
    per_function = rewards.view(-1, group, rewards.size(1)).transpose(1, 2)  # (groups, funcs, G)
    return no_spread(per_function).all(dim=1)


def mask_zero_variance_groups(output: dict, zero_groups: torch.Tensor, group: int, process_index: int, gather
                              ) -> float:
    """Leave this rank's rows of the ``zero_groups`` out of the loss (TRL's ``completion_mask`` stays as it is; the
    loss-only mask is multiplied) and recount ``num_items_in_batch`` with ``gather`` (all ranks). Returns the share
    of groups masked."""
    zero = zero_groups.repeat_interleave(group)
    completion_mask = output["completion_mask"]
    n_local = completion_mask.size(0)
    start = process_index * n_local
    keep = (~zero[start : start + n_local]).to(device=completion_mask.device, dtype=completion_mask.dtype)
    key = _trl_compat.LOSS_ONLY_MASK
    loss_only = output.get(key)
    loss_only = torch.ones_like(completion_mask) if loss_only is None else loss_only
    output[key] = loss_only * keep.unsqueeze(1)
    output["num_items_in_batch"] = gather((completion_mask * output[key]).sum()).sum()
    return float(zero.float().mean())
