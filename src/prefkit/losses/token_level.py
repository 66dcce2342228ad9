"""Token-level losses: inputs are per-token log-probs [B, T] with completion masks, not sequence sums."""

from __future__ import annotations

import torch.nn.functional as F

from prefkit.losses.registry import LossOutput, register


@register("sparsepo", family="token-level", paper="Christopoulou et al. 2024 (SparsePO), arXiv 2410.05102")
def sparsepo(chosen_token_logps, rejected_token_logps, ref_chosen_token_logps, ref_rejected_token_logps,
             chosen_mask, rejected_mask, chosen_reward_mask=None, rejected_reward_mask=None, chosen_token_kl=None,
             rejected_token_kl=None, chosen_kl_mask=None, rejected_kl_mask=None, *, beta=0.1, l1_reward=0.001,
             l1_kl=0.001) -> LossOutput:
    """SparsePO: -log σ(β(u - d)) + L1 on the masks; u = masked per-token log-ratios, d = masked token KLs.

    All tensors are [B, T]. `*_mask` are completion masks (0/1); `*_reward_mask` (m_u) and `*_kl_mask` (m_d)
    are the sparse token weights in [0, 1] from a mask model (default: the completion mask, which gives
    token-level DPO); `*_token_kl` is k_t = Σ_v π_ref(v)·log(π(v)/π_ref(v)) per token (omitted: d = 0).
    A single mask for both terms is SparsePO's "common" variant: pass the same tensor twice."""
    def masked_sum(values, weights, completion):
        return (values * weights * completion).sum(dim=-1)

    as_weights = lambda mask: mask.to(chosen_token_logps.dtype)  # noqa: E731 (0/1 or bool masks: the logps' dtype)
    chosen_mask, rejected_mask = as_weights(chosen_mask), as_weights(rejected_mask)
    m_u_w = chosen_mask if chosen_reward_mask is None else as_weights(chosen_reward_mask)
    m_u_l = rejected_mask if rejected_reward_mask is None else as_weights(rejected_reward_mask)
    w = masked_sum(chosen_token_logps - ref_chosen_token_logps, m_u_w, chosen_mask)
    l = masked_sum(rejected_token_logps - ref_rejected_token_logps, m_u_l, rejected_mask)
    loss = l1_reward * ((m_u_w * chosen_mask).sum(-1) + (m_u_l * rejected_mask).sum(-1))
    d = 0.0
    if chosen_token_kl is not None and rejected_token_kl is not None:
        m_d_w = m_u_w if chosen_kl_mask is None else as_weights(chosen_kl_mask)
        m_d_l = m_u_l if rejected_kl_mask is None else as_weights(rejected_kl_mask)
        d = masked_sum(chosen_token_kl, m_d_w, chosen_mask) - masked_sum(rejected_token_kl, m_d_l, rejected_mask)
        loss = loss + l1_kl * ((m_d_w * chosen_mask).sum(-1) + (m_d_l * rejected_mask).sum(-1))
    return LossOutput(-F.logsigmoid(beta * (w - l - d)) + loss, beta * w, beta * l)
