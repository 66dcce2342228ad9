"""The exact preference-game lab: equilibria, gaps, what each dynamic converges to, and bad input."""

import subprocess
import sys

import numpy as np
import pytest

from prefkit import games
from prefkit.errors import PrefkitError
from prefkit.games import dynamics

CYCLIC_NASH = np.array([4.0, 3.0, 4.0]) / 11.0


# --- games and equilibria -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [games.cyclic3, games.rps, lambda: games.random_game(7, seed=3),
                                  lambda: games.mixture(5, 0.3, seed=1), lambda: games.bradley_terry([0, 1, 2])])
def test_generators_are_preference_matrices(make):
    P = make()
    np.testing.assert_allclose(P + P.T, 1.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(P), 0.5)


def test_nash_matches_known_equilibria():
    np.testing.assert_allclose(games.nash(games.rps()), np.full(3, 1 / 3), atol=1e-9)
    np.testing.assert_allclose(games.nash(games.cyclic3()), CYCLIC_NASH, atol=1e-9)
    np.testing.assert_allclose(games.nash(games.cyclic_tournament(5)), np.full(5, 0.2), atol=1e-9)
    # Transitive game: the best response (highest score) is a pure equilibrium.
    np.testing.assert_allclose(games.nash(games.bradley_terry([0.3, 2.0, -1.0, 1.5])), [0, 1, 0, 0], atol=1e-9)


def test_nash_of_random_game_is_checked_by_its_own_gap():
    P = games.random_game(10, seed=11)
    pi = games.nash(P)
    assert abs(games.duality_gap(P, pi)) < 1e-8
    # ...and the LP really optimised: no other pure or uniform policy does as well.
    assert games.duality_gap(P, np.full(10, 0.1)) > 1e-2


def test_gap_is_zero_at_equilibrium_and_positive_off_it():
    P = games.cyclic3()
    assert abs(games.duality_gap(P, CYCLIC_NASH)) < 1e-15
    rng = np.random.default_rng(0)
    others = rng.dirichlet(np.ones(3), size=200)
    assert np.all(games.duality_gap(P, others) > 0)
    # Pure strategy a loses to b with probability 0.9: DG = 2 * 0.9 - 1.
    assert games.duality_gap(P, [1.0, 0.0, 0.0]) == pytest.approx(0.8)


def test_batched_nash_and_gap():
    P = games.random_game(6, seed=2, batch=4)
    pis = games.nash(P)
    assert pis.shape == (4, 6)
    np.testing.assert_allclose(games.duality_gap(P, pis), 0.0, atol=1e-8)
    np.testing.assert_allclose(pis[2], games.nash(P[2]))


def _qre_by_fixed_point(P, alpha, iterations=20000, damping=0.05):
    """Independent of the library: damped iteration of the softmax response pi <- softmax(P pi / alpha)."""
    pi = np.full(len(P), 1.0 / len(P))
    for _ in range(iterations):
        response = np.exp((P @ pi) / alpha)
        pi = (1 - damping) * pi + damping * response / response.sum()
    return pi


def test_mmd_fixed_point_is_the_qre():
    P, alpha = games.cyclic3(), 0.2
    reference = _qre_by_fixed_point(P, alpha)
    np.testing.assert_allclose(games.qre(P, alpha), reference, atol=1e-10)
    np.testing.assert_allclose(games.qre(P, alpha), [0.3228, 0.3007, 0.3765], atol=1e-4)
    run = games.simulate(P, "mmd", 2000, eta=0.5, alpha=alpha)
    np.testing.assert_allclose(run.last, reference, atol=1e-10)
    assert abs(games.regularised_gap(P, run.last, alpha)) < 1e-10
    assert run.gaps[-1] == pytest.approx(0.0469, abs=5e-4)  # fixed magnet stalls: reference §5 table


def test_mmd_is_inpo_with_reparametrised_step():
    """MMD(eta, tau) == INPO(eta / (1 + eta tau), tau), step by step, to machine precision."""
    P = games.random_game(8, seed=5)
    rng = np.random.default_rng(1)
    init, magnet = rng.dirichlet(np.ones(8)), rng.dirichlet(np.ones(8))
    eta, tau = 0.7, 0.3
    a = games.simulate(P, "mmd", 50, eta=eta, alpha=tau, init=init, magnet=magnet)
    b = games.simulate(P, "inpo", 50, eta=eta / (1 + eta * tau), alpha=tau, init=init, magnet=magnet)
    np.testing.assert_allclose(a.policies, b.policies, rtol=1e-12, atol=1e-15)
    c = games.simulate(P, "inpo", 50, eta=eta, alpha=tau, init=init, magnet=magnet)  # the wrong step differs
    assert np.abs(a.policies - c.policies).max() > 1e-3


def test_mpo_last_iterate_converges_on_cyclic_game():
    run = games.simulate(games.cyclic3(), "mpo", 1000, eta=0.5, alpha=0.2, refresh_every=20)
    assert run.gaps[-1] <= 1e-6
    np.testing.assert_allclose(run.last, CYCLIC_NASH, atol=1e-5)
    assert run.refreshes == 50
    assert run.policies.shape == (1001, 3) and run.gaps.shape == (1001,)


def test_fixed_magnet_methods_stall_at_the_regularised_equilibrium():
    P = games.cyclic3()
    for name in ("mmd", "inpo", "nash_md", "online_ipo"):
        run = games.simulate(P, name, 1000, eta=0.5, alpha=0.2, keep_policies=False)
        assert 0.04 < run.gaps[-1] < 0.06, name
        assert abs(run.gaps[-1] - run.gaps[-100]) < 1e-6, name  # flat: converged, just not to Nash


def test_mwu_last_iterate_does_not_converge_but_average_does():
    run = games.simulate(games.cyclic3(), "sppo", 3000, eta=0.5)
    assert run.gaps[1000:].min() > 0.05
    assert run.average_gaps[-1] < 0.02
    np.testing.assert_allclose(run.average, run.policies.mean(axis=0), atol=1e-12)


@pytest.mark.parametrize("name", ["extragradient", "optimistic_mwu", "mmd_moving", "comal"])
def test_other_last_iterate_methods_converge_on_cyclic_game(name):
    alpha = 0.2 if dynamics.ALGORITHMS[name].magnet == "required" else 0.0
    run = games.simulate(games.cyclic3(), name, 3000, eta=0.5, alpha=alpha, keep_policies=False)
    assert run.gaps[-1] < 1e-8


def test_mpo_converges_on_random_games_batched():
    P = games.random_game(10, seed=0, batch=20)
    run = games.simulate(P, "mpo", 4000, eta=0.8, alpha=0.2, keep_policies=False)
    assert run.gaps.shape == (20, 4001) and run.last.shape == (20, 10)
    fixed = games.simulate(P, "mmd", 4000, eta=0.8, alpha=0.2, keep_policies=False)
    assert np.median(run.gaps[:, -1]) < 1e-3
    assert np.median(run.gaps[:, -1]) < 0.05 * np.median(fixed.gaps[:, -1])
    # Batching is only vectorisation: game 7 alone gives the same numbers.
    alone = games.simulate(P[7], "mpo", 4000, eta=0.8, alpha=0.2, keep_policies=False)
    np.testing.assert_allclose(alone.gaps, run.gaps[7], rtol=1e-10, atol=1e-15)


def test_adaptive_refresh_converges():
    run = games.simulate(games.cyclic3(), "comal", 2000, eta=0.5, alpha=0.2, refresh_tol=1e-2, keep_policies=False)
    assert run.refreshes > 20 and run.gaps[-1] < 1e-6
    assert run.params["refresh_every"] is None  # the relative test, not the default period, moved the magnet


def test_sampled_mode_is_seeded_and_noisy_near_the_floor():
    P = games.cyclic3()
    a = games.simulate(P, "mpo", 600, eta=0.5, alpha=0.2, refresh_every=20, samples=256, seed=4)
    b = games.simulate(P, "mpo", 600, eta=0.5, alpha=0.2, refresh_every=20, samples=256, seed=4)
    c = games.simulate(P, "mpo", 600, eta=0.5, alpha=0.2, refresh_every=20, samples=256, seed=5)
    np.testing.assert_array_equal(a.gaps, b.gaps)
    assert not np.array_equal(a.gaps, c.gaps)
    exact = games.simulate(P, "mpo", 600, eta=0.5, alpha=0.2, refresh_every=20)
    assert a.gaps[-50:].mean() > 10 * exact.gaps[-1]  # sampling noise sets a floor
    assert a.gaps[-50:].mean() < 0.1  # ...but the dynamics still approach the equilibrium


def test_load_csv_and_npy(tmp_path):
    P = games.random_game(4, seed=9)
    np.savetxt(tmp_path / "p.csv", P, delimiter=",")
    np.save(tmp_path / "p.npy", P)
    np.testing.assert_allclose(games.load(tmp_path / "p.csv"), P, atol=1e-12)
    np.testing.assert_allclose(games.load(tmp_path / "p.npy"), P)


# --- bad input: one clear error naming the problem ---------------------------------------------------------

@pytest.mark.parametrize("P, words", [
    (np.full((3, 4), 0.5), "square"),
    (np.array([[0.5, 0.7], [0.7, 0.5]]), r"P \+ P\^T = 1"),
    (np.array([[0.5, np.nan], [0.5, 0.5]]), "NaN"),
    (np.array([[0.5, 1.5], [-0.5, 0.5]]), r"probabilities in \[0, 1\]"),
])
def test_bad_matrix_is_named(P, words):
    with pytest.raises(PrefkitError, match=words):
        games.nash(P)
    with pytest.raises(PrefkitError):
        games.simulate(P, "mpo", 10, eta=0.5, alpha=0.2)


@pytest.mark.parametrize("kwargs, words", [
    ({"algorithm": "mpo", "eta": -0.1, "alpha": 0.2}, "step size eta"),
    ({"algorithm": "mpo", "eta": float("nan"), "alpha": 0.2}, "step size eta"),
    ({"algorithm": "mpo", "eta": 0.5, "alpha": -1.0}, "alpha"),
    ({"algorithm": "mwu", "eta": 0.5, "alpha": 0.2}, "no magnet"),
    ({"algorithm": "mmd", "eta": 0.5, "alpha": 0.0}, "alpha > 0"),
    ({"algorithm": "inpo", "eta": 5.0, "alpha": 0.5}, "eta \\* alpha < 1"),
    ({"algorithm": "gradient-ascent", "eta": 0.5}, "unknown algorithm"),
    ({"algorithm": "mpo", "eta": 0.5, "alpha": 0.2, "refresh_every": 0}, "refresh_every"),
    ({"algorithm": "mpo", "eta": 0.5, "alpha": 0.2, "init": [0.5, 0.5]}, "init"),
    ({"algorithm": "mpo", "eta": 0.5, "alpha": 0.2, "magnet": [1.0, 0.0, 0.0]}, "magnet"),
    ({"algorithm": "mpo", "eta": 0.5, "alpha": 0.2, "samples": 0}, "samples"),
])
def test_bad_hyperparameters_are_named(kwargs, words):
    with pytest.raises(PrefkitError, match=words):
        games.simulate(games.cyclic3(), steps=10, **kwargs)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(PrefkitError, match="not found"):
        games.load(tmp_path / "missing.csv")
    (tmp_path / "p.txt").write_text("0.5")
    with pytest.raises(PrefkitError, match="format"):
        games.load(tmp_path / "p.txt")
    (tmp_path / "bad.csv").write_text("0.5,0.2\n0.2,0.5\n")
    with pytest.raises(PrefkitError, match="bad.csv"):
        games.load(tmp_path / "bad.csv")


def test_games_package_does_not_import_torch():
    code = "import sys, prefkit.games, prefkit.games.cli, prefkit.games.kuhn; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
