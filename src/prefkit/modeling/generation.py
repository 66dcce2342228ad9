"""Prompt encoding and batched sampling for self-play and evaluation.

A prompt is rendered with the tokenizer's chat template (the conversation, then the generation prompt) and a
response is its tokens plus EOS, so log π(response | prompt) is the probability that the model says exactly
that and stops. Sampling keeps the sampled token ids, so training scores exactly what was generated (decoding
and re-tokenizing can change a BPE segmentation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from prefkit.io import progress


@dataclass
class Sample:
    text: str
    ids: list[int]  # the generated tokens, ending with EOS when the model stopped


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Token ids of the prompt ending with the generation prompt; `prompt` is a user message (str) or a list
    of {"role", "content"} messages. Without a chat template: BOS (if any) + the text."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer("\n".join(m["content"] for m in messages), add_special_tokens=False)["input_ids"]


def encode_completion(tokenizer, response) -> list[int]:
    """Token ids of the response followed by EOS; a conversational response is its last message."""
    if not isinstance(response, str):
        response = response[-1]["content"]
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence, n: int = 1, *, seed: int = 0, temperature: float = 1.0,
             top_p: float = 1.0, max_new_tokens: int = 32, batch_size: int = 256,
             mixture: tuple | None = None, prompt_ids: Sequence[list[int]] | None = None) -> list[list[Sample]]:
    """n samples per prompt (batched, left-padded, KV cache), decoded up to the first EOS. Seeded without
    touching the global torch RNG. `mixture=(reference, β)` samples from π^(1−β)·π_ref^β instead, mixed token
    by token as Nash-MD does (β = 0 is the policy itself). `prompt_ids` (already encoded) skips the encoding."""
    from transformers import LogitsProcessorList

    encoded = [list(ids) for ids in (prompt_ids if prompt_ids is not None else
                                     [encode_prompt(tokenizer, p) for p in prompts]) for _ in range(n)]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    samples: list[Sample] = []
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        starts = range(0, len(encoded), batch_size)
        for start in progress(starts, total=len(starts), desc=f"sample {len(encoded)}"):
            chunk = encoded[start:start + batch_size]
            width = max(len(e) for e in chunk)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in chunk], device=model.device)
            attention = (torch.arange(width, device=ids.device)[None] >= torch.tensor(
                [width - len(e) for e in chunk], device=ids.device)[:, None]).long()
            processors = LogitsProcessorList([_GeometricMixture(*mixture, width, attention)] if mixture else [])
            out = model.generate(input_ids=ids, attention_mask=attention, do_sample=True, temperature=temperature,
                                 top_k=0, top_p=top_p, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=eos, logits_processor=processors)
            samples += [to_sample(tokenizer, row, eos) for row in out[:, width:].tolist()]
    model.train(was_training)
    return [samples[i * n:(i + 1) * n] for i in range(len(prompts))]


def to_sample(tokenizer, ids: list[int], eos: int) -> Sample:
    """Generated ids -> a Sample: cut after the first EOS (kept), the text decoded without it."""
    tokens = ids[:ids.index(eos) + 1] if eos in ids else list(ids)
    text_tokens = tokens[:-1] if tokens and tokens[-1] == eos else tokens
    return Sample(tokenizer.decode(text_tokens, skip_special_tokens=False), tokens)


class _GeometricMixture:
    """Logits processor: next-token log-probs of π^(1−β)·π_ref^β (Nash-MD's opponent), token by token. The
    reference re-reads the whole prefix at every step (no cache of its own): fine for short answers."""

    def __init__(self, reference, coef: float, prompt_width: int, prompt_mask: torch.Tensor):
        self.reference, self.coef, self.width, self.prompt_mask = reference, coef, prompt_width, prompt_mask

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = torch.ones_like(input_ids[:, self.width:])
        mask = torch.cat([self.prompt_mask, generated], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.reference(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        return (1 - self.coef) * torch.log_softmax(scores, -1) + self.coef * torch.log_softmax(
            logits.to(scores.dtype), -1)
