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
LOGITS_IN_MEMORY = 2 ** 25  # logits elements (128 MB in float32) computed in one pass, without recomputation


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
    logits = F.linear(hidden, weight, bias)
    if logits.dtype in (torch.float16, torch.bfloat16):  # log-softmax in at least float32, chunk by chunk
        logits = logits.float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def head_logps(model, hidden: Tensor, targets: Tensor, chunk_size: int = 1024,
               mask: Tensor | None = None) -> Tensor:
    """log-softmax of the output head at `hidden` [B, T, H], gathered at `targets` [B, T]; 0 where `mask` is 0.

    The head runs only at masked-in positions (completion tokens: no prompt, no padding). When their logits
    would exceed LOGITS_IN_MEMORY elements, it runs chunk by chunk and recomputes each chunk in the backward
    pass, so memory holds one chunk of logits; below that, one pass is faster and costs little memory."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    flat_hidden, flat_targets = hidden[keep], targets[keep]
    chunked = flat_targets.numel() * head.weight.shape[0] > LOGITS_IN_MEMORY
    step = chunk_size if chunked else max(1, flat_targets.numel())
    pieces = []
    for start in range(0, flat_targets.numel(), step):
        args = (flat_hidden[start:start + step], head.weight, head.bias, flat_targets[start:start + step], softcap)
        use_checkpoint = chunked and torch.is_grad_enabled() and flat_hidden.requires_grad
        pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if use_checkpoint else _chunk_logps(*args))
    out = torch.zeros(targets.shape, dtype=pieces[0].dtype if pieces else hidden.dtype, device=hidden.device)
    if pieces:
        out = out.masked_scatter(keep, torch.cat(pieces))
    return out


def token_logps(model, input_ids: Tensor, attention_mask: Tensor, chunk_size: int = 1024) -> Tensor:
    """log π(x_{t+1} | x_{≤t}) for every position, shape [B, T] (the last position, with no target, is 0)."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, :-1]
    return F.pad(head_logps(model, hidden, input_ids[:, 1:], chunk_size), (0, 1))


def sequence_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor,
                   chunk_size: int = 1024) -> SequenceLogps:
    """Summed log-probs of the completion tokens. `completion_mask[b, t]` = 1 when token t of row b belongs to
    the completion; the log-prob of token t is predicted at position t-1, so the mask is shifted here, once."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    target_mask = F.pad(completion_mask[:, 1:], (0, 1))  # position t predicts token t+1
    per_token = head_logps(model, hidden, F.pad(input_ids[:, 1:], (0, 1)), chunk_size, target_mask)
    return SequenceLogps(per_token, per_token.sum(-1), target_mask.sum(-1).to(per_token.dtype))


def shared_prompt_logps(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                        completion_mask: Tensor, chunk_size: int = 1024) -> SequenceLogps:
    """Summed log-probs of K completions per prompt, running each prompt once.

    `prompt_ids` [B, Tp] and `completion_ids` [K·B, Tc] are right-padded; completion rows are grouped by
    completion (rows 0..B-1 the first completion of every prompt, then the second, ...), as `collate_pairs`
    orders chosen then rejected. The prompt's key/value cache is repeated K times and the completions attend
    to it, so prompt tokens cost one forward and one backward instead of K. Needs a model whose decoder
    accepts a key/value cache and a 4D additive attention mask (transformers' Llama, Mistral, Qwen, Gemma...)."""
    decoder = model.get_decoder()
    batch, prompt_len = prompt_ids.shape
    k, completion_len = completion_ids.shape[0] // batch, completion_ids.shape[1]
    prompt = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True)
    cache = prompt.past_key_values
    cache.batch_repeat_interleave(k)  # cache rows: p0 x k, p1 x k, ... -> put completions in that order
    order = torch.arange(k * batch, device=completion_ids.device).view(k, batch).t().reshape(-1)
    ids, mask = completion_ids[order], completion_mask[order]
    lengths = prompt_mask.sum(-1).repeat_interleave(k)
    positions = lengths[:, None] + torch.arange(completion_len, device=ids.device)
    attention = _completion_attention(prompt_mask.repeat_interleave(k, 0).bool(), mask.bool(), prompt.last_hidden_state.dtype)
    hidden = decoder(input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                     use_cache=True).last_hidden_state
    last_prompt = prompt.last_hidden_state[torch.arange(batch), prompt_mask.sum(-1) - 1].repeat_interleave(k, 0)
    hidden = torch.cat([last_prompt[:, None], hidden[:, :-1]], dim=1)  # the state that predicts each token
    per_token = head_logps(model, hidden, ids, chunk_size, mask)
    per_token = per_token[torch.argsort(order)]  # back to the caller's row order
    return SequenceLogps(per_token, per_token.sum(-1), completion_mask.sum(-1).to(per_token.dtype))


def _completion_attention(prompt_keys: Tensor, completion_keys: Tensor, dtype) -> Tensor:
    """Additive mask [N, 1, Tc, Tp+Tc]: completion token t sees the real prompt tokens and completion tokens <= t.
    Padding positions also see themselves, so no row of the softmax is empty."""
    tc = completion_keys.shape[1]
    causal = torch.ones(tc, tc, dtype=torch.bool, device=completion_keys.device).tril()
    to_completion = causal[None] & completion_keys[:, None, :]
    to_completion |= torch.eye(tc, dtype=torch.bool, device=completion_keys.device)[None]
    to_prompt = prompt_keys[:, None, :].expand(-1, tc, -1)
    allowed = torch.cat([to_prompt, to_completion], dim=-1)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def batch_logps(model, batch: dict[str, Tensor], chunk_size: int = 1024, share_prompt: bool = False) -> SequenceLogps:
    """Log-probs of a batch from `prefkit.data.collate_pairs` / `collate_unpaired`: the shared-prompt forward for
    pairs when asked (and the batch has the split tensors), else one concatenated forward."""
    if share_prompt and "prompt_ids" in batch:
        return shared_prompt_logps(model, batch["prompt_ids"], batch["prompt_attention_mask"], batch["completion_ids"],
                                   batch["completion_attention_mask"], chunk_size)
    return sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], chunk_size)
