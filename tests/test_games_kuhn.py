"""Kuhn poker in the games lab: exact values and exploitability, and MPO's figure in miniature."""

import numpy as np
import pytest

from prefkit.errors import PrefkitError
from prefkit.games import kuhn


@pytest.mark.parametrize("bluff", [0.0, 0.2, 1 / 3])
def test_known_nash_profiles_have_game_value_and_zero_exploitability(bluff):
    profile = kuhn.nash_profile(bluff)
    assert kuhn.value(profile) == pytest.approx(kuhn.GAME_VALUE, abs=1e-12)
    assert abs(kuhn.exploitability(profile)) < 1e-12


def test_exploitability_is_positive_off_equilibrium():
    assert kuhn.exploitability(np.full((12, 2), 0.5)) == pytest.approx(0.458333333, abs=1e-8)  # OpenSpiel's value
    profile = kuhn.nash_profile(0.0)
    profile[10] = [0.5, 0.5]  # player 2 calls too often with the Queen
    assert kuhn.exploitability(profile) > 1e-3
    always_bet = np.tile([0.0, 1.0], (12, 1))
    assert kuhn.exploitability(always_bet) > 0.1


def test_q_values_reproduce_the_value():
    rng = np.random.default_rng(0)
    profile = rng.dirichlet([1, 1], size=12)
    q = kuhn.q_values(profile)
    # Player 1's first-move values, averaged over its card and its policy, give the game value.
    assert (profile[0:3] * q[0:3]).sum(axis=1).mean() == pytest.approx(kuhn.value(profile), abs=1e-12)


def test_mpo_exploitability_far_below_mirror_descent():
    md = kuhn.simulate("md", 2000, eta=0.1)
    fixed = kuhn.simulate("mmd", 2000, eta=0.1, alpha=1.0)
    mpo = kuhn.simulate("mpo", 2000, eta=0.1, alpha=1.0, refresh_every=20)
    assert md.gaps[-500:].min() > 0.05  # the last iterate of plain MD keeps oscillating...
    assert md.average_gaps[-1] < 0.5 * md.gaps[-500:].min()  # ...while its (reach-weighted) average improves
    assert fixed.gaps[-1] == pytest.approx(fixed.gaps[-100], abs=1e-9) and fixed.gaps[-1] > 0.1  # stalls at the QRE
    assert mpo.gaps[-1] < 1e-3 and mpo.gaps[-1] < 0.01 * md.gaps[-1]
    assert mpo.refreshes == 100


def test_kuhn_bad_input():
    with pytest.raises(PrefkitError, match="12 x 2"):
        kuhn.exploitability(np.full((6, 2), 0.5))
    with pytest.raises(PrefkitError, match="step size"):
        kuhn.simulate("mpo", 10, eta=0.0, alpha=1.0)
    with pytest.raises(PrefkitError, match="bluff"):
        kuhn.nash_profile(0.5)
