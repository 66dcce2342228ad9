"""Self-play Nash losses: each fits one step of a game dynamic on samples from the current policy π_t.

Inputs beside the policy's log-probs: `prev_*` are the log-probs of π_t (the iterate the samples came
from), `ref_*` those of the reference / magnet π_ref, `preference` is P(y_w beats y_l) from the judge and
`*_winrate` are estimates of P(y beats π_t). Step size η and magnet strength α follow the game lab's
notation (prefkit.games), whose exact tabular updates these losses reproduce in expectation
(tests/test_losses_selfplay.py checks the population version on a 3x3 game).
"""

from __future__ import annotations


from prefkit.losses.registry import LossOutput, Tensor, register, require

PAIRS, SINGLES = ("selfplay-pairs",), ("selfplay-singles",)  # the example kinds (prefkit.losses.KINDS)


def _nash_target(c: float, preference, chosen_winrate, rejected_winrate):
    """Target for the pairwise logit: c/2 for a hard label, c(p - ½) for a soft one, c(P̂_w - P̂_l) with win rates.

    All three have the same minimiser in expectation: h(y, y') = c·(P(y beats π_t) - P(y' beats π_t))."""
    if chosen_winrate is not None and rejected_winrate is not None:
        return c * (chosen_winrate - rejected_winrate)
    if preference is not None:
        return c * (preference - 0.5)
    return c / 2


def mwu_step(eta, **_) -> tuple[float, float, float]:
    """Multiplicative weights: log π' = log π_t + η·P(· beats π_t)."""
    return 1.0, 0.0, eta


def mmd_step(eta, alpha, **_) -> tuple[float, float, float]:
    """Magnetic mirror descent: log π' = [log π_t + ηα·log π_ref + η·P(· beats π_t)] / (1 + ηα)."""
    return 1 / (1 + eta * alpha), eta * alpha / (1 + eta * alpha), eta / (1 + eta * alpha)


def inpo_step(eta, tau, **_) -> tuple[float, float, float]:
    """INPO / online mirror descent: log π' = (1-ητ)·log π_t + ητ·log π_ref + η·P(· beats π_t)."""
    return 1 - eta * tau, eta * tau, eta


def _mirror_logit(chosen_logps, rejected_logps, prev_chosen_logps, prev_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, w_prev: float, w_ref: float) -> Tensor:
    """h = z_θ - w_prev·z_t - w_ref·z_ref, z = log-prob of chosen minus rejected under each policy."""
    return ((chosen_logps - rejected_logps) - w_prev * (prev_chosen_logps - prev_rejected_logps)
            - w_ref * (ref_chosen_logps - ref_rejected_logps))


@register("sppo", family="self-play", paper="Wu et al. 2024 (SPPO), arXiv 2405.00675", step=mwu_step,
          feeds=SINGLES)
def sppo(logps, prev_logps, winrate, *, eta=1000.0) -> LossOutput:
    """SPPO, per response: (log π(y)/π_t(y) - η(P̂(y beats π_t) - ½))², the multiplicative-weights step.

    SPPO's code uses β = 1/η = 1e-3; feed the chosen and rejected of a pair as two responses for its pair form."""
    rho = logps - prev_logps
    return LossOutput((rho - eta * (winrate - 0.5)) ** 2, chosen_rewards=rho)


@register("sppo_single", family="self-play", paper="Wu et al. 2024 (SPPO), arXiv 2405.00675; code 'sppo_single'",
          step=mwu_step, feeds=PAIRS)
def sppo_single(chosen_logps, rejected_logps, prev_chosen_logps, prev_rejected_logps, preference=None, *,
                eta=1000.0) -> LossOutput:
    """SPPO, single pair: chosen log-ratio to π_t pulled to +η(p - ½), rejected to -η(p - ½), p = P(y_w beats y_l)."""
    w, l = chosen_logps - prev_chosen_logps, rejected_logps - prev_rejected_logps
    target = eta * ((1.0 if preference is None else preference) - 0.5)
    return LossOutput(((w - target) ** 2 + (l + target) ** 2) / 2, w, l)


@register("inpo", family="self-play", paper="Zhang et al. 2024 (INPO), arXiv 2407.00617", step=inpo_step,
          feeds=PAIRS)
def inpo(chosen_logps, rejected_logps, prev_chosen_logps, prev_rejected_logps, ref_chosen_logps,
         ref_rejected_logps, preference=None, chosen_winrate=None, rejected_winrate=None, *, eta=1 / 0.0075,
         tau=0.0025) -> LossOutput:
    """INPO: (h - η/2)², h = z_θ - (1-ητ)·z_t - ητ·z_ref; fits π' ∝ π_t^(1-ητ)·π_ref^(ητ)·exp(η·P(·beats π_t)).

    Defaults: the code's β = 1/η = 0.0075 and τ = β/3."""
    require(eta * tau <= 1, "inpo", "tau", f"must satisfy eta*tau <= 1 (got {eta * tau:.3g})")
    w_prev, w_ref, _ = inpo_step(eta, tau)
    h = _mirror_logit(chosen_logps, rejected_logps, prev_chosen_logps, prev_rejected_logps, ref_chosen_logps,
                      ref_rejected_logps, w_prev, w_ref)
    loss = (h - _nash_target(eta, preference, chosen_winrate, rejected_winrate)) ** 2
    return LossOutput(loss, chosen_logps - prev_chosen_logps, rejected_logps - prev_rejected_logps)


@register("mpo", family="self-play", paper="Wang et al. 2024 (MPO), arXiv 2410.16714; square-loss reconstruction",
          step=mmd_step, feeds=PAIRS)
def mpo(chosen_logps, rejected_logps, prev_chosen_logps, prev_rejected_logps, ref_chosen_logps,
        ref_rejected_logps, preference=None, chosen_winrate=None, rejected_winrate=None, *, eta=200.0,
        alpha=0.0025) -> LossOutput:
    """MPO: the square loss that fits one magnetic-mirror-descent step, π' ∝ [π_t·π_ref^(ηα)·exp(η·P(·beats π_t))]^(1/(1+ηα)).

    (h - c/2)² with h = z_θ - w_t·z_t - w_ref·z_ref, w_t = 1/(1+ηα), w_ref = ηα/(1+ηα), c = η/(1+ηα). π_ref is
    the magnet, refreshed to the policy every M iterations by the self-play loop. α = 0 gives the SPPO/MWU
    step. MPO's own practical loss is unpublished; this form is prefkit's reconstruction from MMD. Defaults
    make (w_ref, c) equal INPO's defaults, so MPO and INPO differ only by the magnet refresh."""
    w_prev, w_ref, c = mmd_step(eta, alpha)
    h = _mirror_logit(chosen_logps, rejected_logps, prev_chosen_logps, prev_rejected_logps, ref_chosen_logps,
                      ref_rejected_logps, w_prev, w_ref)
    loss = (h - _nash_target(c, preference, chosen_winrate, rejected_winrate)) ** 2
    return LossOutput(loss, chosen_logps - prev_chosen_logps, rejected_logps - prev_rejected_logps)


@register("mpo_pg", family="self-play", paper="Wang et al. 2024 (MPO), arXiv 2410.16714; policy-gradient form",
          step=mmd_step, feeds=SINGLES)
def mpo_pg(logps, prev_logps, ref_logps, advantages, *, eta=200.0, alpha=0.0025) -> LossOutput:
    """MPO by policy gradient: -Â·log π + α·KL(π||π_ref) + (1/η)·KL(π||π_t), KLs by the score-function estimator.

    `advantages` are win rates minus their group mean; samples come from π_t, so this is on-policy at the start
    of each iteration. Only the gradient is meaningful, not the value."""
    penalty = alpha * (logps - ref_logps).detach() + (logps - prev_logps).detach() / eta
    return LossOutput(-(advantages - penalty) * logps, chosen_rewards=advantages)


@register("online_ipo", family="self-play", paper="Calandriello et al. 2024, arXiv 2403.08635", feeds=PAIRS)
def online_ipo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, preference=None, *,
               beta=1.0) -> LossOutput:
    """Online IPO (soft labels): p·(h - 1/(2β))² + (1-p)·(h + 1/(2β))² on fresh samples; β = τ."""
    w, l = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    p, h = (1.0 if preference is None else preference), w - l
    loss = p * (h - 0.5 / beta) ** 2 + (1 - p) * (h + 0.5 / beta) ** 2
    return LossOutput(loss, beta * w, beta * l)


@register("nash_md", family="self-play", paper="Munos et al. 2023 (Nash-MD), arXiv 2312.00886; TRL's surrogate",
          feeds=SINGLES)
def nash_md(logps, ref_logps, preference, *, beta=0.1) -> LossOutput:
    """Nash-MD policy-gradient surrogate: -(P(y beats y') - ½)·log π(y) + β·(log π/π_ref)(y)·log π(y) (detached
    factors), y from the policy and y' from the geometric mixture π^(1-m)·π_ref^m."""
    score = (preference - 0.5) * logps
    kl = (logps - ref_logps).detach() * logps
    return LossOutput(beta * kl - score, chosen_rewards=preference - 0.5)
