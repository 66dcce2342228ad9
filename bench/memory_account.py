"""Where the peak bytes of one prefkit DPO training step go, by torch's own accounting.

One steady-state step (forward, loss, backward, gradient clipping, fused AdamW step, zero_grad) as `fit` runs it,
with precomputed reference log-probs, under torch.profiler with `profile_memory=True`. The profiler's memory
timeline (`export_memory_timeline`, which categorises every allocation as parameter, optimizer state, gradient,
activation, temporary, autograd detail or input) gives the allocated bytes at every instant; phases are
`record_function` ranges on the same clock. On CUDA, `torch.cuda.max_memory_allocated` is reported beside it.
The peak is compared with the issue's budget: weights + gradients + optimizer state + activations saved for the
backward pass (counted with saved-tensor hooks) + 10% of one micro-batch's full completion logits (float32).
Allocator slack is RSS (glibc's heap high-water mark) minus the profiler's peak.

    python bench/memory_account.py --size v128k            # hidden 512, 4 layers, vocab 128,256, texts of 60-160 words
    python bench/memory_account.py --size v256k            # vocab 256,000, completions of 300-1,000 words
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench_activations import saved_activation_bytes
from bench_dpo_vs_trl import MAX_LENGTH, SIZES, build

CATEGORIES = ["parameter", "optimizer state", "input", "temporary", "activation", "gradient", "autograd detail",
              "unknown"]  # the order of torch.profiler's memory timeline columns (after a leading 0)
PHASES = ["forward", "loss", "backward", "clip", "optimizer step", "zero_grad"]
MB = 2 ** 20


def setup_model(model_dir, data, batch: int, mixed_precision: str, device: str, max_length: int = MAX_LENGTH,
                gradient_checkpointing: bool = False):
    """(accelerator, prefkit's model in training mode, two collated micro-batches of `batch` pairs)."""
    from accelerate import Accelerator

    from prefkit.data import prepare
    from prefkit.modeling.load import load_model, load_tokenizer
    from prefkit.train.batches import BatchOrder, collate

    tokenizer = load_tokenizer(str(model_dir))
    examples = prepare(str(data), tokenizer, max_length=max_length).examples
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=device == "cpu")
    model = load_model(str(model_dir), gradient_checkpointing=gradient_checkpointing).to(accelerator.device).train()
    order = BatchOrder(len(examples), batch, 1, 0, 0)
    batches = [collate(examples, order.indices(m), tokenizer.pad_token_id, accelerator.device)
               for m in range(2)]  # a warm-up step's, the profiled step's
    return accelerator, model, batches


def train_step(model, optimizer, batch, reference_logps, accelerator, token_metrics: bool = True) -> float:
    """One step as prefkit.train.offline.fit runs it (one micro-batch), each phase a profiler range; with
    `token_metrics` the head also folds in TRL's token statistics, as `prefkit train`'s policy does."""
    from prefkit import losses
    from prefkit.modeling.logprobs import batch_logps
    from prefkit.train.batches import loss_inputs

    with accelerator.autocast():
        with record_function("## forward"):
            out = batch_logps(model, batch, statistics=token_metrics)
        with record_function("## loss"):
            inputs = loss_inputs(out.logps, out.lengths, reference_logps, batch)
            loss = (losses.evaluate("dpo", **inputs).losses * batch.weights).mean()
        with record_function("## backward"):
            accelerator.backward(loss)
    with record_function("## clip"):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with record_function("## optimizer step"):
        optimizer.step()
    with record_function("## zero_grad"):
        optimizer.zero_grad(set_to_none=True)
    return float(loss)


def timeline(prof, device: str) -> tuple[list[float], list[list[int]], dict[str, tuple[float, float]]]:
    """(times in us, bytes per category at each time, phase -> (start, end) on the same clock)."""
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_memory_timeline(f"{tmp}/memory.json", device=device)
        times, sizes = json.loads(Path(f"{tmp}/memory.json").read_text())
    origin = prof.profiler.kineto_results.trace_start_ns() / 1000  # events are relative to the trace start
    ranges = {e.name[3:]: (origin + e.time_range.start, origin + e.time_range.end)
              for e in prof.profiler.function_events if e.name.startswith("## ")}
    return times, [row[1:] for row in sizes], ranges


def account(times, sizes, ranges) -> dict:
    """Peak total and its breakdown by category, overall and per phase."""
    def peak_in(start, end):
        rows = [row for t, row in zip(times, sizes) if start <= t <= end] or [[0] * len(CATEGORIES)]
        top = max(rows, key=sum)
        return {"peak": sum(top), **{c: v for c, v in zip(CATEGORIES, top) if v}}
    result = {"step": peak_in(-float("inf"), float("inf"))}
    for phase in PHASES:
        if phase in ranges:
            result[phase] = peak_in(*ranges[phase])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="v128k", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-token-metrics", dest="token_metrics", action="store_false",
                        help="the head without TRL's token statistics (entropy, mean logit, argmax)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from prefkit.modeling.logprobs import batch_logps

    model_dir, data = build(Path(tempfile.mkdtemp()), args.size, args.rows)
    accelerator, model, batches = setup_model(model_dir, data, args.batch, args.mixed_precision, args.device)
    with torch.no_grad(), accelerator.autocast():
        references = [batch_logps(model, b).logps.detach() for b in batches]  # what `precomputed` caches
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    train_step(model, optimizer, batches[0], references[0], accelerator, args.token_metrics)  # optimizer state now
    batch = batches[1]
    with accelerator.autocast():
        saved = saved_activation_bytes(model, batch, packing=True)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else []),
                 profile_memory=True, record_shapes=True, with_stack=True) as prof:
        loss = train_step(model, optimizer, batch, references[1], accelerator, args.token_metrics)
    seconds = time.perf_counter() - start
    report(args, model, optimizer, batch, saved, account(*timeline(prof, args.device)), loss, seconds)


def report(args, model, optimizer, batch, saved, accounted, loss, seconds) -> None:
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t))
    completion_tokens = int(batch.packed.targets.numel())
    vocab = model.get_output_embeddings().weight.shape[0]
    full_logits = completion_tokens * vocab * 4
    budget = 2 * weights + state + saved + full_logits // 10
    print(f"size {args.size} {SIZES[args.size]} batch {args.batch} mixed_precision {args.mixed_precision} "
          f"device {args.device} token_metrics {args.token_metrics} torch {torch.__version__}; load {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"  completion tokens {completion_tokens}, packed positions {batch.packed.input_ids.numel()}, "
          f"padded positions {batch.input_ids.numel()}; loss {loss:.4f}; profiled step {seconds:.1f} s")
    print(f"  weights {weights / MB:.0f} MB, gradients {weights / MB:.0f} MB, optimizer state {state / MB:.0f} MB, "
          f"saved activations {saved / MB:.0f} MB, full completion logits {full_logits / MB:.0f} MB")
    print(f"  budget (weights + gradients + state + saved + 10% logits) {budget / MB:.0f} MB")
    for phase, figures in accounted.items():
        parts = ", ".join(f"{k} {v / MB:.0f}" for k, v in figures.items() if k != "peak")
        print(f"  peak in {phase:15s} {figures['peak'] / MB:7.0f} MB  ({parts})")
    peak = accounted["step"]["peak"]
    print(f"  peak / budget {peak / budget:.2f}; over the budget by {(peak - budget) / MB:.0f} MB")
    if args.device == "cuda":
        print(f"  torch.cuda.max_memory_allocated {torch.cuda.max_memory_allocated() / MB:.0f} MB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {rss:.0f} MB (libraries, the profiler's records and glibc's free lists above the peak)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
