"""Long completions through the packed layout: peak allocated bytes (torch.profiler's memory timeline, as in
memory_account.py) and time of one DPO training step, with and without gradient checkpointing.

The model is the benchmark's "small" Llama (hidden 512, 8 layers); each micro-batch holds `--pairs` pairs with a
prompt of 200 words and chosen / rejected completions of `--words` words (one word is about one token). Each
configuration runs in a fresh subprocess, configurations interleaved, so that one's heap does not hide another's
and drift in machine load hits all of them; `--src` adds another source tree (e.g. an older prefkit) as a peer.

    python bench/long_sequences.py --words 2000,8000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 2 ** 20


def child(args) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from memory_account import account, setup_model, timeline, train_step

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # on a GPU: bf16 autocast, as the other benchmarks
    accelerator, model, batches = setup_model(args.model_dir, args.data, args.pairs,
                                              "bf16" if device == "cuda" else "no", device, args.max_length,
                                              gradient_checkpointing=args.checkpointing)
    from prefkit.modeling.logprobs import batch_logps

    with torch.no_grad():
        references = [batch_logps(model, b).logps for b in batches]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start = time.perf_counter()
    train_step(model, optimizer, batches[0], references[0], accelerator)  # also creates the optimizer's state
    synchronize()
    first = time.perf_counter() - start
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        train_step(model, optimizer, batches[1], references[1], accelerator)
    peaks = account(*timeline(prof, device))
    print("RESULT " + json.dumps({"seconds": first, "peak_mb": peaks["step"]["peak"] / MB,
                                  "forward_mb": peaks["forward"]["peak"] / MB,
                                  "tokens": int(batches[0].packed.input_ids.numel())}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", default="2000,8000")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--src", default="", help="another source tree to compare, e.g. an older prefkit's src")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--model-dir", dest="model_dir")
    parser.add_argument("--data")
    parser.add_argument("--max-length", dest="max_length", type=int)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import torch

    from bench_dpo_vs_trl import build

    here = Path(__file__).resolve().parent
    trees = {"this tree": os.environ.get("PYTHONPATH", "")} | ({"--src": args.src} if args.src else {})
    print(f"torch {torch.__version__}, {args.threads} threads, load {Path('/proc/loadavg').read_text().split()[:3]}")
    with tempfile.TemporaryDirectory() as tmp:
        for words in map(int, args.words.split(",")):
            model_dir, data = build(Path(tmp), "small", 2 * args.pairs, words=((200, 200), (words, words)))
            for repeat in range(args.repeats):
                for checkpointing in (False, True):
                    for name, path in trees.items():
                        cmd = [sys.executable, str(here / "long_sequences.py"), "--child", "--model-dir",
                               str(model_dir), "--data", str(data), "--pairs", str(args.pairs), "--threads",
                               str(args.threads), "--max-length", str(2 * words + 600)] + (
                            ["--checkpointing"] if checkpointing else [])
                        env = {**os.environ, "PYTHONPATH": f"{path}:{here}", "OMP_NUM_THREADS": str(args.threads)}
                        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                        if proc.returncode or not line:
                            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
                        r = json.loads(line[0][7:])
                        print(f"completions of {words} words ({r['tokens']} packed tokens), {name:9s}, "
                              f"checkpointing {checkpointing!s:5s}: step {r['seconds']:6.1f} s, peak allocated "
                              f"{r['peak_mb']:6.0f} MB (forward {r['forward_mb']:6.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
