"""Self-play losses: hand values, and the population check that MPO and INPO fit their exact tabular step.

The population check: on a 3x3 cyclic preference game, pairs (y, y') ~ π_t x π_t are labelled by the oracle;
minimising the expected loss over tabular logits must land exactly on the closed-form update of
docs/games.md's table of algorithms (MMD for MPO, OMD for INPO, multiplicative weights for MPO with α = 0).
"""

import itertools

import pytest
import torch

from prefkit import losses

T = torch.tensor
CYCLIC = T([[0.5, 0.1, 0.8], [0.9, 0.5, 0.1], [0.2, 0.9, 0.5]])  # P[i, j] = P(y_i beats y_j)
PI_T = T([0.6, 0.3, 0.1])
PI_REF = T([0.2, 0.5, 0.3])


def normalise_log(x):
    return x - torch.logsumexp(x, 0)


def fit_population(name, soft=False, **hyperparameters):
    """Minimise E_{y,y'~π_t} E_label[loss] over the logits of a tabular policy; return the policy."""
    pairs = list(itertools.permutations(range(3), 2))
    w_idx, l_idx = T([p[0] for p in pairs]), T([p[1] for p in pairs])
    weight = PI_T[w_idx] * PI_T[l_idx] * (1.0 if soft else CYCLIC[w_idx, l_idx])
    log_t, log_ref = PI_T.log(), PI_REF.log()
    theta = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        log_pi = normalise_log(theta)
        extra = {"preference": CYCLIC[w_idx, l_idx]} if soft else {}
        loss = losses.compute(name, log_pi[w_idx], log_pi[l_idx], log_ref[w_idx], log_ref[l_idx],
                              prev_chosen_logps=log_t[w_idx], prev_rejected_logps=log_t[l_idx], **extra,
                              **hyperparameters)
        total = (weight * loss).sum()
        total.backward()
        return total

    optimizer.step(closure)
    return normalise_log(theta.detach()).exp()


def closed_form(eta, alpha=0.0, inpo_tau=None):
    q = CYCLIC @ PI_T  # win rate of each response against π_t
    if inpo_tau is not None:  # OMD / INPO step
        logits = (1 - eta * inpo_tau) * PI_T.log() + eta * inpo_tau * PI_REF.log() + eta * q
    else:  # MMD step
        logits = (PI_T.log() + eta * alpha * PI_REF.log() + eta * q) / (1 + eta * alpha)
    return normalise_log(logits).exp()


@pytest.mark.parametrize("eta, alpha", [(0.5, 0.2), (2.0, 1.0), (3.0, 0.0)])
def test_mpo_population_loss_reproduces_the_mmd_step(eta, alpha):
    assert fit_population("mpo", eta=eta, alpha=alpha).tolist() == pytest.approx(
        closed_form(eta, alpha).tolist(), abs=1e-7)


def test_mpo_with_zero_alpha_is_the_sppo_multiplicative_weights_step():
    mwu = normalise_log(PI_T.log() + 1.5 * (CYCLIC @ PI_T)).exp()
    assert fit_population("mpo", eta=1.5, alpha=0.0).tolist() == pytest.approx(mwu.tolist(), abs=1e-7)


def test_mpo_soft_labels_reach_the_same_step_as_hard_labels():
    assert fit_population("mpo", soft=True, eta=0.5, alpha=0.2).tolist() == pytest.approx(
        closed_form(0.5, 0.2).tolist(), abs=1e-7)


def test_inpo_population_loss_reproduces_the_omd_step():
    assert fit_population("inpo", eta=0.8, tau=0.5).tolist() == pytest.approx(
        closed_form(0.8, inpo_tau=0.5).tolist(), abs=1e-7)


def test_mpo_is_inpo_with_the_reparametrised_step():
    # MMD(η, α) = INPO(η/(1+ηα), α): the two losses agree example by example
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(5, generator=g) for _ in range(6)]
    eta, alpha = 3.0, 0.4
    mpo = losses.compute("mpo", *x[:4], prev_chosen_logps=x[4], prev_rejected_logps=x[5], eta=eta, alpha=alpha)
    inpo = losses.compute("inpo", *x[:4], prev_chosen_logps=x[4], prev_rejected_logps=x[5],
                          eta=eta / (1 + eta * alpha), tau=alpha)
    assert mpo.tolist() == pytest.approx(inpo.tolist(), rel=1e-12)


def test_hand_values():
    one = T([-1.0])
    # SPPO per response: log-ratio 0.5 to π_t, win rate 0.75, η = 2 -> (0.5 - 0.5)² = 0
    assert losses.compute("sppo", logps=T([-1.0, -1.0]), prev_logps=T([-1.5, -1.0]), winrate=T([0.75, 0.75]),
                          eta=2.0).tolist() == pytest.approx([0.0, 0.25])
    # SPPO single pair, p = 0.9, η = 5: targets ±2
    got = losses.compute("sppo_single", T([0.0]), T([0.0]), prev_chosen_logps=one, prev_rejected_logps=one,
                         preference=T([0.9]), eta=5.0)
    assert got.item() == pytest.approx(((1 - 2) ** 2 + (1 + 2) ** 2) / 2)
    # online IPO, h = 1, β = 0.5, p = 0.75: 0.75·(1 - 1)² + 0.25·(1 + 1)²
    got = losses.compute("online_ipo", T([0.0]), T([-1.0]), T([0.0]), T([0.0]), preference=T([0.75]), beta=0.5)
    assert got.item() == pytest.approx(1.0)
    # MPO with win rates: target c·(P̂_w - P̂_l)
    got = losses.compute("mpo", T([0.0]), T([0.0]), T([0.0]), T([0.0]), prev_chosen_logps=T([0.0]),
                         prev_rejected_logps=T([0.0]), chosen_winrate=T([0.7]), rejected_winrate=T([0.4]),
                         eta=1.0, alpha=1.0)
    assert got.item() == pytest.approx((0.5 * 0.3) ** 2)


def test_policy_gradient_surrogates_have_the_right_gradients():
    logps = T([-2.0, -3.0], requires_grad=True)
    # Nash-MD: d/dlogπ = -(p - ½) + β·(log π/π_ref)
    losses.compute("nash_md", logps=logps, ref_logps=T([-2.5, -3.0]), preference=T([0.9, 0.2]),
                   beta=0.1).sum().backward()
    assert logps.grad.tolist() == pytest.approx([-0.4 + 0.05, 0.3])
    logps.grad = None
    # MPO-PG: d/dlogπ = -(Â - α·log π/π_ref - (1/η)·log π/π_t)
    losses.compute("mpo_pg", logps=logps, prev_logps=T([-2.0, -2.0]), ref_logps=T([-1.0, -3.0]),
                   advantages=T([0.2, -0.2]), eta=2.0, alpha=0.5).sum().backward()
    assert logps.grad.tolist() == pytest.approx([-(0.2 + 0.5), -(-0.2 + 0.5)])


def test_inpo_rejects_a_negative_weight_on_the_previous_iterate():
    z = T([0.0])
    with pytest.raises(ValueError, match="tau"):
        losses.compute("inpo", z, z, z, z, prev_chosen_logps=z, prev_rejected_logps=z, eta=10.0, tau=0.2)
    with pytest.raises(ValueError, match="eta"):
        losses.compute("mpo", z, z, z, z, prev_chosen_logps=z, prev_rejected_logps=z, eta=-1.0)
