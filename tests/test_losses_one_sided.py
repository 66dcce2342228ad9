"""One-sided losses: each value against a hand calculation, TRL names, gradient directions, limit cases."""

import math

import pytest
import torch

from prefkit import losses

# Two pairs. Pair 0: chosen log-ratio +1, rejected -1 (h = 2). Pair 1: h = -1.5.
CHOSEN, REJECTED = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
REF_CHOSEN, REF_REJECTED = torch.tensor([-2.0, -3.5]), torch.tensor([-2.0, -3.0])
LENGTHS_W, LENGTHS_L = torch.tensor([2.0, 4.0]), torch.tensor([4.0, 1.0])
W = [1.0, -0.5]  # chosen log-ratios
L = [-1.0, 1.0]  # rejected log-ratios
H = [w - l for w, l in zip(W, L)]


def sp(x):  # softplus = -log σ(-x)
    return math.log1p(math.exp(x))


def sig(x):
    return 1 / (1 + math.exp(-x))


def run(name, **kw):
    return losses.compute(name, CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, chosen_lengths=LENGTHS_W,
                          rejected_lengths=LENGTHS_L, **kw).tolist()


HAND = {
    ("dpo", 0.1, ()): [sp(-0.1 * h) for h in H],
    ("cdpo", 0.5, (("label_smoothing", 0.2),)): [0.8 * sp(-0.5 * h) + 0.2 * sp(0.5 * h) for h in H],
    ("rdpo", 0.5, (("label_smoothing", 0.2),)): [(0.8 * sp(-0.5 * h) - 0.2 * sp(0.5 * h)) / 0.6 for h in H],
    ("ipo", 0.25, ()): [(w / lw - l / ll - 2.0) ** 2 for w, l, lw, ll in zip(W, L, [2, 4], [4, 1])],
    ("ipo_sum", 0.25, ()): [(h - 2.0) ** 2 for h in H],
    ("hinge", 0.4, ()): [max(0.0, 1 - 0.4 * h) for h in H],
    ("rso", 0.05, ()): [max(0.0, 1 - 0.05 * h) for h in H],
    ("exo", 1.0, (("label_smoothing", 0.1),)): [
        sig(h) * (math.log(sig(h)) - math.log(0.9)) + sig(-h) * (math.log(sig(-h)) - math.log(0.1)) for h in H],
    ("nca", 0.5, ()): [sp(-0.5 * w) + 0.5 * sp(0.5 * w) + 0.5 * sp(0.5 * l) for w, l in zip(W, L)],
    ("bco_pair", 1.0, (("reward_shift", 0.3),)): [sp(-(w - 0.3)) + sp(l - 0.3) for w, l in zip(W, L)],
    ("sppo_hard", 0.5, ()): [(w - 1) ** 2 + (l + 1) ** 2 for w, l in zip(W, L)],
    ("apo_zero", 1.0, ()): [1 - sig(w) + sig(l) for w, l in zip(W, L)],
    ("apo_down", 1.0, ()): [sig(w) + 1 - sig(w - l) for w, l in zip(W, L)],
    ("discopop", 1.0, (("discopop_tau", 0.5),)): [
        sp(-h) * (1 - sig(h / 0.5)) + math.exp(-h) * sig(h / 0.5) for h in H],
    ("sigmoid_norm", 1.0, ()): [sp(-(w / lw - l / ll)) for w, l, lw, ll in zip(W, L, [2, 4], [4, 1])],
    # DPOP: chosen of pair 1 fell 0.5 below the reference -> penalty 0.5 * lam
    ("dpop", 0.1, (("lam", 2.0),)): [sp(-0.1 * H[0]), sp(-0.1 * (H[1] - 2.0 * 0.5))],
    ("cal_dpo", 0.5, ()): [sp(-h) + 0.5 * ((w - 1) ** 2 + (l + 1) ** 2) for h, w, l in zip(H, W, L)],
}


@pytest.mark.parametrize("key", list(HAND), ids=[k[0] for k in HAND])
def test_value_matches_hand_calculation(key):
    name, beta, extra = key
    assert run(name, beta=beta, **dict(extra)) == pytest.approx(HAND[key], rel=1e-12)


def test_aot_sorts_margins_across_the_batch():
    # policy margins z = [2, -2], reference margins [0, -0.5]: sorted deltas are (-2 - -0.5, 2 - 0)
    got = run("aot", beta=1.0)
    assert got == pytest.approx([sp(1.5), sp(-2.0)])
    got = run("aot_unpaired", beta=1.0)  # sorted chosen ratios (-0.5, 1) minus sorted rejected (-1, 1)
    assert got == pytest.approx([sp(-0.5), sp(0.0)])


@pytest.mark.parametrize("trl_name, name", [("sigmoid", "dpo"), ("robust", "rdpo"), ("exo_pair", "exo"),
                                            ("nca_pair", "nca")])
def test_trl_loss_type_names_are_aliases(trl_name, name):
    assert losses.get(trl_name) is losses.get(name)
    assert run(trl_name, beta=0.3) == run(name, beta=0.3)


def test_every_trl_dpo_loss_type_is_registered():
    trl = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
           "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]
    assert set(trl) <= set(losses.names(include_aliases=True))


def test_cdpo_with_zero_smoothing_is_dpo_and_rdpo_too():
    assert run("cdpo", label_smoothing=0.0) == pytest.approx(run("dpo"))
    assert run("rdpo", label_smoothing=0.0) == pytest.approx(run("dpo"))


def test_cdpo_has_a_finite_optimum_at_log_odds_of_the_smoothing():
    eps, beta = 0.1, 1.0
    h = torch.tensor([math.log((1 - eps) / eps)], requires_grad=True)
    loss = losses.compute("cdpo", h, torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=beta, label_smoothing=eps)
    loss.sum().backward()
    assert abs(h.grad.item()) < 1e-12


def test_dpo_gradient_raises_the_margin():
    chosen, rejected = CHOSEN.clone().requires_grad_(), REJECTED.clone().requires_grad_()
    losses.compute("dpo", chosen, rejected, REF_CHOSEN, REF_REJECTED).sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_ipo_minimum_sits_at_half_inverse_beta():
    beta = 0.25
    for h0 in (1.0, 2.0, 3.0):  # loss and gradient both vanish only at h = 1/(2β) = 2
        h = torch.tensor([h0], requires_grad=True)
        loss = losses.compute("ipo_sum", h, torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=beta)
        loss.sum().backward()
        assert (h.grad.item() == 0) == (h0 == 2.0)
        assert (h.grad.item() > 0) == (h0 > 2.0)


def test_beta_dpo_scales_beta_by_the_gap_and_masks_pairs():
    out = losses.evaluate("beta_dpo", CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, gap_mean=0.0,
                          select_mask=torch.tensor([True, False]), beta=0.1, alpha=0.5)
    batch_beta = 0.1 * (1 + 0.5 * (H[0] - 0.0))
    assert out.metrics["beta_dpo/beta"].item() == pytest.approx(batch_beta)
    assert out.losses.tolist() == pytest.approx([2 * sp(-batch_beta * H[0]), 0.0])
    mask = losses.beta_dpo_select(torch.tensor([0.0, 0.1, 9.0, -9.0, 0.2]), 0.0, 1.0, rho=0.4,
                                  generator=torch.Generator().manual_seed(0))
    assert mask.sum() == 3


@pytest.mark.parametrize("name, kwargs, parameter", [
    ("dpo", {"beta": -0.1}, "beta"),
    ("cdpo", {"label_smoothing": 0.5}, "label_smoothing"),
    ("rdpo", {"label_smoothing": -0.1}, "label_smoothing"),
    ("exo", {"label_smoothing": 0.0}, "label_smoothing"),
    ("ipo", {"beta": 0.0}, "beta"),
    ("discopop", {"discopop_tau": float("nan")}, "discopop_tau"),
])
def test_bad_hyperparameters_name_the_parameter(name, kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        run(name, **kwargs)
