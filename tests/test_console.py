"""What a run prints and where its metrics go: the start-up summary and one metric line per logging step (plain
lines, no redraws, when the output is a file), and the trackers through accelerate (prefkit.train.console,
prefkit.train.tracking)."""

import io

import pytest

from prefkit.errors import PrefkitError
from prefkit.train.console import Console
from prefkit.train.tracking import TRACKERS, Tracker, external_trackers, read_metrics


def test_a_log_file_gets_the_summary_and_one_line_per_logging_step_without_redraws():
    out = io.StringIO()  # not a terminal: no progress bar
    console = Console(4, stream=out)
    console.summary({"examples": 1200, "loss": "dpo"})
    for step in range(1, 5):
        console.advance()
        if step % 2 == 0:
            console.metrics(step, {"loss": 0.6931, "rewards/margins": 0.01, "learning_rate": 4.5e-5,
                                   "tokens_per_second": 1234.5, "skipped_steps": 0})
    console.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: examples  1,200" and lines[1] == "train: loss      dpo"
    assert lines[2].startswith("train step 2/4 | loss 0.6931 | margin 0.01 | lr 4.5e-05 | tok/s 1,234 | ETA ")
    assert lines[3].startswith("train step 4/4 |") and lines[3].endswith("ETA 0:00:00")
    assert len(lines) == 4 and "\r" not in out.getvalue()


def test_report_to_none_all_and_a_missing_tracker():
    assert external_trackers(["none"]) == [] and external_trackers(["jsonl"]) == []
    from accelerate.utils import imports

    installed = [n for n in TRACKERS if getattr(imports, f"is_{n}_available")()]
    assert external_trackers(["all"]) == installed
    missing = next(n for n in TRACKERS if n not in installed)
    with pytest.raises(PrefkitError, match=f"report_to: {missing} needs `pip install"):
        external_trackers([missing])


def test_metrics_reach_an_accelerate_tracker_and_the_jsonl_file(tmp_path):
    from accelerate.tracking import GeneralTracker

    from prefkit.train.engine import make_accelerator

    class Recording(GeneralTracker):
        name, requires_logging_directory = "recording", False

        def __init__(self):
            super().__init__()
            self.logged, self.config, self.finished = [], None, False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            self.logged.append((step, values))

        def finish(self):
            self.finished = True

    recording = Recording()
    accelerator = make_accelerator("no", [recording], str(tmp_path))
    tracker = Tracker(accelerator, tmp_path, {"loss": "dpo", "lora": {"r": 8}}, enabled=True, trackers=[recording],
                      project="mine", run_name="first")
    tracker.log(3, {"loss": 0.5})
    tracker.close()
    assert recording.logged == [(3, {"loss": 0.5})] and recording.finished
    assert recording.config == {"loss": "dpo", "lora": "{'r': 8}"}  # nested values as strings
    assert read_metrics(tmp_path) == [{"step": 3, "loss": 0.5}]


def test_long_stages_show_a_bar_on_a_terminal_and_nothing_in_a_log_file(monkeypatch):
    import sys

    from prefkit.io import progress

    items = range(3)
    assert progress(items, total=3, desc="reference log-probs") is items  # a log file: the iterable as it is
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress(items, total=3, desc="reference log-probs")
    assert list(bar) == [0, 1, 2] and bar.desc.startswith("reference log-probs")
