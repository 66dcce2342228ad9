"""Where prefkit's training memory and compute go: token positions run through the decoder and bytes of
activations kept for the backward pass, per micro-batch, for the layouts and modules prefkit can use.

Deterministic (counts, not timings), on the same small Llama and data as bench_dpo_vs_trl.py:

    python bench/bench_activations.py --batches 25
    python bench/bench_activations.py --profile 4   # where a packed training step's time goes (torch.profiler)
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from bench_dpo_vs_trl import build


def saved_activation_bytes(model, batch, packing: bool) -> int:
    from prefkit.modeling.logprobs import batch_logps

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def keep(t):
        if t.untyped_storage().data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t.detach()  # not t: an output saved as itself would hold its own graph alive

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        batch_logps(model, batch, packing=packing)
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--profile", type=int, default=0, help="profile this many training steps instead")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from prefkit.data import prepare
    from prefkit.modeling.fused import fuse
    from prefkit.modeling.load import load_model, load_tokenizer
    from prefkit.train.batches import BatchOrder, collate

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = build(Path(tmp), "small", 200)
        tokenizer = load_tokenizer(str(model_dir))
        examples = prepare(str(data), tokenizer).examples
        plain = load_model(str(model_dir), fuse=False).train()
    fused = copy.deepcopy(plain)
    fuse(fused)
    order = BatchOrder(len(examples), args.batch, 1, 0, 0)
    if args.profile:
        return profile_steps(fused, examples, order, tokenizer.pad_token_id, args.profile)
    positions = {"TRL layout (prompt+chosen, prompt+rejected rows, padded)": 0, "packed": 0}
    saved = {"padded rows": 0, "packed": 0, "packed + fused modules": 0}
    for step in range(args.batches):
        batch = collate(examples, order.indices(step), tokenizer.pad_token_id, "cpu")
        positions["TRL layout (prompt+chosen, prompt+rejected rows, padded)"] += batch.input_ids.numel()
        positions["packed"] += batch.packed.input_ids.numel()
        saved["padded rows"] += saved_activation_bytes(plain, batch, packing=False)
        saved["packed"] += saved_activation_bytes(plain, batch, packing=True)
        saved["packed + fused modules"] += saved_activation_bytes(fused, batch, packing=True)
    print(f"small model, batch {args.batch}, mean over {args.batches} micro-batches")
    base = positions["TRL layout (prompt+chosen, prompt+rejected rows, padded)"]
    for name, value in positions.items():
        print(f"  decoder positions  {name:58s} {value / args.batches:8.0f}  ({value / base:.2f}x)")
    for name, value in saved.items():
        print(f"  saved activations  {name:58s} {value / args.batches / 2**20:6.1f} MB  "
              f"({value / saved['padded rows']:.2f}x)")


def profile_steps(model, examples, order, pad_token_id: int, steps: int) -> None:
    """Forward, backward, clipping and a fused AdamW step per micro-batch, as `fit` runs them, under the profiler;
    prints the share of time per group of operators."""
    from torch.profiler import ProfilerActivity, profile

    from prefkit.modeling.logprobs import batch_logps
    from prefkit.train.batches import collate

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step(m: int) -> None:
        batch_logps(model, collate(examples, order.indices(m), pad_token_id, "cpu")).logps.sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(0)  # warm-up, and the optimizer's state
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for m in range(1, steps + 1):
            step(m)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = {"matrix multiplies": ("aten::mm", "aten::addmm", "aten::bmm"),
              "attention": ("aten::_scaled_dot_product",)}
    shares = {name: sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
              for name, prefixes in groups.items()}
    shares["everything else"] = 1 - sum(shares.values())
    print(f"{steps} packed training steps, fused modules, {total / 1e6 / steps:.2f} s per step under the profiler")
    for name, share in shares.items():
        print(f"  {name:18s} {share:6.1%}")


if __name__ == "__main__":
    main()
