"""One-sided contrastive losses with a reference policy: DPO and the variants that reshape its link function.

Inputs are summed completion log-probs of the policy and the reference, shape [B]. Rewards are β times the
log-ratio to the reference, as TRL logs them. Where TRL's `DPOTrainer` has the loss, it is also registered
under TRL's `loss_type` name with TRL's hyper-parameter names, and gives the same per-example values
(tests/test_losses_one_sided.py checks each against a hand calculation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefkit.losses.registry import LossOutput, Tensor, register, require
from prefkit.losses.statistics import GapSelection, RewardShift


def _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) -> tuple[Tensor, Tensor]:
    return chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps


def _smoothed_sigmoid(u: Tensor, label_smoothing: float) -> Tensor:
    """Logistic loss on u with a fraction `label_smoothing` of the pairs taken as flipped."""
    return -(1 - label_smoothing) * F.logsigmoid(u) - label_smoothing * F.logsigmoid(-u)


@register("dpo", aliases=("sigmoid",), family="one-sided", paper="Rafailov et al. 2023, arXiv 2305.18290")
def dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1) -> LossOutput:
    """DPO: -log σ(β·h), h = (log π/π_ref)(y_w) - (log π/π_ref)(y_l). Unbounded: optimum at h -> ∞."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput(-F.logsigmoid(beta * (w - l)), beta * w, beta * l)


@register("cdpo", family="one-sided", paper="Mitchell 2023, 'A note on DPO with noisy preferences' (cdpo.pdf)")
def cdpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1,
         label_smoothing=0.1) -> LossOutput:
    """Conservative DPO: labels flipped with probability ε; finite optimum at β·h = log((1-ε)/ε)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput(_smoothed_sigmoid(beta * (w - l), label_smoothing), beta * w, beta * l)


@register("rdpo", aliases=("robust",), family="one-sided", paper="Chowdhury et al. 2024, arXiv 2403.00409")
def rdpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1,
         label_smoothing=0.1) -> LossOutput:
    """Robust DPO: unbiased estimate of the clean DPO loss under label flips at rate ε (h stays unbounded)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    u = beta * (w - l)
    clean, flipped = -(1 - label_smoothing) * F.logsigmoid(u), -label_smoothing * F.logsigmoid(-u)
    return LossOutput((clean - flipped) / (1 - 2 * label_smoothing), beta * w, beta * l)


@register("ipo", family="one-sided", paper="Azar et al. 2023, arXiv 2310.12036 (length-normalised as TRL)")
def ipo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_lengths, rejected_lengths,
        *, beta=0.1) -> LossOutput:
    """IPO on per-token log-ratios (TRL's form): (h̄ - 1/(2β))², β = τ. Minimum at h̄ = 1/(2β)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = w / chosen_lengths.clamp(min=1) - l / rejected_lengths.clamp(min=1)
    return LossOutput((h - 1 / (2 * beta)) ** 2, beta * w, beta * l)


@register("ipo_sum", family="one-sided", paper="Azar et al. 2023, arXiv 2310.12036, Eq. 17")
def ipo_sum(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1) -> LossOutput:
    """IPO as published, on summed log-ratios: (h - 1/(2β))², β = τ."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput((w - l - 1 / (2 * beta)) ** 2, beta * w, beta * l)


@register("rso", family="one-sided", paper="Liu et al. 2023 (RSO), arXiv 2309.06657", defaults={"beta": 0.05})
@register("hinge", family="one-sided", paper="Zhao et al. 2023 (SLiC-HF), arXiv 2305.10425; TRL's form")
def hinge(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1) -> LossOutput:
    """Hinge on the reference-normalised logit (SLiC margin 1/β; RSO's hinge-norm): max(0, 1 - β·h)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput(torch.relu(1 - beta * (w - l)), beta * w, beta * l)


@register("exo", aliases=("exo_pair",), family="one-sided", paper="Ji et al. 2024, arXiv 2402.00856, Eq. 16")
def exo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1,
        label_smoothing=1e-3) -> LossOutput:
    """EXO-pref: KL(softmax(β·ratios) || (1-ε, ε)); reverse-KL (mode-seeking) fit, optimum β·h = log((1-ε)/ε)."""
    require(label_smoothing > 0, "exo", "label_smoothing", "must be > 0 (it is EXO's ε)")
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    u = beta * (w - l)
    eps = torch.tensor(label_smoothing, dtype=u.dtype)
    loss = torch.sigmoid(u) * (F.logsigmoid(u) - torch.log1p(-eps)) + torch.sigmoid(-u) * (
        F.logsigmoid(-u) - torch.log(eps))
    return LossOutput(loss, beta * w, beta * l)


@register("nca", aliases=("nca_pair",), family="one-sided", paper="Chen et al. 2024, arXiv 2402.05369")
def nca(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1) -> LossOutput:
    """NCA (pairwise): optimises absolute rewards, so the chosen likelihood is not traded away."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -F.logsigmoid(beta * w) - 0.5 * F.logsigmoid(-beta * w) - 0.5 * F.logsigmoid(-beta * l)
    return LossOutput(loss, beta * w, beta * l)


@register("bco_pair", family="one-sided", paper="Jung et al. 2024, arXiv 2404.04656", statistics=(RewardShift,))
def bco_pair(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, reward_shift=None, *,
             beta=0.1) -> LossOutput:
    """BCO on pairs: chosen classified 1, rejected 0 on the implicit reward minus the shift δ (input; TRL 1.x: 0)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    delta = 0.0 if reward_shift is None else reward_shift
    return LossOutput(-F.logsigmoid(beta * w - delta) - F.logsigmoid(-(beta * l - delta)), beta * w, beta * l)


@register("sppo_hard", family="one-sided", paper="Wu et al. 2024 (SPPO), arXiv 2405.00675; TRL's hard form")
def sppo_hard(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.001) -> LossOutput:
    """SPPO with hard win rates: chosen log-ratio pulled to +1/(2β), rejected to -1/(2β)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput((w - 0.5 / beta) ** 2 + (l + 0.5 / beta) ** 2, beta * w, beta * l)


@register("aot", family="one-sided", paper="Melnyk et al. 2024, arXiv 2406.05882")
def aot(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.01,
        label_smoothing=0.0) -> LossOutput:
    """AOT (paired): logistic loss on sorted policy margins minus sorted reference margins (stochastic dominance).

    Sorting is across the batch: the i-th loss belongs to the i-th order statistic, not to pair i."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    policy, _ = torch.sort(chosen_logps - rejected_logps, dim=0)
    reference, _ = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0)
    return LossOutput(_smoothed_sigmoid(beta * (policy - reference), label_smoothing), beta * w, beta * l)


@register("aot_unpaired", family="one-sided", paper="Melnyk et al. 2024, arXiv 2406.05882")
def aot_unpaired(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.01,
                 label_smoothing=0.0) -> LossOutput:
    """AOT (unpaired): sorted chosen log-ratios against sorted rejected log-ratios, logistic loss."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    delta = torch.sort(w, dim=0)[0] - torch.sort(l, dim=0)[0]
    return LossOutput(_smoothed_sigmoid(beta * delta, label_smoothing), beta * w, beta * l)


@register("apo_zero", family="one-sided", paper="D'Oosterlinck et al. 2024 (APO), arXiv 2408.06266, Eq. 7")
def apo_zero(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1) -> LossOutput:
    """APO-zero: raise the chosen likelihood, lower the rejected (chosen outputs better than the model's)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput(1 - torch.sigmoid(beta * w) + torch.sigmoid(beta * l), beta * w, beta * l)


@register("apo_down", family="one-sided", paper="D'Oosterlinck et al. 2024 (APO), arXiv 2408.06266, Eq. 8")
def apo_down(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1) -> LossOutput:
    """APO-down: lower the chosen likelihood and the rejected more (chosen outputs worse than the model's)."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput(torch.sigmoid(beta * w) + 1 - torch.sigmoid(beta * (w - l)), beta * w, beta * l)


@register("discopop", family="one-sided", paper="Chris Lu et al. 2024 (DiscoPOP), arXiv 2406.08414, Eq. 5")
def discopop(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.05,
             discopop_tau=0.05) -> LossOutput:
    """DiscoPOP / LRML: logistic and exponential losses blended by σ(β·h/τ); discovered by LLM-driven search."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    u = beta * (w - l)
    mix = torch.sigmoid(u / discopop_tau)
    return LossOutput(-F.logsigmoid(u) * (1 - mix) + torch.exp(-u) * mix, beta * w, beta * l)


@register("sigmoid_norm", family="one-sided", paper="Tülu 3, arXiv 2411.15124 (DPO with length normalisation)")
def sigmoid_norm(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_lengths,
                 rejected_lengths, *, beta=0.1) -> LossOutput:
    """DPO on per-token log-ratios: -log σ(β·(ρ_w/|y_w| - ρ_l/|y_l|))."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = w / chosen_lengths.clamp(min=1) - l / rejected_lengths.clamp(min=1)
    return LossOutput(-F.logsigmoid(beta * h), beta * w, beta * l)


@register("dpop", family="one-sided", paper="Pal et al. 2024 (Smaug), arXiv 2402.13228")
def dpop(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, lam=50.0) -> LossOutput:
    """DPO-Positive: DPO minus λ·max(0, log π_ref(y_w) - log π(y_w)), so the chosen likelihood may not fall."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    penalty = torch.relu(ref_chosen_logps - chosen_logps)
    return LossOutput(-F.logsigmoid(beta * (w - l - lam * penalty)), beta * w, beta * l)


@register("cal_dpo", family="one-sided", paper="Xiao et al. 2024 (Cal-DPO), arXiv 2412.14516")
def cal_dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.001) -> LossOutput:
    """Cal-DPO: DPO on unscaled log-ratios plus calibration of each to ±1/(2β), so rewards stay on a fixed scale."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    calibration = 0.5 * ((w - 0.5 / beta) ** 2 + (l + 0.5 / beta) ** 2)
    return LossOutput(-F.logsigmoid(w - l) + calibration, w, l)


@register("beta_dpo", family="one-sided", paper="Wu et al. 2024 (β-DPO), arXiv 2407.08639",
          statistics=(GapSelection,))
def beta_dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, gap_mean=None, select_mask=None,
             *, beta=0.1, alpha=0.6, rho=0.2) -> LossOutput:
    """β-DPO: DPO with a batch β = β0·(1 + α·(mean selected h - M0)), M0 the running mean of h (input `gap_mean`).

    `select_mask` marks the pairs kept by the β-DPO filter, which drops a share ρ of each training batch
    (`prefkit.losses.statistics.GapSelection`, where trainers compute both inputs); the others get loss 0 and
    the kept ones are scaled by B/kept, so the batch mean is the mean over kept pairs."""
    w, l = _logratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = w - l
    mask = torch.ones_like(h, dtype=torch.bool) if select_mask is None else select_mask.bool()
    kept = mask.sum().clamp(min=1)
    selected_mean = (h.detach() * mask).sum() / kept
    m0 = selected_mean if gap_mean is None else torch.as_tensor(gap_mean, dtype=h.dtype)
    batch_beta = (beta * (1 + alpha * (selected_mean - m0))).clamp(min=1e-3)
    losses = -F.logsigmoid(batch_beta * h) * mask * (h.numel() / kept)
    return LossOutput(losses, beta * w, beta * l, {"beta_dpo/beta": batch_beta})


@register("plackett_luce", aliases=("dpo_listwise",), family="one-sided", feeds=("lists", "pairs"),
          paper="Rafailov et al. 2023, arXiv 2305.18290 (appendix A.3)")
def plackett_luce(list_logps, ref_list_logps, *, beta=0.1) -> LossOutput:
    """DPO on rankings of K completions (Plackett-Luce): -log P(ranking) = -Σ_k log softmax_{j >= k}(r)_k.

    Inputs are [B, K], best first; r = β·(log π − log π_ref) are the implicit rewards. The probability of the
    ranking is the chance of picking the best completion among all, then the second among the rest, and so on;
    with K = 2 it is DPO's σ(r_chosen − r_rejected). The rewards logged as chosen / rejected are the best and
    the worst completion's."""
    rewards = beta * (list_logps - ref_list_logps)
    # log Σ_{j >= k} exp(r_j) for every k: a cumulative log-sum-exp from the worst end
    remaining = torch.logcumsumexp(rewards.flip(-1), dim=-1).flip(-1)
    return LossOutput(-(rewards - remaining).sum(-1), rewards[:, 0], rewards[:, -1])
