"""Per-token log-probs of the target tokens, without materialising [B, T, V] float32 logits.

The decoder runs once; the output head then runs over chunks of positions, and each chunk's log-softmax is
recomputed in the backward pass (activation checkpointing), so peak memory holds one chunk of logits, not the
batch's. This is the one function a fused kernel replaces; everything upstream sees only its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

Tensor = torch.Tensor


@dataclass
class SequenceLogps:
    """Log-probs of completion tokens: per token [B, T] (0 off the completion), summed [B], lengths [B]."""

    token_logps: Tensor
    logps: Tensor
    lengths: Tensor

    @property
    def mean_logps(self) -> Tensor:
        return self.logps / self.lengths.clamp(min=1)


def _chunk_logps(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, softcap: float | None) -> Tensor:
    logits = F.linear(hidden, weight, bias).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def token_logps(model, input_ids: Tensor, attention_mask: Tensor, chunk_size: int = 1024) -> Tensor:
    """log π(x_{t+1} | x_{≤t}) for every position, shape [B, T] (the last position, with no target, is 0)."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, :-1]
    targets = input_ids[:, 1:]
    softcap = getattr(model.config, "final_logit_softcapping", None)
    flat_hidden, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    pieces = []
    for start in range(0, flat_targets.numel(), chunk_size):
        args = (flat_hidden[start:start + chunk_size], head.weight, head.bias, flat_targets[start:start + chunk_size],
                softcap)
        use_checkpoint = torch.is_grad_enabled() and flat_hidden.requires_grad
        pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if use_checkpoint else _chunk_logps(*args))
    per_token = torch.cat(pieces).view_as(targets)
    return F.pad(per_token, (0, 1))


def sequence_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor,
                   chunk_size: int = 1024) -> SequenceLogps:
    """Summed log-probs of the completion tokens. `completion_mask[b, t]` = 1 when token t of row b belongs to
    the completion; the log-prob of token t is predicted at position t-1, so the mask is shifted here, once."""
    per_position = token_logps(model, input_ids, attention_mask, chunk_size)  # position t predicts token t+1
    target_mask = F.pad(completion_mask[:, 1:], (0, 1)).to(per_position.dtype)
    per_token = per_position * target_mask
    return SequenceLogps(per_token, per_token.sum(-1), target_mask.sum(-1))
