"""`prefkit demo --quick` end to end: every stage runs, the results are sane, the report and plots exist."""

import json

import pytest

from prefkit.cli import main


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    methods = results["methods"]
    assert set(methods) == {"reference", "dpo", "simpo", "stapo", "mpo", "mpo (no refresh)", "inpo", "sppo"}
    assert methods["reference"]["win_rate_vs_reference"] == pytest.approx(0.5)  # the reference against itself
    for name, m in methods.items():
        assert 0 <= m["win_rate_vs_reference"] <= 1 and 0 <= m["duality_gap"] <= 1 and 0 <= m["mass_outside"] <= 1
        assert name in printed
    assert [p["epoch"] for p in results["curves"]["stapo"]] == [1, 2]
    assert [p["iteration"] for p in results["curves"]["mpo"]] == [1, 2]
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64") == 5 and (tmp_path / "report.md").is_file()
    for png in (tmp_path / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
