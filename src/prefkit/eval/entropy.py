"""Entropy and diversity of generations (docs/eval.md, "Generation entropy": the measurements behind StaPO's
"stable entropy" claim): the mean per-token predictive entropy of the model on its own samples, and surface statistics of
the generated text (n-gram entropy, distinct-n, repetition rate), plus length statistics.

All entropies are in nats. Text n-grams are over whitespace-separated words, pooled across generations but never
spanning two of them.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prefkit.errors import PrefkitError

NGRAM_ORDERS = (1, 2, 3, 4)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) over the last axis, computed stably in float64: a uniform distribution over V gives
    log V, a one-hot one gives 0."""
    logp = F.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def token_entropies(model, sequences: Sequence[tuple[list[int], list[int]]], pad_token_id: int,
                    batch_size: int = 16, chunk_size: int = 1024) -> list[np.ndarray]:
    """For each (prompt ids, completion ids): H(π(· | x, y_<t)) at every completion position t, teacher-forced
    on the completion (the full next-token distribution, not the sampled token's log-prob). The output head runs
    over chunks of positions so that [B, T, V] logits are never held at once."""
    from prefkit.data.examples import pad_sequences

    device = next(model.parameters()).device
    head, decoder = model.get_output_embeddings(), model.get_decoder()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = list(sequences[start:start + batch_size])
        batch = pad_sequences(chunk, pad_token_id, device)
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        # Position t-1 predicts token t: the completion's predictive positions are its mask shifted left by one.
        predicts = F.pad(batch["completion_mask"][:, 1:], (0, 1)).bool()
        rows, cols = predicts.nonzero(as_tuple=True)
        flat = hidden[rows, cols]
        values = []
        for piece in range(0, flat.shape[0], chunk_size):
            logits = head(flat[piece:piece + chunk_size])
            if softcap:
                logits = softcap * torch.tanh(logits / softcap)
            values.append(entropy_from_logits(logits))
        entropies = torch.cat(values).cpu().numpy() if values else np.zeros(0)
        rows = rows.cpu().numpy()
        out += [entropies[rows == r] for r in range(len(chunk))]
    return out


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def ngram_entropy(texts: Sequence[str], n: int) -> float:
    """H_n = −Σ_g p(g) log p(g) over the n-grams of all texts pooled (0 for a constant text; 0 if there are none)."""
    counts = Counter(g for text in texts for g in ngrams(text.split(), n))
    total = sum(counts.values())
    return float(-sum(c / total * math.log(c / total) for c in counts.values())) if total else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """distinct-n: unique n-grams / all n-grams, pooled over the texts (0 if there are none)."""
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Sequence[str], n: int) -> float:
    """seq-rep-n (Welleck et al. 2019): per text, 1 − unique n-grams / n-grams, averaged over the texts that
    have at least one n-gram (0 if none do). Counts repetition inside a generation, not across generations."""
    rates = [1.0 - len(set(g)) / len(g) for g in (ngrams(text.split(), n) for text in texts) if g]
    return float(np.mean(rates)) if rates else 0.0


def text_statistics(texts: Sequence[str], orders: Sequence[int] = NGRAM_ORDERS) -> dict:
    """ngram_entropy, distinct and repetition for each order n, keyed by str(n) (JSON keys are strings)."""
    if not texts:
        raise PrefkitError("no generated texts to measure")
    return {name: {str(n): fn(texts, n) for n in orders}
            for name, fn in (("ngram_entropy", ngram_entropy), ("distinct", distinct_n),
                             ("repetition", repetition_rate))}


def length_statistics(lengths: Sequence[int], stopped: Sequence[bool] | None = None) -> dict:
    """Mean, median, min and max generated length in tokens (EOS not counted), and the share of samples that
    ended with EOS rather than at the token limit."""
    lengths = np.asarray(lengths, dtype=float)
    if lengths.size == 0:
        raise PrefkitError("no generated lengths to measure")
    out = {"mean": float(lengths.mean()), "median": float(np.median(lengths)), "min": int(lengths.min()),
           "max": int(lengths.max())}
    if stopped is not None:
        out["stopped"] = float(np.mean(np.asarray(stopped, dtype=float)))
    return out


def mean_token_entropy(per_sequence: Sequence[np.ndarray]) -> float:
    """H_tok = (1/N) Σ over samples of the mean entropy over that sample's positions (docs/eval.md)."""
    means = [float(h.mean()) for h in per_sequence if h.size]
    if not means:
        raise PrefkitError("no completion positions to measure entropy on")
    return float(np.mean(means))


def sample_entropy(model, tokenizer, prompts: Sequence, samples: Sequence) -> float:
    """H_tok of generated answers: `samples[i]` (a prefkit.modeling.generation.Sample) answers `prompts[i]`; an
    empty answer counts as the EOS token it stopped on."""
    from prefkit.modeling.generation import encode_prompt

    sequences = [(encode_prompt(tokenizer, p), s.ids or [tokenizer.eos_token_id]) for p, s in zip(prompts, samples)]
    return mean_token_entropy(token_entropies(model, sequences, tokenizer.pad_token_id))
