"""One scalar logit per text from a sequence-classification model: what both model judges (reward, pairwise) run.

Texts are tokenized one by one, sorted by length so each batch pads little, padded on the tokenizer's side and
scored without gradients in eval mode. transformers' sequence-classification heads read the last non-pad token,
which works for either padding side; with left padding the position ids are rebuilt from the attention mask so a
text scores the same in a batch as on its own.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np
import torch

from prefkit.errors import PrefkitError
from prefkit.modeling.load import DTYPES, from_pretrained, load_tokenizer


def load_classifier(name_or_path: str, *, dtype: str = "float32", device: str | None = None):
    """An `AutoModelForSequenceClassification` and its tokenizer, from a local path or hub id (`trust_remote_code`
    off), on `device`."""
    from transformers import AutoModelForSequenceClassification

    if dtype not in DTYPES:
        raise PrefkitError(f"judge model dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    tokenizer = load_tokenizer(name_or_path)
    model = from_pretrained(AutoModelForSequenceClassification, name_or_path, "a sequence-classification model",
                            dtype=DTYPES[dtype], trust_remote_code=False)
    # the judge kind checks the outputs (prepare) when it takes the model over
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")), tokenizer


def prepare(model, tokenizer, *, device: str | None = None, source: str = "the model", outputs: int = 1,
            meaning: str = "a reward, or the logit of P(A beats B)"):
    """Check the model has `outputs` outputs, give it a pad token id, put it in eval mode (on `device` when given;
    a model handed over in memory stays where its owner put it)."""
    if getattr(model.config, "num_labels", None) != outputs:
        raise PrefkitError(f"judge model {source} must have {outputs} output{'s' if outputs > 1 else ''} "
                           f"(num_labels={outputs}: {meaning}); it has "
                           f"num_labels={getattr(model.config, 'num_labels', None)}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:  # the classification head finds the last real token by the pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


class Scorer:
    """Batched scalar scores of texts: `scorer(texts) -> np.ndarray [len(texts)]`; all the head's outputs of
    token ids already made: `scorer.outputs(ids) -> np.ndarray [len(ids), num_labels]`."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, max_length: int | None = None):
        if batch_size < 1:
            raise PrefkitError(f"judge batch_size must be >= 1 (got {batch_size})")
        self.model, self.tokenizer, self.batch_size, self.max_length = model, tokenizer, batch_size, max_length
        self.rows = 0  # texts scored so far (each one forward row): lets callers see that nothing is scored twice
        self._positions = "position_ids" in inspect.signature(model.forward).parameters

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.outputs([self.encode(text) for text in texts])[:, 0]

    def outputs(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        order = np.argsort([len(x) for x in ids], kind="stable")
        scores = np.empty((len(ids), self.model.config.num_labels))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            scores[rows] = self._forward([list(ids[i]) for i in rows])
        self.rows += len(ids)
        return scores

    def encode(self, text: str) -> list[int]:
        bos = self.tokenizer.bos_token
        # A chat template already starts with BOS; plain text gets the tokenizer's usual special tokens.
        special = not (bos and text.startswith(bos))
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        if self.max_length is not None and len(ids) > self.max_length:
            ids = ids[-self.max_length:]  # keep the end: the response, where the score is read
        return ids

    @torch.no_grad()
    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        left = self.tokenizer.padding_side == "left"
        for row, x in enumerate(batch):
            span = slice(width - len(x), width) if left else slice(0, len(x))
            ids[row, span] = torch.tensor(x, dtype=torch.long)
            mask[row, span] = 1
        device = self.model.device
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if left and self._positions:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        return self.model(**inputs).logits.to(torch.float64).cpu().numpy()
