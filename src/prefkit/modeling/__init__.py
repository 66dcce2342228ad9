"""prefkit.modeling: models, tokenizers, log-probs (`score`) and reference policies."""

from prefkit.modeling.logprobs import score

__all__ = ["score"]
