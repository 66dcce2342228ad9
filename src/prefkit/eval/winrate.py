"""Win rate of a model against a reference under a judge, with a confidence interval.

A judge is anything `prefkit.judges.load_judge` takes (a Judge, a spec string, a callable judge(prompt, a, b));
`as_judge` turns it into an object with `.compare(prompts, as_, bs)`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import norm

from prefkit.errors import PrefkitError

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def as_judge(judge):
    """A judge with `.name` and `.compare`: a prefkit Judge as it is, anything else through
    `prefkit.judges.load_judge` (a spec string, a callable judge(prompt, a, b), the task's oracle)."""
    from prefkit.judges import load_judge

    return judge if hasattr(judge, "compare") else load_judge(judge)


def _wilson(values: np.ndarray, confidence: float, rng) -> tuple[float, float]:
    # Wilson's score interval with the summed probabilities as successes: conservative for values in [0, 1]
    # (their variance is at most μ(1−μ)), never zero-width, and inside [0, 1].
    n, mean, z = values.size, values.mean(), norm.ppf(0.5 + confidence / 2)
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n))
    return float(centre - half), float(centre + half)


def _normal(values: np.ndarray, confidence: float, rng) -> tuple[float, float]:
    half = norm.ppf(0.5 + confidence / 2) * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0
    return float(max(0.0, values.mean() - half)), float(min(1.0, values.mean() + half))


def _bootstrap(values: np.ndarray, confidence: float, rng) -> tuple[float, float]:
    means = values[rng.integers(values.size, size=(BOOTSTRAP_RESAMPLES, values.size))].mean(axis=1)
    return float(np.quantile(means, 0.5 - confidence / 2)), float(np.quantile(means, 0.5 + confidence / 2))


CI_METHODS: dict[str, Callable] = {"wilson": _wilson, "normal": _normal, "bootstrap": _bootstrap}


def mean_ci(values, *, method: str = "wilson", confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """Mean of per-comparison win probabilities with a `confidence` interval (wilson, normal or bootstrap)."""
    values = np.asarray(values, dtype=float).reshape(-1)
    if method not in CI_METHODS:
        raise PrefkitError(f"unknown interval method {method!r}; choose one of {', '.join(CI_METHODS)}")
    if values.size == 0 or ((values < 0) | (values > 1)).any() or not np.isfinite(values).all():
        raise PrefkitError("win probabilities must be a non-empty array of numbers in [0, 1]")
    low, high = CI_METHODS[method](values, confidence, np.random.default_rng(seed))
    return {"win_rate": float(values.mean()), "ci_low": low, "ci_high": high, "confidence": confidence,
            "method": method, "comparisons": int(values.size)}


def judge_samples(judge, prompts: Sequence, model_texts: Sequence[str], reference_texts: Sequence[str], *,
                  method: str = "wilson", seed: int = 0) -> dict:
    """P(model's response beats the reference's) for each comparison, averaged with a confidence interval.

    Each pair is also judged in the swapped order and the two are averaged, P = (p(a,b) + 1 − p(b,a)) / 2, so a
    judge with a position bias does not favour either side; for an antisymmetric judge this changes nothing."""
    judge = as_judge(judge)
    if not len(prompts) == len(model_texts) == len(reference_texts):
        raise PrefkitError("judge_samples needs one model and one reference response per prompt")
    forward = judge.compare(prompts, model_texts, reference_texts)
    backward = judge.compare(prompts, reference_texts, model_texts)
    p = np.clip((forward + 1.0 - backward) / 2.0, 0.0, 1.0)
    out = mean_ci(p, method=method, seed=seed)
    out["judge"] = getattr(judge, "name", type(judge).__name__)
    out["probabilities"] = p.tolist()
    return out
