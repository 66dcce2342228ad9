"""Float32 matrix products on the CPU through oneDNN where MKL leaves the processor's AVX-512 units idle.

torch sends a float32 `linear` or `mm` on the CPU to MKL. On AMD processors with AVX-512 (Zen 4, Zen 5) MKL runs
its AVX2 code, while oneDNN, which torch ships too and which picks its kernels by the processor's features alone,
runs the same products about twice as fast (bench/RESULTS.md, "Float32 products: MKL against oneDNN"). `linear`
and `mm` here are torch's, except that on a CPU, in float32, outside autocast and for products of at least
`SMALLEST` multiply-adds, once `set_cpu_matmul` has chosen oneDNN, they call it through torch's own operator
(`torch.ops.mkldnn._linear_pointwise`, the one torch.compile's CPU backend emits). The values are the same up to
float32 rounding (both accumulate in float32, in another order). Other dtypes and devices are never touched, so
float64 and bf16 runs compute exactly as before.

`route_linears(model)` gives a model's plain `nn.Linear` layers the same choice; prefkit's fused modules and head
call `linear` and `mm` for their own products.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
CPU_MATMUL = ("auto", "torch", "onednn")  # auto: oneDNN where MKL is known to lag it (`mkl_lags_onednn`)
_onednn = False  # the process-wide choice, as torch.backends flags are
# oneDNN keeps up to 1,024 compiled products by default, one per shape; packed batches change shape every step, so
# a long cache only holds memory (+125 MB of peak RSS in bench/RESULTS.md's 10-step run); 16 keeps a step's own
PRIMITIVE_CACHE = 16
# multiply-adds below which a product stays on torch's library: oneDNN compiles a kernel per shape, which a tiny
# product does not pay back (tests of 64-wide models ran 13% slower routed, in one run)
SMALLEST = 2 ** 23


def set_cpu_matmul(choice: str) -> str:
    """Choose the CPU's float32 matrix library for this process: "torch" (MKL), "onednn", or "auto"; returns the
    library chosen ("torch" or "onednn")."""
    global _onednn
    _onednn = choice == "onednn" or (choice == "auto" and mkl_lags_onednn())
    _onednn = _onednn and torch.backends.mkldnn.is_available()
    if _onednn:  # read once, at oneDNN's first product: before it, or the user's own setting, stands
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(PRIMITIVE_CACHE))
    return "onednn" if _onednn else "torch"


def mkl_lags_onednn() -> bool:
    """Whether this is an AMD x86 processor with AVX-512, where MKL takes its AVX2 path: decided from the
    processor's identity, never from a timing, so that every run on a machine computes with the same kernels
    (a resumed run stays bit-exact)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and cpu_vendor() == "AuthenticAMD"


def cpu_vendor() -> str:
    """The processor's vendor id as Linux reports it ("AuthenticAMD", "GenuineIntel"); "" elsewhere."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("vendor_id")), "")


def _routed(x: Tensor, weight: Tensor) -> bool:
    return (_onednn and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and x.numel() // max(1, x.shape[-1]) * weight.numel() >= SMALLEST)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x · weightᵀ + bias, as `F.linear`; no autograd through the oneDNN path (for autograd functions' own
    products, and `OneDnnLinear`)."""
    if _routed(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def mm(a: Tensor, b: Tensor) -> Tensor:
    """a · b for matrices, as `a @ b`."""
    if _routed(a, b):
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
    return a @ b


class OneDnnLinear(torch.autograd.Function):
    """`F.linear` whose forward and backward products go through `linear` (oneDNN); used only when `_routed`."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        grad_x = linear(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_weight = linear(rows.t(), x.reshape(-1, x.shape[-1]).t()) if ctx.needs_input_grad[1] else None
        grad_bias = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def routed_linear_forward(self, x):
    if _routed(x, self.weight):
        return OneDnnLinear.apply(x, self.weight, self.bias)
    return F.linear(x, self.weight, self.bias)


def route_linears(model) -> int:
    """Give every plain `nn.Linear` of `model` (not a subclass: quantised layers keep their own forward; a LoRA
    layer's base projection is plain) the process's choice of library; returns how many."""
    if not _onednn:
        return 0
    routed = 0
    for module in model.modules():
        if type(module) is nn.Linear and "forward" not in vars(module):
            module.forward = MethodType(routed_linear_forward, module)  # bound: a deep copy binds to the copy
            routed += 1
    return routed
