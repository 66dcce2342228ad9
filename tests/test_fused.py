"""prefkit.modeling.fused: the same values and gradients as transformers' modules, fewer saved activations, and
only where the module really computes that (not Gemma-style norms, GELU MLPs or LoRA projections)."""

import copy

import pytest
import torch
from torch import nn

from prefkit.modeling.fused import fuse
from prefkit.modeling.tiny import tiny_llama


def _pair(seed=0):
    original = tiny_llama(97, hidden_size=32, layers=2, seed=seed)
    fused = copy.deepcopy(original)
    return original, fused, fuse(fused)


def _loss(model, ids):
    return model(input_ids=ids).logits.log_softmax(-1).gather(-1, ids[..., None]).sum()


def test_fused_modules_give_the_same_values_and_gradients():
    original, fused, swapped = _pair()
    assert swapped == 2 * 2 + 1 + 2  # two norms per layer, the final norm, one MLP per layer
    ids = torch.randint(0, 97, (3, 10), generator=torch.Generator().manual_seed(1))
    a, b = _loss(original, ids), _loss(fused, ids)
    assert b.item() == pytest.approx(a.item(), rel=1e-6)
    a.backward(), b.backward()
    for (name, p), q in zip(original.named_parameters(), fused.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-4, atol=1e-5 * p.grad.abs().max()), name


def test_fused_modules_keep_fewer_activations():
    original, fused, _ = _pair()
    ids = torch.randint(0, 97, (4, 64), generator=torch.Generator().manual_seed(2))

    def saved_bytes(model):
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t.detach()  # not t: an output saved as itself would hold its own graph alive

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.get_decoder()(input_ids=ids)
        return sum(storages.values())

    assert saved_bytes(fused) < 0.8 * saved_bytes(original)


def test_fused_modules_follow_autocast():
    original = tiny_llama(97, hidden_size=32, layers=2).float()  # autocast casts float32, not the tests' float64
    fused = copy.deepcopy(original)
    fuse(fused)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = _loss(original, ids), _loss(fused, ids)
    a.backward(), b.backward()
    assert fused.model.layers[0].mlp.forward(torch.ones(1, 32, dtype=torch.float32)).dtype == torch.float32  # outside autocast
    assert b.item() == pytest.approx(a.item(), rel=2e-2)
    for p, q in zip(original.parameters(), fused.parameters()):
        assert q.grad.dtype == p.dtype
        assert torch.allclose(q.grad, p.grad, rtol=0.1, atol=0.05 * p.grad.abs().max())


def test_modules_computing_something_else_are_left_alone():
    class OnePlusRMSNorm(nn.Module):  # Gemma's convention: scale by (1 + w)
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = nn.Parameter(torch.randn(8)), 1e-6

        def forward(self, x):
            return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)

    class GeluMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj = nn.Linear(8, 16, bias=False), nn.Linear(8, 16, bias=False)
            self.down_proj = nn.Linear(16, 8, bias=False)

        def forward(self, x):
            return self.down_proj(nn.functional.gelu(self.gate_proj(x)) * self.up_proj(x))

    assert fuse(nn.Sequential(OnePlusRMSNorm(), GeluMLP())) == 0


def test_lora_projections_keep_their_adapter(tmp_path):
    from prefkit.modeling.load import load_model

    tiny_llama(97, hidden_size=32, layers=2).save_pretrained(tmp_path)
    model = load_model(str(tmp_path), lora={"r": 4})
    assert "forward" not in vars(model.get_decoder().layers[0].mlp)  # peft's layers, not the fused MLP
    assert "forward" in vars(model.get_decoder().layers[0].input_layernorm)
    ids = torch.randint(0, 97, (2, 6))
    _loss(model, ids).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_a_deep_copy_computes_with_its_own_weights():
    _, fused, _ = _pair()
    frozen = copy.deepcopy(fused)
    ids = torch.randint(0, 97, (1, 5))
    before = frozen(input_ids=ids).logits.clone()
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(1.0)
    assert torch.equal(frozen(input_ids=ids).logits, before)


def test_a_check_is_not_reused_for_a_module_that_computes_something_else():
    from transformers import LlamaConfig, LlamaForCausalLM

    fuse(tiny_llama(97, hidden_size=32, layers=1))  # a SiLU Llama first: its MLP class passes the check
    torch.manual_seed(0)
    gelu = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, hidden_act="gelu"))
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(4))
    before = _loss(gelu, ids).item()
    assert fuse(gelu) == 2 + 1  # the norms only: same class as the SiLU Llama's MLP, another activation
    assert "forward" not in vars(gelu.model.layers[0].mlp)
    assert _loss(gelu, ids).item() == pytest.approx(before, rel=1e-12)
