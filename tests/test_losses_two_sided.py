"""StaPO: values, the band's push-back, the SimPO limit, variants and margin validation."""

import math

import pytest
import torch

from prefkit import losses


def stapo(chosen, rejected, **kw):
    ones = torch.ones(len(chosen))
    return losses.evaluate("stapo", torch.tensor(chosen), torch.tensor(rejected), chosen_lengths=ones,
                           rejected_lengths=ones, **kw)


def test_smooth_value_matches_hand_calculation():
    # u = β·z̄ = 1.0·(−1 − (−4)) = 3, band (1, 2): sp(1 − 3) + 0.5·sp(3 − 2)
    out = stapo([-1.0], [-4.0], beta=1.0, left_margin=1.0, right_margin=2.0, lam=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-2)) + 0.5 * math.log1p(math.exp(1)))


@pytest.mark.parametrize("variant", ["smooth", "hinge"])
def test_gradient_lowers_the_logit_above_the_right_margin_and_raises_it_below_the_left(variant):
    chosen = torch.tensor([-1.0, -1.0], requires_grad=True)  # u = 5 (above the band), u = 0.5 (below)
    rejected = torch.tensor([-6.0, -1.5])
    ones = torch.ones(2)
    losses.compute("stapo", chosen, rejected, chosen_lengths=ones, rejected_lengths=ones, beta=1.0,
                   left_margin=1.0, right_margin=3.0, variant=variant).sum().backward()
    assert chosen.grad[0] > 0  # descent lowers the chosen log-prob: the logit comes down
    assert chosen.grad[1] < 0  # descent raises it: the logit goes up


def test_clipped_variant_stops_growth_without_pushing_back():
    chosen = torch.tensor([-1.0], requires_grad=True)
    ones = torch.ones(1)
    losses.compute("stapo", chosen, torch.tensor([-6.0]), chosen_lengths=ones, rejected_lengths=ones, beta=1.0,
                   left_margin=1.0, right_margin=3.0, variant="clipped").sum().backward()
    assert chosen.grad.item() == 0.0


def test_hinge_variant_is_flat_inside_the_band():
    assert stapo([-1.0], [-3.0], beta=1.0, left_margin=1.0, right_margin=3.0, variant="hinge").losses.item() == 0


def test_smooth_minimum_is_the_centre_of_the_band():
    u = torch.linspace(0, 6, 6001)
    out = stapo(u.tolist(), [0.0] * len(u), beta=1.0, left_margin=1.0, right_margin=4.0)
    assert u[out.losses.argmin()].item() == pytest.approx(2.5, abs=1e-3)


def test_right_margin_to_infinity_recovers_simpo():
    chosen, rejected = torch.tensor([-2.0, -9.0]), torch.tensor([-6.0, -3.0])
    lw, ll = torch.tensor([2.0, 3.0]), torch.tensor([3.0, 1.0])
    simpo = losses.compute("simpo", chosen, rejected, chosen_lengths=lw, rejected_lengths=ll, beta=2.0, gamma=1.0)
    far = losses.compute("stapo", chosen, rejected, chosen_lengths=lw, rejected_lengths=ll, beta=2.0,
                         left_margin=1.0, right_margin=1e4)
    assert far.tolist() == pytest.approx(simpo.tolist(), rel=1e-12)


def test_summed_and_reference_based_forms():
    out = losses.compute("stapo", torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-1.5]),
                         torch.tensor([-2.0]), beta=1.0, left_margin=0.0, right_margin=5.0, average=False,
                         reference_based=True)  # h = 0.5 - (-1) = 1.5
    assert out.item() == pytest.approx(math.log1p(math.exp(-1.5)) + math.log1p(math.exp(1.5 - 5.0)))


def test_band_fractions_are_reported():
    m = stapo([0.0, 0.0, 0.0], [-0.5, -2.0, -9.0], beta=1.0, left_margin=1.0, right_margin=3.0).metrics
    assert [m["stapo/below"].item(), m["stapo/inside"].item(), m["stapo/above"].item()] == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("kwargs, parameter", [
    ({"left_margin": 2.0, "right_margin": 2.0}, "right_margin"),
    ({"left_margin": 3.0, "right_margin": 1.0}, "right_margin"),
    ({"variant": "soft"}, "variant"),
    ({"beta": -1.0}, "beta"),
])
def test_bad_margins_are_rejected_with_the_parameter_named(kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        stapo([-1.0], [-2.0], **kwargs)


def test_average_form_without_lengths_says_what_is_missing():
    with pytest.raises(ValueError, match="chosen_lengths"):
        losses.compute("stapo", torch.tensor([-1.0]), torch.tensor([-2.0]))
