"""Kuhn poker, exactly: MPO's own figure (last-iterate exploitability of mirror-descent methods on a tiny poker).

Three cards J < Q < K, one to each player, ante 1. Player 1 checks or bets 1; after a check player 2 checks
(showdown for 1) or bets 1, and player 1 then folds or calls (showdown for 2); after a bet player 2 folds or
calls (showdown for 2). 12 information sets, 2 actions each (0 = check/fold, 1 = bet/call). Value for player 1
is -1/18.

A behavioural profile is a 12 x 2 array, one row per information set, which is exactly the "rows of policies"
the shared driver (`prefkit.games.driver.run`) updates: the per-infoset Q-values (expected payoff of each action
for the acting player, conditioned on reaching the infoset under the current profile) play the role of the win
rates q of a matrix game, as in the behavioural-form MMD of Sokota et al. (`ssokota/mmd`, standard objective).
The gap is the exact exploitability, (best-response value of player 1 + that of player 2) / 2, as in OpenSpiel.
"""

from __future__ import annotations

import numpy as np

from prefkit.errors import PrefkitError
from prefkit.games.driver import Trajectory, magnet_schedule, run
from prefkit.games.dynamics import ALGORITHMS, canonical_name

GAME_VALUE = -1.0 / 18.0
CARDS = ("J", "Q", "K")
# Row blocks of a profile: player 1 first move, player 1 after check-bet, player 2 after check, after bet.
INFOSETS = [f"P1 {c} -" for c in CARDS] + [f"P1 {c} check,bet" for c in CARDS] + \
           [f"P2 {c} check" for c in CARDS] + [f"P2 {c} bet" for c in CARDS]

_SIGN = np.sign(np.subtract.outer(np.arange(3), np.arange(3))).astype(float)  # [c1, c2]: +1 if player 1 wins
_DEAL = (1.0 - np.eye(3)) / 6.0  # chance probability of the deal (c1, c2)


def _split(pi):
    """Blocks a, b, c, d of the profile, as (3 cards x 2 actions) arrays."""
    return pi[0:3], pi[3:6], pi[6:9], pi[9:12]


def _payoffs(pi):
    """Player-1 payoff of each (c1, c2) deal after each first move, and the value of the check-bet subgame."""
    a, b, c, d = _split(pi)
    check_bet = -b[:, 0:1] + 2.0 * _SIGN * b[:, 1:2]  # player 1 folds or calls
    after_check = c[None, :, 0] * _SIGN + c[None, :, 1] * check_bet
    after_bet = d[None, :, 0] + 2.0 * _SIGN * d[None, :, 1]
    return check_bet, after_check, after_bet


def _conditional(weights, values):
    """Average of values[c1, c2] over the hidden card, weighted by reach; rows are the acting player's card."""
    total = weights.sum(axis=1)
    return (weights * values).sum(axis=1) / np.where(total > 0, total, 1.0)


def q_values(pi) -> np.ndarray:
    """12 x 2 action values for the acting player at each information set, conditioned on reaching it."""
    a, b, c, d = _split(pi)
    check_bet, after_check, after_bet = _payoffs(pi)
    q = np.empty((12, 2))
    q[0:3, 0] = _conditional(_DEAL, after_check)
    q[0:3, 1] = _conditional(_DEAL, after_bet)
    q[3:6, 0] = -1.0
    q[3:6, 1] = _conditional(_DEAL * c[None, :, 1], 2.0 * _SIGN)
    # Player 2's values are the negated payoffs; transpose so that rows are player 2's card.
    q[6:9, 0] = _conditional((_DEAL * a[:, 0:1]).T, -_SIGN.T)
    q[6:9, 1] = _conditional((_DEAL * a[:, 0:1]).T, -check_bet.T)
    q[9:12, 0] = -1.0
    q[9:12, 1] = _conditional((_DEAL * a[:, 1:2]).T, -2.0 * _SIGN.T)
    return q


def value(pi) -> float:
    """Expected payoff of player 1 under the profile."""
    a = _split(pi)[0]
    _, after_check, after_bet = _payoffs(pi)
    return float((_DEAL * (a[:, 0:1] * after_check + a[:, 1:2] * after_bet)).sum())


def exploitability(pi) -> float:
    """(best response of player 1 to player 2 + best response of player 2 to player 1) / 2; 0 only at Nash."""
    pi = check_profile(pi)
    a, b, c, d = _split(pi)
    check_bet, _, _ = _payoffs(pi)
    # Player 1's best response, backwards: the check-bet decision, then the first move (counterfactual values).
    reach_cb = _DEAL * c[None, :, 1]
    respond = np.maximum(-reach_cb.sum(axis=1), (reach_cb * 2.0 * _SIGN).sum(axis=1))
    first_check = (_DEAL * c[None, :, 0] * _SIGN).sum(axis=1) + respond
    first_bet = (_DEAL * (d[None, :, 0] + 2.0 * _SIGN * d[None, :, 1])).sum(axis=1)
    best_1 = np.maximum(first_check, first_bet).sum()
    # Player 2's best response: two independent decisions per card, against player 1's fixed profile.
    reach_c, reach_b = _DEAL * a[:, 0:1], _DEAL * a[:, 1:2]
    after_check = np.maximum((reach_c * -_SIGN).sum(axis=0), (reach_c * -check_bet).sum(axis=0))
    after_bet = np.maximum(-reach_b.sum(axis=0), (reach_b * -2.0 * _SIGN).sum(axis=0))
    best_2 = (after_check + after_bet).sum()
    return float((best_1 + best_2) / 2.0)


def nash_profile(bluff: float = 0.0) -> np.ndarray:
    """A textbook Nash equilibrium (Kuhn 1950), one per bluff rate in [0, 1/3] of player 1 with the Jack."""
    if not 0.0 <= bluff <= 1.0 / 3.0:
        raise PrefkitError(f"Kuhn equilibrium bluff rate must lie in [0, 1/3]; got {bluff}")
    bet = np.array([bluff, 0.0, 3.0 * bluff,  # player 1 first move: J, Q, K
                    0.0, bluff + 1.0 / 3.0, 1.0,  # player 1 calls after check-bet
                    1.0 / 3.0, 0.0, 1.0,  # player 2 bets after a check
                    0.0, 1.0 / 3.0, 1.0])  # player 2 calls a bet
    return np.stack([1.0 - bet, bet], axis=1)


def check_profile(pi) -> np.ndarray:
    pi = np.asarray(pi, dtype=float)
    if pi.shape != (12, 2) or not np.all(np.isfinite(pi)) or pi.min() < 0 or \
            np.abs(pi.sum(axis=1) - 1).max() > 1e-6:
        raise PrefkitError(f"a Kuhn profile is a 12 x 2 array of probabilities, rows summing to 1; "
                           f"got shape {pi.shape}")
    return pi


class KuhnGame:
    """What the driver needs: Q-values as win rates, exploitability as the gap, reach-weighted averaging."""

    def win_rate(self, pi):
        return q_values(pi)

    def gap(self, pi, q):
        return exploitability(pi)

    def average_weight(self, pi):
        # The average strategy must weight each infoset by the player's own reach (sequence-form averaging).
        reach = np.ones((12, 1))
        reach[3:6, 0] = pi[0:3, 0]
        return reach


def simulate(algorithm: str, steps: int, *, eta: float = 0.1, alpha: float = 0.0, refresh_every=None,
             magnet_rate=None, init=None, keep_policies: bool = False) -> Trajectory:
    """Self-play of `algorithm` (same names as the matrix lab) in Kuhn poker; gaps are exact exploitabilities."""
    key = canonical_name(algorithm)
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise PrefkitError(f"steps must be a non-negative integer; got {steps!r}")
    schedule = magnet_schedule(key, eta, alpha, refresh_every, None, magnet_rate)
    init = check_profile(np.full((12, 2), 0.5) if init is None else init)
    if init.min() <= 0:
        raise PrefkitError("Kuhn init profile must give every action a positive probability")
    result = run(KuhnGame(), ALGORITHMS[key].update, np.log(init), np.log(np.full((12, 2), 0.5)),
                 steps=int(steps), eta=float(eta), alpha=float(alpha), keep_policies=keep_policies, name=key,
                 **schedule)
    result.refreshes = int(result.refreshes[0])
    result.params = {"eta": eta, "alpha": alpha, **schedule}
    return result
