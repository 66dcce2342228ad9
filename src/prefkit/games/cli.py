"""`prefkit game`: run several dynamics on one game and write the gaps (CSV), the gap figure, the simplex
figure for three-action games, and a summary table. `--game kuhn` runs the extensive-form lab instead.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from prefkit.errors import PrefkitError

DEFAULTS = {  # per family: step size, magnet strength, algorithms (MPO's Kuhn figure uses MMD's eta=0.1, alpha=1)
    "matrix": {"eta": 0.5, "alpha": 0.2, "algorithms": "mpo,mmd,inpo,sppo,nash-md"},
    "kuhn": {"eta": 0.1, "alpha": 1.0, "algorithms": "md,mmd,mmd-moving,mpo"},
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "game", help="exact preference-game lab: what each self-play method converges to",
        description="Simulate self-play dynamics on a small preference game (or Kuhn poker) with exact gaps.")
    parser.add_argument("--game", default="cyclic3",
                        help="cyclic3, rps, perturbed-rps, random, bradley-terry, mixture, kuhn, or FILE.csv|FILE.npy")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated: mpo, mmd, mmd-moving, inpo, comal, sppo|mwu|md, nash-md, online-ipo, "
                             "extragradient, optimistic-mwu (default depends on the game)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--eta", type=float, default=None, help="step size (default 0.5; Kuhn 0.1)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="magnet strength for the methods that need one (default 0.2; Kuhn 1.0)")
    parser.add_argument("--refresh-every", type=int, default=None,
                        help="MPO/COMAL magnet period (default 3 (1 + eta alpha) / (eta alpha))")
    parser.add_argument("--samples", type=int, default=None,
                        help="estimate win rates from this many sampled opponents per action (matrix games)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --game random/mixture and for --samples")
    parser.add_argument("--n", type=int, default=10, help="number of actions for generated games")
    parser.add_argument("--out", type=Path, default=Path("runs/game"), help="output directory")
    parser.set_defaults(run=_run)
    return parser


def _load_game(name: str, n: int, seed: int):
    from prefkit.games.matrices import NAMED_GAMES, load

    if name in NAMED_GAMES:
        return NAMED_GAMES[name](n, seed)
    if name.lower().endswith((".csv", ".npy")):
        return load(name)
    raise PrefkitError(f"unknown game {name!r}; use one of {', '.join([*NAMED_GAMES, 'kuhn'])} or a .csv/.npy file")


def _settings(key: str, args, defaults: dict) -> dict:
    """Hyper-parameters for one algorithm: alpha only where a magnet is required, refresh only where used."""
    from prefkit.games.dynamics import ALGORITHMS

    spec = ALGORITHMS[key]
    alpha = defaults["alpha"] if args.alpha is None else args.alpha
    settings = {"eta": defaults["eta"] if args.eta is None else args.eta,
                "alpha": alpha if spec.magnet == "required" else 0.0}
    if spec.refresh:
        settings["refresh_every"] = args.refresh_every
    return settings


def _run(args) -> int:
    import numpy as np

    from prefkit.games import kuhn
    from prefkit.games.driver import simulate
    from prefkit.games.dynamics import canonical_name
    from prefkit.games.metrics import nash
    from prefkit.games.plots import atomic_write, plot_gaps, plot_simplex

    family = "kuhn" if args.game == "kuhn" else "matrix"
    defaults = DEFAULTS[family]
    if args.steps < 1:
        raise PrefkitError(f"--steps must be at least 1; got {args.steps}")
    # Keep the user's spelling (sppo, nash_md) as the label; the registry key decides what runs.
    names = [name.strip() for name in (args.algorithms or defaults["algorithms"]).split(",") if name.strip()]
    keys = dict(zip(names, map(canonical_name, names)))
    if len(set(keys.values())) != len(names):
        raise PrefkitError(f"--algorithms lists the same algorithm twice: {args.algorithms}")
    if not keys:
        raise PrefkitError("--algorithms is empty")
    if family == "kuhn" and args.samples is not None:
        raise PrefkitError("--samples applies to matrix games, not to --game kuhn")
    if family == "kuhn":
        runs = {name: kuhn.simulate(key, args.steps, **_settings(key, args, defaults)) for name, key in keys.items()}
        equilibrium, gap_name = None, "exploitability"
    else:
        P = _load_game(args.game, args.n, args.seed)
        runs = {name: simulate(P, key, args.steps, samples=args.samples, seed=args.seed,
                               **_settings(key, args, defaults)) for name, key in keys.items()}
        equilibrium, gap_name = nash(P), "duality gap"

    args.out.mkdir(parents=True, exist_ok=True)
    columns = {"step": np.arange(args.steps + 1)}
    for key, run in runs.items():
        columns[f"{key}_last"], columns[f"{key}_average"] = run.gaps, run.average_gaps
    text = io.StringIO()
    np.savetxt(text, np.column_stack(list(columns.values())), delimiter=",", header=",".join(columns),
               comments="", fmt=["%d"] + ["%.6e"] * (len(columns) - 1))
    written = [atomic_write(args.out / "gaps.csv", lambda file: file.write(text.getvalue().encode()))]
    title = f"{args.game}: {gap_name} (solid: last iterate, dashed: average)"
    written.append(plot_gaps(runs, args.out / "gaps.png", title=title, ylabel=gap_name, logx=family == "kuhn"))
    if equilibrium is not None and len(equilibrium) == 3:
        written.append(plot_simplex(runs, args.out / "simplex.png", equilibrium=equilibrium,
                                    title=f"{args.game}: self-play trajectories"))
    print(summary(runs, args.steps, gap_name, equilibrium))
    for path in written:
        print(f"wrote {path}")
    return 0


def summary(runs: dict, steps: int, gap_name: str, equilibrium=None) -> str:
    """Fixed-width table: the last-iterate gap at a few milestones, the average-iterate gap, the settings."""
    import numpy as np

    milestones = [t for t in (100, 1000, 10000, 100000) if t < steps] + [steps]
    head = f"{'algorithm':<15}" + "".join(f"{'t=' + str(t):>11}" for t in milestones) + f"{'average':>11}  settings"
    lines = [f"{gap_name} of the last iterate", head]
    for key, run in runs.items():
        settings = ", ".join(f"{k}={v}" for k, v in run.params.items() if v not in (None, 0.0) and k != "seed")
        gaps = "".join(f"{np.max(run.gaps[..., t]):>11.2e}" for t in milestones)
        lines.append(f"{key:<15}{gaps}{np.max(run.average_gaps[..., -1]):>11.2e}  {settings}")
    if equilibrium is not None and len(equilibrium) <= 6:
        lines.append("Nash equilibrium (LP): " + ", ".join(f"{p:.4f}" for p in equilibrium))
    return "\n".join(lines)
