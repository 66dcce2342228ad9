"""How good a judge's probabilities are on held-out pairs: pairwise accuracy, log-loss and the expected calibration
error (ECE), with a reliability plot. NumPy only, plus matplotlib for the figure.

Each pair is counted in both orders, (P(chosen ≻ rejected), label) and (1 − P, 1 − label), so the bins cover
[0, 1] symmetrically and a judge that is always 0.9 sure of the chosen side is judged on its 0.9s and its 0.1s
alike (Guo et al. 2017, "On Calibration of Modern Neural Networks", for the ECE: the gap between the mean
predicted probability and the observed frequency in each bin, weighted by the bin's share of the predictions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pair_metrics(probs, labels, bins: int = 10) -> dict[str, float]:
    """`probs`: the judge's P(chosen ≻ rejected) per pair; `labels`: the data's (1 for a hard label, σ(margin)
    for a soft one). Accuracy counts pairs whose label is not a tie; log-loss is the cross-entropy to the label."""
    p = np.clip(np.asarray(probs, dtype=float), 1e-12, 1 - 1e-12)
    y = np.asarray(labels, dtype=float)
    decided = y != 0.5
    accuracy = float(((p[decided] > 0.5) == (y[decided] > 0.5)).mean()) if decided.any() else float("nan")
    log_loss = float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
    table = reliability(p, y, bins)
    counts = np.array([row["count"] for row in table], dtype=float)
    gaps = np.array([abs(row["observed"] - row["predicted"]) if row["count"] else 0.0 for row in table])
    return {"accuracy": accuracy, "log_loss": log_loss, "ece": float((counts * gaps).sum() / counts.sum())}


def reliability(probs, labels, bins: int = 10) -> list[dict]:
    """Per equal-width bin of predicted probability (both orders of every pair): its range, the number of
    predictions in it, their mean, and the mean label (the observed frequency)."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    p, y = np.concatenate([p, 1 - p]), np.concatenate([y, 1 - y])
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(inside.sum()),
                     "predicted": float(p[inside].mean()) if inside.any() else float("nan"),
                     "observed": float(y[inside].mean()) if inside.any() else float("nan")})
    return rows


def plot_reliability(table: list[dict], path, title: str) -> Path:
    """The reliability diagram (observed frequency against mean predicted probability per bin), written
    atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefkit.io import save_figure

    figure, axis = plt.subplots(figsize=(4.8, 4.4))
    used = [row for row in table if row["count"]]
    axis.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="perfect calibration")
    axis.plot([r["predicted"] for r in used], [r["observed"] for r in used], "o-", color="C0", label="judge")
    for row in used:
        axis.annotate(str(row["count"]), (row["predicted"], row["observed"]), fontsize=7, xytext=(3, -9),
                      textcoords="offset points")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("predicted P(a ≻ b)")
    axis.set_ylabel("observed frequency")
    axis.set_title(title, fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return save_figure(figure, path)
