"""`prefkit game`: files written, summary printed, bad input named."""

import argparse

import numpy as np
import pytest

from prefkit.errors import PrefkitError
from prefkit.games import cli


def _run(argv):
    parser = argparse.ArgumentParser(prog="prefkit")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["game", *argv])
    return args.run(args)


def test_cyclic_game_writes_csv_figures_and_summary(tmp_path, capsys):
    assert _run(["--game", "cyclic3", "--algorithms", "mpo,mmd,sppo,nash_md", "--steps", "1000",
                 "--refresh-every", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mpo" in out and "sppo" in out and "nash_md" in out and "0.3636, 0.2727, 0.3636" in out
    table = np.genfromtxt(tmp_path / "gaps.csv", delimiter=",", names=True)
    assert len(table) == 1001 and table["mpo_last"][-1] < 1e-6 and table["mmd_last"][-1] > 0.04
    for name in ("gaps.png", "simplex.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_random_game_and_file_game(tmp_path, capsys):
    assert _run(["--game", "random", "--n", "6", "--algorithms", "mpo,extragradient", "--steps", "50",
                 "--out", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r" / "simplex.png").exists()  # only for three actions
    np.save(tmp_path / "p.npy", np.array([[0.5, 0.3], [0.7, 0.5]]))
    assert _run(["--game", str(tmp_path / "p.npy"), "--algorithms", "mwu", "--steps", "20",
                 "--out", str(tmp_path / "f")]) == 0


def test_kuhn(tmp_path, capsys):
    assert _run(["--game", "kuhn", "--steps", "200", "--out", str(tmp_path)]) == 0
    assert "exploitability" in capsys.readouterr().out
    assert (tmp_path / "gaps.png").exists()


@pytest.mark.parametrize("argv, words", [
    (["--game", "chess"], "unknown game"),
    (["--algorithms", "mpo,sppo,mwu"], "twice"),
    (["--algorithms", "dpo"], "unknown algorithm"),
    (["--eta", "-1"], "step size"),
    (["--game", "kuhn", "--samples", "10"], "matrix games"),
])
def test_bad_arguments_are_named(tmp_path, argv, words):
    with pytest.raises(PrefkitError, match=words):
        _run([*argv, "--steps", "5", "--out", str(tmp_path)])
