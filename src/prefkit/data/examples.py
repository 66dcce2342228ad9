"""Examples (one prompt and its K completions, as token ids) and their collation into one typed batch.

One example type serves every kind of data: K = 1 is a single completion with a label (unpaired feedback, KTO /
BCO), K = 2 a pair with the chosen completion first, and a ranked list (K >= 2, from scored data kept whole) holds
its completions best first. A batch of B examples of K completions each stacks completion k of example b at row
k·B + b (pairs: all chosen rows, then all rejected rows), so one forward pass scores them all, padded here or
packed (prefkit.modeling.packing); `completion_mask` marks exactly the completion tokens (EOS included), the
only tokens whose log-probs the losses see.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from prefkit.errors import PrefkitError

Tensor = torch.Tensor


@dataclass
class Example:
    """One prompt and K completions of it; each completion ends with its EOS (unless truncation cut it).
    `Example.pair` and `Example.single` build the two-sided and the labelled kinds, `Example.ranked` a list;
    `chosen_ids`, `rejected_ids` and `completion_ids` read them back."""

    prompt_ids: list[int]
    completions: tuple[list[int], ...]     # pairs: (chosen, rejected); lists: best first
    row: int                               # where the row is in its source (1-based line for JSONL, row index otherwise)
    label: bool | None = None              # single completions: desirable or not
    completion_scores: tuple[float, ...] | None = None  # ranked lists: each completion's score, best first
    weight: float = 1.0
    score: float | None = None
    margin: float | None = None

    @classmethod
    def pair(cls, prompt_ids, chosen_ids, rejected_ids, row: int, **fields) -> "Example":
        return cls(prompt_ids, (chosen_ids, rejected_ids), row, **fields)

    @classmethod
    def single(cls, prompt_ids, completion_ids, label: bool, row: int, **fields) -> "Example":
        return cls(prompt_ids, (completion_ids,), row, label=label, **fields)

    @classmethod
    def ranked(cls, prompt_ids, completions, scores, row: int, **fields) -> "Example":
        """A list ordered best first by `scores` (a stable sort: tied completions keep the row's order)."""
        order = sorted(range(len(completions)), key=lambda k: -scores[k])
        return cls(prompt_ids, tuple(completions[k] for k in order), row,
                   completion_scores=tuple(float(scores[k]) for k in order), **fields)

    @property
    def kind(self) -> str:
        """'single', 'pair' or 'list'."""
        return "list" if self.completion_scores is not None else "single" if self.label is not None else "pair"

    @property
    def chosen_ids(self) -> list[int]:
        return self.completions[0]

    @property
    def rejected_ids(self) -> list[int]:
        return self.completions[-1]

    @property
    def completion_ids(self) -> list[int]:
        return self.completions[0]


def all_pairs(ranked: Example) -> list[Example]:
    """Every two completions of a ranked list whose scores differ, the better one chosen: K(K-1)/2 pairs less
    the tied ones."""
    scores, k = ranked.completion_scores, len(ranked.completions)
    return [_pair_of(ranked, i, j) for i in range(k) for j in range(i + 1, k) if scores[i] > scores[j]]


def best_vs_worst(ranked: Example) -> list[Example]:
    """The best completion against the worst, or no pair when every score is the same. Among tied best ones the
    first in the row's order is the best, among tied worst ones the last is the worst (the list's stable order)."""
    last = len(ranked.completions) - 1
    return [_pair_of(ranked, 0, last)] if ranked.completion_scores[0] > ranked.completion_scores[last] else []


LIST_PAIRS = {"all": all_pairs, "best_vs_worst": best_vs_worst}  # how a ranked list feeds a pairwise loss


def _pair_of(ranked: Example, i: int, j: int) -> Example:
    return Example.pair(ranked.prompt_ids, ranked.completions[i], ranked.completions[j], ranked.row,
                        weight=ranked.weight, score=ranked.score, margin=ranked.margin)


@dataclass
class Batch:
    """B examples of K completions each: [K·B, T] long tensors, completion k of example b at row k·B + b, right
    padded. `index` (the examples' positions in their data, which the precomputed reference looks up) and
    `packed` (the same rows in the padding-free layout the log-prob engine prefers) are set by
    prefkit.train.batches.collate."""

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    num_completions: int                   # K
    weights: Tensor                        # [B] float32
    labels: Tensor | None = None           # [B] bool, single completions
    margins: Tensor | None = None          # [B] float32, when every example has one
    index: Tensor | None = None            # [B] long
    packed: object | None = None           # prefkit.modeling.packing.PackedBatch

    @property
    def size(self) -> int:
        return self.weights.shape[0]

    def per_example(self, rows: Tensor) -> Tensor:
        """Values of the K·B rows -> [B, K]: entry [b, k] is completion k of example b."""
        return rows.view(self.num_completions, -1).t()

    def to(self, device) -> "Batch":
        return replace(self, **{name: value.to(device) for name, value in vars(self).items()
                                if isinstance(value, Tensor) or name == "packed" and value is not None})


def collate(examples: list[Example], pad_token_id: int) -> Batch:
    """The padded batch of examples that all have the same number of completions."""
    sizes = {len(e.completions) for e in examples}
    if len(sizes) > 1:
        raise PrefkitError(f"cannot collate examples with different numbers of completions ({sorted(sizes)}) "
                           "into one batch")
    k = sizes.pop() if sizes else 0
    padded = pad_sequences([(e.prompt_ids, e.completions[i]) for i in range(k) for e in examples], pad_token_id)
    margins = [e.margin for e in examples]
    return Batch(**padded, num_completions=k,
                 weights=torch.tensor([e.weight for e in examples], dtype=torch.float32),
                 labels=torch.tensor([e.label for e in examples], dtype=torch.bool) if k == 1 else None,
                 margins=torch.tensor(margins, dtype=torch.float32) if None not in margins else None)


def pad_sequences(sequences: list[tuple[list[int], list[int]]], pad_token_id: int,
                  device=None) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / completion_mask [N, T] from (prompt ids, completion ids), on
    `device` (default: the CPU)."""
    if not sequences:
        raise PrefkitError("cannot collate an empty batch")
    if pad_token_id is None:
        raise PrefkitError("pad_token_id is None: pass the tokenizer's pad id (or its EOS id when it has none)")
    width = max(len(prompt) + len(completion) for prompt, completion in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    completion_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(sequences):
        end = len(prompt) + len(completion)
        input_ids[row, :end] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[row, :end] = 1
        completion_mask[row, len(prompt):end] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}
