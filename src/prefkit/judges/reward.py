"""The Bradley-Terry reward-model judge: P(a beats b | x) = σ(r(x, a) − r(x, b)), any
`AutoModelForSequenceClassification` with one output.

A reward depends on one response only, so a batch scores each distinct (prompt, response) text once: a K x K
preference matrix costs K forward rows, not K².
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from prefkit.judges.base import Judge
from prefkit.judges.render import exchange
from prefkit.judges.scoring import Scorer, load_classifier, prepare


class RewardModelJudge(Judge):
    """`RewardModelJudge(model, tokenizer)` for a model in memory; `RewardModelJudge.load(path)` from disk or hub."""

    def __init__(self, model, tokenizer, *, name: str = "reward", batch_size: int = 16, max_length: int | None = None,
                 device: str | None = None):
        model, tokenizer = prepare(model, tokenizer, device=device, source=name)
        self.name = name
        self.tokenizer = tokenizer
        self.scorer = Scorer(model, tokenizer, batch_size=batch_size, max_length=max_length)

    @classmethod
    def load(cls, name_or_path: str, *, dtype: str = "float32", device: str | None = None, **options):
        model, tokenizer = load_classifier(name_or_path, dtype=dtype, device=device)
        return cls(model, tokenizer, name=f"reward:{name_or_path}", **options)

    def rewards(self, prompts: list, responses: list) -> np.ndarray:
        """r(prompt_i, response_i), shape [N]; identical texts are scored once."""
        texts = [exchange(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        distinct = list(dict.fromkeys(texts))
        scores = dict(zip(distinct, self.scorer(distinct)))
        return np.array([scores[t] for t in texts], dtype=float)

    def _pairs(self, prompts: list, as_: list, bs: list) -> np.ndarray:
        n = len(prompts)
        r = self.rewards(prompts + prompts, as_ + bs)
        return expit(r[:n] - r[n:])
