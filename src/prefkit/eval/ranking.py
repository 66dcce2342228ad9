"""Ranking accuracy, idealised ranking accuracy and reward margins: pure NumPy functions of sequence log-probs.

Definitions follow "Preference Learning Algorithms Do Not Learn Preference Rankings" (Chen et al., arXiv
2405.19534) and TRL's reward metrics, as docs/eval.md ("Metrics") states them. Inputs are per-pair arrays of
summed completion log-probs ℓ(y) = log π(y | x) (EOS included) and completion lengths |y| in tokens. Nothing here
runs a model: `prefkit.eval.pairs` computes the log-probs and calls these.
"""

from __future__ import annotations

import numpy as np

from prefkit.errors import PrefkitError

DEFAULT_EPSILON = 0.01  # α = 1 − ε for pairs without rater proportions, as the paper replaces α = 1 (Cor. 3.3)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _arrays(*values, names: str) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=float).reshape(-1) for v in values]
    if len({a.shape for a in arrays}) != 1:
        raise PrefkitError(f"{names} must have one value per pair; got lengths {[a.size for a in arrays]}")
    if arrays[0].size == 0:
        raise PrefkitError(f"{names}: no pairs to evaluate")
    return arrays


def ranks(logp_w, logp_l, len_w=None, len_l=None) -> np.ndarray:
    """Per pair: 1 when π(y_w|x) ≥ π(y_l|x) (Def. 2.3). With lengths, the per-token averages are compared (R̃)."""
    logp_w, logp_l = _arrays(logp_w, logp_l, names="logp_w, logp_l")
    if (len_w is None) != (len_l is None):
        raise PrefkitError("pass both len_w and len_l, or neither")
    if len_w is not None:
        len_w, len_l = _arrays(len_w, len_l, names="len_w, len_l")
        if len_w.shape != logp_w.shape or (len_w <= 0).any() or (len_l <= 0).any():
            raise PrefkitError("lengths must be positive, one per pair")
        logp_w, logp_l = logp_w / len_w, logp_l / len_l
    return (logp_w >= logp_l).astype(float)


def ranking_accuracy(logp_w, logp_l, len_w=None, len_l=None) -> float:
    """R(D; π) = mean of 1[π(y_w|x) ≥ π(y_l|x)]; the length-normalised R̃ when lengths are given."""
    return float(ranks(logp_w, logp_l, len_w, len_l).mean())


def idealised_ranks(ref_logp_w, ref_logp_l, beta: float, alpha=None, epsilon: float = DEFAULT_EPSILON) -> np.ndarray:
    """Per pair: 1 when the idealised DPO/RLHF policy of Thm 3.1 ranks y_w above y_l (Cor. 3.3):

        π_ref(y_w)/π_ref(y_l) · (α/(1−α))^(1/β) > 1   ⇔   ℓ_ref(y_w) − ℓ_ref(y_l) + log(α/(1−α))/β > 0.

    α is the fraction of raters preferring y_w (one value, or one per pair); without rater proportions the paper
    sets α = 1 − ε (default ε = 0.01), which makes the bound log(99)/β ≈ 46 nats at β = 0.1."""
    ref_w, ref_l = _arrays(ref_logp_w, ref_logp_l, names="ref_logp_w, ref_logp_l")
    if not beta > 0:
        raise PrefkitError(f"idealised ranking accuracy needs beta > 0; got {beta}")
    if alpha is None:
        if not 0 < epsilon < 0.5:
            raise PrefkitError(f"epsilon must lie in (0, 0.5); got {epsilon}")
        alpha = 1.0 - epsilon
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), ref_w.shape)
    if ((alpha <= 0) | (alpha >= 1)).any():
        raise PrefkitError("alpha (fraction of raters preferring y_w) must lie strictly between 0 and 1")
    return (ref_w - ref_l + np.log(alpha / (1.0 - alpha)) / beta > 0).astype(float)


def idealised_ranking_accuracy(ref_logp_w, ref_logp_l, beta: float, alpha=None,
                               epsilon: float = DEFAULT_EPSILON) -> float:
    """R*(D; π_ref): the ranking accuracy a perfectly optimised DPO/RLHF policy would reach (Cor. 3.3)."""
    return float(idealised_ranks(ref_logp_w, ref_logp_l, beta, alpha, epsilon).mean())


def flips(model_ranks, reference_ranks) -> dict:
    """How many pairs changed ranking from the reference to the model: fixed (misranked -> ranked), broken
    (ranked -> misranked), and the share of the reference's misranked pairs that were fixed (the paper's
    "rarely flips" statistic)."""
    model_ranks, reference_ranks = _arrays(model_ranks, reference_ranks, names="model_ranks, reference_ranks")
    fixed = int(((reference_ranks == 0) & (model_ranks == 1)).sum())
    broken = int(((reference_ranks == 1) & (model_ranks == 0)).sum())
    misranked = int((reference_ranks == 0).sum())
    return {"flipped": fixed + broken, "fixed": fixed, "broken": broken, "reference_misranked": misranked,
            "fixed_fraction": fixed / misranked if misranked else None}


def summary(values, quantiles=QUANTILES) -> dict:
    """mean, std, min, max and the given quantiles (keys q05, q25, ...) of a 1-D array, as plain floats."""
    values = np.asarray(values, dtype=float).reshape(-1)
    if values.size == 0:
        raise PrefkitError("cannot summarise an empty array")
    out = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
           "max": float(values.max())}
    out.update({f"q{round(q * 100):02d}": float(np.quantile(values, q)) for q in quantiles})
    return out


def reward_margins(logp_w, logp_l, ref_logp_w, ref_logp_l, beta: float) -> dict:
    """Implicit DPO rewards r(y) = β(ℓ_θ(y) − ℓ_ref(y)) and the margin r(y_w) − r(y_l) = β(ρ_w − ρ_l), under the
    metric names TRL logs (rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies), plus the
    margin's quantiles and the per-pair margins themselves (for the histogram)."""
    w, l, rw, rl = _arrays(logp_w, logp_l, ref_logp_w, ref_logp_l, names="log-probs")
    if not beta > 0:
        raise PrefkitError(f"reward margins need beta > 0; got {beta}")
    chosen, rejected = beta * (w - rw), beta * (l - rl)
    margins = chosen - rejected
    return {"rewards/chosen": float(chosen.mean()), "rewards/rejected": float(rejected.mean()),
            "rewards/margins": float(margins.mean()), "rewards/accuracies": float((margins > 0).mean()),
            "margin": summary(margins), "margins": margins.tolist()}
