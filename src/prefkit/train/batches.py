"""From examples to the loss: the deterministic batch order, collation with example indices, and the loss
inputs (the batch statistics some losses read are the objective's: prefkit.losses.statistics).

The order depends only on (seed, epoch), so a resumed run and a multi-process run see exactly the batches a
single uninterrupted run sees: micro-batch m holds the same global examples whatever the number of processes,
and each process takes its contiguous slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from prefkit.data import collate_pairs, collate_unpaired
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


def collate(examples: list, indices: list[int], pad_token_id: int, paired: bool, device) -> dict:
    """The padded batch of `collate_pairs` / `collate_unpaired`, the example indices, and the packed layout
    (`prefkit.modeling.packing`) that the log-prob engine prefers."""
    chosen = [examples[i] for i in indices]
    batch = collate_pairs(chosen, pad_token_id) if paired else collate_unpaired(chosen, pad_token_id)
    batch["index"] = torch.tensor(indices)
    batch["packed"] = pack([(e.prompt_ids, [e.chosen_ids, e.rejected_ids] if paired else [e.completion_ids])
                            for e in chosen])
    return {k: v.to(device) for k, v in batch.items()}


def mismatched(examples: list, indices: list[int]) -> list:
    """KTO's KL examples: prompt i with the completion of the next example in data order (fixed, so cacheable)."""
    return [replace(examples[i], completion_ids=examples[(i + 1) % len(examples)].completion_ids) for i in indices]


def loss_inputs(logps: Tensor, lengths: Tensor, ref: Tensor | None, batch: dict[str, Tensor],
                paired: bool) -> dict[str, Tensor]:
    """The keyword inputs of `prefkit.losses.evaluate` for one batch of policy (and reference) log-probs."""
    if paired:
        chosen, rejected = logps.chunk(2)
        inputs = dict(chosen_logps=chosen, rejected_logps=rejected, chosen_lengths=lengths.chunk(2)[0],
                      rejected_lengths=lengths.chunk(2)[1])
        if ref is not None:
            inputs.update(ref_chosen_logps=ref.chunk(2)[0], ref_rejected_logps=ref.chunk(2)[1])
        return inputs
    inputs = dict(logps=logps, labels=batch["labels"])
    if ref is not None:
        inputs["ref_logps"] = ref
    return inputs
