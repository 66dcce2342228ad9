"""One small update function per learning dynamic, and the registry that names them.

Every update works on log-policies (rows of logits, one row per game or per information set) and returns the
next unnormalised log-policy; the driver (`prefkit.games.driver`) normalises, measures and moves the magnet.
Formulas: docs/games.md (the table of algorithms) and the papers: MMD (Sokota et al. 2023, arXiv 2206.05825),
MPO (arXiv 2410.16714), INPO (arXiv 2407.00617), SPPO (arXiv 2405.00675), Nash-MD (arXiv 2312.00886),
online IPO (arXiv 2403.08635). In the closed forms below q is the win rate
of each action against the current policy, q = P pi, and mu is the magnet (reference policy).

    MWU / SPPO       pi' ∝ pi exp(eta q)
    MMD (MPO inner)  pi' ∝ [pi mu^(eta alpha) exp(eta q)]^(1 / (1 + eta alpha))
    INPO / OMD       pi' ∝ pi^(1 - eta alpha) mu^(eta alpha) exp(eta q)       (= MMD with eta / (1 - eta alpha))
    Nash-MD          m ∝ pi^(1 - eta alpha) mu^(eta alpha);  pi' ∝ m exp(eta P m)
    online IPO       exact expected gradient step on the softmax logits (= Nash-MD-PG with beta = 0)
    extragradient    an MMD half step to pi_h, then the MMD step from pi using q(pi_h)   (mirror prox)
    optimistic MWU   the MMD step with q replaced by 2 q_t - q_(t-1)

MPO and COMAL are MMD and INPO whose magnet the driver refreshes (their `refresh` default); with alpha = 0
extragradient and optimistic MWU are the unregularised mirror_prox and OMWU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from prefkit.errors import PrefkitError


@dataclass
class Step:
    """What an update sees: the current log-policy and magnet, the win rates, and a way to ask for more."""

    log_pi: np.ndarray
    log_mu: np.ndarray
    q: np.ndarray  # win rates against the current policy (exact, or estimated in sampled mode)
    win_rate: Callable[[np.ndarray], np.ndarray]  # win rates against another policy (same estimator)
    eta: float
    alpha: float
    memory: dict = field(default_factory=dict)  # carried between steps (optimistic MWU keeps q_(t-1))


def normalise(log_p: np.ndarray) -> np.ndarray:
    """Shift logits so that exp() sums to one along the last axis (log-sum-exp, stable for any range)."""
    top = log_p.max(axis=-1, keepdims=True)
    return log_p - top - np.log(np.exp(log_p - top).sum(axis=-1, keepdims=True))


def mmd_step(log_pi, log_mu, q, eta: float, alpha: float) -> np.ndarray:
    """MMD's closed form; alpha = 0 reduces it to MWU."""
    return (log_pi + eta * alpha * log_mu + eta * q) / (1.0 + eta * alpha)


def mwu(s: Step) -> np.ndarray:
    return s.log_pi + s.eta * s.q


def mmd(s: Step) -> np.ndarray:
    return mmd_step(s.log_pi, s.log_mu, s.q, s.eta, s.alpha)


def inpo(s: Step) -> np.ndarray:
    tau = s.eta * s.alpha
    return (1.0 - tau) * s.log_pi + tau * s.log_mu + s.eta * s.q


def nash_md(s: Step) -> np.ndarray:
    mixture_coef = s.eta * s.alpha  # the opponent's share of the magnet: `mixture_coef` of `prefkit selfplay`
    log_mix = normalise((1.0 - mixture_coef) * s.log_pi + mixture_coef * s.log_mu)
    return log_mix + s.eta * s.win_rate(np.exp(log_mix))


def online_ipo(s: Step) -> np.ndarray:
    # The expected online-IPO gradient is the policy gradient of q - alpha log(pi / mu) (Calandriello et al.,
    # Prop. 4.2); on softmax logits that gradient is pi * (advantage - its mean under pi).
    pi = np.exp(s.log_pi)
    advantage = s.q - s.alpha * (s.log_pi - s.log_mu)
    advantage = advantage - (pi * advantage).sum(axis=-1, keepdims=True)
    return s.log_pi + s.eta * pi * advantage


def extragradient(s: Step) -> np.ndarray:
    half = normalise(mmd_step(s.log_pi, s.log_mu, s.q, s.eta, s.alpha))
    return mmd_step(s.log_pi, s.log_mu, s.win_rate(np.exp(half)), s.eta, s.alpha)


def optimistic_mwu(s: Step) -> np.ndarray:
    previous = s.memory.get("q", s.q)
    s.memory["q"] = s.q
    return mmd_step(s.log_pi, s.log_mu, 2.0 * s.q - previous, s.eta, s.alpha)


@dataclass(frozen=True)
class Algorithm:
    """A named dynamic: its update, whether it needs a magnet (alpha > 0), and whether it refreshes the magnet."""

    update: Callable[[Step], np.ndarray]
    magnet: str  # "none" (alpha must be 0), "required" (alpha > 0) or "optional"
    refresh: bool = False  # MPO / COMAL: refresh the magnet periodically unless told otherwise
    magnet_rate: float = 0.0  # MMD's moving magnet: mu <- mu^(1 - r) pi^r after every step
    summary: str = ""


ALGORITHMS: dict[str, Algorithm] = {
    "mwu": Algorithm(mwu, "none", summary="multiplicative weights = SPPO in tabular form"),
    "mmd": Algorithm(mmd, "required", summary="magnetic mirror descent, fixed magnet"),
    "mpo": Algorithm(mmd, "required", refresh=True, summary="MMD with the magnet reset to the policy periodically"),
    "mmd_moving": Algorithm(mmd, "required", magnet_rate=0.05, summary="MMD with a geometrically trailing magnet"),
    "inpo": Algorithm(inpo, "required", summary="online mirror descent with a fixed KL-to-reference"),
    "comal": Algorithm(inpo, "required", refresh=True, summary="INPO inner solver with reference refresh"),
    "nash_md": Algorithm(nash_md, "required", summary="mirror descent against the geometric-mixture opponent"),
    "online_ipo": Algorithm(online_ipo, "required", summary="exact expected online-IPO gradient on the logits"),
    "extragradient": Algorithm(extragradient, "optional", summary="mirror prox: two steps per iteration"),
    "optimistic_mwu": Algorithm(optimistic_mwu, "optional", summary="MWU with the optimistic 2 q_t - q_(t-1)"),
}

ALIASES = {"sppo": "mwu", "md": "mwu", "omd": "inpo", "nashmd": "nash_md", "ipo": "online_ipo",
           "mirror_prox": "extragradient", "eg": "extragradient", "omwu": "optimistic_mwu"}


def canonical_name(name: str) -> str:
    """Map user spellings (`nash-md`, `SPPO`, `omwu`) to a registry key, or raise naming the known ones. The keys
    are the loss names of prefkit.losses where a loss fits the dynamic (`nash_md`, `online_ipo`)."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in ALGORITHMS:
        known = ", ".join(sorted(ALGORITHMS) + sorted(ALIASES))
        raise PrefkitError(f"unknown algorithm {name!r}; known: {known}")
    return key
