"""From examples to the loss: the deterministic batch order, collation with example indices, and the loss
inputs (the batch statistics some losses read are the objective's: prefkit.losses.statistics).

The order depends only on (seed, epoch), so a resumed run and a multi-process run see exactly the batches a
single uninterrupted run sees: micro-batch m holds the same global examples whatever the number of processes,
and each process takes its contiguous slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from prefkit.data.examples import Batch, Example, collate as data_collate
from prefkit.errors import PrefkitError
from prefkit.modeling.packing import pack

Tensor = torch.Tensor


@dataclass
class BatchOrder:
    num_examples: int
    batch_size: int  # per process
    num_processes: int
    process_index: int
    seed: int
    _perms: dict[int, Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if self.per_epoch == 0:
            raise PrefkitError(f"the data has {self.num_examples} usable examples, fewer than one global batch "
                               f"({self.batch_size} x {self.num_processes} processes)")

    @property
    def per_epoch(self) -> int:  # micro-batches per epoch; the incomplete last one is dropped
        return self.num_examples // (self.batch_size * self.num_processes)

    def indices(self, micro_step: int) -> list[int]:
        epoch, position = divmod(micro_step, self.per_epoch)
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(
                self.seed + epoch))}
        start = (position * self.num_processes + self.process_index) * self.batch_size
        return self._perms[epoch][start:start + self.batch_size].tolist()


def collate(examples: list[Example], indices: list[int], pad_token_id: int, device) -> Batch:
    """The `prefkit.data.Batch` of `examples[i]` for i in `indices`, with those indices and the packed layout
    (`prefkit.modeling.packing`) that the log-prob engine prefers, on `device`."""
    chosen = [examples[i] for i in indices]
    batch = data_collate(chosen, pad_token_id)
    batch.index = torch.tensor(list(indices))
    batch.packed = pack([(e.prompt_ids, list(e.completions)) for e in chosen])
    return batch.to(device)


def mismatched(examples: list[Example], indices: list[int]) -> list[Example]:
    """KTO's KL examples: prompt i with the completion of the next example in data order (fixed, so cacheable)."""
    return [replace(examples[i], completions=examples[(i + 1) % len(examples)].completions) for i in indices]


def loss_inputs(logps: Tensor, lengths: Tensor, ref: Tensor | None, batch: Batch) -> dict[str, Tensor]:
    """The keyword inputs of `prefkit.losses.evaluate` for one batch of policy (and reference) log-probs [K·B]:
    single completions give `logps`, `labels` (and `ref_logps`); K >= 2 completions give the ranked lists
    `list_logps`, `list_lengths` (and `ref_list_logps`) [B, K], best first, and pairs also their two sides,
    `chosen_logps`, `rejected_logps`, ... [B]."""
    if batch.num_completions == 1:
        inputs = dict(logps=logps, labels=batch.labels)
        return inputs if ref is None else {**inputs, "ref_logps": ref}
    inputs = {"list_logps": batch.per_example(logps), "list_lengths": batch.per_example(lengths)}
    if ref is not None:
        inputs["ref_list_logps"] = batch.per_example(ref)
    if batch.num_completions == 2:
        (chosen, rejected), (chosen_lengths, rejected_lengths) = logps.chunk(2), lengths.chunk(2)
        inputs.update(chosen_logps=chosen, rejected_logps=rejected, chosen_lengths=chosen_lengths,
                      rejected_lengths=rejected_lengths)
        if ref is not None:
            inputs.update(ref_chosen_logps=ref.chunk(2)[0], ref_rejected_logps=ref.chunk(2)[1])
    return inputs
