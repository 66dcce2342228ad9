"""Losses on unpaired feedback: each example is one completion with a thumbs-up or thumbs-down label
(KTO, BCO), or a completion to unlearn (NPO). Inputs are per-example summed log-probs `logps` and
`ref_logps` [B] and boolean `labels` [B] (True = desirable). Batch statistics (KTO's KL estimate, BCO's
reward shift and density-ratio weights) are passed in, so the losses stay pure; each loss declares the
statistics a trainer computes for it (prefkit.losses.statistics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefkit.losses.registry import LossOutput, Tensor, register
from prefkit.losses.statistics import ReferenceKL, RewardShift


def _split_rewards(rewards: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    labels = labels.bool()
    return rewards[labels], rewards[~labels]


@register("kto", family="unpaired", paper="Ethayarajh et al. 2024, arXiv 2402.01306", statistics=(ReferenceKL,))
def kto(logps, ref_logps, labels, kl=None, *, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0) -> LossOutput:
    """KTO: λ_D·(1 - σ(β(ρ - z0))) for desirable, λ_U·(1 - σ(β(z0 - ρ))) for undesirable; z0 = max(0, kl).

    `kl` is the batch KL estimate (`prefkit.losses.statistics.ReferenceKL`), treated as a constant; omitted, z0 = 0."""
    rho = logps - ref_logps
    z0 = torch.zeros((), dtype=rho.dtype) if kl is None else torch.as_tensor(kl, dtype=rho.dtype).detach().clamp(min=0)
    desirable = labels.bool()
    loss = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (rho - z0))),
                       undesirable_weight * (1 - torch.sigmoid(beta * (z0 - rho))))
    return LossOutput(loss, *_split_rewards(beta * rho, labels), {"kl": z0})


@register("bco", family="unpaired", paper="Jung et al. 2024, arXiv 2404.04656", statistics=(RewardShift,))
def bco(logps, ref_logps, labels, reward_shift=None, udm_weights=None, *, beta=0.1) -> LossOutput:
    """BCO: binary cross-entropy on the implicit reward β·ρ minus the shift δ (desirable -> 1, undesirable -> 0).

    `reward_shift` δ is the running mean of rewards (`prefkit.losses.statistics.RewardShift`); `udm_weights` are the density-ratio
    weights of underlying-distribution matching, applied to undesirable examples (1 when omitted)."""
    rewards = beta * (logps - ref_logps)
    shifted = rewards - (0.0 if reward_shift is None else reward_shift)
    weights = torch.ones_like(rewards) if udm_weights is None else udm_weights
    loss = torch.where(labels.bool(), -F.logsigmoid(shifted), -F.logsigmoid(-shifted) * weights)
    return LossOutput(loss, *_split_rewards(rewards, labels))


@register("npo", family="unpaired", paper="Zhang et al. 2024, arXiv 2404.05868")
def npo(logps, ref_logps, *, beta=0.1) -> LossOutput:
    """NPO (unlearning): -(2/β)·log σ(-β·ρ) on completions to forget; bounded, unlike gradient ascent."""
    rho = logps - ref_logps
    return LossOutput(-(2 / beta) * F.logsigmoid(-beta * rho), rejected_rewards=beta * rho)
