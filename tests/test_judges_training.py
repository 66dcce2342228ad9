"""Judges users train: the GPM's skew-symmetric maths (exact antisymmetry, cycles a Bradley-Terry model cannot
fit), `prefkit judge train` end to end on a tiny Llama, the saved judges through the normal judge API, exact
resume, and the one-line errors for bad settings and bad data."""

import json

import numpy as np
import pytest
import torch

from prefkit.cli import main
from prefkit.judges import load_judge, preference_matrix
from prefkit.judges.calibration import pair_metrics
from prefkit.judges.heads import HeadSettings, antisymmetric_sigmoid, preference_logits, skew_form
from prefkit.judges.train_config import JudgeTrainConfig
from prefkit.judges.training import PairLogits, fit, pair_batch
from prefkit.train.config import load_config
from prefkit.train.tracking import read_metrics
from train_fixtures import killed_after_first_save

# rock-paper-scissors with uneven margins (the bundled task's first cyclic game): P[i, j] = P(i beats j)
CYCLE = np.array([[0.5, 0.1, 0.8], [0.9, 0.5, 0.1], [0.2, 0.9, 0.5]])
PROMPT = [{"role": "user", "content": "pick: rock paper scissors"}]
ANSWERS = [[{"role": "assistant", "content": word}] for word in ("rock", "paper", "scissors")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_skew_form_is_exactly_antisymmetric(dtype):
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(64, 8, generator=generator, dtype=dtype) for _ in range(2))
    gate = torch.softmax(torch.randn(64, 4, generator=generator, dtype=dtype), -1)
    s = skew_form(a, b, gate)
    assert torch.equal(skew_form(b, a, gate), -s)  # bit for bit, not approximately
    assert torch.equal(skew_form(a, a, gate), torch.zeros_like(s))
    assert torch.equal(antisymmetric_sigmoid(s) + antisymmetric_sigmoid(-s), torch.ones_like(s))


def fit_free_head(settings: HeadSettings, steps: int = 1500) -> np.ndarray:
    """The preference matrix a head reaches when each answer's head outputs are free parameters, fitted to CYCLE
    with the judge's own logits and log-loss: what the head can represent, with no backbone in the way."""
    torch.manual_seed(0)
    outputs = torch.nn.Parameter(torch.randn(3, settings.num_labels, dtype=torch.float64))
    i, j = np.nonzero(~np.eye(3, dtype=bool))
    labels = torch.tensor(CYCLE[i, j])
    optimizer = torch.optim.Adam([outputs], lr=0.05)
    for _ in range(steps):
        logits = preference_logits(outputs[i], outputs[j], None, settings)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    P = np.full((3, 3), 0.5)
    P[i, j] = antisymmetric_sigmoid(preference_logits(outputs[i], outputs[j], None, settings)).detach().numpy()
    return P


def directions_right(P: np.ndarray) -> float:
    i, j = np.triu_indices(3, 1)
    return float(np.mean((P[i, j] > 0.5) == (CYCLE[i, j] > 0.5)))


def test_a_gpm_reproduces_a_cycle_that_bradley_terry_cannot():
    gpm = fit_free_head(HeadSettings("gpm", embedding_dim=4, prompt_scaling=False, temperature=0.1))
    assert directions_right(gpm) == 1.0
    assert np.abs(gpm - CYCLE).max() < 0.02
    bt = fit_free_head(HeadSettings("bt"))
    # A reward orders the answers, so on a 3-cycle one direction is always wrong.
    assert directions_right(bt) <= 2 / 3
    assert np.abs(bt - CYCLE).max() > 0.3


def test_calibration_metrics():
    metrics = pair_metrics([0.9, 0.9, 0.2, 0.6], [1.0, 1.0, 1.0, 0.0], bins=10)
    assert metrics["accuracy"] == 0.5
    assert metrics["log_loss"] == pytest.approx(-(2 * np.log(0.9) + np.log(0.2) + np.log(0.4)) / 4)
    # both orders: bins hold {0.9, 0.9} (observed 1, 1), {0.1, 0.1} (0, 0), {0.2} (1), {0.8} (0), {0.6} (0), {0.4} (1)
    expected = (2 * 0.1 + 2 * 0.1 + 0.8 + 0.8 + 0.6 + 0.6) / 8
    assert metrics["ece"] == pytest.approx(expected)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, task):
    """A tiny untrained Llama and the task's cyclic pairs with the oracle's soft labels (margin = logit P)."""
    from prefkit.io import write_jsonl
    from prefkit.tasks import as_row

    root = tmp_path_factory.mktemp("judges")
    task.model(seed=0, hidden_size=32).save_pretrained(root / "model")
    task.tokenizer().save_pretrained(root / "model")
    rows = []
    for prompt in task.prompts("cyclic", "train"):
        answers = task.canonical(prompt)
        for a in range(len(answers)):
            for b in range(a + 1, len(answers)):
                p = task.preference(prompt, answers[a], answers[b])
                rows.append({**as_row(prompt, chosen=answers[a], rejected=answers[b], conversational=True),
                             "margin": float(np.log(p / (1 - p)))})
    write_jsonl(rows, root / "pairs.jsonl")
    return {"model": str(root / "model"), "data": str(root / "pairs.jsonl")}


def config(workspace, out, **overrides) -> JudgeTrainConfig:
    values = dict(model=workspace["model"], data=workspace["data"], output_dir=str(out), batch_size=4,
                  max_steps=3, learning_rate=1e-3, logging_steps=1, progress=False)
    values.update(overrides)
    return load_config(None, values, [], kind=JudgeTrainConfig)


@pytest.mark.parametrize("kind, spec", [("gpm", "gpm"), ("bt", "reward")])
def test_a_trained_judge_loads_and_judges_what_training_saw(workspace, tmp_path, kind, spec):
    final = fit(config(workspace, tmp_path, kind=kind, eval_data=workspace["data"], embedding_dim=4))
    judge = load_judge(f"{spec}:{final}")
    # The judge reads the same token ids as training: its P for the first pairs is the training module's.
    from prefkit.data import prepare

    data = prepare(workspace["data"], judge.tokenizer)
    trained = PairLogits(judge.scorer.model, HeadSettings.of(judge.scorer.model.config))
    settings = HeadSettings.of(judge.scorer.model.config)
    batch = pair_batch(data.examples, range(4), judge.tokenizer.pad_token_id, settings, judge.scorer.model.device)
    with torch.no_grad():
        expected = antisymmetric_sigmoid(trained(batch).double()).numpy()
    rows = [json.loads(line) for line in open(workspace["data"])][:4]
    got = judge.compare([r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-6)  # float32 model: batch padding changes the last bits
    # K forward rows per K x K matrix (+1 for the prompt's gate), and P + Pᵀ = 1 exactly.
    before = judge.scorer.rows
    P = preference_matrix(judge, [PROMPT], [ANSWERS])[0]
    assert judge.scorer.rows - before == 3 + (kind == "gpm")
    assert np.array_equal(P + P.T, np.ones((3, 3)))
    # trained on conversations, it reads plain strings (what a self-play prompts file holds) as those messages
    assert settings.style == "conversational"
    strings = preference_matrix(judge, [PROMPT[0]["content"]], [[a[0]["content"] for a in ANSWERS]])[0]
    assert np.array_equal(strings, P)
    # an empty answer (a policy that emits EOS at once) is judged too: the judge reads the prompt, then EOS
    empty = judge.compare([PROMPT[0]["content"]] * 2, ["", ANSWERS[0][0]["content"]], [ANSWERS[0][0]["content"], ""])
    assert 0 < empty[0] < 1 and empty[0] + empty[1] == pytest.approx(1, abs=1e-6)
    # and so is an answer holding a special token's text (decoded samples keep it), which data rows may not hold
    special = next(t for t in judge.tokenizer.all_special_tokens if t != judge.tokenizer.eos_token)
    assert 0 < judge.compare([PROMPT[0]["content"]], ["rock " + special], ["paper"])[0] < 1
    if kind == "gpm":
        # preference_matrix's averaging of both orders, (p + 1 − (1 − p)) / 2, is p up to its own rounding
        np.testing.assert_allclose(P, judge.matrix(PROMPT, ANSWERS), atol=1e-6)
        shifted = ANSWERS[1:] + ANSWERS[:1]  # both orders in one call, so each embedding is the same forward's
        both = judge.compare([PROMPT] * 6, ANSWERS + shifted, shifted + ANSWERS)
        assert np.array_equal(both[:3] + both[3:], np.ones(3))
    card = (final / "README.md").read_text()
    assert "pairs.jsonl" in card and "| accuracy |" in card and ("GPM" in card) == (kind == "gpm")
    assert (tmp_path / "plots" / "reliability.png").stat().st_size > 0
    evaluated = [r for r in read_metrics(tmp_path) if "eval/ece" in r]
    assert evaluated and 0 <= evaluated[-1]["eval/ece"] <= 1


def test_a_bt_judge_is_not_loaded_as_gpm(workspace, tmp_path):
    final = fit(config(workspace, tmp_path, kind="bt", max_steps=1))
    with pytest.raises(Exception, match="not a general preference model"):
        load_judge(f"gpm:{final}")


def test_resume_continues_exactly_where_it_stopped(workspace, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    options = dict(kind="gpm", max_steps=4, save_steps=2, lora={"r": 4, "alpha": 8})
    fit(config(workspace, tmp_path / "once", **options))
    killed_after_first_save(monkeypatch, lambda: fit(config(workspace, tmp_path / "twice", **options)))
    fit(config(workspace, tmp_path / "twice", resume=True, **options))
    once, twice = (load_file(str(tmp_path / name / "final" / "model.safetensors")) for name in ("once", "twice"))
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)
    assert [r["step"] for r in read_metrics(tmp_path / "twice") if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.parametrize("args, message", [
    (["kind=gpm", "embedding_dim=7"], "'embedding_dim' must be even"),
    (["kind=ranker"], "'kind' must be one of bt, gpm (got 'ranker')"),
    (["temperature=0", "learning_rat=1"], "2 problems"),
    (["--model", "./no/such/model"], "model path not found: ./no/such/model"),
])
def test_bad_settings_are_one_clear_line(workspace, tmp_path, capsys, args, message):
    base = ["judge", "train", "--model", workspace["model"], "--data", workspace["data"],
            "--output-dir", str(tmp_path)]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "final").exists()


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "p", "chosen": "a", "rejected": "a"}], "line 1, field 'rejected': identical to chosen"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}], "line 1, field 'margin'"),
    ([{"prompt": "p", "completion": "a", "label": True}], "a judge learns from preference pairs"),
])
def test_bad_data_is_one_clear_line(workspace, tmp_path, capsys, rows, message):
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main(["judge", "train", "--model", workspace["model"], "--data", str(data), "--output-dir",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
