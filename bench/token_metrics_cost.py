"""What TRL's token metrics cost in the fused head (`prefkit.modeling.head`, `statistics=True`): time of the head
alone (forward, and forward + backward) and of a whole training forward + backward, with and without them,
interleaved so that a shared machine's load falls on both alike; medians of the repeats, in wall-clock time and
in this process's CPU time (which other processes' load inflates far less). Peak bytes: `memory_account.py`
with and without `--no-token-metrics`.

    cd bench && python token_metrics_cost.py --size v128k --repeats 7 [--parts head-forward,head,model]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_dpo_vs_trl import SIZES, build
from memory_account import setup_model


def timed(fn) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def head_pass(hidden, weight, targets, stats: bool, backward: bool = True) -> None:
    from prefkit.modeling.head import head_logps

    with torch.set_grad_enabled(backward):
        out = head_logps(hidden, weight, None, targets, rows=1024, columns=8192, statistics=stats)
        if backward:
            (out[0] if stats else out).sum().backward()


def step_pass(model, batch, stats: bool) -> None:
    from prefkit.modeling.logprobs import batch_logps

    batch_logps(model, batch, statistics=stats).logps.sum().backward()
    model.zero_grad(set_to_none=True)


def interleaved(repeats: int, run) -> dict[bool, list[tuple[float, float]]]:
    """`run(stats)` timed `repeats` times each way, alternating which goes first."""
    times = {False: [], True: []}
    run(False), run(True)  # warm-up: allocator, thread pools
    for r in range(repeats):
        for stats in ((False, True) if r % 2 == 0 else (True, False)):
            times[stats].append(timed(lambda: run(stats)))
    return times


def report(name: str, times: dict[bool, list[tuple[float, float]]]) -> None:
    for i, clock in enumerate(("wall", "CPU")):
        off, on = (statistics.median(t[i] for t in times[stats]) for stats in (False, True))
        print(f"{name}, {clock}: without {off:.3f} s, with {on:.3f} s (medians of {len(times[True])}), ratio "
              f"{on / off:.3f}; without {[round(t[i], 2) for t in times[False]]}, "
              f"with {[round(t[i], 2) for t in times[True]]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="v128k", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default="head-forward,head,model",
                        help="what to time, of head-forward, head (forward + backward), model (forward + backward)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir, data = build(Path(tempfile.mkdtemp()), args.size, 32)
    accelerator, model, batches = setup_model(model_dir, data, args.batch, "no", "cpu")
    batch = batches[1]
    tokens = int(batch.packed.targets.numel())
    weight = model.get_output_embeddings().weight
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, weight.shape[1], generator=g).requires_grad_()
    targets = torch.randint(0, weight.shape[0], (tokens,), generator=g)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"size {args.size} {SIZES[args.size]}, batch {args.batch}: {tokens} completion tokens; torch "
          f"{torch.__version__}, {args.threads} threads; load before {load}")
    parts = args.parts.split(",")
    if "head-forward" in parts:
        report("head forward", interleaved(args.repeats, lambda s: head_pass(hidden, weight, targets, s, False)))
    if "head" in parts:
        report("head forward + backward", interleaved(args.repeats, lambda s: head_pass(hidden, weight, targets, s)))
    if "model" in parts:
        report("model forward + backward", interleaved(args.repeats, lambda s: step_pass(model, batch, s)))
    print(f"load after {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
