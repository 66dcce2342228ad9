"""Summed log-probs of completion tokens, the quantity every loss consumes, without materialising [B, T, V]
float32 logits.

`score(model, groups)` is the public entry; the training loops call `batch_logps` on collated batches.
The decoder runs once; the output head runs only at the positions that predict a completion token, block by
block in one autograd function (`prefkit.modeling.head`) that recomputes the logits in the backward pass when
they would be large, so peak memory holds one block of logits. Two layouts: the padding-free packed one
(`packed_logps`, see `prefkit.modeling.packing`: each prompt once, no padding) and the padded concatenated
one (`sequence_logps`) for models that cannot pack. Both are exact for every architecture because
`prefkit.modeling.probe` asks each model, once, what its own forward does after the decoder (a logit scale, a
soft cap, or something only its forward can do) and whether its layers are all attention under the packed
layout. `head_logps` is the one function a fused kernel replaces;
everything upstream sees only its output. With `statistics`, each completion also gets the per-token sums that
TRL's logged metrics read (`TokenSums`: mean logit, entropy, argmax hits), folded into the same head pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prefkit.modeling.head import PositionStatistics, position_statistics
from prefkit.modeling.head import head_logps as fused_head_logps
from prefkit.modeling.packing import PackedBatch, pack, packed_inputs, supports_packing
from prefkit.modeling.probe import forward_logits, gathered_logps, hidden_states, pad_groups, plan

Tensor = torch.Tensor
LOGITS_IN_MEMORY = 2 ** 25  # M x V up to this (128 MB in float32): kept for the backward pass, no recomputation
CHUNK_ELEMENTS = 2 ** 23  # logits computed at once (32 MB in float32): the head's temporary memory


@dataclass
class TokenSums:
    """Per-completion sums [R] over its predicted tokens, without gradient: of the mean logit over the
    vocabulary, of the entropy of the next-token distribution, and the number of tokens that are its argmax."""

    mean_logits: Tensor
    entropy: Tensor
    top1: Tensor


@dataclass
class SequenceLogps:
    """Summed log-probs of each completion [R] and its number of predicted tokens [R]; `tokens` when asked for."""

    logps: Tensor
    lengths: Tensor
    tokens: TokenSums | None = None

    @property
    def mean_logps(self) -> Tensor:
        return self.logps / self.lengths.clamp(min=1)


def head_logps(model, hidden: Tensor, targets: Tensor, chunk_size: int = 1024, statistics: bool = False):
    """log-softmax of the output head at `hidden` [M, H], gathered at `targets` [M], by
    `prefkit.modeling.head`: at most `chunk_size` positions and CHUNK_ELEMENTS logits at a time, nothing of the
    vocabulary's size kept for the backward pass unless all M x V logits fit in LOGITS_IN_MEMORY elements. The
    logits are scaled and soft-capped as the model's own forward does (`prefkit.modeling.probe`). With
    `statistics`, (log-probs, `PositionStatistics`)."""
    head, how = model.get_output_embeddings(), plan(model)
    rows = max(1, min(chunk_size, targets.numel()))
    return fused_head_logps(hidden, head.weight, head.bias, targets, scale=how.scale, softcap=how.softcap, rows=rows,
                            columns=max(1, CHUNK_ELEMENTS // rows),
                            keep=targets.numel() * head.weight.shape[0] <= LOGITS_IN_MEMORY, statistics=statistics)


def _model_logps(logits: Tensor, targets: Tensor, statistics: bool):
    """`head_logps`' output from the model's own logits at the predicting positions."""
    per_token = gathered_logps(logits, targets)
    return (per_token, position_statistics(logits, targets)) if statistics else per_token


def sequence_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor,
                   chunk_size: int = 1024, statistics: bool = False) -> SequenceLogps:
    """Summed log-probs of the completion tokens of right-padded rows. `completion_mask[b, t]` = 1 when token t
    of row b belongs to the completion; token t is predicted at position t-1, so the mask is shifted here, once.
    `statistics` adds the rows' `TokenSums`."""
    keep = F.pad(completion_mask[:, 1:], (0, 1)).bool()  # position t predicts token t+1
    targets = F.pad(input_ids[:, 1:], (0, 1))[keep]
    decoder = plan(model).decoder
    if decoder is None:  # only the model's own forward computes its logits: at the predicting positions only
        columns = keep.any(0).nonzero()[:, 0]
        logits = forward_logits(model, columns, input_ids=input_ids, attention_mask=attention_mask)
        per_token = _model_logps(logits[keep[:, columns]], targets, statistics)
    else:
        hidden = hidden_states(decoder, input_ids=input_ids, attention_mask=attention_mask)
        per_token = head_logps(model, hidden[keep], targets, chunk_size, statistics)
    rows = torch.arange(len(input_ids), device=keep.device)[:, None].expand_as(keep)[keep]
    return _sum_per_row(per_token, rows, keep.sum(-1), _vocabulary(model))


def can_pack(model, packed: PackedBatch) -> bool:
    """Whether `packed_logps` is exact for `model` on this batch: its layers are all attention under the tree
    mask (probed once, `prefkit.modeling.probe`) and no segment outgrows its attention window
    (`supports_packing`)."""
    return plan(model).packs and supports_packing(model, packed)


def packed_logps(model, packed: PackedBatch, chunk_size: int = 1024, statistics: bool = False) -> SequenceLogps:
    """Summed completion log-probs from one forward over the padding-free layout of `prefkit.modeling.packing`
    (each prompt once, its completions attending to it). Rows come back in the caller's order. `statistics` adds
    the rows' `TokenSums`."""
    if not can_pack(model, packed):
        raise ValueError(f"{type(model).__name__} cannot run the packed layout exactly (see can_pack)")
    decoder = plan(model).decoder
    if decoder is None:
        per_token = _model_logps(forward_logits(model, packed.predictors, **packed_inputs(packed))[0],
                                 packed.targets, statistics)
    else:
        hidden = hidden_states(decoder, **packed_inputs(packed))[0]
        per_token = head_logps(model, hidden.index_select(0, packed.predictors), packed.targets, chunk_size,
                               statistics)
    return _sum_per_row(per_token, packed.rows, packed.lengths, _vocabulary(model))


def _vocabulary(model) -> int:
    """V of the mean logit: the output head's rows, as TRL divides by (the model's logits' last dimension)."""
    return model.get_output_embeddings().weight.shape[0]


def _sum_per_row(per_token, rows: Tensor, lengths: Tensor, vocabulary: int) -> SequenceLogps:
    """Per-token values (log-probs, or (log-probs, `PositionStatistics`)) summed into their rows."""
    per_token, stats = per_token if isinstance(per_token, tuple) else (per_token, None)

    def total(values: Tensor) -> Tensor:
        return values.new_zeros(len(lengths)).index_add(0, rows, values)

    tokens = None
    if stats is not None:
        stats = PositionStatistics(*(v.to(per_token.dtype) for v in stats))
        tokens = TokenSums(total(stats.logit_sum / vocabulary), total(stats.entropy), total(stats.top1))
    return SequenceLogps(total(per_token), lengths.to(per_token.dtype), tokens)


def batch_logps(model, batch, chunk_size: int = 1024, packing: bool = True, statistics: bool = False) -> SequenceLogps:
    """Log-probs of the rows of a `prefkit.data.Batch` (from `prefkit.train.batches.collate`): packed when the
    batch carries the packed layout and the model runs it exactly (`can_pack`), else one padded forward over the
    concatenated rows. `statistics` adds each row's `TokenSums`."""
    if packing and batch.packed is not None and can_pack(model, batch.packed):
        return packed_logps(model, batch.packed, chunk_size, statistics)
    return sequence_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask, chunk_size,
                          statistics)


def score(model, groups: list[tuple[list[int], list[list[int]]]], *, packing: bool = True,
          chunk_size: int = 1024) -> Tensor:
    """Summed log-prob of each completion given its prompt under `model`, differentiable, exact for any
    `AutoModelForCausalLM`.

    `groups` is a list of `(prompt_ids, [completion_ids, ...])`; groups may have different numbers of
    completions. Returns a 1-D tensor with one entry per completion, in the order given: group by group, and
    within a group completion by completion. The first token of a completion with an empty prompt has nothing
    to be predicted from and is not counted. With `packing` (the default) the batch runs padding-free, each
    prompt once, where that is exact for the model (`can_pack`); otherwise, or with `packing=False`, as one
    padded forward. Both give the model's own log-probs, to float rounding."""
    device = model.get_input_embeddings().weight.device
    if not any(completions for _, completions in groups):
        return torch.zeros(0, device=device)
    if packing:
        packed = pack(groups, group_major=True).to(device)
        if can_pack(model, packed):
            return packed_logps(model, packed, chunk_size).logps
    padded = {k: v.to(device) for k, v in pad_groups(groups).items()}
    return sequence_logps(model, padded["input_ids"], padded["attention_mask"], padded["completion_mask"],
                          chunk_size).logps
