"""Planning MPO's settings: simulate the exact MPO dynamics over a grid of (eta, alpha, refresh period M) from a
given start, and rank the settings by how small the last-iterate duality gap is after a fixed number of steps.

Why a grid and not the theory: MMD's linear rate (Sokota et al., arXiv 2206.05825, Thm. 3.4) needs eta <= alpha/L^2
(eta <= 4 alpha for preference games) and MPO's outer loop (Wang et al., arXiv 2410.16714) assumes each
regularised game is solved before the magnet moves; a trainer with a budget of tens of iterations wants larger
steps than that, where only simulation says what happens. On the task's games, for example, a step far above
4 alpha with a magnet period of a few steps beats every setting inside the theorem's range (docs/games.md).

The magnet starts at the start distribution, as in the trainer, where the reference is the starting model. Each
setting is reported beside its two baselines from the same start: the same eta and alpha with a fixed magnet
(MMD / INPO / Nash-MD: stops at the regularised equilibrium) and SPPO (MWU) with step eta (converges only on
average). The dynamics, the driver and the gap are the lab's own (`prefkit.games.driver.simulate`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from prefkit.errors import PrefkitError
from prefkit.games.driver import simulate
from prefkit.games.matrices import check_preference

DEFAULT_ETAS = (0.5, 1.0, 2.0, 4.0, 6.0, 8.0)
DEFAULT_ALPHAS = (0.05, 0.1, 0.2, 0.5)
DEFAULT_REFRESH = (1, 2, 4, 6, 10, 20)
# MMD's inner contraction is 1 / (1 + eta alpha) per step, so M steps leave exp(-M ln(1 + eta alpha)) of the
# distance to the regularised equilibrium. Below 1 (over a third left) the magnet chases a moving target, and
# with M = 1 MPO is exactly MWU with step eta / (1 + eta alpha).
EARLY_REFRESH = 1.0
# A game counts as converging when its gap at the horizon is at most this share of its gap at the budget, or
# below the tolerance: on games whose equilibrium has small entries (the task's five-answer one) every setting
# approaches it in a slow spiral whose gap rises and falls by ~1e-2 over thousands of steps, and below ~1e-2 the
# trainer's sampled win rates cannot tell such settings apart anyway (docs/games.md, sampled mode).
CONVERGING_RATIO = 0.5
DEFAULT_TOL = 1e-2
HORIZON_FACTOR = 10  # the horizon is this many times the budget unless given


def inner_progress(eta: float, alpha: float, refresh_every: int) -> float:
    """M ln(1 + eta alpha): how many e-folds of the inner (regularised) problem one magnet period solves."""
    return refresh_every * math.log1p(eta * alpha)


def refreshes_early(eta: float, alpha: float, refresh_every: int, threshold: float = EARLY_REFRESH) -> bool:
    """True when M ln(1 + eta alpha) is well below ~2 (below `threshold`): the magnet moves before the inner
    problem has converged, so the outer loop is no longer the proximal-point iteration of exactly solved
    regularised games that MPO's analysis assumes (arXiv 2410.16714; docs/games.md)."""
    return inner_progress(eta, alpha, refresh_every) < threshold


@dataclass(frozen=True)
class PlanRow:
    """One MPO setting. Every gap is a mean over the games of the exact last-iterate duality gap; `score`, the
    ranking key, averages it over the last `window` iterates up to the budget `iterations`."""

    eta: float
    alpha: float
    refresh_every: int
    score: float          # mean over games of the mean gap of iterates iterations-window+1 .. iterations
    gap: float            # mean over games of the gap at exactly `iterations`
    worst: float          # the largest per-game score
    horizon_score: float  # the score's window, moved to the end of the longer run (`horizon` steps)
    converges: bool       # every game's horizon score is at most half its score, or below tol
    verdict: str          # "converges", or "oscillates|stalls on k/n games" within the horizon
    inner_progress: float
    refreshes_early: bool
    fixed_magnet: float   # score of the same eta, alpha with the start as a fixed magnet (no refresh)
    sppo: float           # score of SPPO / MWU with step eta

    def to_dict(self) -> dict:
        return asdict(self)


def plan(games, starts=None, *, etas: Sequence[float] = DEFAULT_ETAS, alphas: Sequence[float] = DEFAULT_ALPHAS,
         refresh: Sequence[int] = DEFAULT_REFRESH, iterations: int = 60, window: int = 5,
         horizon: int | None = None, tol: float = DEFAULT_TOL) -> list[PlanRow]:
    """Every (eta, alpha, M) of the grid on every game, best score first.

    games: one preference matrix (n x n), a stack (k x n x n), or a list of matrices of any sizes (prompts with
    different answer sets); starts: None (uniform), one distribution per game (or one for a single game or a
    stack). horizon (default 10 x iterations) is how long each setting also runs to tell whether it keeps
    converging after the budget (verdict), oscillates or stalls; a game whose gap at the horizon is below tol
    counts as converged.
    """
    groups, count = _groups(games, starts)
    horizon = HORIZON_FACTOR * iterations if horizon is None else horizon
    _check_grid(etas, alphas, refresh, iterations, window, horizon)
    if not (isinstance(tol, numbers.Real) and tol >= 0):
        raise PrefkitError(f"plan: tol must be a non-negative number; got {tol!r}")
    budget = slice(iterations - window + 1, iterations + 1)
    fixed = {(eta, alpha): _gaps(groups, count, "mmd", iterations, eta=eta, alpha=alpha)[:, budget].mean()
             for eta in etas for alpha in alphas}
    sppo = {eta: _gaps(groups, count, "mwu", iterations, eta=eta)[:, budget].mean() for eta in etas}
    rows = [_row(_gaps(groups, count, "mpo", horizon, eta=eta, alpha=alpha, refresh_every=m), budget, tol,
                 float(eta), float(alpha), int(m), float(fixed[eta, alpha]), float(sppo[eta]))
            for eta in etas for alpha in alphas for m in refresh]
    return sorted(rows, key=lambda row: row.score)


def recommended(rows: Sequence[PlanRow]) -> PlanRow | None:
    """The best-scoring setting that keeps converging after the budget (a cycling one can be low by chance)."""
    return next((row for row in rows if row.converges), None)


def _row(gaps: np.ndarray, budget: slice, tol: float, eta: float, alpha: float, refresh_every: int,
         fixed_magnet: float, sppo: float) -> PlanRow:
    """One setting's row from its exact gaps, (games, horizon + 1)."""
    iterations, window = budget.stop - 1, budget.stop - budget.start
    scores, late = gaps[:, budget].mean(axis=1), gaps[:, -window:].mean(axis=1)
    converges, verdict = _verdict(gaps, scores, late, iterations, tol)
    return PlanRow(eta, alpha, refresh_every, float(scores.mean()), float(gaps[:, iterations].mean()),
                   float(scores.max()), float(late.mean()), converges, verdict,
                   inner_progress(eta, alpha, refresh_every), refreshes_early(eta, alpha, refresh_every),
                   fixed_magnet, sppo)


def _verdict(gaps: np.ndarray, scores: np.ndarray, late: np.ndarray, iterations: int,
             tol: float) -> tuple[bool, str]:
    good = (late <= CONVERGING_RATIO * scores) | (late <= tol)
    if good.all():
        return True, "converges"
    # A gap that still rises and falls over the last `iterations` steps of the horizon oscillates (a cycle, or a
    # spiral too slow to tell from one); a flat one has stopped short of the equilibrium, as a fixed magnet does.
    tail = gaps[~good, -(iterations + 1):]
    swings = np.ptp(tail, axis=1) > 0.01 * tail.mean(axis=1)
    word = "oscillates" if swings.sum() * 2 >= len(swings) else "stalls"
    return False, f"{word} on {int((~good).sum())}/{len(good)} games"


def exact_curve(games, starts, algorithm: str, steps: int, **settings) -> np.ndarray:
    """The mean exact gap over `games` after 0..`steps` steps of `algorithm` (as `simulate` names it, with its
    settings) from `starts`, which are also the initial magnets: the tabular trajectory a trained model is
    drawn beside (prefkit demo)."""
    groups, count = _groups(games, starts)
    return _gaps(groups, count, algorithm, steps, **settings).mean(axis=0)


def _gaps(groups, count: int, algorithm: str, steps: int, **settings) -> np.ndarray:
    """(games, steps + 1) exact gaps, one batched `simulate` per game size, rows back in the caller's order."""
    out = np.empty((count, steps + 1))
    for index, P, start in groups:
        out[index] = simulate(P, algorithm, steps, init=start, magnet=start, keep_policies=False,
                              **settings).gaps
    return out


def _groups(games, starts) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """Games of equal size stacked for one batched simulation each: (indices, k x n x n, k x n), and the count."""
    if isinstance(games, np.ndarray) or (len(games) and np.ndim(games[0]) == 1):
        stack = check_preference(games, "game")
        games = list(stack) if stack.ndim == 3 else [stack]
    games = [check_preference(P, f"game {i}") for i, P in enumerate(games)]
    if not games:
        raise PrefkitError("plan needs at least one game")
    if starts is not None and len(starts) and np.isscalar(starts[0]):  # one distribution for every game
        starts = [starts] * len(games)
    starts = [np.full(len(P), 1.0 / len(P)) for P in games] if starts is None else list(starts)
    if len(starts) != len(games):
        raise PrefkitError(f"plan needs one start per game: {len(games)} games, {len(starts)} starts")
    sizes = sorted({len(P) for P in games})
    groups = []
    for n in sizes:
        index = np.array([i for i, P in enumerate(games) if len(P) == n])
        groups.append((index, np.stack([games[i] for i in index]),
                       np.stack([np.asarray(starts[i], dtype=float) for i in index])))
    return groups, len(games)


def _check_grid(etas, alphas, refresh, iterations, window, horizon) -> None:
    for name, values in (("eta", etas), ("alpha", alphas), ("refresh", refresh)):
        if not len(values) or not all(isinstance(v, numbers.Real) and math.isfinite(v) and v > 0 for v in values):
            raise PrefkitError(f"plan: {name} needs one or more positive numbers; got {list(values)!r}")
    if not all(isinstance(m, (int, np.integer)) for m in refresh):
        raise PrefkitError(f"plan: refresh periods are whole numbers of steps; got {list(refresh)!r}")
    if not (isinstance(iterations, int) and isinstance(window, int) and 1 <= window <= iterations):
        raise PrefkitError(f"plan needs 1 <= window <= iterations; got window={window}, iterations={iterations}")
    if not (isinstance(horizon, int) and horizon >= iterations + window):
        raise PrefkitError(f"plan: horizon must be at least iterations + window = {iterations + window}; "
                           f"got {horizon!r}")
