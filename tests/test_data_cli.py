"""`prefkit data inspect`: format, tokens by role, histograms and bad rows, through the argparse wiring."""

import argparse
import json
import re
import subprocess
import sys

import pytest

from prefkit.data import cli
from prefkit.data.tokenize import TRUNCATIONS
from prefkit.errors import PrefkitError
from prefkit.modeling.tiny import tiny_tokenizer

CORPUS = ["The sky is blue. The sky is green. What colour is the sky?", "hello there, how are you?"] * 8
ROWS = [
    {"prompt": [{"role": "user", "content": "What colour is the sky?"}],
     "chosen": [{"role": "assistant", "content": "blue"}],
     "rejected": [{"role": "assistant", "content": "green, green"}]},
    {"prompt": [{"role": "user", "content": "hi"}],
     "chosen": [{"role": "assistant", "content": ""}], "rejected": [{"role": "assistant", "content": "hello"}]},
    {"prompt": [{"role": "user", "content": "The sky is"}],
     "chosen": [{"role": "assistant", "content": "blue, blue"}], "rejected": [{"role": "assistant", "content": "x"}]},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    tiny_tokenizer(CORPUS, vocab_size=320).save_pretrained(str(root / "tok"))
    (root / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return root


def inspect(setup, *extra):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "inspect", str(setup / "pairs.jsonl"), "--model", str(setup / "tok"), *extra])
    return args.run(args)


def test_inspect_shows_format_roles_histograms_and_bad_rows(setup, capsys):
    assert inspect(setup, "--no-color") == 0
    out = capsys.readouterr().out
    assert "format:     preference, explicit prompt, conversational" in out
    assert "rows:       3 read, 2 kept, 1 skipped (bad), 0 dropped" in out
    assert f"{setup / 'pairs.jsonl'} line 2, field 'chosen': empty completion" in out
    assert "\033[" not in out
    # row 1, with its roles read from the collated masks: the shorter chosen side is padded, the rejected is not
    from prefkit.data import prepare
    from transformers import AutoTokenizer
    example = prepare(setup / "pairs.jsonl", AutoTokenizer.from_pretrained(str(setup / "tok")),
                      on_bad_rows="skip").examples[0]
    p, c, r = len(example.prompt_ids), len(example.chosen_ids), len(example.rejected_ids)
    assert r > c
    lines = out.splitlines()
    chosen_at = lines.index(f"prompt + chosen: {p} prompt + {c} completion tokens, {r - c} padding")
    assert lines[chosen_at + 1].startswith("  P[{<s>}|{<|user|>}|")
    assert lines[chosen_at + 1].endswith("|?|{<|end|>}|{<|assistant|>}]")
    assert lines[chosen_at + 2] == "  C[bl|ue|{<|end|>}]"
    assert lines[chosen_at + 3] == "  -[" + "|".join(["{<pad>}"] * (r - c)) + "]"
    assert lines[chosen_at + 4] == f"prompt + rejected: {p} prompt + {r} completion tokens, 0 padding"
    assert re.search(r"^prompt tokens: n=2, min \d+, median [\d.]+, max \d+$", out, re.M)
    assert re.search(rf"^chosen tokens: n=2, min {c}, median [\d.]+, max \d+$", out, re.M)
    assert re.search(r"^rejected tokens: n=2", out, re.M)
    assert re.search(r"^ +\d+(-\d+)? \| #+ +1$", out, re.M)


def test_inspect_row_option_and_colours(setup, capsys):
    assert inspect(setup, "--row", "3", "--color") == 0
    out = capsys.readouterr().out
    assert "line 3:" in out and "\033[32m" in out and "\033[36m" in out  # completion green, prompt cyan
    assert "legend:" in out
    with pytest.raises(PrefkitError, match="line 2 cannot be shown: it is a bad row: .* empty completion"):
        inspect(setup, "--row", "2")
    with pytest.raises(PrefkitError, match="line 9 cannot be shown: no such line"):
        inspect(setup, "--row", "9")


def test_inspect_truncation_shows_in_the_stats(setup, capsys):
    assert inspect(setup, "--no-color", "--max-length", "12") == 0  # row 1 has 11 prompt tokens
    out = capsys.readouterr().out
    assert "boundaries: truncated 1," in out
    assert "prompt + chosen: 11 prompt + 1 completion tokens, 0 padding" in out
    assert "  C[bl]" in out  # cut, so no EOS


def test_unknown_model_is_a_prefkit_error(setup):
    with pytest.raises(PrefkitError, match="cannot load a tokenizer from"):
        parser = argparse.ArgumentParser()
        cli.add_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["data", "inspect", str(setup / "pairs.jsonl"), "--model", str(setup / "nothing")])
        args.run(args)


def test_cli_choices_match_the_policies_and_the_module_does_not_import_torch():
    assert cli.TRUNCATION_CHOICES == tuple(TRUNCATIONS)
    code = "import sys, prefkit.data.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
