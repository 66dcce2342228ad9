"""The MPO planner (`prefkit.games.plan`, `prefkit game plan`): it finds settings whose last iterate converges,
rejects the demo's old ones, reports the fixed-magnet and SPPO baselines, and plans on the task's cyclic games
from a model's own distributions."""

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from prefkit import games
from prefkit.errors import PrefkitError
from prefkit.games import cli

# A start like the task's SFT policy on rock-paper-scissors (docs/task.md): far from the equilibrium (4/11, 3/11,
# 4/11), and one from which the demo's old settings oscillate.
TASK_LIKE = (0.6, 0.3, 0.1)
DEMO = (2.0, 0.2, 2)  # eta, alpha, refresh period of the demo's first MPO run


def _setting(row):
    return row.eta, row.alpha, row.refresh_every


@pytest.fixture(scope="module")
def cyclic_plan():
    return games.plan(games.cyclic3(), TASK_LIKE)


def test_top_setting_converges_on_cyclic3(cyclic_plan):
    top = cyclic_plan[0]
    # Measured: eta=4, alpha=0.1, M=6 reaches 1.3e-5 (mean of iterates 56..60) and 9e-17 by step 600.
    assert top.score < 1e-4 and top.converges and top.verdict == "converges"
    assert top.horizon_score < 1e-12
    assert games.recommended(cyclic_plan) is top
    assert [row.score for row in cyclic_plan] == sorted(row.score for row in cyclic_plan)
    # The row is the lab's own MPO run, not a second implementation of it.
    run = games.simulate(games.cyclic3(), "mpo", 60, eta=top.eta, alpha=top.alpha, refresh_every=top.refresh_every,
                         init=TASK_LIKE, magnet=TASK_LIKE)
    assert top.gap == pytest.approx(run.gaps[60], rel=1e-12) and top.score == pytest.approx(run.gaps[56:].mean())


def test_demo_settings_rank_low_and_are_flagged(cyclic_plan):
    rank = [_setting(row) for row in cyclic_plan].index(DEMO)
    demo = cyclic_plan[rank]
    assert rank >= len(cyclic_plan) // 2
    assert not demo.converges and demo.verdict.startswith("oscillates")
    assert demo.refreshes_early and demo.inner_progress == pytest.approx(2 * math.log(1.4))
    # Worse than not refreshing at all, and worse than where it stood at the budget once the horizon is reached.
    assert demo.score > demo.fixed_magnet and demo.horizon_score > demo.score > 0.2


def test_baselines_are_the_regularised_equilibrium_and_mwu():
    P, alpha = games.cyclic3(), 0.2
    row, = games.plan(P, TASK_LIKE, etas=[0.5], alphas=[alpha], refresh=[20], iterations=3000, window=5,
                      horizon=3005)
    # A fixed magnet at the start stops at the QRE around that magnet (computed here by root finding).
    assert row.fixed_magnet == pytest.approx(float(games.duality_gap(P, games.qre(P, alpha, TASK_LIKE))), abs=1e-9)
    mwu = games.simulate(P, "mwu", 3000, eta=0.5, init=TASK_LIKE)
    assert row.sppo == pytest.approx(mwu.gaps[-5:].mean()) and row.sppo > 0.5  # MWU's last iterate spirals out


def test_rule_of_thumb():
    assert games.refreshes_early(*DEMO) and not games.refreshes_early(6.0, 0.1, 6)
    assert games.inner_progress(6.0, 0.1, 6) == pytest.approx(6 * math.log(1.6))
    assert not games.refreshes_early(2.0, 0.2, 2, threshold=0.5)
    # The limit the rule warns about: a magnet refreshed every step makes MPO plain MWU with step eta / (1 + eta alpha).
    mpo = games.simulate(games.cyclic3(), "mpo", 50, eta=2.0, alpha=0.2, refresh_every=1, init=TASK_LIKE,
                         magnet=TASK_LIKE)
    mwu = games.simulate(games.cyclic3(), "mwu", 50, eta=2.0 / 1.4, init=TASK_LIKE)
    np.testing.assert_allclose(mpo.gaps, mwu.gaps, atol=1e-12)


def test_games_of_different_sizes_average_per_game():
    five = games.cyclic_tournament(5) * 0.8 + 0.1
    starts = [TASK_LIKE, [0.4, 0.3, 0.1, 0.1, 0.1]]
    grid = {"etas": [2.0, 6.0], "alphas": [0.1], "refresh": [2, 6], "iterations": 20}
    both = {_setting(row): row for row in games.plan([games.cyclic3(), five], starts, **grid)}
    alone = [{_setting(row): row for row in games.plan(P, start, **grid)}
             for P, start in zip([games.cyclic3(), five], starts)]
    for key, row in both.items():
        assert row.score == pytest.approx((alone[0][key].score + alone[1][key].score) / 2)
        assert row.worst == pytest.approx(max(alone[0][key].score, alone[1][key].score))


@pytest.mark.parametrize("kwargs, words", [
    ({"etas": []}, "eta"),
    ({"alphas": [0.0]}, "alpha"),
    ({"refresh": [1.5]}, "whole numbers"),
    ({"window": 0}, "window"),
    ({"horizon": 61}, "horizon"),
    ({"tol": -1.0}, "tol"),
])
def test_bad_grids_are_named(kwargs, words):
    with pytest.raises(PrefkitError, match=words):
        games.plan(games.cyclic3(), **kwargs)


def test_bad_starts_are_named():
    with pytest.raises(PrefkitError, match="init"):
        games.plan(games.cyclic3(), [0.5, 0.5], etas=[1.0], alphas=[0.1], refresh=[2])
    with pytest.raises(PrefkitError, match="one start per game"):
        games.plan([games.cyclic3(), games.rps()], [[0.6, 0.3, 0.1]], etas=[1.0], alphas=[0.1], refresh=[2])


def _run(argv):
    parser = argparse.ArgumentParser(prog="prefkit")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["game", *argv])
    return args.run(args)


SMALL_GRID = ["--eta", "2,4,6", "--alpha", "0.1,0.2", "--refresh", "2,6"]


def test_cli_table(capsys):
    assert _run(["plan", "--start", "0.6,0.3,0.1", *SMALL_GRID, "--top", "2", "--show", "2,0.2,2"]) == 0
    out = capsys.readouterr().out
    assert "ranked by the mean over games of the mean last-iterate duality gap of iterates 56..60" in out
    assert "fixed" in out and "sppo" in out and "M ln(1+ea)" in out
    assert "recommended: eta=4, alpha=0.1, refresh every 6" in out
    demo = next(line for line in out.splitlines() if line.split()[1:4] == ["2", "0.2", "2"])
    assert "oscillates on 1/1 games (refreshes early)" in demo
    assert "do not converge within 600 steps" in out


def test_cli_json_and_a_start_file(tmp_path, capsys):
    np.savetxt(tmp_path / "start.csv", [TASK_LIKE], delimiter=",")
    assert _run(["plan", "--start", str(tmp_path / "start.csv"), *SMALL_GRID, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["rows"]) == 12 and report["iterations"] == 60 and report["horizon"] == 600
    assert report["start_gap"] == pytest.approx(float(games.duality_gap(games.cyclic3(), TASK_LIKE)))
    assert report["recommended"] == report["rows"][0]
    assert {"fixed_magnet", "sppo", "verdict", "inner_progress"} <= set(report["rows"][0])


@pytest.mark.parametrize("argv, words", [
    (["--game", "kuhn"], "matrix games"),
    (["--start", "0.5,0.5"], "--start"),
    (["--start", "a,b"], "comma-separated"),
    (["--task-model", "x", "--game", "rps"], "leave out --game"),
    (["--iterations", "3"], "window"),
])
def test_cli_bad_arguments_are_named(argv, words):
    with pytest.raises(PrefkitError, match=words):
        _run(["plan", *argv, "--eta", "1", "--alpha", "0.1", "--refresh", "2"])


def test_planning_a_matrix_game_does_not_import_torch():
    code = ("import sys, argparse; from prefkit.games import cli; p = argparse.ArgumentParser(); "
            "cli.add_parser(p.add_subparsers()); a = p.parse_args(['game', 'plan', '--eta', '2', '--alpha', '0.2', "
            "'--refresh', '2']); a.run(a); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_cli_plans_on_the_task_from_a_model(task, tmp_path, capsys):
    from prefkit.tasks import cyclic_games, exact_gaps

    # float32, as the planner loads it, so that the model's distributions are the same on both sides.
    model, tokenizer = task.model(seed=1, hidden_size=32).float().eval(), task.tokenizer()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    played = cyclic_games(model, tokenizer, task)
    prompts = task.prompts("cyclic", split="train")
    assert [g[0] for g in played] == prompts
    for prompt, P, probs, outside in played:
        assert np.array_equal(P, task.preference_matrix(prompt))
        assert probs.sum() == pytest.approx(1.0) and 0.0 < outside < 1.0

    assert _run(["plan", "--task-model", str(tmp_path / "model"), *SMALL_GRID, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["games"] == len(prompts) == 16 and "renormalised" in report["source"]
    assert report["start_gap"] == pytest.approx(exact_gaps(model, tokenizer, task, prompts).mean(), abs=1e-6)
    assert len(report["rows"]) == 12
