"""What TRL's token metrics cost in the fused head (`prefkit.modeling.head`, `statistics=True`): time of the head
alone and of a whole training forward + backward, with and without them, interleaved so that a shared machine's
load falls on both alike; medians of the repeats. Peak bytes: `memory_account.py` with and without
`--no-token-metrics`.

    python bench/token_metrics_cost.py --size v128k --repeats 7
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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def head_pass(hidden, weight, targets, stats: bool) -> None:
    from prefkit.modeling.head import head_logps

    out = head_logps(hidden, weight, None, targets, rows=1024, columns=8192, statistics=stats)
    (out[0] if stats else out).sum().backward()


def step_pass(model, batch, stats: bool) -> None:
    from prefkit.modeling.logprobs import batch_logps

    batch_logps(model, batch, statistics=stats).logps.sum().backward()
    model.zero_grad(set_to_none=True)


def interleaved(repeats: int, run) -> dict[bool, list[float]]:
    """`run(stats)` timed `repeats` times each way, alternating which goes first."""
    times = {False: [], True: []}
    run(False), run(True)  # warm-up: allocator, thread pools
    for r in range(repeats):
        for stats in ((False, True) if r % 2 == 0 else (True, False)):
            times[stats].append(timed(lambda: run(stats)))
    return times


def report(name: str, times: dict[bool, list[float]]) -> None:
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"{name}: without {off:.3f} s, with {on:.3f} s (median of {len(times[True])}), ratio {on / off:.3f}; "
          f"all without {[round(t, 3) for t in times[False]]}, with {[round(t, 3) for t in times[True]]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="v128k", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir, data = build(Path(tempfile.mkdtemp()), args.size, 32)
    accelerator, model, batches = setup_model(model_dir, data, args.batch, "no", "cpu")
    batch = batches[1]
    tokens = int(batch["packed"].targets.numel())
    weight = model.get_output_embeddings().weight
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, weight.shape[1], generator=g).requires_grad_()
    targets = torch.randint(0, weight.shape[0], (tokens,), generator=g)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"size {args.size} {SIZES[args.size]}, batch {args.batch}: {tokens} completion tokens; torch "
          f"{torch.__version__}, {args.threads} threads; load before {load}")
    report("head forward + backward", interleaved(args.repeats, lambda s: head_pass(hidden, weight, targets, s)))
    report("model forward + backward", interleaved(args.repeats, lambda s: step_pass(model, batch, s)))
    print(f"load after {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
