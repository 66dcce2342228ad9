"""prefkit.modeling: models, tokenizers, log-probs and reference policies."""
