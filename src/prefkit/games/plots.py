"""Figures of the games lab: gap against iterations (last iterate solid, average dashed) and, for three-action
games, the trajectories on the simplex. matplotlib is imported inside the functions so that the CLI and the
library import fast; files are written atomically (prefkit.io).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefkit.io import save_figure

# Gaps are plotted on a log axis; exact zeros and rounding noise below this are drawn at the floor.
FLOOR = 1e-16


def plot_gaps(runs: dict, path, *, title: str, ylabel: str = "duality gap", logx: bool = False) -> Path:
    """One line per run: solid = last iterate, dashed = average iterate, on a log gap axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.0, 4.2))
    for index, (name, run) in enumerate(runs.items()):
        colour = f"C{index % 10}"
        steps = np.arange(len(run.gaps))
        axis.plot(steps, np.maximum(run.gaps, FLOOR), color=colour, lw=1.4, label=f"{name} (last)")
        axis.plot(steps, np.maximum(run.average_gaps, FLOOR), color=colour, lw=1.0, ls="--",
                  label=f"{name} (average)")
    axis.set_yscale("log")
    if logx:
        axis.set_xscale("log")
    axis.set_xlabel("iteration")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    return save_figure(figure, path)


def _to_plane(pi):
    """Barycentric coordinates of 3-action policies -> points in an equilateral triangle."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    return np.asarray(pi) @ corners


def plot_simplex(runs: dict, path, *, equilibrium=None, labels=("a", "b", "c"), title: str = "") -> Path:
    """Trajectories of 3-action policies on the simplex; the Nash equilibrium as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.2, 4.8))
    corners = _to_plane(np.eye(3))
    axis.plot(*np.vstack([corners, corners[:1]]).T, color="0.5", lw=0.8)
    for corner, label, offset in zip(corners, labels, ((-0.05, -0.05), (0.02, -0.05), (-0.015, 0.03))):
        axis.text(corner[0] + offset[0], corner[1] + offset[1], label)
    for index, (name, run) in enumerate(runs.items()):
        points = _to_plane(run.policies)
        axis.plot(points[:, 0], points[:, 1], color=f"C{index % 10}", lw=0.8, label=name)
        axis.plot(*points[-1], marker="o", color=f"C{index % 10}", ms=4)
    if equilibrium is not None:
        axis.plot(*_to_plane(equilibrium), marker="*", color="k", ms=12, ls="none", label="Nash")
    axis.set_aspect("equal")
    axis.axis("off")
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return save_figure(figure, path)
