"""Precomputed reference log-probs: one pass of the initial model over the data before training, cached on
disk under a key of (model, tokenized data, settings), so later runs and epochs reuse them. Each process
computes its share; the main process writes the cache atomically."""

from __future__ import annotations

import torch

from prefkit.io import progress
from prefkit.modeling import reference as references
from prefkit.modeling.logprobs import score
from prefkit.train.batches import mismatched
from prefkit.train.engine import gather_objects


@torch.no_grad()
def precompute_reference(model, data, config, accelerator, needs_kl: bool):
    """The [N, K] table of the reference's log-probs of every example's K completions (with KTO's reference
    point, N more rows: the mismatched examples), from the cache when it holds exactly that table."""
    path = references.cache_path(config.cache_dir, references.model_fingerprint(config.model), data.fingerprint,
                                 config.dtype, str(config.lora), "kl" if needs_kl else "")
    n, k = len(data.examples), len(data.examples[0].completions)
    shape = (n * (2 if needs_kl else 1), k)
    cached = references.load_cached(path)
    if cached is not None and tuple(cached.shape) == shape:
        return references.Precomputed(cached, cache_hit=True, path=path)

    mine = list(range(accelerator.process_index, n, accelerator.num_processes))
    options = dict(batch_size=config.batch_size, chunk_size=config.logprob_chunk_size, packing=config.packing)
    rows = list(zip(mine, score_examples(model, data.examples, mine, **options)))
    if needs_kl:
        values = score_examples(model, mismatched(data.examples, mine), range(len(mine)), **options)
        rows += [(n + i, v) for i, v in zip(mine, values)]
    rows = [r for part in gather_objects(accelerator, rows) for r in part]
    table = torch.zeros(shape, dtype=torch.float32)
    for row, value in rows:
        table[row] = torch.tensor(value)
    if accelerator.is_main_process:
        references.save_cached(path, table)
    return references.Precomputed(table, cache_hit=False, path=path)


@torch.no_grad()
def score_examples(model, examples, indices, *, batch_size: int, chunk_size: int,
                   packing: bool) -> list[list[float]]:
    """Summed completion log-probs of `examples[i]` for i in `indices`, in that order: the K values of each
    example's completions (prefkit.modeling.score, on the model's device). Batches group similar lengths, so
    little compute goes to padding."""
    indices = list(indices)
    order = sorted(range(len(indices)), key=lambda k: _length(examples[indices[k]]))
    values: list = [None] * len(indices)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    for start in progress(starts, total=len(starts), desc="reference log-probs"):
        chunk = order[start:start + batch_size]
        groups = [(e.prompt_ids, list(e.completions)) for e in (examples[indices[k]] for k in chunk)]
        logps = score(model, groups, packing=packing, chunk_size=chunk_size).float().cpu().tolist()
        for k, (prompt, completions) in zip(chunk, groups):
            values[k], logps = logps[:len(completions)], logps[len(completions):]
    model.train(was_training)
    return values


def _length(example) -> int:
    return len(example.prompt_ids) + max(len(c) for c in example.completions)
