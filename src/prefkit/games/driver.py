"""The one driver every dynamic runs under, and `simulate`, its front door for preference matrices.

The driver owns what the dynamics share: normalising the policy, measuring the exact gap of the last and the
average iterate at every step, and moving the magnet (periodic refresh = MPO/COMAL, adaptive refresh once the
regularised gap is small, or MMD's geometric moving magnet). The update itself is one function from
`prefkit.games.dynamics`. Kuhn poker (`prefkit.games.kuhn`) uses the same driver with tree-computed Q-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from prefkit.errors import PrefkitError
from prefkit.games.dynamics import ALGORITHMS, Step, canonical_name, normalise
from prefkit.games.matrices import check_preference
from prefkit.games.metrics import check_policy, regularised_gap_q, win_rates


@dataclass
class Trajectory:
    """A run. For a batch of k games every array has a leading k axis; otherwise it is dropped."""

    algorithm: str
    gaps: np.ndarray  # (steps + 1,) exact gap of the last iterate after t steps
    average_gaps: np.ndarray  # (steps + 1,) exact gap of the average of iterates 0..t
    last: np.ndarray  # (n,) final policy
    average: np.ndarray  # (n,) average iterate
    policies: np.ndarray | None  # (steps + 1, n), None when keep_policies=False
    magnet: np.ndarray  # (n,) final magnet
    refreshes: np.ndarray  # how many times the magnet was reset
    params: dict = field(default_factory=dict)


class MatrixGame:
    """Exact oracle for a stack of preference matrices (k x n x n); what the driver needs from a game."""

    def __init__(self, P: np.ndarray):
        self.P = P

    def win_rate(self, pi):
        return win_rates(self.P, pi)

    def gap(self, pi, q):
        return 2.0 * q.max(axis=-1) - 1.0

    def average_weight(self, pi):
        return 1.0

    def regularised_gap(self, q, log_pi, log_mu, alpha):
        return regularised_gap_q(q, log_pi, log_mu, alpha)


def sampled_win_rate(P: np.ndarray, samples: int, rng: np.random.Generator):
    """Estimate q = P pi as the LLM trainer does: each action meets `samples` opponents drawn from pi, and each
    meeting is a Bernoulli(P) judgement. Unbiased, with variance q (1 - q) / samples."""

    def estimate(pi):
        opponents = rng.multinomial(samples, pi / pi.sum(axis=-1, keepdims=True))  # (k, n) counts
        return rng.binomial(opponents[:, None, :], P).sum(axis=-1) / samples

    return estimate


def run(game, update, log_pi, log_mu, *, steps, eta, alpha, win_rate=None, refresh_every=None,
        refresh_tol=None, magnet_rate=0.0, keep_policies=True, name=""):
    """Run `update` for `steps` steps on rows of log-policies; gaps come from the exact `game` oracle."""
    sampled = win_rate is not None
    win_rate = win_rate if sampled else game.win_rate
    log_pi, log_mu = normalise(log_pi), normalise(log_mu)
    policies = [] if keep_policies else None
    gaps, average_gaps = [], []
    weighted_sum, weight_total = 0.0, 0.0
    refreshes = np.zeros(log_pi.shape[:-1], dtype=int)
    start_gap = None  # the inner gap when the magnet last moved (adaptive refresh); set at t = 0
    memory: dict = {}
    for t in range(steps + 1):
        pi = np.exp(log_pi)
        q_exact = game.win_rate(pi)
        # The magnet moves before the step that uses it, so an MPO period of M means M MMD steps per magnet.
        if t > 0 and refresh_every and t % refresh_every == 0:
            log_mu = log_pi.copy()
            refreshes += 1
        if refresh_tol:
            # Relative test: the inner (regularised) game counts as solved once its gap has fallen by the factor
            # refresh_tol since the magnet last moved. An absolute threshold would, near the equilibrium, refresh
            # every step, and MMD with magnet = previous iterate is just MWU with a smaller step.
            inner_gap = game.regularised_gap(q_exact, log_pi, log_mu, alpha)
            done = (inner_gap < refresh_tol * start_gap) if t > 0 else np.zeros_like(inner_gap, dtype=bool)
            log_mu = np.where(done[..., None], log_pi, log_mu)
            start_gap = np.where(done, game.regularised_gap(q_exact, log_pi, log_mu, alpha),
                                 inner_gap if t == 0 else start_gap)
            refreshes += done
        if t > 0 and magnet_rate:
            log_mu = normalise((1.0 - magnet_rate) * log_mu + magnet_rate * log_pi)
        weight = game.average_weight(pi)
        weighted_sum, weight_total = weighted_sum + weight * pi, weight_total + weight
        average = weighted_sum / weight_total
        gaps.append(game.gap(pi, q_exact))
        average_gaps.append(game.gap(average, game.win_rate(average)))
        if keep_policies:
            policies.append(pi)
        if t == steps:
            break
        q = win_rate(pi) if sampled else q_exact
        log_pi = normalise(update(Step(log_pi, log_mu, q, win_rate, eta, alpha, memory)))
    return Trajectory(name, np.array(gaps), np.array(average_gaps), pi, average,
                      None if policies is None else np.array(policies), np.exp(log_mu), refreshes)


def default_refresh_every(eta: float, alpha: float) -> int:
    """Reference rule of thumb: ~3 inner contraction time constants, 3 (1 + eta alpha) / (eta alpha) steps."""
    return math.ceil(3.0 * (1.0 + eta * alpha) / (eta * alpha))


def magnet_schedule(key, eta, alpha, refresh_every, refresh_tol, magnet_rate) -> dict:
    """Check the step size, the magnet strength and the magnet schedule against what `key` needs."""
    spec = ALGORITHMS[key]
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
        raise PrefkitError(f"step size eta must be a positive number; got {eta!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise PrefkitError(f"magnet strength alpha must be a non-negative number; got {alpha!r}")
    if spec.magnet == "none" and alpha != 0:
        raise PrefkitError(f"{key} has no magnet; alpha must be 0 (got {alpha}); use mmd or mpo for a magnet")
    if spec.magnet == "required" and alpha == 0:
        raise PrefkitError(f"{key} needs a magnet strength alpha > 0")
    if key in ("inpo", "comal", "nash_md") and eta * alpha >= 1:
        raise PrefkitError(f"{key} needs eta * alpha < 1 (the weight on the old policy is 1 - eta * alpha); "
                           f"got eta={eta}, alpha={alpha}")
    if refresh_every is not None and not (isinstance(refresh_every, (int, np.integer)) and refresh_every > 0):
        raise PrefkitError(f"refresh_every must be a positive integer number of steps; got {refresh_every!r}")
    if refresh_tol is not None and not 0 < refresh_tol < 1:
        raise PrefkitError(f"refresh_tol must lie in (0, 1) (a relative decrease of the regularised gap); "
                           f"got {refresh_tol!r}")
    magnet_rate = spec.magnet_rate if magnet_rate is None else magnet_rate
    if not 0 <= magnet_rate <= 1:
        raise PrefkitError(f"magnet_rate must lie in [0, 1]; got {magnet_rate!r}")
    moves = refresh_every is not None or refresh_tol is not None or magnet_rate > 0
    if alpha == 0 and moves:
        raise PrefkitError(f"{key} runs with alpha = 0, so there is no magnet to refresh or move")
    if spec.refresh and refresh_every is None and refresh_tol is None:
        refresh_every = default_refresh_every(eta, alpha)
    return {"refresh_every": refresh_every, "refresh_tol": refresh_tol, "magnet_rate": magnet_rate}


def simulate(P, algorithm: str, steps: int, *, eta: float, alpha: float = 0.0, refresh_every=None, init=None,
             magnet=None, refresh_tol=None, magnet_rate=None, samples=None, seed=0,
             keep_policies: bool = True) -> Trajectory:
    """Symmetric self-play of `algorithm` on P (n x n, or k x n x n for k games at once).

    eta: step size; alpha: magnet (KL-to-reference) strength; refresh_every: magnet period for MPO/COMAL
    (default 3 (1 + eta alpha) / (eta alpha) steps); refresh_tol: refresh instead once the regularised gap has
    fallen below refresh_tol times its value at the previous refresh; magnet_rate: MMD's moving magnet; init, magnet: default uniform; samples: estimate the win rates
    from that many sampled opponents per action each step (seeded by `seed`) instead of exact P.
    """
    P = check_preference(P)
    key = canonical_name(algorithm)
    batched = P.ndim == 3
    P3 = P if batched else P[None]
    k, n = P3.shape[:2]
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise PrefkitError(f"steps must be a non-negative integer; got {steps!r}")
    schedule = magnet_schedule(key, eta, alpha, refresh_every, refresh_tol, magnet_rate)
    uniform = np.full(n, 1.0 / n)
    init = check_policy(uniform if init is None else init, n, "init", positive=True)
    magnet = check_policy(uniform if magnet is None else magnet, n, "magnet", positive=True)
    game = MatrixGame(P3)
    win_rate = None
    if samples is not None:
        if not (isinstance(samples, (int, np.integer)) and samples > 0):
            raise PrefkitError(f"samples must be a positive integer; got {samples!r}")
        win_rate = sampled_win_rate(P3, int(samples), np.random.default_rng(seed))
    result = run(game, ALGORITHMS[key].update, np.log(np.broadcast_to(init, (k, n))),
                 np.log(np.broadcast_to(magnet, (k, n))), steps=int(steps), eta=float(eta), alpha=float(alpha),
                 win_rate=win_rate, keep_policies=keep_policies, name=key, **schedule)
    result.params = {"eta": eta, "alpha": alpha, "samples": samples, "seed": seed, **schedule}
    # The driver keeps time first; the public shape is games first, and no game axis for a single game.
    result.gaps, result.average_gaps = result.gaps.T, result.average_gaps.T
    if result.policies is not None:
        result.policies = result.policies.swapaxes(0, 1)
    if not batched:
        for name in ("gaps", "average_gaps", "last", "average", "policies", "magnet", "refreshes"):
            value = getattr(result, name)
            setattr(result, name, None if value is None else value[0])
    return result
