"""Reference-free (SimPO, CPO, ORPO, SLiC, SFT) and unpaired (KTO, BCO, NPO) losses against hand calculations."""

import math

import pytest
import torch

from prefkit import losses

T = torch.tensor


def sp(x):
    return math.log1p(math.exp(x))


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_simpo_cpo_orpo_slic_sft():
    chosen, rejected, lw, ll = T([-2.0]), T([-6.0]), T([4.0]), T([3.0])
    kw = dict(chosen_lengths=lw, rejected_lengths=ll)
    zbar = -0.5 - (-2.0)
    assert losses.compute("simpo", chosen, rejected, **kw, beta=2.0, gamma=1.0).item() == pytest.approx(
        sp(-(2.0 * zbar - 1.0)))
    assert losses.compute("cpo", chosen, rejected, **kw, beta=0.1, alpha=1.0).item() == pytest.approx(
        sp(-0.1 * 4.0) + 0.5)
    odds = (-0.5 - -2.0) - (math.log(1 - math.exp(-0.5)) - math.log(1 - math.exp(-2.0)))
    assert losses.compute("orpo", chosen, rejected, **kw, beta=0.1).item() == pytest.approx(0.5 + 0.1 * sp(-odds))
    assert losses.compute("slic", chosen, rejected, margin=5.0).item() == pytest.approx(1.0)
    assert losses.compute("sft", chosen, chosen_lengths=lw).item() == pytest.approx(0.5)


def test_orpo_log1mexp_is_stable_for_tiny_and_huge_log_probs():
    out = losses.compute("orpo", T([-1e-9, -200.0]), T([-300.0, -1e-7]), chosen_lengths=T([1.0, 1.0]),
                         rejected_lengths=T([1.0, 1.0]))
    assert torch.isfinite(out).all()


LOGPS, REF, LABELS = T([-1.0, -2.0, -3.0]), T([-1.5, -1.0, -3.0]), T([True, False, True])
RHO = [0.5, -1.0, 0.0]


def test_kto_uses_the_clamped_kl_reference_point():
    out = losses.evaluate("kto", logps=LOGPS, ref_logps=REF, labels=LABELS, kl=0.2, beta=1.0,
                          desirable_weight=1.0, undesirable_weight=2.0)
    expected = [1 - sig(0.5 - 0.2), 2.0 * (1 - sig(0.2 + 1.0)), 1 - sig(-0.2)]
    assert out.losses.tolist() == pytest.approx(expected)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.25)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-1.0)
    negative_kl = losses.compute("kto", logps=LOGPS, ref_logps=REF, labels=LABELS, kl=-5.0, beta=1.0)
    assert negative_kl.tolist() == pytest.approx([1 - sig(0.5), 1 - sig(1.0), 0.5])
    mismatched = losses.kto_kl_estimate(T([-1.0, -3.0]), T([-2.0, -2.0]))
    assert mismatched.item() == 0.0  # mean log-ratio 0, clamped


def test_bco_applies_shift_and_udm_weights_to_undesirable_only():
    out = losses.compute("bco", logps=LOGPS, ref_logps=REF, labels=LABELS, reward_shift=0.1,
                         udm_weights=T([3.0, 2.0, 3.0]), beta=1.0)
    assert out.tolist() == pytest.approx([sp(-(0.5 - 0.1)), 2.0 * sp(-1.0 - 0.1), sp(0.1)])
    mean, count = losses.bco_reward_shift(1.0, 2, T([4.0, -2.0]))
    assert (mean, count) == (pytest.approx(1.0), 4)


def test_npo_is_bounded_and_pushes_the_likelihood_down():
    logps = LOGPS.clone().requires_grad_()
    out = losses.compute("npo", logps=logps, ref_logps=REF, beta=0.5)
    assert out.tolist() == pytest.approx([(2 / 0.5) * sp(0.5 * r) for r in RHO])
    out.sum().backward()
    assert (logps.grad > 0).all()  # descent lowers every forget-set log-prob
    far = losses.compute("npo", logps=T([-1e4]), ref_logps=T([0.0]), beta=0.5)
    assert far.item() >= 0  # bounded below, unlike gradient ascent
