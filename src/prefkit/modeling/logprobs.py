"""Summed log-probs of completion tokens, the quantity every loss consumes, without materialising [B, T, V]
float32 logits.

The decoder runs once; the output head runs only at the positions that predict a completion token, over chunks
whose log-softmax is recomputed in the backward pass when the logits would be large, so peak memory holds one
chunk of logits. Two layouts: the padding-free packed one (`packed_logps`, see `prefkit.modeling.packing`:
each prompt once, no padding) and the padded concatenated one (`sequence_logps`) for models that cannot pack.
`head_logps` is the one function a fused kernel replaces; everything upstream sees only its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from prefkit.modeling.packing import PackedBatch, supports_packing

Tensor = torch.Tensor
LOGITS_IN_MEMORY = 2 ** 25  # logits elements (128 MB in float32) computed in one pass, without recomputation


@dataclass
class SequenceLogps:
    """Summed log-probs of each completion [R] and its number of predicted tokens [R]."""

    logps: Tensor
    lengths: Tensor

    @property
    def mean_logps(self) -> Tensor:
        return self.logps / self.lengths.clamp(min=1)


def _chunk_logps(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, softcap: float | None) -> Tensor:
    logits = F.linear(hidden, weight, bias)
    if logits.dtype in (torch.float16, torch.bfloat16):  # log-softmax in at least float32, chunk by chunk
        logits = logits.float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def head_logps(model, hidden: Tensor, targets: Tensor, chunk_size: int = 1024) -> Tensor:
    """log-softmax of the output head at `hidden` [M, H], gathered at `targets` [M].

    When the M x V logits would exceed LOGITS_IN_MEMORY elements, the head runs chunk by chunk and each chunk is
    recomputed in the backward pass, so memory holds one chunk of logits; below that, one pass is faster."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    chunked = targets.numel() * head.weight.shape[0] > LOGITS_IN_MEMORY
    step = chunk_size if chunked else max(1, targets.numel())
    use_checkpoint = chunked and torch.is_grad_enabled() and hidden.requires_grad
    pieces = []
    for start in range(0, targets.numel(), step):
        args = (hidden[start:start + step], head.weight, head.bias, targets[start:start + step], softcap)
        pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if use_checkpoint else _chunk_logps(*args))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0)


def sequence_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor,
                   chunk_size: int = 1024) -> SequenceLogps:
    """Summed log-probs of the completion tokens of right-padded rows. `completion_mask[b, t]` = 1 when token t
    of row b belongs to the completion; token t is predicted at position t-1, so the mask is shifted here, once."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    keep = F.pad(completion_mask[:, 1:], (0, 1)).bool()  # position t predicts token t+1
    per_token = head_logps(model, hidden[keep], F.pad(input_ids[:, 1:], (0, 1))[keep], chunk_size)
    rows = torch.arange(len(input_ids), device=keep.device)[:, None].expand_as(keep)[keep]
    return _sum_per_row(per_token, rows, keep.sum(-1))


def packed_logps(model, packed: PackedBatch, chunk_size: int = 1024) -> SequenceLogps:
    """Summed completion log-probs from one forward over the padding-free layout of `prefkit.modeling.packing`
    (each prompt once, its completions attending to it). Rows come back in the caller's order."""
    if not supports_packing(model, packed):
        raise ValueError(f"{type(model).__name__} cannot run the packed layout (see supports_packing)")
    hidden = model.get_decoder()(input_ids=packed.input_ids, position_ids=packed.position_ids,
                                 attention_mask=packed.segment_mask, packing=packed).last_hidden_state[0]
    per_token = head_logps(model, hidden.index_select(0, packed.predictors), packed.targets, chunk_size)
    return _sum_per_row(per_token, packed.rows, packed.lengths)


def _sum_per_row(per_token: Tensor, rows: Tensor, lengths: Tensor) -> SequenceLogps:
    logps = per_token.new_zeros(len(lengths)).index_add(0, rows, per_token)
    return SequenceLogps(logps, lengths.to(per_token.dtype))


def batch_logps(model, batch: dict, chunk_size: int = 1024, packing: bool = True) -> SequenceLogps:
    """Log-probs of a batch from `prefkit.train.batches.collate`: packed when the batch carries the packed layout
    and the model can run it (`supports_packing`), else one padded forward over the concatenated rows."""
    if packing and "packed" in batch and supports_packing(model, batch["packed"]):
        return packed_logps(model, batch["packed"], chunk_size)
    return sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], chunk_size)
