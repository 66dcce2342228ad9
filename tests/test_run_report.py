"""Run reports: figures with axis labels, legends, integer iteration ticks and axes that do not magnify noise; a
verdict that separates change from noise; one self-contained HTML page per run (no browser is installable on
these machines, so the page is checked as HTML: it parses, embeds every image and loads nothing from outside)."""

from html.parser import HTMLParser

import numpy as np
import pytest

from prefkit.eval import curves
from prefkit.eval.curves import CURVES, Curve, change, verdict, write_run_report


@pytest.fixture
def drawn(monkeypatch):
    """The figures `curves.figure` draws, kept open instead of written."""
    figures = []
    monkeypatch.setattr(curves, "save_figure", lambda fig, path: figures.append(fig) or path)
    return figures


def selfplay_records(gaps, refreshed=()):
    return [{"step": t, "duality_gap": g, "refreshed": float(t in refreshed), "winrate_vs_initial": 0.6,
             "winrate_vs_initial_low": 0.55, "winrate_vs_initial_high": 0.65} for t, g in enumerate(gaps, 1)]


def test_a_tiny_change_is_drawn_flat_not_as_a_collapse(drawn, tmp_path):
    gap = next(c for c in CURVES["selfplay"] if c.key == "duality_gap")
    curves.figure(selfplay_records([0.30005, 0.30003, 0.3]), gap, "selfplay", tmp_path / "gap.png")
    bottom, top = drawn[0].axes[0].get_ylim()
    assert top - bottom >= 0.05  # the curve's meaningful scale, not 5e-5


def test_figures_have_labels_legends_integer_ticks_and_refresh_markers(drawn, tmp_path):
    gap = next(c for c in CURVES["selfplay"] if c.key == "duality_gap")
    curves.figure(selfplay_records([0.4, 0.3, 0.25, 0.2, 0.18], refreshed={3}), gap, "selfplay", tmp_path / "g.png")
    axis = drawn[0].axes[0]
    assert axis.get_xlabel() == "iteration" and axis.get_ylabel() == "duality gap (win-rate units)"
    labels = [t.get_text() for t in axis.get_legend().get_texts()]
    assert labels == ["policy", "magnet refresh"]
    ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # no iteration 1.5


def test_shares_stay_inside_zero_one(drawn, tmp_path):
    share = Curve("rewards/accuracies", "t", "share", 0.1, share=True)
    curves.figure([{"step": s, "rewards/accuracies": 1.0} for s in range(1, 4)], share, "train", tmp_path / "a.png")
    bottom, top = drawn[0].axes[0].get_ylim()
    assert 0 <= bottom < top <= 1 and top - bottom >= 0.1


def test_the_verdict_separates_change_from_noise():
    rng = np.random.default_rng(0)
    falling = [{"step": s, "loss": 0.69 - 0.01 * s + 0.002 * rng.standard_normal()} for s in range(1, 41)]
    flat = [{"step": s, "loss": 0.69 + 0.01 * rng.standard_normal()} for s in range(1, 41)]
    assert "**improved**" in verdict(falling, "train")[0]
    assert "**within noise**" in verdict(flat, "train")[0]
    rising = [{"step": s, "loss": 0.5 + 0.01 * s} for s in range(1, 11)]
    assert "**got worse**" in verdict(rising, "train")[0]
    assert np.isinf(change([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], "loss").noise)
    lines = verdict(selfplay_records([0.3, 0.2, 0.1]), "selfplay")
    assert lines[-1] == "the final policy **beats** the initial policy: win rate 0.600 [0.550, 0.650]"


class Page(HTMLParser):
    """Tags opened and closed, and every address the page would load."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.open, self.sources, self.balanced, self.headings, self.in_h2 = [], [], True, [], False

    def handle_starttag(self, tag, attrs):
        self.sources += [v for k, v in attrs if k in ("src", "href") and v]
        self.in_h2 = tag == "h2"
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        self.balanced &= bool(self.open) and self.open.pop() == tag
        self.in_h2 = False

    def handle_data(self, data):
        if self.in_h2:
            self.headings.append(data)


def test_a_training_run_writes_a_self_contained_report(tmp_path):
    import json

    from prefkit.train.config import TrainConfig

    records = [{"step": step, "loss": 0.7 - 0.02 * step, "rewards/accuracies": 0.5 + 0.03 * step,
                "learning_rate": 1e-5, "eval/loss": 0.7 - 0.01 * step} for step in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    md, html = write_run_report(tmp_path, "train", TrainConfig(model="m", data="d", output_dir=str(tmp_path)))
    page = Page()
    page.feed(html.read_text())
    assert page.balanced and not page.open
    assert page.headings == ["Verdict", "Curves", "Settings"]  # the verdict opens the report
    assert len(page.sources) == 3 and all(s.startswith("data:image/png;base64,") for s in page.sources)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"loss.png", "rewards_accuracies.png",
                                                                "learning_rate.png"}
    assert "`eval/loss`: " in md.read_text() and "**improved**" in md.read_text()
