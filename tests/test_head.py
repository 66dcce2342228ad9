"""The fused head (`prefkit.modeling.head`) equals autograd through log_softmax(scaled, capped linear): values and
the gradients of hidden states, weight and bias, whether the backward pass recomputes the logits or keeps them."""

import pytest
import torch
import torch.nn.functional as F

from prefkit.modeling.head import head_logps


def _inputs(dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(9, 6, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(13, 6, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(13, generator=g, dtype=dtype).requires_grad_() if bias else None
    targets = torch.randint(0, 13, (9,), generator=g)
    upstream = torch.randn(9, generator=g, dtype=dtype)  # a loss weights each position differently
    return hidden, weight, b, targets, upstream


def _reference(hidden, weight, bias, targets, scale, softcap):
    logits = F.linear(hidden, weight, bias)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) * scale
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]


def _grads(out, upstream, tensors):
    return torch.autograd.grad(out, [t for t in tensors if t is not None], upstream.to(out.dtype))


@pytest.mark.parametrize("rows, columns, keep", [(1, 5, False), (4, 1, False), (4, 13, False), (100, 100, False),
                                                 (4, 5, True)])
@pytest.mark.parametrize("scale, softcap, bias", [(1.0, None, False), (0.5, None, True), (1.7, 3.0, True)])
def test_fused_head_equals_autograd(rows, columns, keep, scale, softcap, bias):
    hidden, weight, b, targets, upstream = _inputs(torch.float64, bias)  # float64: agreement to rounding
    got = head_logps(hidden, weight, b, targets, scale=scale, softcap=softcap, rows=rows, columns=columns, keep=keep)
    want = _reference(hidden, weight, b, targets, scale, softcap)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(_grads(got, upstream, (hidden, weight, b)), _grads(want, upstream, (hidden, weight, b))):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_frozen_weight_and_no_grad():
    hidden, weight, _, targets, upstream = _inputs(torch.float32, bias=False)
    weight.requires_grad_(False)
    got = head_logps(hidden, weight, None, targets, rows=2)
    (grad_hidden,) = torch.autograd.grad(got, hidden, upstream)
    want = _reference(hidden, weight, None, targets, 1.0, None)
    (expected,) = torch.autograd.grad(want, hidden, upstream)
    assert torch.allclose(grad_hidden, expected, rtol=1e-5, atol=1e-6)  # float32 rounding, chunked sums
    with torch.no_grad():
        assert not head_logps(hidden, weight, None, targets, rows=2, keep=True).requires_grad


def test_autocast_bf16_runs_the_matmul_in_bf16_and_the_softmax_in_float32():
    hidden, weight, b, targets, upstream = _inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head_logps(hidden, weight, b, targets, rows=4, columns=5)
        want = _reference(hidden, weight, b, targets, 1.0, None)  # autocast's linear, then float32
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)  # the same bf16 products, summed in another order
    grads = _grads(got, upstream, (hidden, weight, b))
    assert [g.dtype for g in grads] == [torch.float32] * 3  # each input's own dtype, as autocast's linear gives
    for g, w in zip(grads, _grads(want, upstream, (hidden, weight, b))):
        assert torch.allclose(g, w, rtol=2e-2, atol=2e-2)  # bf16 products: 8 bits of mantissa


def test_kept_logits_survive_a_second_backward():
    hidden, weight, b, targets, upstream = _inputs(torch.float64)
    got = head_logps(hidden, weight, b, targets, rows=4, columns=5, keep=True)
    first = torch.autograd.grad(got, hidden, upstream, retain_graph=True)  # the kept logits are not consumed
    second = torch.autograd.grad(got, hidden, upstream)
    assert torch.equal(first[0], second[0])


def _plain_statistics(hidden, weight, bias, targets, scale, softcap):
    """Sum, entropy and argmax hit of the full float64 logits: the definitions the head's statistics fold in."""
    logits = F.linear(hidden.double(), weight.double(), None if bias is None else bias.double()) * scale
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    p = logits.softmax(-1)
    return logits.sum(-1), -(p * p.log()).sum(-1), logits.argmax(-1) == targets


@pytest.mark.parametrize("rows, columns, keep", [(1, 5, False), (4, 1, False), (4, 13, False), (4, 5, True)])
@pytest.mark.parametrize("scale, softcap, bias", [(1.0, None, False), (1.7, 3.0, True)])
def test_statistics_equal_the_full_logits_and_leave_logps_and_gradients_alone(rows, columns, keep, scale, softcap,
                                                                               bias):
    hidden, weight, b, targets, upstream = _inputs(torch.float64, bias)  # continuous: no ties
    targets = torch.where(torch.arange(9) % 2 == 0, F.linear(hidden, weight, b).argmax(-1), targets)  # some hits
    sums, entropy, hit = _plain_statistics(hidden, weight, b, targets, scale, softcap)
    settings = dict(scale=scale, softcap=softcap, rows=rows, columns=columns, keep=keep)
    got, stats = head_logps(hidden, weight, b, targets, statistics=True, **settings)
    plain = head_logps(hidden, weight, b, targets, **settings)
    assert torch.allclose(stats.logit_sum, sums, rtol=1e-12, atol=1e-12)
    assert torch.allclose(stats.entropy, entropy, rtol=1e-12, atol=1e-12)
    assert torch.equal(stats.top1, hit) and 0 < int(hit.sum()) < len(hit)
    assert torch.allclose(got, plain, rtol=1e-14, atol=1e-14)
    assert not any(t.requires_grad for t in stats)
    for g, w in zip(_grads(got, upstream, (hidden, weight, b)), _grads(plain, upstream, (hidden, weight, b))):
        assert torch.allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("columns", [2, 13])  # the tied entries in different blocks, and in one block
def test_a_tied_maximum_counts_only_at_its_first_column(columns):
    """torch.argmax's (and TRL's is_top1's) rule: of equal maximal logits, the first column is the argmax."""
    hidden = torch.tensor([[1.0] * 6, [2.0] * 6], dtype=torch.float64)
    weight = torch.randint(-1, 2, (13, 6), generator=torch.Generator().manual_seed(6)).double()
    weight[3] = weight[9] = 2.0  # entries 3 and 9: equal logits (integers, exact), the largest in both rows
    _, stats = head_logps(hidden, weight, None, torch.tensor([3, 9]), rows=2, columns=columns, statistics=True)
    assert stats.top1.tolist() == [True, False]


def test_statistics_under_bf16_autocast_are_float32_and_close_to_the_plain_ones():
    hidden, weight, b, targets, _ = _inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, stats = head_logps(hidden, weight, b, targets, rows=4, columns=5, statistics=True)
        logits = F.linear(hidden, weight, b).float()  # autocast's bf16 products, as the head's
    assert {t.dtype for t in stats[:2]} == {torch.float32}
    p = logits.softmax(-1)
    assert torch.allclose(stats.logit_sum, logits.sum(-1), rtol=1e-5, atol=1e-4)  # float32 sums, other order
    assert torch.allclose(stats.entropy, -(p * p.log()).sum(-1), rtol=1e-5, atol=1e-5)
