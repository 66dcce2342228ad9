"""prefkit's Bradley-Terry judge trainer (`prefkit judge train`, kind: bt) vs TRL's RewardTrainer on the same
reward-model work, side by side in one interleaved run.

Same backbone (bench_dpo_vs_trl.py's locally built Llama and tokenizer, loaded as a sequence classifier with a
fresh one-output head), same preference pairs, batch size, steps, learning rate and schedule (linear to 0, no
warmup), fp32, no gradient checkpointing, no dropout, one thread (--threads). The pairs carry a learnable
preference: prompt and responses are random words, and the chosen response is the one with more colour words
(ties dropped), so accuracy on held-out pairs says whether each trainer learned the same thing. Each run is a fresh
subprocess (so peak RSS is its own), prefkit and TRL alternating. Timed: model load, data preparation, the training
steps, one evaluation pass over the eval pairs and the final save (imports excluded for both). Reported: median
tokens/s (prompt + chosen and prompt + rejected tokens of the trained batches, counted the same way for both), peak
RSS, the prefkit/TRL ratios, and each run's accuracy on the eval pairs from its own trainer's evaluation.

    PYTHONPATH=/path/to/trl:src python bench/bench_judge_vs_trl.py --sizes small --repeats 3 --steps 30
    PYTHONPATH=/path/to/trl:src python bench/bench_judge_vs_trl.py --sizes tiny --repeats 3 --steps 100
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

from bench_dpo_vs_trl import WORDS, build, tokens_processed  # bench/, the script's folder, is on sys.path

COLOURS = {"red", "green", "blue", "cyan", "magenta", "yellow", "black", "white"}


def labelled_pairs(path: Path, rows: int, seed: int) -> None:
    """Pairs of 20-60 random words whose chosen response holds more colour words than the rejected one."""
    rng = random.Random(seed)
    with path.open("w") as f:
        written = 0
        while written < rows:
            a, b = (rng.choices(WORDS, k=rng.randint(20, 60)) for _ in range(2))
            colours = [sum(w in COLOURS for w in r) for r in (a, b)]
            if colours[0] == colours[1]:
                continue
            chosen, rejected = (a, b) if colours[0] > colours[1] else (b, a)
            f.write(json.dumps({"prompt": " ".join(rng.choices(WORDS, k=rng.randint(20, 60))),
                                "chosen": " " + " ".join(chosen), "rejected": " " + " ".join(rejected)}) + "\n")
            written += 1


def run_prefkit(args) -> dict:
    import accelerate  # noqa: F401  imported before the clock starts, as TRL's imports are
    from transformers import AutoModelForSequenceClassification  # noqa: F401

    from prefkit.judges.train_config import JudgeTrainConfig
    from prefkit.judges.training import fit
    from prefkit.train.config import load_config

    config = load_config(None, dict(kind="bt", model=args.model_dir, data=args.data, eval_data=args.eval_data,
                                    output_dir=args.out, max_steps=args.steps, batch_size=args.batch,
                                    learning_rate=args.lr, eval_steps=args.steps, logging_steps=args.steps,
                                    progress=False, seed=0), kind=JudgeTrainConfig)
    start = time.perf_counter()
    fit(config)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "accuracy": json.loads(Path(args.out, "eval-judge.json").read_text())["accuracy"]}


def run_trl(args) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    datasets.disable_caching()  # else a repeat run reuses the last one's tokenized data
    set_seed(0)  # the fresh head's initialisation, as prefkit seeds it
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, num_labels=1, dtype="float32")
    train = datasets.load_dataset("json", data_files=args.data, split="train")
    evaluation = datasets.load_dataset("json", data_files=args.eval_data, split="train")
    config = RewardConfig(output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch,
                          per_device_eval_batch_size=args.batch, learning_rate=args.lr, lr_scheduler_type="linear",
                          warmup_steps=0, gradient_checkpointing=False, bf16=False, fp16=False, report_to="none",
                          logging_steps=args.steps, save_strategy="no", use_cpu=True, dataloader_num_workers=0,
                          seed=0)
    trainer = RewardTrainer(model=model, args=config, train_dataset=train, eval_dataset=evaluation,
                            processing_class=tokenizer)
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    trainer.save_model(args.out + "/final")  # prefkit writes its final judge too
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = (run_prefkit if args.child == "prefkit" else run_trl)(args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["tokens"] = tokens_processed(args.model_dir, args.data, args.steps, args.batch)
    print("RESULT " + json.dumps(result))


def compare(tmp: str, size: str, args, env: dict) -> dict:
    """Both trainers `args.repeats` times on one model size, alternating; the medians and ratios."""
    model_dir, _ = build(Path(tmp), size, 1)
    data, eval_data = Path(tmp) / "pairs.jsonl", Path(tmp) / "pairs_eval.jsonl"
    labelled_pairs(data, args.rows, seed=1)
    labelled_pairs(eval_data, args.eval_rows, seed=2)
    results = {"prefkit": [], "trl": []}
    for repeat in range(args.repeats):
        for name in ("prefkit", "trl"):  # interleaved, so drift in machine load hits both
            cmd = [sys.executable, __file__, "--child", name, "--model-dir", str(model_dir), "--data", str(data),
                   "--eval-data", str(eval_data), "--out", f"{tmp}/{size}-{name}-{repeat}", "--steps",
                   str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(line[0][len("RESULT "):])
            result["tokens_per_s"] = result["tokens"] / result["seconds"]
            results[name].append(result)
            print(f"{size} {name} run {repeat}: {result['seconds']:.1f} s, {result['tokens_per_s']:.0f} tokens/s, "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB, eval accuracy {result['accuracy']:.3f}", flush=True)
    median = {name: {key: statistics.median(r[key] for r in runs) for key in ("tokens_per_s", "peak_rss_mb")}
              for name, runs in results.items()}
    return {"runs": results, "median": median,
            "speed_ratio": median["prefkit"]["tokens_per_s"] / median["trl"]["tokens_per_s"],
            "memory_ratio": median["prefkit"]["peak_rss_mb"] / median["trl"]["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", choices=["prefkit", "trl"])
    parser.add_argument("--model-dir", dest="model_dir")
    parser.add_argument("--data")
    parser.add_argument("--eval-data", dest="eval_data")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch
    import transformers
    import trl

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    header = (f"machine: nproc={os.cpu_count()} python={sys.version.split()[0]} torch={torch.__version__} "
              f"transformers={transformers.__version__} trl={trl.__version__} threads={args.threads}")
    print(header)
    summary = {"command": " ".join(sys.argv), "machine": header, "date": time.strftime("%Y-%m-%d"), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            summary["sizes"][size] = result = compare(tmp, size, args, env)
            accuracy = {name: [round(r["accuracy"], 3) for r in runs] for name, runs in result["runs"].items()}
            print(f"{size}: prefkit {result['median']['prefkit']['tokens_per_s']:.0f} tokens/s vs TRL "
                  f"{result['median']['trl']['tokens_per_s']:.0f} ({result['speed_ratio']:.2f}x); peak RSS "
                  f"{result['median']['prefkit']['peak_rss_mb']:.0f} vs {result['median']['trl']['peak_rss_mb']:.0f} "
                  f"MB ({result['memory_ratio']:.2f}x); eval accuracy prefkit {accuracy['prefkit']} TRL "
                  f"{accuracy['trl']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
