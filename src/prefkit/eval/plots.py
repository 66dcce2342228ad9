"""Figures of an evaluation, drawn from the JSON-able dict evaluate_model returns (so they can be redrawn from
eval.json alone). One function per figure, registered with the section it needs; matplotlib is imported inside
the functions, and files are written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from prefkit.io import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _histogram(values, path, *, title: str, xlabel: str, marker: float | None = None) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    axis.hist(np.asarray(values, dtype=float), bins=min(40, max(5, len(values) // 3)), color="C0", alpha=0.85)
    if marker is not None:
        axis.axvline(marker, color="k", lw=1, ls="--")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("pairs")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


def _bars(groups: dict[str, list[float]], labels: list[str], path, *, title: str, ylabel: str,
          rotate: bool = False) -> Path:
    """Grouped bars: one colour per entry of `groups` (model, reference), one group per label."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6.4, 0.7 * len(labels) + 2), 3.9))
    width = 0.8 / len(groups)
    x = np.arange(len(labels))
    for index, (name, values) in enumerate(groups.items()):
        axis.bar(x + (index - (len(groups) - 1) / 2) * width, values, width, label=name, color=f"C{index}")
    axis.set_xticks(x, labels, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def _cosines(section: dict, path) -> Path:
    return _histogram(section["cosines"], path, title=f"gradient cosine cos(g_w, g_l), {section['params']}",
                      xlabel="cos(∇log π(y_w), ∇log π(y_l))")


def _margins(section: dict, path) -> Path:
    return _histogram(section["rewards"]["margins"], path, title="reward margins β(ρ_w − ρ_l)",
                      xlabel="reward margin", marker=0.0)


def _entropy(section: dict, path) -> Path:
    labels = ["token H"] + [f"H{n}" for n in section["model"]["ngram_entropy"]]
    groups = {who: [section[who]["token_entropy"], *section[who]["ngram_entropy"].values()]
              for who in ("model", "reference") if who in section}
    return _bars(groups, labels, path, title="generation entropy (nats)", ylabel="nats")


def _gaps(section: dict, path) -> Path:
    labels = [row["prompt"].removeprefix("pick: ") for row in section["model"]["prompts"]]
    groups = {who: [row["gap"] for row in section[who]["prompts"]] for who in ("model", "reference")
              if who in section}
    return _bars(groups, labels, path, title="exact duality gap per prompt", ylabel="duality gap", rotate=True)


# figure name -> (section it is drawn from, drawing function, what must be in the section)
PLOTS: dict[str, tuple[str, Callable, str | None]] = {
    "ranking_margins": ("ranking", _margins, "rewards"),
    "generation_entropy": ("generation", _entropy, None),
    "exact_gaps": ("exact_gap", _gaps, None),
    "entanglement_cosines": ("entanglement", _cosines, None),
}


def plot_results(results: dict, out_dir) -> dict[str, Path]:
    """Every figure whose section is in results["sections"], as out_dir/<name>.png; returns name -> path."""
    out, sections = {}, results.get("sections", {})
    for name, (section, draw, needs) in PLOTS.items():
        if section in sections and (needs is None or needs in sections[section]):
            out[name] = draw(sections[section], Path(out_dir) / f"{name}.png")
    return out
