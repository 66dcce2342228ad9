"""`prefkit game`: run several dynamics on one game and write the gaps (CSV), the gap figure, the simplex
figure for three-action games, and a summary table. `--game kuhn` runs the extensive-form lab instead.
`prefkit game plan` ranks MPO's (eta, alpha, refresh period) on a game, or on the bundled task's cyclic games
from a model's own distributions (`prefkit.games.plan`, in `prefkit.games.planner`).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from prefkit.errors import PrefkitError

DEFAULTS = {  # per family: step size, magnet strength, algorithms (MPO's Kuhn figure uses MMD's eta=0.1, alpha=1)
    "matrix": {"eta": 0.5, "alpha": 0.2, "algorithms": "mpo,mmd,inpo,sppo,nash_md"},
    "kuhn": {"eta": 0.1, "alpha": 1.0, "algorithms": "md,mmd,mmd_moving,mpo"},
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "game", help="exact preference-game lab: what each self-play method converges to",
        description="Simulate self-play dynamics on a small preference game (or Kuhn poker) with exact gaps.")
    parser.add_argument("--game", default="cyclic3",
                        help="cyclic3, rps, perturbed-rps, random, bradley-terry, mixture, kuhn, or FILE.csv|FILE.npy")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated: mpo, mmd, mmd_moving, inpo, comal, sppo|mwu|md, nash_md, online_ipo, "
                             "extragradient, optimistic_mwu (default depends on the game)")
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
    add_plan_parser(parser.add_subparsers(dest="action", metavar="[plan]",
                                          help="plan: rank MPO's settings instead (prefkit game plan --help)"))
    return parser


def _listed(kind, words: str):
    """An argparse type for comma-separated values of `kind`."""

    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {words}, got {text!r}") from None

    return parse


_floats, _ints = _listed(float, "numbers"), _listed(int, "whole numbers")


def _setting(text: str) -> tuple[float, float, int]:
    values = _floats(text)
    if len(values) != 3 or values[2] != int(values[2]):
        raise argparse.ArgumentTypeError(f"expected ETA,ALPHA,M (e.g. 2,0.2,2), got {text!r}")
    return values[0], values[1], int(values[2])


def add_plan_parser(actions) -> None:
    parser = actions.add_parser(
        "plan", help="rank MPO's (eta, alpha, refresh period) by the exact last-iterate gap after N steps",
        description="Simulate exact MPO for a grid of (eta, alpha, refresh period M) from a start distribution and "
                    "rank the settings by the mean duality gap of the last iterates within --iterations, beside "
                    "the fixed-magnet and SPPO baselines (docs/games.md, 'Planning MPO's settings').")
    parser.add_argument("--game", default=None, help="as for `prefkit game` (matrix games; default cyclic3)")
    parser.add_argument("--n", type=int, default=10, help="number of actions for generated games")
    parser.add_argument("--seed", type=int, default=0, help="seed for --game random/mixture")
    parser.add_argument("--start", default=None,
                        help="start distribution (also the first magnet): comma-separated, or FILE.csv|FILE.npy "
                             "with one row per game; default uniform")
    parser.add_argument("--task-model", default=None, metavar="PATH",
                        help="plan on the bundled task's cyclic prompts, starting from this model's distribution "
                             "over each prompt's canonical answers (e.g. runs/task/reference)")
    parser.add_argument("--split", default="train", choices=("train", "eval", "all"),
                        help="which cyclic prompts of the task (default train: what self-play trains on)")
    # Grid defaults live in prefkit.games.planner (imported only when the command runs); the output prints them.
    parser.add_argument("--eta", type=_floats, default=None, help="step sizes (default 0.5 to 8)")
    parser.add_argument("--alpha", type=_floats, default=None, help="magnet strengths (default 0.05 to 0.5)")
    parser.add_argument("--refresh", type=_ints, default=None, help="magnet periods M in steps (default 1 to 20)")
    parser.add_argument("--iterations", type=int, default=60, help="the budget the settings are ranked at")
    parser.add_argument("--window", type=int, default=5, help="rank by the mean gap of this many last iterates")
    parser.add_argument("--horizon", type=int, default=None,
                        help="run each setting this long to tell converging from cycling (default 10 x iterations)")
    parser.add_argument("--tol", type=float, default=None,
                        help="a game whose gap at the horizon is below this counts as converged (default 0.01)")
    parser.add_argument("--top", type=int, default=10, help="table rows to print (--json prints all)")
    parser.add_argument("--show", type=_setting, action="append", default=[], metavar="ETA,ALPHA,M",
                        help="also print this setting's row and rank (repeatable), e.g. the current config's")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    parser.set_defaults(run=_plan)


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
    from prefkit.games.plots import plot_gaps, plot_simplex
    from prefkit.io import write_text

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
    written = [write_text(args.out / "gaps.csv", text.getvalue())]
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


def _plan(args) -> int:
    import json

    import numpy as np

    from prefkit.games.metrics import duality_gap
    from prefkit.games.planner import (DEFAULT_ALPHAS, DEFAULT_ETAS, DEFAULT_REFRESH, DEFAULT_TOL, HORIZON_FACTOR,
                                       plan, recommended)

    games, starts, source = _plan_games(args)
    grid = {"etas": args.eta or DEFAULT_ETAS, "alphas": args.alpha or DEFAULT_ALPHAS,
            "refresh": args.refresh or DEFAULT_REFRESH}
    shown = [(float(e), float(a), int(m)) for e, a, m in args.show]
    # A --show setting outside the grid is planned too, so that its rank means something.
    extra = [s for s in dict.fromkeys(shown)
             if not (s[0] in grid["etas"] and s[1] in grid["alphas"] and s[2] in grid["refresh"])]
    tol = DEFAULT_TOL if args.tol is None else args.tol
    budget = {"iterations": args.iterations, "window": args.window, "horizon": args.horizon, "tol": tol}
    rows = plan(games, starts, **budget, **{k: list(v) for k, v in grid.items()})
    for eta, alpha, m in extra:
        rows += plan(games, starts, etas=[eta], alphas=[alpha], refresh=[m], **budget)
    rows.sort(key=lambda row: row.score)
    horizon = args.horizon or HORIZON_FACTOR * args.iterations
    start_gap = float(np.mean([duality_gap(P, pi) for P, pi in zip(games, starts)]))
    best = recommended(rows)
    report = {"source": source, "games": len(games), "start_gap": start_gap, "iterations": args.iterations,
              "window": args.window, "horizon": horizon, "tol": tol,
              "ranked_by": f"mean over games of the mean last-iterate duality gap of iterates "
                           f"{args.iterations - args.window + 1}..{args.iterations}",
              "grid": {k: list(v) for k, v in grid.items()},
              "recommended": None if best is None else best.to_dict(), "rows": [row.to_dict() for row in rows]}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(plan_table(report, rows, args.top, shown))
    return 0


def _plan_games(args) -> tuple[list, list, str]:
    """(games, starts, a line saying where they come from) for `prefkit game plan`."""
    import numpy as np

    if args.task_model is not None:
        if args.game is not None or args.start is not None:
            raise PrefkitError("--task-model plans on the task's own games and the model's distributions; "
                               "leave out --game and --start")
        return _task_games(args.task_model, args.split)
    name = args.game or "cyclic3"
    if name == "kuhn":
        raise PrefkitError("prefkit game plan works on matrix games; Kuhn poker is not one")
    P = _load_game(name, args.n, args.seed)
    games = list(P) if P.ndim == 3 else [P]
    n = P.shape[-1]
    if args.start is None:
        return games, [np.full(n, 1.0 / n)] * len(games), f"{name}, uniform start"
    from prefkit.games.metrics import check_policy

    start = check_policy(_load_start(args.start), n, "--start", positive=True)
    starts = np.broadcast_to(start, (len(games), n)) if start.ndim == 1 else start
    if starts.ndim != 2 or len(starts) != len(games):
        raise PrefkitError(f"--start has {len(starts)} rows for {len(games)} games")
    return games, list(starts), f"{name}, start {args.start}"


def _load_start(text: str):
    import numpy as np

    if text.lower().endswith((".csv", ".npy")):
        from prefkit.games.matrices import read_array

        start = read_array(text, "start distribution")
        return start[0] if start.shape[0] == 1 and start.ndim == 2 else start  # a one-row CSV is one start
    try:
        return np.array(_floats(text))
    except argparse.ArgumentTypeError as error:
        raise PrefkitError(f"--start: {error}") from None


def _task_games(path: str, split: str) -> tuple[list, list, str]:
    """The task's cyclic games with the model's renormalised canonical distributions (torch loads only here)."""
    import numpy as np

    from prefkit.modeling.load import load_model, load_tokenizer
    from prefkit.tasks import SyntheticTask, cyclic_games

    # Scoring only: the fused modules are there to save training memory, so the model keeps its own forward.
    tokenizer, model = load_tokenizer(path), load_model(path, fuse=False).eval()
    games = cyclic_games(model, tokenizer, SyntheticTask(), split)
    outside = np.mean([g[3] for g in games])
    # The lab's games are over the canonical answers only, so the mass on anything else is dropped and the rest
    # renormalised; a floor keeps an answer the model never says reachable (MMD's update needs a positive start).
    starts = [np.maximum(g[2], 1e-12) / np.maximum(g[2], 1e-12).sum() for g in games]
    return ([g[1] for g in games], starts,
            f"task model {path}: {len(games)} cyclic {split} prompts, start = the model's distribution over each "
            f"prompt's canonical answers, renormalised (mean mass outside them, dropped: {outside:.3f})")


def plan_table(report: dict, rows, top: int, shown=()) -> str:
    """The planner's fixed-width table: the best `top` settings and any --show ones, then verdict lines."""
    ranked = list(enumerate(rows, 1))
    picked = [(rank, row) for rank, row in ranked
              if rank <= top or (row.eta, row.alpha, row.refresh_every) in shown]
    t, h = report["iterations"], report["horizon"]
    lines = [f"games: {report['source']}; mean start gap {report['start_gap']:.3f}",
             f"ranked by the {report['ranked_by']} (column 'gap@{t}'); fixed magnet and SPPO: same score, same "
             f"start; gap@{h}: the same window at the horizon",
             f"{'rank':>4} {'eta':>5} {'alpha':>5} {'M':>3} {'gap@' + str(t):>9} {'worst':>9} {'gap@' + str(h):>9} "
             f"{'M ln(1+ea)':>10} {'fixed':>7} {'sppo':>7}  verdict"]
    for rank, row in picked:
        early = " (refreshes early)" if row.refreshes_early else ""
        lines.append(f"{rank:>4} {row.eta:>5g} {row.alpha:>5g} {row.refresh_every:>3} {row.score:>9.2e} "
                     f"{row.worst:>9.2e} {row.horizon_score:>9.2e} {row.inner_progress:>10.2f} "
                     f"{row.fixed_magnet:>7.3f} {row.sppo:>7.3f}  {row.verdict}{early}")
    best = report["recommended"]
    if best is None:
        lines.append(f"warning: no setting of the grid converges within {h} steps; widen the grid")
    else:
        lines.append(f"recommended: eta={best['eta']:g}, alpha={best['alpha']:g}, refresh every "
                     f"{best['refresh_every']} (the best that converges within {h} steps): gap "
                     f"{best['score']:.3g} at {t} steps, against {best['fixed_magnet']:.3g} with a fixed magnet "
                     f"and {best['sppo']:.3g} for SPPO")
    failing = [rank for rank, row in picked if not row.converges]
    if failing:
        lines.append(f"warning: settings ranked {', '.join(map(str, failing))} do not converge within {h} steps "
                     f"(the gap there is neither half that at {t} nor below {report['tol']:g}; "
                     f"{sum(not row.converges for row in rows)} of {len(rows)} in the grid)")
    lines.append(f"refreshes early: M ln(1 + eta alpha) < 1, the magnet moves while over a third of the distance to "
                 f"the regularised equilibrium is left ({sum(row.refreshes_early for row in rows)} of {len(rows)})")
    return "\n".join(lines)
