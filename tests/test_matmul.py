"""prefkit.modeling.matmul: float32 products on the CPU through oneDNN compute what torch's (MKL's) do, to float32
rounding, with the same gradients; nothing else (float64, bf16, autocast) is ever routed; and the automatic
choice depends on the processor's identity only."""

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from prefkit.modeling import matmul


@pytest.fixture
def onednn(monkeypatch):
    """oneDNN chosen, for products of every size (the tensors here are small)."""
    before = matmul._onednn
    monkeypatch.setattr(matmul, "SMALLEST", 0)
    assert matmul.set_cpu_matmul("onednn") == "onednn"
    yield
    matmul._onednn = before


def test_small_products_stay_on_torchs_library():
    before = matmul._onednn
    try:
        matmul.set_cpu_matmul("onednn")
        x, weight = torch.randn(100, 64, dtype=torch.float32), torch.randn(64, 64, dtype=torch.float32)
        assert 100 * 64 * 64 < matmul.SMALLEST and not matmul._routed(x, weight)
        assert matmul._routed(torch.randn(2048, 512, dtype=torch.float32), torch.randn(512, 512, dtype=torch.float32))
    finally:
        matmul._onednn = before


# float32 rounding: the two libraries sum the same k products in another order (k <= 64 here)
FLOAT32 = dict(rtol=1e-5, atol=1e-5)


def test_linear_and_mm_equal_torchs_to_float32_rounding(onednn):
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=generator, dtype=torch.float32)
                       for shape in ((2, 7, 64), (48, 64), (48,)))
    assert matmul._routed(x, weight)
    torch.testing.assert_close(matmul.linear(x, weight, bias), F.linear(x, weight, bias), **FLOAT32)
    a, b = (torch.randn(*shape, generator=generator, dtype=torch.float32) for shape in ((9, 64), (64, 33)))
    torch.testing.assert_close(matmul.mm(a, b), a @ b, **FLOAT32)
    torch.testing.assert_close(matmul.mm(b.t(), a.t()), b.t() @ a.t(), **FLOAT32)  # strided operands


def test_the_routed_linear_has_the_gradients_of_f_linear(onednn):
    generator = torch.Generator().manual_seed(1)
    leaves = [torch.randn(*shape, generator=generator, dtype=torch.float32, requires_grad=True)
              for shape in ((3, 5, 32), (16, 32), (16,))]
    upstream = torch.randn(3, 5, 16, generator=generator, dtype=torch.float32)
    (matmul.OneDnnLinear.apply(*leaves) * upstream).sum().backward()
    routed = [leaf.grad for leaf in leaves]
    exact = [leaf.detach().double().requires_grad_() for leaf in leaves]  # float64: torch's own, the truth
    (F.linear(*exact) * upstream.double()).sum().backward()
    for got, leaf in zip(routed, exact):
        torch.testing.assert_close(got, leaf.grad.float(), **FLOAT32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_are_torchs_own_products(onednn, dtype):
    x, weight = torch.randn(4, 16, dtype=dtype), torch.randn(8, 16, dtype=dtype)
    assert not matmul._routed(x, weight)
    assert torch.equal(matmul.linear(x, weight), F.linear(x, weight))
    assert torch.equal(matmul.mm(x, weight.t()), x @ weight.t())


def test_autocast_keeps_torchs_products(onednn):
    x, weight = torch.randn(4, 16, dtype=torch.float32), torch.randn(8, 16, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not matmul._routed(x, weight)
        assert matmul.linear(x, weight).dtype == torch.bfloat16  # autocast's cast, as F.linear's


def test_with_torch_chosen_nothing_is_routed():
    before = matmul._onednn
    try:
        assert matmul.set_cpu_matmul("torch") == "torch"
        assert not matmul._routed(torch.randn(2, 4, dtype=torch.float32), torch.randn(3, 4, dtype=torch.float32))
        assert matmul.route_linears(torch.nn.Sequential(torch.nn.Linear(4, 3))) == 0
    finally:
        matmul._onednn = before


@pytest.mark.parametrize("vendor, capability, expected", [
    ("AuthenticAMD", "AVX512", True), ("AuthenticAMD", "AVX2", False), ("GenuineIntel", "AVX512", False),
    ("", "AVX512", False)])
def test_auto_chooses_onednn_on_amd_with_avx512_only(monkeypatch, vendor, capability, expected):
    monkeypatch.setattr(matmul, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    before = matmul._onednn
    try:
        assert matmul.set_cpu_matmul("auto") == ("onednn" if expected else "torch")
    finally:
        matmul._onednn = before


def test_a_routed_float32_model_scores_and_trains_as_torchs(onednn):
    """A packed forward and backward of a float32 Llama (fused MLP and head included) with every product on
    oneDNN agrees with the same model on torch's products, to float32 rounding."""
    from prefkit.modeling.fused import fuse
    from prefkit.modeling.logprobs import packed_logps
    from prefkit.modeling.packing import pack
    from prefkit.modeling.tiny import tiny_llama

    class Subclass(torch.nn.Linear):  # a quantised layer's stand-in: its own forward is kept
        pass

    torch.manual_seed(0)
    model = tiny_llama(512, hidden_size=64, layers=2, heads=4).float()
    model.extra = Subclass(2, 2)
    fuse(model)
    rng = random.Random(0)
    groups = [([rng.randrange(512) for _ in range(9)], [[rng.randrange(512) for _ in range(12)] for _ in range(2)])
              for _ in range(3)]
    results = []
    for routed in (False, True):
        matmul._onednn = routed  # restored by the fixture
        copy_ = copy.deepcopy(model)
        plain_linears = sum(type(m) is torch.nn.Linear for m in copy_.modules())
        assert matmul.route_linears(copy_) == (plain_linears if routed else 0)
        assert "forward" not in vars(copy_.extra)
        out = packed_logps(copy_, pack(groups))
        out.logps.sum().backward()
        results.append((out.logps.detach(), [p.grad for p in copy_.parameters()]))
    (torch_logps, torch_grads), (onednn_logps, onednn_grads) = results
    torch.testing.assert_close(onednn_logps, torch_logps, rtol=1e-5, atol=1e-4)  # sums of ~12 log-probs
    for got, expected in zip(onednn_grads, torch_grads):
        if expected is None:  # the unused stand-in layer
            assert got is None
            continue
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
