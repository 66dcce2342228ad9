"""The synthetic task's oracle has the properties the issue promises: antisymmetric everywhere, Bradley-Terry on
sorting prompts, cyclic (no Bradley-Terry fit) with a unique full-support equilibrium on picking prompts, and
malformed responses lose. Its reference policy is imperfect and its SFT data deterministic."""

import itertools

import numpy as np
import pytest

from prefkit.errors import PrefkitError
from prefkit.tasks import MALFORMED_LOSS, SyntheticTask


@pytest.fixture(scope="module")
def task():
    return SyntheticTask()


def some_prompts(task, per_family=30):
    """Every cyclic prompt and an even spread of sorting prompts, both splits."""
    chosen = []
    for split in ("train", "eval"):
        chosen += task.prompts("cyclic", split)
        sorting = task.prompts("transitive", split)
        chosen += sorting[::max(1, len(sorting) // per_family)]
    return chosen


def random_strings(task, prompt, rng, n=6):
    return task.canonical(prompt)[:2] + [task.malformed(prompt, rng) for _ in range(n)] + ["", "x y z"]


def test_prompt_sets(task):
    for kind in ("transitive", "cyclic"):
        train, held_out = task.prompts(kind, "train"), task.prompts(kind, "eval")
        assert train and held_out and not set(train) & set(held_out)
        assert all(task.kind(p) == kind for p in train + held_out)
    assert len(task.prompts("transitive", "train")) + len(task.prompts("transitive", "eval")) == 720
    assert set(task.prompts(None)) == set(task.prompts("transitive")) | set(task.prompts("cyclic"))
    with pytest.raises(PrefkitError, match="not a prompt"):
        task.preference("sort: 1 2", "1 2", "2 1")
    with pytest.raises(PrefkitError, match="kind"):
        task.prompts("circular")


def test_antisymmetric_on_canonical_and_random_strings(task):
    rng = np.random.default_rng(0)
    for prompt in some_prompts(task):
        P = task.preference_matrix(prompt)
        assert np.allclose(P + P.T, 1.0) and np.allclose(np.diag(P), 0.5)
        strings = random_strings(task, prompt, rng) + task.canonical(prompt)
        for a, b in itertools.product(strings, repeat=2):
            assert task.preference(prompt, a, b) + task.preference(prompt, b, a) == pytest.approx(1.0, abs=1e-12)
            if a == b:
                assert task.preference(prompt, a, b) == 0.5


def bt_residual(P):
    """Least-squares fit of Bradley-Terry scores to logit(P): the root-mean-square residual (0 iff BT holds)."""
    n = len(P)
    rows, targets = [], []
    for i, j in itertools.combinations(range(n), 2):
        row = np.zeros(n)
        row[i], row[j] = 1.0, -1.0
        rows.append(row)
        targets.append(np.log(P[i, j] / P[j, i]))
    rows, targets = np.array(rows), np.array(targets)
    scores = np.linalg.lstsq(rows, targets, rcond=None)[0]
    return float(np.sqrt(np.mean((rows @ scores - targets) ** 2)))


def gap(P, pi):
    return 2.0 * float((P @ pi).max()) - 1.0


def test_transitive_prompts_are_bradley_terry_with_a_pure_equilibrium(task):
    for prompt in some_prompts(task):
        if task.kind(prompt) != "transitive":
            continue
        P = task.preference_matrix(prompt)
        assert bt_residual(P) < 1e-10
        # Malformed responses fit the same scores: BT holds on the canonical set plus one malformed "item".
        beats_malformed = np.array([task.preference(prompt, c, "") for c in task.canonical(prompt)])
        extended = np.block([[P, beats_malformed[:, None]], [1 - beats_malformed[None, :], np.full((1, 1), 0.5)]])
        assert bt_residual(extended) < 1e-10
        sorted_answer = " ".join(sorted(prompt.split()[1:]))
        assert task.canonical(prompt)[int(np.argmax(task.nash(prompt)))] == sorted_answer
        assert task.nash(prompt).max() == 1.0 and gap(P, task.nash(prompt)) == pytest.approx(0.0, abs=1e-12)


def test_cyclic_prompts_have_no_bt_fit_and_a_unique_full_support_equilibrium(task):
    for prompt in task.prompts("cyclic", "train") + task.prompts("cyclic", "eval"):
        P, pi = task.preference_matrix(prompt), task.nash(prompt)
        assert bt_residual(P) > 0.1
        # A cycle in the majority relation: no ordering agrees with every pairwise majority.
        n = len(P)
        assert not any(all(P[order[i], order[j]] > 0.5 for i, j in itertools.combinations(range(n), 2))
                       for order in itertools.permutations(range(n)))
        assert pi.min() > 0.05 and pi.sum() == pytest.approx(1.0)
        assert gap(P, pi) == pytest.approx(0.0, abs=1e-12)
        # Full support with A pi = 0 and a one-dimensional kernel of A = P - 1/2 make the equilibrium unique:
        # any other equilibrium sigma has A sigma <= 0 and pi^T A sigma = 0 with pi > 0, so A sigma = 0.
        singular = np.linalg.svd(P - 0.5, compute_uv=False)
        assert singular[-1] < 1e-12 and singular[-2] > 1e-3
        # Every other policy is exploitable.
        rng = np.random.default_rng(1)
        for other in rng.dirichlet(np.ones(n), size=20):
            assert gap(P, other) > 0


def test_cyclic_equilibria_match_the_linear_program(task):
    games = pytest.importorskip("prefkit.games")
    for prompt in task.prompts("cyclic"):
        assert np.allclose(games.nash(task.preference_matrix(prompt)), task.nash(prompt), atol=1e-7)


def test_comal_game_is_bundled(task):
    prompt = "pick: rock paper scissors"
    assert task.canonical(prompt) == ["rock", "paper", "scissors"]
    assert np.allclose(task.preference_matrix(prompt), [[0.5, 0.1, 0.8], [0.9, 0.5, 0.1], [0.2, 0.9, 0.5]])
    assert np.allclose(task.nash(prompt), [4 / 11, 3 / 11, 4 / 11])
    assert task.preference(prompt, "paper", "rock") == 0.9


def test_malformed_responses_lose_and_tie_with_each_other(task):
    rng = np.random.default_rng(2)
    for prompt in some_prompts(task):
        bad = [task.malformed(prompt, rng) for _ in range(10)] + ["", "rock rock", "1 2 3 4", "<|end|>"]
        assert not any(task.is_well_formed(prompt, b) for b in bad)
        for good in task.canonical(prompt):
            for b in bad:
                assert task.preference(prompt, good, b) >= MALFORMED_LOSS - 1e-12 >= 0.9
        for a, b in itertools.product(bad, repeat=2):
            assert task.preference(prompt, a, b) == 0.5


def test_judge_is_the_oracle(task):
    prompt = "pick: sun moon star"
    assert task.judge(prompt, "moon", "sun") == task.preference(prompt, "moon", "sun") == pytest.approx(0.7)
    probs = task.judge.batch([prompt, "sort: 3 1 2"], ["moon", "1 2 3"], ["sun", "3 2 1"])
    assert probs.shape == (2,) and probs[0] == pytest.approx(0.7) and probs[1] > 0.9
    conversational = task.sft_rows(1, seed=0)[0]
    assert task.judge(conversational["prompt"], conversational["completion"], "") >= 0.5
    assert task.judge([{"role": "user", "content": prompt}], [{"role": "assistant", "content": "moon"}], "sun") == 0.7
    with pytest.raises(PrefkitError, match="equally long"):
        task.judge.batch([prompt], ["moon", "sun"], ["sun"])


def test_exact_win_rate(task):
    prompt = "pick: red blue green gray pink"
    P = task.preference_matrix(prompt)
    rng = np.random.default_rng(3)
    p, q = rng.dirichlet(np.ones(5), size=2)
    assert task.win_rate(prompt, p, q) == pytest.approx(p @ P @ q)
    assert task.win_rate(prompt, p, q, 0.2, 0.1) + task.win_rate(prompt, q, p, 0.1, 0.2) == pytest.approx(1.0)
    assert task.win_rate(prompt, p, p, 0.3, 0.3) == pytest.approx(0.5)
    # Against the equilibrium every policy wins at most half the time.
    assert task.win_rate(prompt, p, task.nash(prompt)) <= 0.5 + 1e-12


def test_sft_rows_are_deterministic_and_imperfect(task):
    rows = task.sft_rows(3000, seed=7, conversational=False)
    assert rows == task.sft_rows(3000, seed=7, conversational=False)
    assert rows != task.sft_rows(3000, seed=8, conversational=False)
    assert all(set(r) == {"prompt", "completion"} and isinstance(r["completion"], str) for r in rows)
    malformed = [r for r in rows if not task.is_well_formed(r["prompt"], r["completion"])]
    assert 0.03 < len(malformed) / len(rows) < 0.15
    # On the rock-paper-scissors prompts the reference's choices are skewed, far from the equilibrium.
    options = ["rock", "paper", "scissors"]
    picks = [r["completion"] for r in rows if sorted(r["prompt"].split()[1:]) == sorted(options)
             and r["completion"] in options]
    empirical = np.array([picks.count(o) for o in options], dtype=float) / len(picks)
    assert len(picks) > 100
    assert gap(task.preference_matrix("pick: rock paper scissors"), empirical) > 0.2
    # The reference sorts correctly only part of the time.
    sorting = [r for r in rows if task.kind(r["prompt"]) == "transitive"]
    correct = np.mean([r["completion"] == " ".join(sorted(r["prompt"].split()[1:])) for r in sorting])
    assert 0.3 < correct < 0.7
    conversational = task.sft_rows(5, seed=7)
    assert conversational[0]["prompt"] == [{"role": "user", "content": rows[0]["prompt"]}]
    assert conversational[0]["completion"] == [{"role": "assistant", "content": rows[0]["completion"]}]
