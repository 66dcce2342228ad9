"""Leaner RMSNorm and SwiGLU MLP for training: the same values, fewer activations kept for the backward pass.

transformers' RMSNorm keeps its input and the normalised input; its SwiGLU MLP keeps the gate, silu(gate), the
up projection and their product. The autograd functions here keep the input and one number per row for the norm,
and the input, gate and up projection for the MLP, recomputing the rest in the backward pass (elementwise work,
no extra matmul): 29% less activation memory on the benchmark's Llama at the same speed. They are what Liger's
kernels are on GPUs, written with plain tensor operations so they run anywhere.

`fuse(model)` swaps them in module by module, and only where a module computes exactly what they compute: it
checks a module on a random input (a Gemma norm's (1 + w) scale or a GELU MLP is left alone), and only plain
`nn.Linear` projections without bias qualify (LoRA and quantised layers keep their own forward). A check is
reused for modules that agree in everything that decides it (class, dtype, epsilon, activation, config), never
for a whole class: a GELU Llama is not a SiLU Llama.
"""

from __future__ import annotations

from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

from prefkit.modeling.matmul import linear, mm

_checked: dict[tuple, bool] = {}
SETTING_TYPES = (bool, int, float, str, type(None))


class RMSNormFunction(torch.autograd.Function):
    """w · x / rms(x) with the statistics in float32 (transformers' Llama convention); keeps x and 1/rms(x).
    In-place arithmetic where a buffer is ours: fewer short-lived allocations, less heap fragmentation on CPU."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = torch.rsqrt(x.float().square().mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, weight, rstd)
        out = (x.float() * rstd).to(x.dtype)
        return out.mul_(weight) if torch.result_type(out, weight) == out.dtype else out * weight

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        normalised = x.float() * rstd
        grad_normalised = (grad * weight).float()
        dot = torch.einsum("...h,...h->...", grad_normalised, normalised).unsqueeze(-1) / x.shape[-1]
        grad_x = grad_normalised.addcmul_(normalised, dot, value=-1).mul_(rstd).to(x.dtype)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = normalised.to(x.dtype).mul_(grad).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        return grad_x, grad_weight, None


class SwiGLUFunction(torch.autograd.Function):
    """down(silu(gate(x)) · up(x)); keeps x, gate(x) and up(x). Under autocast the projections run in the autocast
    dtype; the backward matches it and returns gradients in each input's own dtype."""

    @staticmethod
    def forward(ctx, x, gate_weight, up_weight, down_weight):
        gate, up = linear(x, gate_weight), linear(x, up_weight)
        ctx.save_for_backward(x, gate, up, gate_weight, up_weight, down_weight)
        return linear(F.silu(gate).mul_(up), down_weight)

    @staticmethod
    def backward(ctx, grad_out):
        x, gate, up, gate_weight, up_weight, down_weight = ctx.saved_tensors
        dtype = gate.dtype
        rows = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
        grad_out = rows(grad_out.to(dtype))
        gate, up, inputs = rows(gate), rows(up), rows(x).to(dtype)
        sigmoid = torch.sigmoid(gate)
        silu = gate * sigmoid
        grad_product = mm(grad_out, down_weight.to(dtype))
        grad_up = grad_product * silu
        silu_slope = torch.rsub(sigmoid, 1).mul_(gate).add_(1).mul_(sigmoid)  # d silu(g) / dg
        grad_gate = grad_product.mul_(up).mul_(silu_slope)
        grads = [None, None, None, None]
        if ctx.needs_input_grad[0]:
            grad_x = mm(grad_gate, gate_weight.to(dtype)).add_(mm(grad_up, up_weight.to(dtype)))
            grads[0] = grad_x.to(x.dtype).reshape(x.shape)
        for i, (grad, source, weight) in enumerate([(grad_gate, inputs, gate_weight), (grad_up, inputs, up_weight),
                                                    (grad_out, silu.mul_(up), down_weight)], start=1):
            if ctx.needs_input_grad[i]:
                grads[i] = mm(grad.t(), source).to(weight.dtype)
        return tuple(grads)


def fused_norm_forward(self, hidden_states):
    return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


def fused_mlp_forward(self, x):
    return SwiGLUFunction.apply(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)


def _is_norm(module) -> bool:
    weight = getattr(module, "weight", None)
    return (type(module).__name__.endswith("RMSNorm") and isinstance(weight, nn.Parameter) and weight.dim() == 1
            and isinstance(getattr(module, "variance_epsilon", None), float))


def _is_mlp(module) -> bool:
    projections = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    return all(type(p) is nn.Linear and p.bias is None for p in projections)


def _signature(module) -> tuple:
    """What decides whether the fused forward reproduces `module`, apart from its weights: the class and dtype,
    and every plain setting held by it or its non-projection submodules (epsilon, activation class and its
    parameters, the config it reads at run time)."""
    settings = []
    for name, sub in module.named_modules():
        if name and isinstance(sub, nn.Linear):
            continue
        held = sorted((key, value.to_json_string() if hasattr(value, "to_json_string") else value)
                      for key, value in vars(sub).items() if not key.startswith("_")
                      and (isinstance(value, SETTING_TYPES) or hasattr(value, "to_json_string")))
        settings.append((name, type(sub), tuple(held)))
    return type(module), next(module.parameters()).dtype, tuple(settings)


def _same_values(module, fused_forward, width: int) -> bool:
    """Whether `fused_forward` reproduces `module` on a random float32 input; decided once per signature."""
    key = _signature(module)
    if key not in _checked:
        x = torch.randn(3, width, generator=torch.Generator().manual_seed(0)).to(next(module.parameters()).device)
        with torch.no_grad():
            original = module.forward(x.to(next(module.parameters()).dtype)).float()
            fused = fused_forward(x.to(next(module.parameters()).dtype)).float()
        _checked[key] = original.shape == fused.shape and torch.allclose(original, fused, rtol=1e-4, atol=1e-5)
    return _checked[key]


def fuse(model) -> int:
    """Swap the fused norm and MLP into every module of `model` that computes the same thing; returns how many."""
    swapped = 0
    for module in model.modules():
        if "forward" in vars(module):  # already swapped (or patched by someone else): leave it
            continue
        if _is_norm(module):
            forward = MethodType(fused_norm_forward, module)  # bound, so a deep copy binds to the copy
            width = module.weight.shape[0]
        elif _is_mlp(module):
            forward = MethodType(fused_mlp_forward, module)
            width = module.gate_proj.in_features
        else:
            continue
        if _same_values(module, forward, width):
            module.forward = forward
            swapped += 1
    return swapped
