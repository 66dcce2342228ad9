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
    assert set(methods) == {"reference", "dpo", "simpo", "stapo", "mpo", "fixed magnet (= inpo)", "sppo"}
    assert methods["reference"]["win_rate_vs_reference"] == pytest.approx(0.5)  # the reference against itself
    for name, m in methods.items():
        assert 0 <= m["win_rate_vs_reference"] <= 1 and 0 <= m["duality_gap"] <= 1 and 0 <= m["mass_outside"] <= 1
        assert name in printed
    assert [p["epoch"] for p in results["curves"]["stapo"]] == [1, 2]
    assert [p["iteration"] for p in results["curves"]["mpo"]] == [1, 2, 3, 4]
    for name in ("mpo", "fixed magnet (= inpo)", "sppo"):  # each trained curve beside its tabular twin
        assert all(0 <= p["tabular_gap"] <= 1 for p in results["curves"][name])
        assert len(results["lab"][name]) == 41 and results["lab"][name][0] == pytest.approx(
            methods["reference"]["duality_gap"])
    html = (tmp_path / "report.html").read_text()
    # the demo's six figures, then MPO's final policy through prefkit eval's sections and their two figures
    assert html.count("data:image/png;base64") == 8 and (tmp_path / "report.md").is_file()
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Summary") and "MPO's final policy: exact duality gaps" in md
    assert "MPO's last iterate ends" in md
    mpo = results["evaluations"]["mpo"]["sections"]  # the summary's numbers are that evaluation's
    assert methods["mpo"]["win_rate_vs_reference"] == mpo["exact_win_rate"]["win_rate"]
    assert methods["mpo"]["entropy"] == mpo["generation"]["model"]["token_entropy"]
    for png in (tmp_path / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # The measured behaviour the full demo reports (docs/demo.md), guarded at the quick size, seed 0:
    curves = results["curves"]
    final = {name: curves[name][-1] for name in ("dpo", "simpo", "stapo")}
    # StaPO holds its contrastive logit where one-sided losses keep pushing it up ...
    assert final["stapo"]["contrastive_logit"] < min(final["dpo"]["contrastive_logit"],
                                                     final["simpo"]["contrastive_logit"]) - 0.1
    growth = {n: curves[n][-1]["contrastive_logit"] - curves[n][0]["contrastive_logit"] for n in final}
    assert growth["stapo"] < growth["dpo"] - 0.1
    # ... and keeps the generation entropy that DPO loses.
    assert final["stapo"]["entropy"] > final["dpo"]["entropy"] + 0.2
    # Self-play lowers the exact duality gap on the cyclic prompts below the reference's.
    assert methods["mpo"]["duality_gap"] < methods["reference"]["duality_gap"] - 0.01
