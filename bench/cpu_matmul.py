"""Float32 products on this CPU: torch's (MKL) against oneDNN's (prefkit.modeling.matmul), side by side.

For each shape, the three products of a linear layer's training step (forward x·Wᵀ, input gradient g·W, weight
gradient gᵀ·x) with both libraries, interleaved, and one packed forward + backward of the DPO benchmark's small
Llama (hidden 512, 8 layers) with `cpu_matmul` torch and onednn. Prints one JSON line per measurement.

    python bench/cpu_matmul.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

# (tokens, in, out): the small shape's attention, MLP and head products, a 7B-sized projection, and the few rows
# of a decoding step (generation: one new token per sequence)
SHAPES = [(2000, 512, 1536), (2000, 1376, 512), (2000, 512, 4096), (2048, 4096, 4096), (64, 1024, 3072),
          (16, 1024, 3072), (4, 1024, 1024)]


def best_of(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def products(repeats: int) -> None:
    from prefkit.modeling import matmul

    for tokens, width, out in SHAPES:
        x, weight, grad = torch.randn(tokens, width), torch.randn(out, width), torch.randn(tokens, out)
        flops = 2 * tokens * width * out / 1e9
        row = {"shape": [tokens, width, out]}
        for library in ("torch", "onednn"):
            matmul.set_cpu_matmul(library)
            for name, product in (("forward", lambda: matmul.linear(x, weight)),
                                  ("input_grad", lambda: matmul.mm(grad, weight)),
                                  ("weight_grad", lambda: matmul.mm(grad.t(), x))):
                row[f"{library}_{name}_gflops"] = round(flops / best_of(product, repeats), 1)
        print(json.dumps(row), flush=True)


def model_step(repeats: int) -> None:
    from bench_dpo_vs_trl import SIZES
    from prefkit.modeling import matmul
    from prefkit.modeling.fused import fuse
    from prefkit.modeling.logprobs import packed_logps
    from prefkit.modeling.packing import pack
    from prefkit.modeling.tiny import tiny_llama

    hidden, layers, heads, vocab = SIZES["small"]
    torch.manual_seed(0)
    rng = random.Random(0)
    groups = [([rng.randrange(vocab) for _ in range(rng.randint(20, 60))],
               [[rng.randrange(vocab) for _ in range(rng.randint(40, 110))] for _ in range(2)]) for _ in range(8)]
    packed = pack(groups)
    seconds = {}
    for library in ("torch", "onednn", "torch", "onednn"):  # interleaved
        matmul.set_cpu_matmul(library)
        model = fuse_and_route(tiny_llama(vocab, hidden_size=hidden, layers=layers, heads=heads), fuse, matmul)

        def step():
            packed_logps(model, packed).logps.sum().backward()

        seconds.setdefault(library, []).append(best_of(step, repeats))
    print(json.dumps({"model": "small", "tokens": int(packed.input_ids.shape[1]),
                      **{f"{k}_step_s": round(min(v), 3) for k, v in seconds.items()},
                      "speedup": round(min(seconds["torch"]) / min(seconds["onednn"]), 2)}), flush=True)


def fuse_and_route(model, fuse, matmul):
    model = model.float()
    fuse(model)
    matmul.route_linears(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    from prefkit.modeling.matmul import cpu_vendor

    print(json.dumps({"torch": torch.__version__, "vendor": cpu_vendor(),
                      "capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads}))
    products(args.repeats)
    model_step(args.repeats)


if __name__ == "__main__":
    main()
