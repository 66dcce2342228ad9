"""Sampling for evaluation: responses with their exact generated token ids, so that lengths and teacher-forced
entropies are measured on the tokens the model produced, not on a re-tokenisation of the decoded text.

Decoding matches `prefkit.tasks.sample_responses` (chat-templated prompt, left padding, ancestral sampling with
top-k and top-p off, seeded without touching the global RNG): the same seed gives the same texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from prefkit.errors import PrefkitError


@dataclass
class Samples:
    """n samples per prompt, flattened prompt-major: prompts[i] is the prompt of texts[i]."""

    prompts: list = field(default_factory=list)         # as given (strings or conversational lists), for judges
    prompt_ids: list[list[int]] = field(default_factory=list)
    completion_ids: list[list[int]] = field(default_factory=list)  # up to and including EOS when it came
    texts: list[str] = field(default_factory=list)       # decoded up to the first EOS
    stopped: list[bool] = field(default_factory=list)    # whether EOS came before the token limit

    @property
    def lengths(self) -> list[int]:
        """Generated tokens before EOS."""
        return [len(ids) - int(stop) for ids, stop in zip(self.completion_ids, self.stopped)]


def encode_prompts(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Chat-templated prompt ids (as training data is rendered) when the tokenizer has a chat template; the
    plain text's tokens otherwise. Conversational prompts need a template."""
    from prefkit.tasks.policy import encode_prompt

    if getattr(tokenizer, "chat_template", None):
        return [encode_prompt(tokenizer, p) for p in prompts]
    if not all(isinstance(p, str) for p in prompts):
        raise PrefkitError("conversational prompts need a tokenizer with a chat template")
    return [tokenizer(p)["input_ids"] for p in prompts]


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence, n: int = 1, *, prompt_ids: Sequence[list[int]] | None = None,
           seed: int = 0, temperature: float = 1.0, max_new_tokens: int = 64, batch_size: int = 64) -> Samples:
    """n sampled responses per prompt. `prompt_ids` (already encoded, e.g. from a data set) overrides encoding."""
    if n < 1 or not prompts:
        raise PrefkitError(f"sampling needs n >= 1 and at least one prompt; got n={n}, {len(prompts)} prompts")
    encoded = list(prompt_ids) if prompt_ids is not None else encode_prompts(tokenizer, prompts)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(model.parameters()).device
    flat = [(p, ids) for p, ids in zip(prompts, encoded) for _ in range(n)]
    out = Samples()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            width = max(len(ids) for _, ids in chunk)
            ids = torch.tensor([[pad] * (width - len(e)) + e for _, e in chunk], device=device)  # left padding
            attention = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for _, e in chunk], device=device)
            generated = model.generate(input_ids=ids, attention_mask=attention, do_sample=True,
                                       temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                       pad_token_id=pad, eos_token_id=eos)
            for (prompt, prompt_ids_), row in zip(chunk, generated[:, width:].tolist()):
                stopped = eos in row
                row = row[:row.index(eos) + 1] if stopped else row
                out.prompts.append(prompt)
                out.prompt_ids.append(list(prompt_ids_))
                out.completion_ids.append(row)
                out.texts.append(tokenizer.decode(row[:-1] if stopped else row, skip_special_tokens=False))
                out.stopped.append(stopped)
    return out
