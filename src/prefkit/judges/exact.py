"""Judges that can enumerate a prompt's responses, so that a response's win rate against a policy is exact.

A sampled win rate P̂(y beats π_t), the mean of y's row in a K x K judged matrix, carries the noise of K
samples; at the step sizes where MPO converges, that noise is what keeps the model from tracking the game
dynamic (docs/selfplay.md, "Win rates"). A judge that knows a finite set of responses for a prompt, and what
any response wins against anything outside that set, gives the exact value instead:

    P(y beats π) = (1 − o) · Σ_j q_j P(y beats r_j) + o · P(y beats an outside response),

where q is the policy's distribution over the enumerated responses r_j (renormalised) and o its mass outside
them. A judge offers this by having the two methods of `Enumerating` (the bundled task's oracle does); a
`module:function` judge offers it when its function object has them.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Enumerating(Protocol):
    def responses(self, prompt) -> list[str]:
        """The enumerated responses of `prompt` (a finite set; anything else is "outside")."""

    def win_rates_against(self, prompt, candidates: Sequence[str], probs: np.ndarray, outside: float) -> np.ndarray:
        """P(candidate beats y) for each candidate, y drawn from the policy that puts `probs` (summing to 1) on
        `responses(prompt)` scaled by 1 − `outside`, and `outside` on responses outside them."""


def enumerating(judge) -> Enumerating | None:
    """The object behind `judge` that enumerates responses, or None for a black-box judge."""
    for candidate in (judge, getattr(judge, "fn", None)):
        if candidate is not None and isinstance(candidate, Enumerating):
            return candidate
    return None
