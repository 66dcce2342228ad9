"""The Plackett-Luce (listwise DPO) loss: against a hand computation in float64, K = 2 is DPO, and what feeds
it."""

import math

import pytest
import torch

from prefkit import losses

F64 = torch.float64


def hand_plackett_luce(logps, ref_logps, beta):
    """-log Π_k exp(r_k) / Σ_{j >= k} exp(r_j), term by term with math.exp / math.log."""
    rewards = [beta * (a - b) for a, b in zip(logps, ref_logps)]
    return -sum(r - math.log(sum(math.exp(x) for x in rewards[k:])) for k, r in enumerate(rewards))


def test_plackett_luce_matches_the_hand_computation():
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(3, 4, generator=g, dtype=F64) * 20
    ref = -torch.rand(3, 4, generator=g, dtype=F64) * 20
    out = losses.evaluate("plackett_luce", list_logps=logps, ref_list_logps=ref, beta=0.3)
    expected = [hand_plackett_luce(a.tolist(), b.tolist(), 0.3) for a, b in zip(logps, ref)]
    # float64 both ways: agreement to rounding (~1e-15 relative on values of order 10)
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)
    rewards = 0.3 * (logps - ref)  # the metrics are logged in float32: agreement to its rounding
    assert out.metrics["rewards/chosen"].item() == pytest.approx(rewards[:, 0].mean().item(), rel=1e-6)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(rewards[:, -1].mean().item(), rel=1e-6)


def test_a_list_of_two_is_dpo():
    g = torch.Generator().manual_seed(1)
    chosen, rejected, ref_chosen, ref_rejected = (-torch.rand(5, generator=g, dtype=F64) * 10 for _ in range(4))
    listwise = losses.compute("plackett_luce", list_logps=torch.stack([chosen, rejected], 1),
                              ref_list_logps=torch.stack([ref_chosen, ref_rejected], 1), beta=0.2)
    dpo = losses.compute("dpo", chosen, rejected, ref_chosen, ref_rejected, beta=0.2)
    torch.testing.assert_close(listwise, dpo, rtol=1e-13, atol=1e-13)  # two float64 roundings of one formula


def test_the_best_ranked_first_lowers_the_loss_and_the_gradient_is_finite():
    ranked = torch.tensor([[-1.0, -2.0, -3.0]], dtype=F64, requires_grad=True)
    reverse = torch.tensor([[-3.0, -2.0, -1.0]], dtype=F64)
    zeros = torch.zeros(1, 3, dtype=F64)
    good = losses.compute("plackett_luce", list_logps=ranked, ref_list_logps=zeros, beta=1.0)
    assert good.item() < losses.compute("plackett_luce", list_logps=reverse, ref_list_logps=zeros, beta=1.0).item()
    good.sum().backward()
    assert torch.isfinite(ranked.grad).all() and ranked.grad[0, 0] < 0 < ranked.grad[0, -1]


def test_it_trains_on_lists_and_on_pairs_and_reads_the_reference():
    spec = losses.get("plackett_luce")
    assert spec.feeds == ("lists", "pairs") and spec.reference == "yes"
    assert losses.Objective("plackett_luce").kinds == ("pairs", "lists")
    assert "lists" not in losses.Objective("dpo").kinds
