"""Win rates with confidence intervals under any form of judge, and the report renderer (markdown + one
self-contained HTML page)."""

import base64

import numpy as np
import pytest

from prefkit.errors import PrefkitError
from prefkit.eval.report import markdown_to_html, render_report, table
from prefkit.eval.winrate import CI_METHODS, as_judge, judge_samples, mean_ci
from prefkit.judges import load_judge
from prefkit.tasks import SyntheticTask


@pytest.mark.parametrize("method", sorted(CI_METHODS))
def test_win_rate_interval_contains_the_mean_and_shrinks_with_more_samples(method):
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        values = rng.uniform(0.3, 1.0, n)
        out = mean_ci(values, method=method, seed=1)
        assert out["win_rate"] == pytest.approx(values.mean()) and out["comparisons"] == n
        assert 0.0 <= out["ci_low"] < out["win_rate"] < out["ci_high"] <= 1.0
        widths.append(out["ci_high"] - out["ci_low"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 5  # about sqrt(100) = 10 for a 1/sqrt(n) interval
    assert mean_ci(values, method=method, seed=1) == out  # seeded


def test_wilson_interval_by_hand_and_bad_input():
    out = mean_ci([1.0] * 8 + [0.0] * 2, method="wilson")  # Wilson's 8 out of 10: [0.4902, 0.9433]
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    for bad in ([], [1.2], [np.nan]):
        with pytest.raises(PrefkitError):
            mean_ci(bad)
    with pytest.raises(PrefkitError, match="unknown interval"):
        mean_ci([0.5], method="nope")


def first_longer(prompt, a, b):
    return float(len(a) > len(b))


class CompareJudge:
    name = "first-longer"

    def compare(self, prompts, as_, bs):
        return np.array([float(len(a) > len(b)) for a, b in zip(as_, bs)])


def test_every_judge_form_gives_the_same_win_rate():
    task = SyntheticTask()
    prompts = ["pick: rock paper scissors"] * 3 + ["sort: 3 1 2"]
    mine, theirs = ["paper", "rock", "oops", "1 2 3"], ["rock", "rock", "scissors", "3 1 2"]
    expected = [0.9, 0.5, 0.05, task.preference("sort: 3 1 2", "1 2 3", "3 1 2")]
    for judge in (task.judge, task.judge.__call__, as_judge(task.judge), load_judge("task")):
        out = judge_samples(judge, prompts, mine, theirs)
        assert out["probabilities"] == pytest.approx(expected) and out["win_rate"] == pytest.approx(np.mean(expected))
    # A judge with a position bias is judged in both orders: "always the first" scores exactly 1/2.
    assert judge_samples(lambda p, a, b: 1.0, prompts, mine, theirs)["probabilities"] == [0.5] * 4
    assert judge_samples(CompareJudge(), prompts, mine, theirs)["judge"] == "first-longer"
    for bad in ("nonsense", "prefkit.tasks:no_such_judge"):
        with pytest.raises(PrefkitError):
            load_judge(bad)
    named = load_judge(f"{__name__}:first_longer")  # a module:function judge
    assert named.compare(prompts, mine, theirs).tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(PrefkitError):
        as_judge(42)


def png(path, size=(40, 30)):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure = plt.figure(figsize=(size[0] / 10, size[1] / 10), dpi=10)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def test_render_report_is_self_contained_and_links_images(tmp_path):
    images = tmp_path / "figs"
    images.mkdir()
    first, second = png(images / "a.png"), png(images / "b.png")
    rows = [{"metric": "R", "value": 0.51234}, {"metric": "x|y", "value": None}]
    sections = [("Summary", "Some **bold** text with `code <b>` and <script>.\n\n- one\n- two", [first]),
                ("Numbers", rows),
                ("Mixed", ["```\nprefkit eval --model m\n```", rows], [second])]
    md, page = render_report("My <run>", sections, tmp_path / "out")
    text, html = md.read_text(), page.read_text()
    assert md.name == "report.md" and page.name == "report.html"
    assert "![a](../figs/a.png)" in text and "| R | 0.5123 |" in text and "x\\|y" in text
    assert html.count("data:image/png;base64,") == 2 and "<img" in html and "src=\"figs" not in html
    embedded = html.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(embedded) == first.read_bytes()
    assert "<strong>bold</strong>" in html and "<code>code &lt;b&gt;</code>" in html and "<script>" not in html
    assert "<li>one</li>\n<li>two</li>" in html and "<pre><code>prefkit eval --model m\n</code></pre>" in html
    assert "<td>x|y</td>" in html and "<th>metric</th>" in html and "My &lt;run&gt;" in html
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_render_report_rejects_missing_or_non_png_images(tmp_path):
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(PrefkitError, match="not a PNG"):
        render_report("t", [("h", "x", [tmp_path / "fake.png"])], tmp_path)
    with pytest.raises(PrefkitError, match="missing.png"):
        render_report("t", [("h", "x", [tmp_path / "missing.png"])], tmp_path)
    assert not (tmp_path / "report.html").exists()  # nothing half-written


def test_table_and_markdown_subset():
    assert table([{"a": 1, "b": 2.0}, {"b": 3, "c": "z"}]).splitlines() == [
        "| a | b | c |", "|---|---|---|", "| 1 | 2 |  |", "|  | 3 | z |"]
    assert table([]) == ""
    assert markdown_to_html("line one\nline two\n\nnext") == "<p>line one\nline two</p>\n<p>next</p>"
    assert markdown_to_html("<b>raw</b> & `<i>`") == "<p>&lt;b&gt;raw&lt;/b&gt; &amp; <code>&lt;i&gt;</code></p>"


def test_the_verdict_separates_a_real_change_from_noise():
    from prefkit.eval.sections import verdict

    def results(r, ref, low, high):
        return {"sections": {"ranking": {"ranking_accuracy": r, "reference_ranking_accuracy": ref, "pairs": 400},
                             "win_rate": {"win_rate": (low + high) / 2, "ci_low": low, "ci_high": high}}}

    # two binomial standard errors at R = 0.5 over 400 pairs: 0.05
    assert verdict(results(0.58, 0.50, 0.55, 0.65))[0].startswith("ranking accuracy R **improved**")
    assert verdict(results(0.53, 0.50, 0.45, 0.55))[0].startswith("ranking accuracy R within noise")
    assert verdict(results(0.40, 0.50, 0.30, 0.45))[0].startswith("ranking accuracy R **got worse**")
    assert "**beats**" in verdict(results(0.58, 0.50, 0.55, 0.65))[1]
    assert "**not distinguishable**" in verdict(results(0.53, 0.50, 0.45, 0.55))[1]
    assert verdict({"sections": {}}) == []
