"""Exact measures of how far a policy is from equilibrium in a preference game.

Definitions as in docs/games.md and the MPO paper (Wang et al. 2024, arXiv 2410.16714): the duality gap of symmetric self-play
DG(pi) = 2 max_y P(y beats pi) - 1, its KL-regularised version, the Nash equilibrium by linear programming and
the quantal-response equilibrium (QRE) of the regularised game, which is where a fixed magnet leads.
All functions take one game (n x n) or a batch (k x n x n) and broadcast policies over the batch.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog, root

from prefkit.errors import PrefkitError
from prefkit.games.matrices import check_preference


def win_rates(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """q[y] = P(y beats pi) for every action y (batched: P is k x n x n, pi is k x n)."""
    return np.matmul(P, pi[..., None])[..., 0]


def duality_gap(P, pi) -> np.ndarray | float:
    """DG(pi) = 2 max_y P(y beats pi) - 1: zero exactly at a Nash equilibrium, positive elsewhere."""
    P = check_preference(P)
    pi = check_policy(pi, P.shape[-1], "pi")
    return 2.0 * win_rates(P, pi).max(axis=-1) - 1.0


def regularised_gap(P, pi, alpha: float, magnet=None) -> np.ndarray | float:
    """Duality gap of the game regularised by alpha * KL(. || magnet): zero exactly at the QRE.

    DG_alpha(pi; mu) = 2 [alpha log E_{y~mu} exp(P(y beats pi) / alpha) + alpha KL(pi || mu) - 1/2].
    """
    P = check_preference(P)
    n = P.shape[-1]
    pi = check_policy(pi, n, "pi")
    mu = check_policy(np.full(n, 1.0 / n) if magnet is None else magnet, n, "magnet", positive=True)
    if not alpha > 0:
        raise PrefkitError(f"regularised_gap needs alpha > 0; got {alpha}")
    return regularised_gap_q(win_rates(P, pi), np.log(pi), np.log(mu), alpha)


def regularised_gap_q(q, log_pi, log_mu, alpha: float):
    """The regularised gap from the win rates q = P pi (the driver's inner loop already has them)."""
    z = log_mu + q / alpha
    top = z.max(axis=-1)
    log_mean_exp = top + np.log(np.exp(z - top[..., None]).sum(axis=-1))
    return 2.0 * (alpha * log_mean_exp + alpha * kl(np.exp(log_pi), np.exp(log_mu)) - 0.5)


def kl(p, q) -> np.ndarray | float:
    """KL(p || q) along the last axis, with 0 log 0 = 0."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def nash(P) -> np.ndarray:
    """A Nash equilibrium (von Neumann winner) by linear programming: max_pi min_j P(pi beats y_j).

    Unique for generic games; for degenerate ones (ties) it is one of the equilibria.
    """
    P = check_preference(P)
    if P.ndim == 3:
        return np.stack([nash(game) for game in P])
    n = len(P)
    # Variables (pi_1..pi_n, v); maximise v subject to v <= sum_i pi_i P[i, j] for every j.
    cost = np.r_[np.zeros(n), -1.0]
    A_ub = np.c_[-P.T, np.ones(n)]
    result = linprog(cost, A_ub=A_ub, b_ub=np.zeros(n), A_eq=np.r_[np.ones(n), 0.0][None, :], b_eq=[1.0],
                     bounds=[(0, None)] * n + [(None, None)], method="highs")
    if not result.success:  # cannot happen for a valid preference matrix; say so if it does
        raise PrefkitError(f"linear program for the Nash equilibrium failed: {result.message}")
    pi = np.clip(result.x[:n], 0.0, None)
    return pi / pi.sum()


def qre(P, alpha: float, magnet=None) -> np.ndarray:
    """The quantal-response equilibrium of the alpha-regularised game: pi ∝ magnet * exp(P pi / alpha).

    It is the unique Nash equilibrium of the regularised game and the fixed point of MMD, INPO and online IPO
    with a fixed magnet. Solved by root finding on the logits, independently of any of the dynamics.
    """
    P = check_preference(P)
    if not alpha > 0:
        raise PrefkitError(f"qre needs alpha > 0; got {alpha}")
    n = P.shape[-1]
    mu = check_policy(np.full(n, 1.0 / n) if magnet is None else magnet, n, "magnet", positive=True)
    if P.ndim == 3:
        mus = np.broadcast_to(mu, P.shape[:2])
        return np.stack([qre(game, alpha, m) for game, m in zip(P, mus)])
    log_mu = np.log(mu)

    def residual(theta):
        pi = np.exp(theta - theta.max())
        return theta - log_mu - P @ (pi / pi.sum()) / alpha

    solution = root(residual, log_mu + P @ mu / alpha, method="hybr", tol=1e-14)
    if np.abs(residual(solution.x)).max() > 1e-9:
        raise PrefkitError(f"QRE root finding did not converge (alpha={alpha}): {solution.message}")
    pi = np.exp(solution.x - solution.x.max())
    return pi / pi.sum()


def check_policy(pi, n: int, name: str, positive: bool = False) -> np.ndarray:
    """A probability vector (or a batch of them) over n actions, or a PrefkitError naming the problem."""
    pi = np.asarray(pi, dtype=float)
    if pi.shape[-1:] != (n,):
        raise PrefkitError(f"{name} must be a distribution over the game's {n} actions; got shape {pi.shape}")
    if not np.all(np.isfinite(pi)):
        raise PrefkitError(f"{name} has NaN or infinite entries")
    if pi.min() < 0 or (positive and pi.min() <= 0):
        need = "strictly positive (every action > 0)" if positive else "non-negative"
        raise PrefkitError(f"{name} must be {need}; smallest entry is {pi.min():g}")
    if np.abs(pi.sum(axis=-1) - 1.0).max() > 1e-6:
        raise PrefkitError(f"{name} must sum to 1; sums to {pi.sum(axis=-1)}")
    return pi
