"""The Bradley-Terry reward-model judge: P(a beats b | x) = σ(r(x, a) − r(x, b)), any
`AutoModelForSequenceClassification` with one output.

A reward depends on one response only, so a batch scores each distinct (prompt, response) text once: a K x K
preference matrix costs K forward rows, not K².

A reward model that `prefkit judge train` wrote (its config says `prefkit_judge: {kind: bt, ...}`) reads the
token ids its training data had (encoding.py); any other reads the texts of render.py.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from prefkit.errors import PrefkitError
from prefkit.judges.base import Judge
from prefkit.judges.encoding import TrainedEncoding
from prefkit.judges.heads import HeadSettings
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
        settings = HeadSettings.of(model.config, name)
        if settings is not None and settings.kind != "bt":
            raise PrefkitError(f"judge {name}: this model was trained as a {settings.kind} judge; load it as "
                               f"{settings.kind}:PATH")
        trained = TrainedEncoding(tokenizer, settings) if settings is not None else None
        # what one (prompt, response) is fed as: training's token ids for a model prefkit trained, else the text
        self._input = (lambda p, r: trained(p, r)[1]) if trained else (
            lambda p, r: tuple(self.scorer.encode(exchange(tokenizer, p, r))))

    @classmethod
    def load(cls, name_or_path: str, *, dtype: str = "float32", device: str | None = None, **options):
        model, tokenizer = load_classifier(name_or_path, dtype=dtype, device=device)
        return cls(model, tokenizer, name=f"reward:{name_or_path}", **options)

    def rewards(self, prompts: list, responses: list) -> np.ndarray:
        """r(prompt_i, response_i), shape [N]; identical texts are scored once."""
        inputs = [self._input(p, r) for p, r in zip(prompts, responses)]
        distinct = list(dict.fromkeys(inputs))
        scores = dict(zip(distinct, self.scorer.outputs(distinct)[:, 0]))
        return np.array([scores[x] for x in inputs], dtype=float)

    def _pairs(self, prompts: list, as_: list, bs: list) -> np.ndarray:
        n = len(prompts)
        r = self.rewards(prompts + prompts, as_ + bs)
        return expit(r[:n] - r[n:])
