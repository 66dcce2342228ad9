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

With `statistics`, the same block loop also folds in what TRL's logged metrics read from full logits
(`PositionStatistics`: the sum of the logits, the entropy, whether the target is the argmax), per position and
without gradient, as TRL 1.16's fused head does: the entropy log Σ e^z − Σ p·z from a running Σ p·z rescaled
with the running logsumexp, so no [M, V] tensor is kept for it either.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from prefkit.modeling.matmul import linear, mm

Tensor = torch.Tensor


class PositionStatistics(NamedTuple):
    """Per-position statistics of the head's distribution z (scaled and capped logits), without gradient."""

    logit_sum: Tensor  # Σ_v z_v (the mean logit is this over the vocabulary size)
    entropy: Tensor  # -Σ_v p_v log p_v, p = softmax(z)
    top1: Tensor  # bool: the target is z's argmax (the first one, as torch.argmax breaks ties)


def position_statistics(logits: Tensor, targets: Tensor) -> PositionStatistics:
    """`PositionStatistics` from full logits [..., V] (in at least float32), for paths that have them."""
    with torch.no_grad():
        z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        lse = z.logsumexp(-1)  # entropy as lse - Σ p·z: no 0 · log 0 where a probability underflows
        entropy = lse - ((z - lse.unsqueeze(-1)).exp_() * z).sum(-1)
        return PositionStatistics(z.sum(-1), entropy, z.argmax(-1) == targets)


class _Running:
    """`PositionStatistics` folded in block by block alongside the running logsumexp `lse` (which it updates):
    Σ p·z is kept relative to the logsumexp so far and rescaled as it grows; the argmax as the running best
    value and its column, replaced only by a strictly larger block maximum so that the first maximum wins. One
    buffer of a block's size serves every block (no allocation per block), and row sums are products with a
    vector of ones (BLAS, several times faster than `sum` on CPU): the cost is in bench/RESULTS.md."""

    def __init__(self, lse: Tensor, rows: int, columns: int):
        self.logit_sum, self.weighted = torch.zeros_like(lse), torch.zeros_like(lse)
        self.best = torch.full_like(lse, -torch.inf)
        self.argmax = torch.zeros(len(lse), dtype=torch.long, device=lse.device)
        self.buffer, self.ones = lse.new_empty(rows * columns), lse.new_ones(columns)

    def fold(self, lse: Tensor, r: slice, start: int, logits: Tensor) -> None:
        block_max, where = logits.max(-1)
        shift = block_max.masked_fill(block_max.abs() == torch.inf, 0)  # as torch.logsumexp does
        ones = self.ones[:logits.shape[1]]
        e = torch.sub(logits, shift[:, None], out=self.buffer[:logits.numel()].view(logits.shape)).exp_()
        total = e @ ones
        weighted = e.mul_(logits) @ ones  # Σ e^(z - shift)·z
        grown = torch.logaddexp(lse[r], total.log_().add_(shift))
        self.weighted[r] = self.weighted[r] * (lse[r] - grown).exp() + weighted * (shift - grown).exp()
        lse[r] = grown
        self.logit_sum[r] += logits @ ones
        better = block_max > self.best[r]
        self.best[r] = torch.where(better, block_max, self.best[r])
        self.argmax[r] = torch.where(better, where + start, self.argmax[r])

    def result(self, lse: Tensor, targets: Tensor) -> PositionStatistics:
        return PositionStatistics(self.logit_sum, lse - self.weighted, self.argmax == targets)


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, scale: float, softcap: float | None) -> Tensor:
    """Logits as the model computes them, in at least float32; one fresh [rows, V] buffer, modified in place."""
    logits = linear(hidden, weight, bias)  # the model's own product (prefkit.modeling.matmul), and its rounding
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
    def forward(ctx, hidden, weight, bias, targets, scale, softcap, rows, columns, keep, statistics):
        dtype = _matmul_dtype(hidden)
        lse = hidden.new_full((len(targets),), -torch.inf, dtype=torch.promote_types(dtype, torch.float32))
        picked = torch.zeros_like(lse)
        running = _Running(lse, min(rows, len(targets)), min(columns, len(weight))) if statistics else None
        kept = []
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            for r, c in _blocks(len(targets), len(w), rows, columns):
                logits = _logits(h[r], w[c], b[c] if b is not None else None, scale, softcap)
                local_targets = targets[r] - c.start
                inside = ((local_targets >= 0) & (local_targets < logits.shape[1])).nonzero()[:, 0]
                picked[r][inside] = logits[inside, local_targets[inside]]
                if running is None:
                    lse[r] = torch.logaddexp(lse[r], logits.logsumexp(-1))
                else:
                    running.fold(lse, r, c.start, logits)
                if keep:
                    kept.append(logits)
                del logits  # freed before the next block's are made: one block alive, not two
        ctx.save_for_backward(hidden, weight, bias, targets, lse, *kept)
        ctx.settings = (scale, softcap, rows, columns, dtype)
        if running is None:
            return picked - lse
        extra = running.result(lse, targets)
        ctx.mark_non_differentiable(*extra)
        return (picked - lse, *extra)

    @staticmethod
    def backward(ctx, grad, *_):  # the statistics have no gradient
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
                _accumulate(grad_h[r], mm(upstream, w[c]))
            if need_w:
                _accumulate(grad_w[c], mm(upstream.t(), h[r]))
            if need_b:
                _accumulate(grad_b[c], upstream.sum(0))
        return (grad_h.to(hidden.dtype) if need_h else None), grad_w, grad_b, *[None] * 7


def _accumulate(total: Tensor, part: Tensor) -> None:
    total.add_(part if part.dtype == total.dtype else part.to(total.dtype))


def _matmul_dtype(hidden: Tensor) -> torch.dtype:
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def head_logps(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, *, scale: float = 1.0,
               softcap: float | None = None, rows: int = 1024, columns: int = 8192, keep: bool = False,
               statistics: bool = False) -> Tensor | tuple[Tensor, PositionStatistics]:
    """Per-row log-prob [M] of `targets` under the head (`weight`, `bias`) at `hidden` [M, H], computed in blocks
    of `rows` positions by `columns` vocabulary entries; `keep` keeps all [M, V] logits from the forward pass
    instead of recomputing them in the backward pass. With `statistics`, (log-probs, `PositionStatistics`)."""
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        keep = False
    out = HeadLogps.apply(hidden, weight, bias, targets, scale, softcap, max(1, rows), max(1, columns), keep,
                          statistics)
    return (out[0], PositionStatistics(*out[1:])) if statistics else out
