"""Metrics of a model on a preference data set: sequence log-probs of every pair's chosen and rejected completion
(the same `sequence_logps` the losses use), then ranking accuracy R and R̃, and, given a reference model, the
reference's own rankings, the idealised ranking accuracy R*, flips and reward margins (prefkit.eval.ranking)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prefkit.data.collate import PairExample, collate_pairs
from prefkit.errors import PrefkitError
from prefkit.eval import ranking
from prefkit.modeling.logprobs import sequence_logps


@dataclass
class PairLogps:
    """Summed completion log-probs and lengths (tokens, EOS included) of each pair's two sides, as float arrays."""

    chosen: np.ndarray
    rejected: np.ndarray
    len_chosen: np.ndarray
    len_rejected: np.ndarray


def pair_examples(data, tokenizer, max_pairs: int | None = None, split: str = "train") -> list[PairExample]:
    """The pair examples of `data`: a path or hub id (prefkit.data.prepare, its `split`), a PreparedData, or a
    list of PairExample; the first `max_pairs` when given (the data set's order is the evaluation's order)."""
    if isinstance(data, (list, tuple)):
        examples = list(data)
    elif hasattr(data, "examples"):
        examples = data.examples
    else:
        from prefkit.data import prepare
        examples = prepare(data, tokenizer, split=split).examples
    if not examples or not all(isinstance(e, PairExample) for e in examples):
        raise PrefkitError("evaluation data must be paired preference rows (prompt, chosen, rejected); "
                           "unpaired (KTO-style) data has no pairs to rank")
    return examples[:max_pairs] if max_pairs else examples


@torch.no_grad()
def pair_logps(model, examples: list[PairExample], pad_token_id: int, batch_size: int = 32) -> PairLogps:
    """log π(y_w|x), log π(y_l|x) and their lengths for every pair, batched; the model's mode is left as is."""
    parts = []
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = collate_pairs(examples[start:start + batch_size], pad_token_id)
        out = sequence_logps(model, *(batch[k].to(device) for k in ("input_ids", "attention_mask", "completion_mask")))
        parts.append((out.logps.double().cpu().numpy(), out.lengths.double().cpu().numpy()))
    logps, lengths = np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts])
    # Each batch stacks its chosen rows, then its rejected rows: undo that per batch.
    chosen, rejected, len_w, len_l = [], [], [], []
    offset = 0
    for start in range(0, len(examples), batch_size):
        b = len(examples[start:start + batch_size])
        chosen.append(logps[offset:offset + b]), rejected.append(logps[offset + b:offset + 2 * b])
        len_w.append(lengths[offset:offset + b]), len_l.append(lengths[offset + b:offset + 2 * b])
        offset += 2 * b
    return PairLogps(*(np.concatenate(x) for x in (chosen, rejected, len_w, len_l)))


def ranking_metrics(policy: PairLogps, reference: PairLogps | None = None, *, beta: float = 0.1,
                    epsilon: float = ranking.DEFAULT_EPSILON) -> dict:
    """R and R̃ of the policy; with a reference also R and R̃ of the reference, R* (α = 1 − ε for every pair:
    prefkit's `score`/`margin` fields are reward-scale numbers, not rater proportions), flips and reward margins."""
    out = {"pairs": int(policy.chosen.size),
           "ranking_accuracy": ranking.ranking_accuracy(policy.chosen, policy.rejected),
           "ranking_accuracy_normalised": ranking.ranking_accuracy(policy.chosen, policy.rejected,
                                                                   policy.len_chosen, policy.len_rejected)}
    if reference is None:
        return out
    for name, lengths in (("", ()), ("_normalised", (reference.len_chosen, reference.len_rejected))):
        out[f"reference_ranking_accuracy{name}"] = ranking.ranking_accuracy(reference.chosen, reference.rejected,
                                                                            *lengths)
    out["idealised_ranking_accuracy"] = ranking.idealised_ranking_accuracy(reference.chosen, reference.rejected,
                                                                           beta, epsilon=epsilon)
    out["epsilon"], out["beta"] = epsilon, beta
    out["flips"] = ranking.flips(ranking.ranks(policy.chosen, policy.rejected),
                                 ranking.ranks(reference.chosen, reference.rejected))
    out["rewards"] = ranking.reward_margins(policy.chosen, policy.rejected, reference.chosen, reference.rejected, beta)
    return out
