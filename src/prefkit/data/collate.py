"""Examples (token ids of one row) and the collation of a batch of them into right-padded tensors.

A pair batch stacks prompt+chosen for rows 0..B-1 and prompt+rejected for rows B..2B-1, so one forward pass
scores both sides; `completion_mask` marks exactly the completion tokens (its final EOS included), which are
the only tokens whose log-probs the losses see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefkit.errors import PrefkitError


@dataclass
class PairExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    row: int                      # where the row is in its source (1-based line for JSONL, row index otherwise)
    weight: float = 1.0
    score: float | None = None
    margin: float | None = None


@dataclass
class UnpairedExample:
    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    row: int
    weight: float = 1.0
    score: float | None = None


def collate_pairs(examples: list[PairExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / completion_mask [2B, T] (long), weights [B] (float32); margins / scores
    [B] (float32) when every example has one."""
    sequences = [(e.prompt_ids, e.chosen_ids) for e in examples] + [(e.prompt_ids, e.rejected_ids) for e in examples]
    batch = pad_sequences(sequences, pad_token_id)
    batch["weights"] = torch.tensor([e.weight for e in examples], dtype=torch.float32)
    for name in ("margin", "score"):
        values = [getattr(e, name) for e in examples]
        if all(value is not None for value in values):
            batch[name + "s"] = torch.tensor(values, dtype=torch.float32)
    return batch


def collate_unpaired(examples: list[UnpairedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / completion_mask [B, T] (long), labels [B] (bool), weights [B] (float32)."""
    batch = pad_sequences([(e.prompt_ids, e.completion_ids) for e in examples], pad_token_id)
    batch["labels"] = torch.tensor([e.label for e in examples], dtype=torch.bool)
    batch["weights"] = torch.tensor([e.weight for e in examples], dtype=torch.float32)
    return batch


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
