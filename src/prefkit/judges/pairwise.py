"""The pairwise preference-model judge: a sequence-classification model with one output that reads both responses
at once and returns the logit of P(A beats B).

Input format (`TEMPLATE`, overridable): the prompt and the two responses in fixed slots,

    [PROMPT]
    {prompt}
    [RESPONSE A]
    {a}
    [RESPONSE B]
    {b}

with a conversational prompt rendered by the tokenizer's chat template (see render.py) and a conversational
response by its contents. Such models often prefer one slot, so the judge always asks both orders and reports
(P(a, b) + 1 − P(b, a)) / 2, which is antisymmetric whatever the slot bias.
"""

from __future__ import annotations

from string import Formatter

from scipy.special import expit

from prefkit.errors import PrefkitError
from prefkit.judges.base import Judge
from prefkit.judges.render import content, prompt_text
from prefkit.judges.scoring import Scorer, load_classifier, prepare

TEMPLATE = "[PROMPT]\n{prompt}\n[RESPONSE A]\n{a}\n[RESPONSE B]\n{b}"


class PairwiseModelJudge(Judge):
    """`PairwiseModelJudge(model, tokenizer)` in memory, `PairwiseModelJudge.load(path)` from disk or hub."""

    both_orders = True

    def __init__(self, model, tokenizer, *, name: str = "pairwise", template: str = TEMPLATE, batch_size: int = 16,
                 max_length: int | None = None, device: str | None = None):
        try:
            fields = {field for _, field, _, _ in Formatter().parse(template) if field is not None}
        except ValueError as error:
            fields = {str(error)}
        if fields != {"prompt", "a", "b"}:
            raise PrefkitError(f"pairwise judge template must use exactly the fields {{prompt}}, {{a}} and {{b}}; "
                               f"{template!r} has {sorted(fields)}")
        model, tokenizer = prepare(model, tokenizer, device=device, source=name)
        self.name, self.template, self.tokenizer = name, template, tokenizer
        self.scorer = Scorer(model, tokenizer, batch_size=batch_size, max_length=max_length)

    @classmethod
    def load(cls, name_or_path: str, *, dtype: str = "float32", device: str | None = None, **options):
        model, tokenizer = load_classifier(name_or_path, dtype=dtype, device=device)
        return cls(model, tokenizer, name=f"pairwise:{name_or_path}", **options)

    def text(self, prompt, a, b) -> str:
        """The model's input for "does a beat b?"."""
        return self.template.format(prompt=prompt_text(self.tokenizer, prompt), a=content(a), b=content(b))

    def _pairs(self, prompts: list, as_: list, bs: list):
        """One order only: `compare` and `preference_matrix` ask (a, b) and (b, a) and average."""
        return expit(self.scorer([self.text(p, a, b) for p, a, b in zip(prompts, as_, bs)]))
