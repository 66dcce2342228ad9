"""The registry contract: names, inputs from signatures, mixtures, metrics, errors, and `prefkit losses`."""

import json

import pytest
import torch

from prefkit import losses
from prefkit.cli import main

T = torch.tensor
PAIR = dict(chosen_logps=T([-1.0, -2.0]), rejected_logps=T([-3.0, -1.0]), ref_chosen_logps=T([-2.0, -2.0]),
            ref_rejected_logps=T([-2.0, -2.0]), chosen_lengths=T([2.0, 2.0]), rejected_lengths=T([3.0, 1.0]))

REQUIRED = {"dpo", "cdpo", "rdpo", "ipo", "ipo_sum", "hinge", "rso", "simpo", "cpo", "orpo", "nca", "exo", "apo_zero",
            "apo_down", "aot", "aot_unpaired", "discopop", "sppo_hard", "bco_pair", "dpop", "cal_dpo", "beta_dpo",
            "sigmoid_norm", "stapo", "kto", "bco", "npo", "sppo", "sppo_single", "inpo", "mpo", "online_ipo",
            "nash_md", "sparsepo", "sft", "slic"}


def test_catalogue_has_every_loss_the_foundation_asks_for():
    assert REQUIRED <= set(losses.names())


def test_every_loss_has_a_docstring_a_paper_and_a_family():
    for spec in losses.specs():
        assert spec.summary and spec.paper and spec.family in losses.registry.FAMILIES, spec.name


def test_a_trainer_may_pass_inputs_a_loss_does_not_read():
    # dpo ignores lengths, simpo ignores the reference: both accept the full set
    assert losses.compute("dpo", **PAIR).shape == (2,)
    assert losses.compute("simpo", **PAIR).shape == (2,)


def test_reference_flag_comes_from_the_signature():
    assert losses.get("dpo").reference == "yes"
    assert losses.get("simpo").reference == "no"
    assert losses.get("stapo").reference == "optional"


def test_mixture_is_a_weighted_sum_and_rpo_needs_no_new_code():
    dpo = losses.compute("dpo", **PAIR, beta=0.2)
    sft = losses.compute("sft", **PAIR)
    rpo = losses.evaluate(["dpo", "sft"], **PAIR, weights=[1.0, 0.005], beta=0.2)
    assert rpo.losses.tolist() == pytest.approx((dpo + 0.005 * sft).tolist())
    assert rpo.metrics["loss/sft"].item() == pytest.approx(sft.mean().item())


def test_mixture_hyperparameters_can_target_one_component():
    mixed = losses.compute(["dpo", "nca"], **PAIR, **{"dpo.beta": 0.5, "nca.beta": 0.05})
    expected = losses.compute("dpo", **PAIR, beta=0.5) + losses.compute("nca", **PAIR, beta=0.05)
    assert mixed.tolist() == pytest.approx(expected.tolist())


def test_metrics_use_trl_names_and_values():
    m = losses.evaluate("dpo", **PAIR, beta=0.1).metrics
    assert m["rewards/chosen"].item() == pytest.approx(0.1 * (1.0 + 0.0) / 2)
    assert m["rewards/rejected"].item() == pytest.approx(0.1 * (-1.0 + 1.0) / 2)
    assert m["rewards/margins"].item() == pytest.approx(0.1 * (2.0 - 1.0) / 2)
    assert m["rewards/accuracies"].item() == 0.5
    assert m["logps/chosen"].item() == -1.5
    assert m["contrastive_logit"].item() == pytest.approx((2.0 - 1.0) / 2)
    assert m["contrastive_logit/mean"].item() == pytest.approx(((-0.5 + 1.0) + (-1.0 + 1.0)) / 2)
    assert not any(v.requires_grad for v in m.values())


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    same = T([-3.0, -7.0])
    assert losses.compute("dpo", same, same.flip(0), same, same.flip(0)).tolist() == pytest.approx([0.693147] * 2,
                                                                                                    abs=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: losses.compute("dpoo", **PAIR), "did you mean 'dpo'"),
    (lambda: losses.compute("dpo", **PAIR, betta=0.1), "did you mean 'beta'"),
    (lambda: losses.compute("dpo", T([0.0]), T([0.0])), "needs ref_chosen_logps, ref_rejected_logps"),
    (lambda: losses.compute("dpo", T([0.0, 1.0]), T([0.0]), T([0.0]), T([0.0])), "batch size"),
    (lambda: losses.compute(["dpo", "sft"], **PAIR, weights=[1.0]), "2 losses"),
])
def test_errors_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cli_lists_the_catalogue(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in ("dpo (sigmoid)", "stapo", "mpo", "kto", "sparsepo"):
        assert name in out
    assert "Rafailov" in out and "beta=0.1" in out


def test_cli_describes_one_loss_and_emits_json(capsys):
    assert main(["losses", "robust"]) == 0
    assert "rdpo (also: robust)" in capsys.readouterr().out
    assert main(["losses", "--json", "--family", "self-play"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} == {"sppo", "sppo_single", "inpo", "mpo", "mpo_pg", "online_ipo", "nash_md"}


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["losses", "dpoo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prefkit: error: unknown loss 'dpoo'") and "Traceback" not in err


def test_every_loss_is_documented_for_users():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "losses.md").read_text()
    missing = [name for name in losses.names(include_aliases=True) if f"`{name}`" not in text]
    assert not missing, f"docs/losses.md does not document: {missing}"
