"""The demo's report: the summary table and five plots, rendered by `prefkit.eval.report` (markdown + a
self-contained HTML page)."""

from __future__ import annotations

from pathlib import Path


def verdict(methods: dict) -> list[str]:
    """What the run shows, against the reference: each method's exact gap on the cyclic prompts (the self-play
    methods' target is 0, the Nash equilibrium), its generation entropy as a share of the reference's, and
    whether MPO's last iterate ends below the fixed magnet's."""
    reference = methods["reference"]
    lines = [f"{name}: exact gap {m['duality_gap']:.4f} ({m['duality_gap'] / reference['duality_gap']:.2f}x the "
             f"reference's), entropy {m['entropy'] / reference['entropy']:.0%} of the reference's, win rate "
             f"{m['win_rate_vs_reference']:.3f}" for name, m in methods.items() if name != "reference"]
    fixed = next((m for name, m in methods.items() if name.startswith("fixed magnet")), None)
    if "mpo" in methods and fixed is not None:
        below = methods["mpo"]["duality_gap"] < fixed["duality_gap"]
        lines.append(f"MPO's last iterate ends {'**below**' if below else '**not below**'} the fixed magnet's "
                     f"regularised equilibrium: {methods['mpo']['duality_gap']:.4f} against "
                     f"{fixed['duality_gap']:.4f}")
    return lines


def write_report(out: Path, results: dict) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    from prefkit.eval.report import render_report

    methods = results["methods"]
    offline = [n for n in results["curves"] if "epoch" in (results["curves"][n] or [{}])[0]]
    selfplay = [n for n in results["curves"] if n not in offline]  # in SELFPLAY's order
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    rows = [{"method": name, "win rate vs reference": f"{m['win_rate_vs_reference']:.3f}",
             "duality gap (cyclic)": f"{m['duality_gap']:.4f}", "mass outside canonical": f"{m['mass_outside']:.3f}",
             "generation entropy": f"{m['entropy']:.3f}"} for name, m in methods.items()]
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    sections = [
        ("Verdict", "\n".join(f"- {line}" for line in verdict(methods)), ()),
        ("Summary", [f"All numbers are exact under the task's oracle (no sampling noise) except generation "
                     f"entropy, which is measured on sampled answers. Seed {results['seed']}. Time: {seconds}.", rows],
         [_bars(figures / "win_rate.png", methods, "win_rate_vs_reference", "win rate vs reference", 0.5,
                "win rate (exact)"),
          _bars(figures / "gap.png", methods, "duality_gap", "exact duality gap, cyclic prompts", None,
                "duality gap (win-rate units)")]),
        ("Offline methods across epochs", "Generation entropy and the per-token contrastive logit z̄ (chosen minus "
         "rejected, mean over the epoch's last logging window) after each epoch. StaPO's band is β·z̄ in "
         "(left_margin, right_margin).",
         [_lines(figures / "entropy_epochs.png", results, offline, "epoch", "entropy", "generation entropy",
                 methods["reference"]["entropy"]),
          _lines(figures / "contrastive_epochs.png", results, offline, "epoch", "contrastive_logit",
                 "contrastive logit z̄ (per token)", None)]),
        ("Self-play: the last iterate, trained and exact",
         "Exact duality gap of the trained model on the cyclic eval prompts after each iteration (solid), beside "
         "the game lab's exact tabular dynamics from the same starting distributions (dashed). MPO refreshes its "
         "magnet every 6 iterations and its last iterate approaches the Nash equilibrium (gap 0); with a fixed "
         "magnet (MPO without refresh, the same method as INPO) it settles at the regularised equilibrium; SPPO's "
         "last iterate (multiplicative weights) cycles. The second plot runs the tabular dynamics ten times "
         "longer.",
         [_trained_vs_exact(figures / "gap_iterations.png", results, selfplay, methods["reference"]["duality_gap"]),
          _lab(figures / "gap_lab.png", results)]),
    ]
    sections += _evaluation_sections(results.get("evaluations", {}).get("mpo"), figures / "mpo")
    return render_report("prefkit demo: every method on the bundled task", sections, out)


def _evaluation_sections(evaluation: dict | None, figures: Path) -> list[tuple]:
    """MPO's final policy through `prefkit eval`'s own sections and figures (prefkit.eval.sections): the numbers
    of the summary table come from the same evaluation, shown here per prompt family and per prompt."""
    from prefkit.eval.plots import plot_results
    from prefkit.eval.sections import report_sections

    if evaluation is None:
        return []
    figures.mkdir(exist_ok=True)
    return [(f"MPO's final policy: {heading[0].lower()}{heading[1:]}", body, images)
            for heading, body, images in report_sections(evaluation, plot_results(evaluation, figures))]


def _save(fig, path: Path) -> Path:
    from prefkit.io import save_figure

    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _bars(path: Path, methods: dict, key: str, title: str, line: float | None, ylabel: str) -> Path:
    """One bar per method, coloured by family (the reference, the offline methods, self-play), with a legend."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = list(methods)
    families = [("reference", "#888")] + [("offline", "C0")] * 3 + [("self-play", "C1")] * (len(names) - 4)
    ax.bar(names, [methods[n][key] for n in names], color=[colour for _, colour in families])
    handles = [Patch(color=colour, label=family) for family, colour in dict(families).items()]
    if line is not None:
        handles.append(ax.axhline(line, color="k", lw=0.8, ls="--", label=f"{line:g}"))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(handles=handles, fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, path)


def _trained_vs_exact(path: Path, results: dict, names: list, start: float) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for colour, name in enumerate(names):
        points = [{"iteration": 0, "duality_gap": start, "tabular_gap": start}] + results["curves"][name]
        steps = [p["iteration"] for p in points]
        ax.plot(steps, [p["duality_gap"] for p in points], color=f"C{colour}", label=f"{name} (trained)")
        ax.plot(steps, [p["tabular_gap"] for p in points], color=f"C{colour}", ls="--", lw=1,
                label=f"{name} (exact tabular)")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel("exact duality gap")
    ax.set_title("self-play on the cyclic prompts: last iterate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _lab(path: Path, results: dict) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for colour, (name, gaps) in enumerate(results["lab"].items()):
        ax.plot(range(len(gaps)), gaps, color=f"C{colour}", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step of the exact tabular dynamics")
    ax.set_ylabel("exact duality gap")
    ax.set_title("the game lab, same games and starts, 10x longer")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _lines(path: Path, results: dict, names: list, x: str, y: str, title: str, reference: float | None,
           log: bool = False) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name in names:
        points = [p for p in results["curves"][name] if p.get(y) is not None]
        ax.plot([p[x] for p in points], [p[y] for p in points], marker="o", label=name)
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8, ls="--", label="reference")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
