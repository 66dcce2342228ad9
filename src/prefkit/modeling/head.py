"""The output head's log-probs at a set of positions as one autograd function, with no [M, V] tensor kept
between the forward and the backward pass unless it is small.

For hidden states h [M, H], the head's weight W [V, H] (and bias), the model's logit scale s and soft cap c,
the log-prob of target y at each row is z_y - logsumexp(z) with z = c·tanh(s·(hW^T + b)/c) (no cap: s·(hW^T + b)).
Its gradient with respect to the raw logits is J = (onehot(y) - softmax(z)) · dz/d(raw), and the upstream
gradient g [M] only scales J's rows. So both passes run over blocks of rows x vocabulary columns: the forward
pass keeps a running logsumexp per row and the target's logit, nothing of size V; the backward pass recomputes
one block of logits, turns it into g·J in place and adds it into the gradients of h, and of W's rows of that
block: the only [rows, columns] buffer alive is the current block's, and the only [V, H] buffer is W's gradient
itself (autograd through a chunked head instead holds each chunk's logits, their log-softmax and its gradient,
and a partial [V, H] gradient of W per chunk). When all M x V logits are small (`keep`), the forward pass keeps
them and the backward pass does no recomputation.

Matrix multiplies run in the autocast dtype when autocast is on, as `F.linear` would; everything per element
(scaling, capping, log-softmax) runs in at least float32. This is what Liger's fused linear cross-entropy does
on GPUs, for per-token log-probs rather than a mean loss, in plain tensor operations so that it runs anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, scale: float, softcap: float | None) -> Tensor:
    """Logits as the model computes them, in at least float32; one fresh [rows, V] buffer, modified in place."""
    logits = F.linear(hidden, weight, bias)  # the model's own op, so autocast's rounding is the model's
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if scale != 1.0:
        logits.mul_(scale)
    if softcap:
        logits.div_(softcap).tanh_().mul_(softcap)
    return logits


def _local_gradient(logits: Tensor, lse: Tensor, targets: Tensor, scale: float, softcap: float | None) -> Tensor:
    """d log p(target) / d raw logits for one block of vocabulary columns, in `logits`' own buffer:
    (onehot - softmax) times the cap's slope. `lse` is each row's logsumexp over the whole vocabulary and
    `targets` are relative to the block (outside it: no one-hot entry)."""
    slope = None
    if softcap:  # d c·tanh(s·x/c) / dx = s·(1 - tanh²), from the capped logits before they are overwritten
        slope = (logits / softcap).square_().neg_().add_(1).mul_(scale)
    local = logits.sub_(lse[:, None]).exp_().neg_()
    rows = ((targets >= 0) & (targets < logits.shape[1])).nonzero()[:, 0]
    local[rows, targets[rows]] += 1
    if slope is not None:
        local.mul_(slope)
    elif scale != 1.0:
        local.mul_(scale)
    return local


def _blocks(num_rows: int, vocab: int, rows: int, columns: int):
    """(row slice, column slice) of every block, row block by row block."""
    for r in range(0, num_rows, rows):
        for c in range(0, vocab, columns):
            yield slice(r, r + rows), slice(c, c + columns)


class HeadLogps(torch.autograd.Function):
    """log softmax(head(hidden))[targets], block by block; see the module docstring."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, scale, softcap, rows, columns, keep):
        dtype = _matmul_dtype(hidden)
        lse = hidden.new_full((len(targets),), -torch.inf, dtype=torch.promote_types(dtype, torch.float32))
        picked = torch.zeros_like(lse)
        kept = []
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            for r, c in _blocks(len(targets), len(w), rows, columns):
                logits = _logits(h[r], w[c], b[c] if b is not None else None, scale, softcap)
                local_targets = targets[r] - c.start
                inside = ((local_targets >= 0) & (local_targets < logits.shape[1])).nonzero()[:, 0]
                picked[r][inside] = logits[inside, local_targets[inside]]
                lse[r] = torch.logaddexp(lse[r], logits.logsumexp(-1))
                if keep:
                    kept.append(logits)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, *kept)
        ctx.settings = (scale, softcap, rows, columns, dtype)
        return picked - lse

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, lse, *kept = ctx.saved_tensors
        scale, softcap, rows, columns, dtype = ctx.settings
        h, w = hidden.to(dtype), weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden, dtype=lse.dtype) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        for i, (r, c) in enumerate(_blocks(len(targets), len(w), rows, columns)):
            logits = kept[i].clone() if kept else _logits(h[r], w[c], b[c] if b is not None else None, scale, softcap)
            local = _local_gradient(logits, lse[r], targets[r] - c.start, scale, softcap)
            upstream = local.mul_(grad[r, None]).to(dtype)  # g·J: the raw logits' gradient
            if need_h:
                _accumulate(grad_h[r], upstream @ w[c])
            if need_w:
                _accumulate(grad_w[c], upstream.t() @ h[r])
            if need_b:
                _accumulate(grad_b[c], upstream.sum(0))
        return (grad_h.to(hidden.dtype) if need_h else None), grad_w, grad_b, None, None, None, None, None, None


def _accumulate(total: Tensor, part: Tensor) -> None:
    total.add_(part if part.dtype == total.dtype else part.to(total.dtype))


def _matmul_dtype(hidden: Tensor) -> torch.dtype:
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def head_logps(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, *, scale: float = 1.0,
               softcap: float | None = None, rows: int = 1024, columns: int = 8192, keep: bool = False) -> Tensor:
    """Per-row log-prob [M] of `targets` under the head (`weight`, `bias`) at `hidden` [M, H], computed in blocks
    of `rows` positions by `columns` vocabulary entries; `keep` keeps all [M, V] logits from the forward pass
    instead of recomputing them in the backward pass."""
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        keep = False
    return HeadLogps.apply(hidden, weight, bias, targets, scale, softcap, max(1, rows), max(1, columns), keep)
