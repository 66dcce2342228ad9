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


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence, n: int = 1, *, prompt_ids: Sequence[list[int]] | None = None,
           seed: int = 0, temperature: float = 1.0, max_new_tokens: int = 64, batch_size: int = 64) -> Samples:
    """n sampled responses per prompt (through `prefkit.modeling.generation.generate`). `prompt_ids` (already
    encoded, e.g. from a data set) overrides encoding."""
    from prefkit.modeling.generation import encode_prompt, generate

    if n < 1 or not prompts:
        raise PrefkitError(f"sampling needs n >= 1 and at least one prompt; got n={n}, {len(prompts)} prompts")
    encoded = list(prompt_ids) if prompt_ids is not None else [encode_prompt(tokenizer, p) for p in prompts]
    groups = generate(model, tokenizer, prompts, n, seed=seed, temperature=temperature,
                      max_new_tokens=max_new_tokens, batch_size=batch_size, prompt_ids=encoded)
    out = Samples()
    for prompt, ids, group in zip(prompts, encoded, groups):
        for s in group:
            out.prompts.append(prompt)
            out.prompt_ids.append(list(ids))
            out.completion_ids.append(s.ids)
            out.texts.append(s.text)
            out.stopped.append(bool(s.ids) and s.ids[-1] == tokenizer.eos_token_id)
    return out
