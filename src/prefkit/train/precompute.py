"""Precomputed reference log-probs: one pass of the initial model over the data before training, cached on
disk under a key of (model, tokenized data, settings), so later runs and epochs reuse them. Each process
computes its share; the main process writes the cache atomically."""

from __future__ import annotations

import torch

from prefkit.modeling import reference as references
from prefkit.modeling.logprobs import batch_logps
from prefkit.train.batches import collate, mismatched


@torch.no_grad()
def precompute_reference(model, data, config, tokenizer, accelerator, paired: bool, needs_kl: bool):
    path = references.cache_path(config.cache_dir, references.model_fingerprint(config.model), data.fingerprint,
                                 config.dtype, str(config.lora), "kl" if needs_kl else "")
    cached = references.load_cached(path)
    n = len(data.examples)
    expected_rows = n * (2 if needs_kl else 1)
    if cached is not None and cached.shape[0] == expected_rows:
        return references.Precomputed(cached, cache_hit=True, path=path)

    was_training = model.training
    model.eval()
    rows = []  # (row, value) pairs this process computed
    mine = list(range(accelerator.process_index, n, accelerator.num_processes))
    mine.sort(key=lambda i: _length(data.examples[i]))  # similar lengths together: little padding; order is free here
    for start in range(0, len(mine), config.batch_size):
        indices = mine[start:start + config.batch_size]
        batch = collate(data.examples, indices, tokenizer.pad_token_id, paired, accelerator.device)
        logps = _logps(model, batch, config).cpu()
        rows += list(zip(indices, (logps.view(2, -1).t() if paired else logps).tolist()))
        if needs_kl:
            other = collate(mismatched(data.examples, indices), range(len(indices)), tokenizer.pad_token_id, False,
                            accelerator.device)
            rows += [(n + i, v) for i, v in zip(indices, _logps(model, other, config).cpu().tolist())]
    model.train(was_training)
    if accelerator.num_processes > 1:
        gathered = [None] * accelerator.num_processes
        torch.distributed.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    table = torch.zeros((expected_rows, 2) if paired else (expected_rows,), dtype=torch.float32)
    for row, value in rows:
        table[row] = torch.tensor(value)
    if accelerator.is_main_process:
        references.save_cached(path, table)
    return references.Precomputed(table, cache_hit=False, path=path)


def _logps(model, batch, config) -> torch.Tensor:
    from prefkit.train.offline import share_prompt

    return batch_logps(model, batch, config.logprob_chunk_size, share_prompt(config)).logps.float()


def _length(example) -> int:
    completions = (example.chosen_ids, example.rejected_ids) if hasattr(example, "chosen_ids") else (
        example.completion_ids,)
    return len(example.prompt_ids) + max(len(c) for c in completions)
