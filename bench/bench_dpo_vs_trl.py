"""prefkit vs TRL's DPOTrainer on the same DPO work, side by side in one interleaved run.

Same model, data, batch size, steps; precomputed reference log-probs on both; no gradient checkpointing. On a
CPU: fp32, 2 threads. On a GPU (chosen automatically when torch sees one): bf16 for every peer (prefkit's
`mixed_precision: bf16`, TRL's `bf16=True`), and `trl-liger` (TRL with `use_liger_kernel=True`, which needs the
liger-kernel package) is a peer beside TRL's default, which already computes its log-probs through its own fused
LM head; peak memory is then also `torch.cuda.max_memory_allocated`. Each run is a fresh subprocess (so peak
RSS is its own), the peers alternating. Reported:
median tokens/s (prompt+completion tokens of chosen and rejected over the timed region: model load, data
preparation, reference precompute and the training steps) and peak RSS, with the prefkit/TRL ratios.

    python bench/bench_dpo_vs_trl.py --sizes tiny,small --repeats 3 --steps 25 --rows 200
    python bench/bench_dpo_vs_trl.py --sizes v128k --steps 10 --rows 80 --repeats 1 --peers prefkit,trl,prefkit-bf16
    # prefkit-mkl: prefkit with cpu_matmul: torch (MKL's float32 products, as TRL's; docs/training.md)
    python bench/bench_dpo_vs_trl.py --sizes small,v128k --steps 10 --rows 80 --repeats 1 --peers prefkit,trl,prefkit-mkl
    # on one GPU (not yet run there), with the memory account and long completions: bench/gpu.sh
    python bench/bench_dpo_vs_trl.py --sizes small,v128k,v256k --steps 10 --rows 80 --repeats 1 \
        --peers prefkit,trl,trl-liger
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # hidden, layers, heads, vocab (the tokenizer's, at most 4096; the model's head has all of it)
    "tiny": (64, 2, 4, 512),
    "small": (512, 8, 8, 4096),
    "v128k": (512, 4, 8, 128_256),  # Llama 3's vocabulary
    "v256k": (512, 4, 8, 256_000),  # Gemma's vocabulary
}
WORD_RANGES = {  # words per (prompt, completion); one word is about one token
    "tiny": ((20, 60), (20, 60)), "small": ((20, 60), (20, 60)),
    "v128k": ((60, 160), (60, 160)), "v256k": ((60, 160), (300, 1000)),
}
MAX_LENGTH = 2048  # no row of any size is truncated
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega red green blue cyan magenta yellow black white").split()


def build(workdir: Path, size: str, rows: int, seed: int = 0, words: tuple | None = None) -> tuple[Path, Path]:
    """The shape's model and tokenizer in `workdir`/model-`size`, and `rows` preference rows of random words
    (`words`: the (prompt, completion) word ranges, else the shape's own)."""
    from prefkit.modeling.tiny import tiny_llama, tiny_tokenizer

    rng = random.Random(seed)
    hidden, layers, heads, vocab = SIZES[size]
    (prompt_lo, prompt_hi), (lo, hi) = words or WORD_RANGES[size]
    corpus = [" ".join(rng.choices(WORDS, k=40)) + f" {i}" for i in range(4000)]
    tokenizer = tiny_tokenizer(corpus, vocab_size=min(vocab, 4096))
    model = tiny_llama(max(vocab, len(tokenizer)) if vocab > 4096 else len(tokenizer), hidden_size=hidden,
                       layers=layers, heads=heads, tokenizer=tokenizer, max_positions=4 * MAX_LENGTH)
    model_dir = workdir / f"model-{size}"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = workdir / f"prefs-{size}.jsonl"
    text = lambda low, high: " ".join(rng.choices(WORDS, k=rng.randint(low, high)))  # noqa: E731
    with data.open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"prompt": text(prompt_lo, prompt_hi), "chosen": text(lo, hi),
                                "rejected": text(lo, hi)}) + "\n")
    return model_dir, data


CUDA = None  # set in the child: whether this run is on a GPU


def run_prefkit(model_dir: str, data: str, out: str, steps: int, batch: int, mixed_precision: str = "no",
                cpu_matmul: str = "auto") -> dict:
    import accelerate  # noqa: F401  imported before the clock starts, as TRL's imports are
    from transformers import get_scheduler  # noqa: F401

    from prefkit.train.config import load_config
    from prefkit.train.offline import fit

    config = load_config(None, dict(model=model_dir, data=data, output_dir=out, loss="dpo", max_steps=steps,
                                    batch_size=batch, learning_rate=1e-5, reference="precomputed",
                                    cache_dir=out + "/cache", progress=False, logging_steps=steps,
                                    max_length=MAX_LENGTH, cpu_matmul=cpu_matmul,
                                    mixed_precision="bf16" if CUDA else mixed_precision))
    start = time.perf_counter()
    fit(config)
    seconds = time.perf_counter() - start
    from prefkit.train.tracking import read_metrics

    last = [r for r in read_metrics(Path(out)) if "loss" in r][-1]  # the mean over the steps (logging_steps)
    return {"seconds": seconds, "loss": last["loss"], "margins": last["rewards/margins"]}


def tokens_processed(model_dir: str, data: str, steps: int, batch: int) -> int:
    """Tokens in the batches of `steps` steps, counted the same way for both trainers (outside the timing)."""
    from prefkit.data import prepare
    from prefkit.modeling.load import load_tokenizer
    from prefkit.train.batches import BatchOrder

    examples = prepare(data, load_tokenizer(model_dir), max_length=MAX_LENGTH).examples
    order = BatchOrder(len(examples), batch, 1, 0, 0)
    total = 0
    for m in range(steps):
        for i in order.indices(m):
            e = examples[i]
            total += 2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids)
    return total


def run_trl(model_dir: str, data: str, out: str, steps: int, batch: int, liger: bool = False) -> dict:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    datasets.disable_caching()  # else a repeat run reuses the tokenized data and reference log-probs of the last
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    dataset = datasets.load_dataset("json", data_files=data, split="train")
    args = DPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-5,
                     precompute_ref_log_probs=True, gradient_checkpointing=False, report_to="none",
                     max_length=MAX_LENGTH, logging_steps=steps, save_strategy="no", use_cpu=not CUDA,
                     dataloader_num_workers=0, bf16=CUDA, fp16=False, seed=0, use_liger_kernel=liger)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return {"seconds": time.perf_counter() - start}


PEERS = {  # name -> runner(model_dir, data, out, steps, batch)
    "prefkit": run_prefkit,
    "prefkit-bf16": lambda *args: run_prefkit(*args, mixed_precision="bf16"),
    "prefkit-mkl": lambda *args: run_prefkit(*args, cpu_matmul="torch"),  # MKL's float32 products, as TRL's
    "trl": run_trl,
    "trl-liger": lambda *args: run_trl(*args, liger=True),  # GPU only: Liger's kernels are Triton
}


def child(args) -> None:
    import torch

    global CUDA
    CUDA = torch.cuda.is_available()
    torch.set_num_threads(args.threads)
    result = PEERS[args.child](args.model_dir, args.data, args.out, args.steps, args.batch)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if CUDA:
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    result["tokens"] = tokens_processed(args.model_dir, args.data, args.steps, args.batch)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", default="prefkit,trl", help=f"of {', '.join(PEERS)}; ratios are to the first")
    parser.add_argument("--child", choices=list(PEERS))
    parser.add_argument("--model-dir", dest="model_dir")
    parser.add_argument("--data")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch
    import transformers
    import trl

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    print(f"machine: nproc={os.cpu_count()} gpu={torch.cuda.get_device_name() if torch.cuda.is_available() else None} "
          f"python={sys.version.split()[0]} torch={torch.__version__} "
          f"transformers={transformers.__version__} trl={trl.__version__} threads={args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            model_dir, data = build(Path(tmp), size, args.rows)
            peers = args.peers.split(",")
            results = {name: [] for name in peers}
            for repeat in range(args.repeats):
                for name in peers:  # interleaved, so drift in machine load hits all
                    out = f"{tmp}/{size}-{name}-{repeat}"
                    cmd = [sys.executable, __file__, "--child", name, "--model-dir", str(model_dir), "--data",
                           str(data), "--out", out, "--steps", str(args.steps), "--batch", str(args.batch),
                           "--threads", str(args.threads)]
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                    if proc.returncode or not line:
                        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
                    results[name].append(json.loads(line[0][7:]))
            summary = {}
            for name, runs in results.items():
                summary[name] = {"tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in runs),
                                 "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                                 "peak_cuda_mb": statistics.median(r.get("peak_cuda_mb", 0) for r in runs),
                                 "tokens": runs[0]["tokens"], "seconds": [round(r["seconds"], 2) for r in runs],
                                 "loss": [round(r["loss"], 5) for r in runs if "loss" in r],
                                 "margins": [round(r["margins"], 5) for r in runs if "margins" in r]}
            print(f"{size}: params={SIZES[size]} batch={args.batch} steps={args.steps} "
                  f"load={Path('/proc/loadavg').read_text().split()[:3]}")
            for name, s in summary.items():
                print(f"  {name:12s} median tokens/s {s['tokens_per_s']:9.0f}  peak RSS {s['peak_rss_mb']:7.0f} MB  "
                      f"tokens {s['tokens']}  seconds {s['seconds']}" + (
                          f"  mean DPO loss {s['loss']} margins {s['margins']}" if s["loss"] else ""))
            for name in peers[1:]:
                speed = summary[peers[0]]["tokens_per_s"] / summary[name]["tokens_per_s"]
                memory = summary[peers[0]]["peak_rss_mb"] / summary[name]["peak_rss_mb"]
                first, other = summary[peers[0]]["peak_cuda_mb"], summary[name]["peak_cuda_mb"]
                cuda = other and first / other
                cuda = f", peak CUDA allocated {cuda:.2f}x" if cuda else ""
                print(f"  ratio {peers[0]}/{name}: tokens/s {speed:.2f}x, peak RSS {memory:.2f}x{cuda}")


if __name__ == "__main__":
    main()
