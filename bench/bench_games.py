"""Benchmark of the games lab: k random n x n games simulated side by side for one algorithm.

    python bench/bench_games.py                       # 1000 games x 10 actions x 5000 steps, MPO
    python bench/bench_games.py --algorithm mwu --eta 0.5 --alpha 0
    python bench/bench_games.py --table --games 100 --steps 20000   # docs/games.md random-game table

Prints the machine facts, the wall time (best of --repeat runs) and the final gaps, so that a result line
can be pasted into bench/RESULTS.md as it is.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from prefkit import games


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=1000)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--algorithm", default="mpo")
    parser.add_argument("--eta", type=float, default=0.8)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true",
                        help="instead: median and worst last-iterate gap of every algorithm at 1e3, 5e3, 2e4 steps")
    args = parser.parse_args()
    if args.table:
        return table(args)

    P = games.random_game(args.n, seed=args.seed, batch=args.games)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run = games.simulate(P, args.algorithm, args.steps, eta=args.eta, alpha=args.alpha, keep_policies=False)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} numpy={np.__version__} "
          f"threads(OMP_NUM_THREADS)={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{args.algorithm}: {args.games} games x {args.n} actions x {args.steps} steps (eta={args.eta}, "
          f"alpha={args.alpha}, {run.params['refresh_every'] or 'no'} refresh period)")
    print(f"wall time: best {best:.2f} s of {args.repeat} (all: {', '.join(f'{t:.2f}' for t in times)}); "
          f"{args.games * args.steps / best / 1e6:.2f} M game-steps/s")
    print(f"last-iterate gap: median {np.median(run.gaps[:, -1]):.2e}, worst {run.gaps[:, -1].max():.2e}")


def table(args) -> None:
    """Markdown table for docs/games.md; alpha goes only to the methods that need a magnet."""
    P = games.random_game(args.n, seed=args.seed, batch=args.games)
    milestones = [t for t in (1000, 5000, 20000) if t <= args.steps]
    print("| algorithm | " + " | ".join(f"t={t} median / worst" for t in milestones) + " | seconds |")
    print("|---" * (len(milestones) + 2) + "|")
    for key, spec in games.ALGORITHMS.items():
        alpha = args.alpha if spec.magnet == "required" else 0.0
        start = time.perf_counter()
        run = games.simulate(P, key, args.steps, eta=args.eta, alpha=alpha, keep_policies=False)
        seconds = time.perf_counter() - start
        cells = [f"{np.median(run.gaps[:, t]):.1e} / {run.gaps[:, t].max():.1e}" for t in milestones]
        print(f"| {key} (alpha={alpha:g}) | " + " | ".join(cells) + f" | {seconds:.1f} |")


if __name__ == "__main__":
    main()
