"""The general-preference-model judge (`gpm:PATH`): P(a ≻ b | x) = σ(v_aᵀ R(x) v_b / τ) from a model that
`prefkit judge train` trained with `kind: gpm` (heads.py has the maths and the paper).

Each distinct (prompt, response) is embedded once and each distinct prompt's gate is read once, so a K x K
preference matrix costs K forward rows (K + 1 with the prompt gate), batched, whatever the number of pairs. The
form is skew-symmetric, so only one order needs computing: s(b, a) = −s(a, b) bit for bit, and the sigmoid is
taken so that P(b ≻ a) = 1 − P(a ≻ b) exactly. `preference_matrix`'s averaging of both orders therefore changes
nothing and costs no forward pass.
"""

from __future__ import annotations

import numpy as np
import torch

from prefkit.errors import PrefkitError
from prefkit.judges.base import Judge
from prefkit.judges.encoding import TrainedEncoding
from prefkit.judges.heads import HeadSettings, antisymmetric_sigmoid, preference_logits
from prefkit.judges.scoring import Scorer, load_classifier, prepare


class GPMJudge(Judge):
    """`GPMJudge(model, tokenizer)` for a model in memory; `GPMJudge.load(path)` from disk or hub."""

    def __init__(self, model, tokenizer, *, name: str = "gpm", batch_size: int = 16, device: str | None = None):
        settings = HeadSettings.of(model.config, name)
        if settings is None or settings.kind != "gpm":
            found = "no 'prefkit_judge' settings" if settings is None else f"a {settings.kind} judge"
            raise PrefkitError(f"judge {name}: not a general preference model trained by `prefkit judge train` "
                               f"(its config.json has {found}); a reward model loads as reward:PATH")
        model, tokenizer = prepare(model, tokenizer, device=device, source=name, outputs=settings.num_labels,
                                   meaning="the preference embedding and the gate")
        self.name, self.tokenizer, self.settings = name, tokenizer, settings
        self.encoding = TrainedEncoding(tokenizer, settings)
        self.scorer = Scorer(model, tokenizer, batch_size=batch_size)

    @classmethod
    def load(cls, name_or_path: str, *, dtype: str = "float32", device: str | None = None, **options):
        model, tokenizer = load_classifier(name_or_path, dtype=dtype, device=device)
        return cls(model, tokenizer, name=f"gpm:{name_or_path}", **options)

    def outputs(self, prompts: list, responses: list) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head outputs of each (prompt, response) row and, with the gate, of each prompt's row: [N, labels]
        twice (float64). Identical inputs are run once."""
        encoded = [self.encoding(p, r) for p, r in zip(prompts, responses)]
        rows = [full for _, full in encoded] + ([prompt for prompt, _ in encoded] if self.settings.needs_prompt else [])
        distinct = list(dict.fromkeys(rows))
        values = dict(zip(distinct, torch.from_numpy(self.scorer.outputs(distinct))))
        out = torch.stack([values[row] for row in rows]) if rows else torch.zeros(0, self.settings.num_labels)
        n = len(encoded)
        return out[:n], (out[n:] if self.settings.needs_prompt else None)

    def matrix(self, prompt, responses: list) -> np.ndarray:
        """P[i, j] = P(responses[i] ≻ responses[j] | prompt) from K embeddings; each pair i < j is computed once and
        P[j, i] = 1 − P[i, j]."""
        k = len(responses)
        out, gate = self.outputs([prompt] * k, list(responses))
        i, j = np.triu_indices(k, 1)
        upper = antisymmetric_sigmoid(preference_logits(out[i], out[j], None if gate is None else gate[i],
                                                        self.settings)).numpy()
        P = np.full((k, k), 0.5)
        P[i, j], P[j, i] = upper, 1.0 - upper
        return P

    def _pairs(self, prompts: list, as_: list, bs: list) -> np.ndarray:
        n = len(prompts)
        out, gate = self.outputs(prompts + prompts, as_ + bs)
        logits = preference_logits(out[:n], out[n:], None if gate is None else gate[:n], self.settings)
        return antisymmetric_sigmoid(logits).numpy()
