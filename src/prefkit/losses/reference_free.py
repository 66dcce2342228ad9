"""One-sided contrastive losses without a reference policy (SimPO, CPO, ORPO, SLiC-HF) and the SFT term.

Rewards are β times the policy's own (summed or per-token) log-probs, as TRL's CPO/ORPO trainers log them.
The SFT term is what mixtures use to build RPO (["dpo", "sft"]) and CPO-SimPO (["simpo", "sft"]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefkit.losses.registry import LossOutput, Tensor, register


def _mean_logps(logps: Tensor, lengths: Tensor) -> Tensor:
    return logps / lengths.clamp(min=1)


@register("simpo", family="one-sided", paper="Meng et al. 2024, arXiv 2405.14734")
def simpo(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, *, beta=2.0, gamma=1.0,
          label_smoothing=0.0) -> LossOutput:
    """SimPO: -log σ(β·z̄ - γ), z̄ the difference of per-token log-probs; reference-free, γ absolute (as TRL)."""
    w, l = _mean_logps(chosen_logps, chosen_lengths), _mean_logps(rejected_logps, rejected_lengths)
    u = beta * (w - l) - gamma
    loss = -(1 - label_smoothing) * F.logsigmoid(u) - label_smoothing * F.logsigmoid(-u)
    return LossOutput(loss, beta * w, beta * l)


@register("cpo", family="one-sided", paper="Xu et al. 2024, arXiv 2401.08417")
def cpo(chosen_logps, rejected_logps, chosen_lengths, *, beta=0.1, alpha=1.0) -> LossOutput:
    """CPO: -log σ(β·z) on summed log-probs, plus α times the per-token NLL of the chosen response."""
    nll = -_mean_logps(chosen_logps, chosen_lengths)
    loss = -F.logsigmoid(beta * (chosen_logps - rejected_logps)) + alpha * nll
    return LossOutput(loss, beta * chosen_logps, beta * rejected_logps)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@register("orpo", family="one-sided", paper="Hong et al. 2024, arXiv 2403.07691")
def orpo(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, *, beta=0.1) -> LossOutput:
    """ORPO: per-token NLL of the chosen response minus λ·log σ(log odds ratio), λ = beta (TRL's name)."""
    w, l = _mean_logps(chosen_logps, chosen_lengths), _mean_logps(rejected_logps, rejected_lengths)
    log_odds = (w - l) - (_log1mexp(w) - _log1mexp(l))
    loss = -w - beta * F.logsigmoid(log_odds)
    return LossOutput(loss, beta * w, beta * l, {"log_odds_ratio": log_odds.detach().mean()})


@register("slic", family="one-sided", paper="Zhao et al. 2023 (SLiC-HF), arXiv 2305.10425")
def slic(chosen_logps, rejected_logps, *, margin=1.0) -> LossOutput:
    """SLiC-HF calibration hinge, reference-free: max(0, δ - z) on summed log-probs (add "sft" for its regulariser)."""
    return LossOutput(torch.relu(margin - (chosen_logps - rejected_logps)), chosen_logps, rejected_logps)


@register("sft", aliases=("nll",), family="regulariser", paper="(negative log-likelihood of the chosen response)")
def sft(chosen_logps, chosen_lengths) -> LossOutput:
    """Per-token NLL of the chosen response. TRL's "sft" averages over all chosen tokens of the batch instead;
    the two agree when completions have equal lengths."""
    return LossOutput(-_mean_logps(chosen_logps, chosen_lengths))
