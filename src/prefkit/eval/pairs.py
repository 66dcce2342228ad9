"""Metrics of a model on a preference data set: sequence log-probs of every pair's chosen and rejected completion
(the log-prob engine the losses train with, `prefkit.modeling.score`), then ranking accuracy R and R̃, and,
given a reference model, the reference's own rankings, the idealised ranking accuracy R*, flips and reward margins (prefkit.eval.ranking)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prefkit.data.examples import Example
from prefkit.errors import PrefkitError
from prefkit.eval import ranking


@dataclass
class PairLogps:
    """Summed completion log-probs and lengths (tokens, EOS included) of each pair's two sides, as float arrays."""

    chosen: np.ndarray
    rejected: np.ndarray
    len_chosen: np.ndarray
    len_rejected: np.ndarray


def pair_examples(data, tokenizer, max_pairs: int | None = None, split: str = "train") -> list[Example]:
    """The pair examples of `data`: a path or hub id (prefkit.data.prepare, its `split`; scored lists become
    all their pairs), a PreparedData, or a list of pair Examples; the first `max_pairs` when given (the data
    set's order is the evaluation's order)."""
    if isinstance(data, (list, tuple)):
        examples = list(data)
    elif hasattr(data, "examples"):
        examples = data.examples
    else:
        from prefkit.data import prepare
        examples = prepare(data, tokenizer, split=split).examples
    if not examples or not all(e.kind == "pair" for e in examples):
        raise PrefkitError("evaluation data must be paired preference rows (prompt, chosen, rejected); "
                           "unpaired (KTO-style) data has no pairs to rank")
    return examples[:max_pairs] if max_pairs else examples


@torch.no_grad()
def pair_logps(model, examples: list[Example], pad_token_id: int, batch_size: int = 32) -> PairLogps:
    """log π(y_w|x), log π(y_l|x) and their lengths for every pair, batched (prefkit.modeling.score); the
    model's mode is left as is. `pad_token_id` is unused: the engine needs no padding token."""
    from prefkit.modeling import score

    parts = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            groups = [(e.prompt_ids, list(e.completions)) for e in examples[start:start + batch_size]]
            parts.append(score(model, groups).double().cpu().numpy().reshape(-1, 2))  # [chosen, rejected] rows
    logps = np.concatenate(parts) if parts else np.zeros((0, 2))
    lengths = np.array([[len(c) for c in e.completions] for e in examples], dtype=np.float64).reshape(-1, 2)
    return PairLogps(logps[:, 0], logps[:, 1], lengths[:, 0], lengths[:, 1])


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
