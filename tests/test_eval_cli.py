"""`prefkit eval` end to end on tiny task models saved to disk: eval.json, PNG figures and the reports."""

import json

import pytest

from prefkit.eval.cli import add_parser
from prefkit.io import write_jsonl
from prefkit.tasks import SyntheticTask, preference_rows


def run_eval(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    return args.run(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    task = SyntheticTask()
    tokenizer = task.tokenizer()
    for name, seed in (("model", 0), ("reference", 1)):
        model = task.model(seed=seed, hidden_size=32)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    write_jsonl(preference_rows(task, task.prompts(split="eval")[:8], 3, seed=0), root / "pairs.jsonl")
    return root


def test_prefkit_eval_writes_json_figures_and_a_self_contained_report(files, capsys):
    out = files / "out"
    assert run_eval(["--model", str(files / "model"), "--reference", str(files / "reference"),
                     "--data", str(files / "pairs.jsonl"), "--judge", "task", "--task", "--out", str(out),
                     "--samples", "2", "--max-prompts", "12", "--max-new-tokens", "4", "--grad-pairs", "6"]) == 0
    results = json.loads((out / "eval.json").read_text())
    assert set(results["sections"]) == {"ranking", "win_rate", "generation", "exact_gap", "exact_win_rate",
                                        "entanglement"}
    assert results["skipped"] == {}
    ranking = results["sections"]["ranking"]
    assert 0 <= ranking["ranking_accuracy"] <= 1 and "idealised_ranking_accuracy" in ranking
    win = results["sections"]["win_rate"]
    assert win["comparisons"] == 24 and win["ci_low"] <= win["win_rate"] <= win["ci_high"]
    assert len(results["sections"]["exact_gap"]["model"]["prompts"]) == 8  # the task's cyclic eval prompts
    assert results["sections"]["entanglement"]["pairs"] == 6
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == ["entanglement_cosines.png", "exact_gaps.png", "generation_entropy.png",
                       "ranking_margins.png"]
    for figure in out.glob("*.png"):
        data = figure.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1024
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "Gradient entanglement" in html
    md = (out / "report.md").read_text()
    assert "![exact_gaps](exact_gaps.png)" in md and "| ranking accuracy R |" in md
    verdict = md.split("## Verdict", 1)[1].split("\n## ", 1)[0]  # the report opens with what it found
    assert md.index("## Verdict") < md.index("## Run") and "ranking accuracy R" in verdict
    assert "the reference: win rate" in verdict and "exact duality gap" in verdict
    assert "the reference exactly: win rate" in verdict and "Exact win rate against the reference" in md
    assert "win rate" in capsys.readouterr().out


def test_prefkit_eval_model_alone_skips_what_it_cannot_do(files, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sort: 3 1 2\n\npick: sun moon star\n")
    assert run_eval(["--model", str(files / "model"), "--prompts", str(prompts), "--out", str(tmp_path / "o"),
                     "--samples", "1", "--max-new-tokens", "3"]) == 0
    results = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert set(results["sections"]) == {"generation"} and results["sections"]["generation"]["prompts"] == 2
    assert results["skipped"]["win_rate"] == "needs reference, judge"
    assert "Not evaluated" in (tmp_path / "o" / "report.md").read_text()
