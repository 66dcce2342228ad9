"""Run reports: a training or self-play run's curves from its metrics.jsonl, drawn to be read, and a verdict that
says what changed beyond noise, rendered by `render_report` (the one report builder of train, selfplay, eval and
the demo) as `report.md` and a self-contained `report.html` in the run directory.

Every figure has axis labels with units, a legend, integer ticks where the x axis counts iterations, and a y
axis at least as wide as the metric's meaningful scale (`Curve.span`), so that a change of 5e-5 in a duality gap
draws as the flat line it is, not as a collapse. 0/1 flags (a magnet refresh) are drawn as markers, not lines.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from prefkit.eval.plots import _pyplot
from prefkit.eval.report import render_report, table
from prefkit.io import save_figure


@dataclass(frozen=True)
class Curve:
    key: str
    title: str
    ylabel: str
    span: float | None = None  # the smallest y range drawn (None: matplotlib's own)
    better: str = ""  # "lower" / "higher": the verdict's direction; "" not judged
    share: bool = False  # a value in [0, 1]: the axis stays inside it


CURVES = {
    "train": [
        Curve("loss", "loss", "loss (nats)", 0.05, "lower"),
        Curve("rewards/margins", "reward margin (chosen − rejected)", "β · log-ratio margin (nats)", 0.05, "higher"),
        Curve("rewards/accuracies", "reward accuracy", "share of pairs with chosen > rejected", 0.1, "higher",
              share=True),
        Curve("contrastive_logit", "contrastive logit", "log π(chosen) − log π(rejected) (nats)", 0.5),
        Curve("entropy", "token entropy", "entropy (nats / token)", 0.1),
        Curve("learning_rate", "learning rate", "learning rate"),
        Curve("grad_norm", "gradient norm", "L2 norm of the gradient"),
    ],
    "selfplay": [
        Curve("duality_gap", "exact duality gap", "duality gap (win-rate units)", 0.05, "lower"),
        Curve("winrate_vs_initial", "win rate against the initial policy", "win rate", 0.1, share=True),
        Curve("winrate_vs_previous", "win rate against the previous iteration", "win rate", 0.1, share=True),
        Curve("kl_to_initial", "KL to the initial policy", "KL (nats)", 0.05),
        Curve("kl_to_magnet", "KL to the magnet", "KL (nats)", 0.05),
        Curve("entropy", "token entropy", "entropy (nats / token)", 0.1),
        Curve("length", "response length", "tokens", 1.0),
        Curve("loss", "loss", "loss", 0.05),
    ],
}
X_LABELS = {"train": "optimizer step", "selfplay": "iteration"}
FLAG = "refreshed"  # self-play's 0/1 magnet refresh, drawn as markers


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
    return (np.array([s for s, _ in rows], dtype=float), np.array([v for _, v in rows], dtype=float))


def eval_key(records: list[dict], key: str) -> str | None:
    """The evaluation twin of `key` as the run logged it (`eval/loss`, or TRL's `eval_loss`)."""
    return next((k for k in (f"eval/{key}", f"eval_{key}") if any(k in r for r in records)), None)


def figure(records: list[dict], curve: Curve, command: str, path: Path) -> Path | None:
    """One metric's figure (with its evaluation twin and interval when logged), or None if it was not logged."""
    steps, values = series(records, curve.key)
    if len(values) == 0:
        return None
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.4, 3.6))
    marker = "o" if len(values) <= 30 else None
    axis.plot(steps, values, marker=marker, color="C0", label="train" if command == "train" else "policy")
    shown = [values]
    low, high = series(records, f"{curve.key}_low")[1], series(records, f"{curve.key}_high")[1]
    if len(low) == len(values) == len(high):
        axis.fill_between(steps, low, high, color="C0", alpha=0.2, label="95% interval")
        shown += [low, high]
    twin = eval_key(records, curve.key)
    if twin:
        eval_steps, eval_values = series(records, twin)
        axis.plot(eval_steps, eval_values, marker="s", color="C1", label="evaluation")
        shown.append(eval_values)
    if curve.share:
        axis.axhline(0.5, color="grey", lw=0.8, ls=":", label="0.5")
    _flags(axis, records)
    _limits(axis, np.concatenate(shown), curve)
    axis.set_xlabel(X_LABELS[command])
    axis.set_ylabel(curve.ylabel)
    axis.set_title(curve.title)
    if command == "selfplay":
        from matplotlib.ticker import MaxNLocator

        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _flags(axis, records: list[dict]) -> None:
    steps, values = series(records, FLAG)
    refreshed = steps[values > 0.5]
    for index, step in enumerate(refreshed):
        axis.axvline(step, color="C2", lw=1, ls="--", label="magnet refresh" if index == 0 else None)


def _limits(axis, values: np.ndarray, curve: Curve) -> None:
    """At least `curve.span` of y range (and a tenth of the values' size), centred on the data; shares stay in
    [0, 1]."""
    values = values[np.isfinite(values)]
    if curve.span is None or len(values) == 0:
        return
    low, high = float(values.min()), float(values.max())
    span = max(curve.span, 0.1 * max(abs(low), abs(high)), high - low)
    pad = 0.08 * span
    centre = (low + high) / 2
    bottom, top = centre - span / 2 - pad, centre + span / 2 + pad
    if curve.share:  # slide the window inside [0, 1]
        bottom, top = (0.0, top - bottom) if bottom < 0 else (bottom, top)
        bottom, top = (bottom - (top - 1.0), 1.0) if top > 1 else (bottom, top)
        bottom = max(bottom, 0.0)
    axis.set_ylim(bottom, top)


@dataclass(frozen=True)
class Change:
    """How a metric moved from the first to the last fifth of the run, against its noise."""

    key: str
    first: float
    last: float
    noise: float  # standard error of last − first, from the step-to-step scatter

    def words(self, better: str) -> str:
        delta = self.last - self.first
        if not math.isfinite(self.noise):
            return f"`{self.key}`: {self.first:.4g} → {self.last:.4g} (too few records to judge the noise)"
        if abs(delta) <= 2 * self.noise:
            verdict = "within noise"
        else:
            verdict = "improved" if (delta < 0) == (better == "lower") else "got worse"
        return (f"`{self.key}`: {self.first:.4g} → {self.last:.4g}, **{verdict}** (change {delta:+.3g}, "
                f"2 standard errors {2 * self.noise:.2g})")


def change(records: list[dict], key: str) -> Change | None:
    _, values = series(records, key)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    window = max(1, len(values) // 5)
    first, last = values[:window], values[-window:]
    scatter = np.std(np.diff(values), ddof=1) / math.sqrt(2) if len(values) >= 3 else math.inf
    noise = scatter * math.sqrt(1 / len(first) + 1 / len(last))
    return Change(key, float(first.mean()), float(last.mean()), float(noise))


def verdict(records: list[dict], command: str) -> list[str]:
    """One line per judged metric (and its evaluation twin): improved, got worse, or within noise; and for
    self-play, whether the final policy beats the initial one beyond its win rate's interval."""
    lines = []
    for curve in CURVES[command]:
        for key in filter(None, (curve.key, eval_key(records, curve.key))):
            moved = change(records, key) if curve.better else None
            if moved is not None:
                lines.append(moved.words(curve.better))
    last = next((r for r in reversed(records) if "winrate_vs_initial_low" in r), None)
    if last is not None:
        low, rate, high = last["winrate_vs_initial_low"], last["winrate_vs_initial"], last["winrate_vs_initial_high"]
        side = ("**beats** the initial policy" if low > 0.5 else "**loses** to the initial policy" if high < 0.5
                else "is **not distinguishable** from the initial policy")
        lines.append(f"the final policy {side}: win rate {rate:.3f} [{low:.3f}, {high:.3f}]")
    return lines or ["too few records to judge"]


def write_run_report(run_dir, command: str, config=None) -> tuple[Path, Path] | None:
    """`run_dir/report.md` and `report.html` with the verdict, the curves (PNGs under `run_dir/plots/`) and the
    settings; None when the run logged nothing."""
    from prefkit.train.tracking import read_metrics

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        return None
    images = [p for p in (figure(records, c, command, run_dir / "plots" / f"{c.key.replace('/', '_')}.png")
                          for c in CURVES[command]) if p is not None]
    sections = [("Verdict", ["\n".join(f"- {line}" for line in verdict(records, command)),
                             "First fifth of the logged records against the last fifth; the noise is the "
                             "step-to-step scatter of the metric."]),
                ("Curves", None, images)]
    if config is not None:
        sections.append(("Settings", table([{"setting": k, "value": str(v)} for k, v in asdict(config).items()])))
    return render_report(f"prefkit {command}: {run_dir.resolve().name}", sections, run_dir)
