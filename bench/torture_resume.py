"""Kill runs at random points with SIGKILL, resume them, and check the final weights are bit-identical to an
uninterrupted run's.

    python bench/torture_resume.py --points 20 --scenarios dpo,kto,mpo,inpo --out runs/torture

Each scenario runs once uninterrupted (its wall time T sets the range of kill times), then `--points` times
killed at a uniform random time in [0, T] and resumed with `--resume` until done. Offline runs checkpoint
every step, so kills land inside checkpoint writes too; self-play runs kill inside sampling, judging, scoring,
fitting and saving. MPO (exact win rates) refreshes its magnet at iteration 2, so kills before and after the
first refresh are both tried; INPO runs with sampled win rates, so kills land inside judging too. Prints one line per point and a summary; exits 1 if any resume differs. Figures: docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORDS = "red green blue cat dog fish sun moon star tree rock sand".split()
OFFLINE = ["max_steps=10", "save_steps=1", "keep_checkpoints=2", "logging_steps=1", "batch_size=4",
           "learning_rate=1e-3", "progress=false"]
SELFPLAY = ["iterations=3", "prompts_per_iteration=4", "samples_per_prompt=3", "max_new_tokens=4", "eval_limit=4",
            "batch_size=4", "epochs=1", "learning_rate=1e-3", "judge_chunk_size=1", "progress=false"]
SCENARIOS = {
    "dpo": lambda w: ["train", "--model", w["model"], "--data", w["pairs"], "--loss", "dpo", *OFFLINE],
    "kto": lambda w: ["train", "--model", w["model"], "--data", w["unpaired"], "--loss", "kto", *OFFLINE],
    "mpo": lambda w: ["selfplay", "--model", w["task_model"], "loss=mpo", "refresh_every=2", *SELFPLAY],
    "inpo": lambda w: ["selfplay", "--model", w["task_model"], "loss=inpo", "winrates=sampled", *SELFPLAY],
}


def workspace(root: Path) -> dict[str, str]:
    """A tiny Llama with its tokenizer, paired and unpaired data, and the bundled task's (untrained) model."""
    from prefkit.modeling.tiny import tiny_llama, tiny_tokenizer
    from prefkit.tasks import SyntheticTask

    root.mkdir(parents=True, exist_ok=True)
    paths = {k: str(root / v) for k, v in [("model", "model"), ("pairs", "pairs.jsonl"),
                                           ("unpaired", "unpaired.jsonl"), ("task_model", "task_model")]}
    if not Path(paths["model"]).is_dir():
        rng = random.Random(0)
        corpus = [" ".join(rng.choices(WORDS, k=8)) for _ in range(200)]
        tokenizer = tiny_tokenizer(corpus, vocab_size=128)
        tiny_llama(len(tokenizer), hidden_size=32, tokenizer=tokenizer).save_pretrained(paths["model"])
        tokenizer.save_pretrained(paths["model"])
        say = lambda k: " ".join(rng.choices(WORDS, k=k))  # noqa: E731
        Path(paths["pairs"]).write_text("".join(json.dumps(
            {"prompt": "say " + say(2), "chosen": say(3), "rejected": say(2) + " x"}) + "\n" for _ in range(24)))
        Path(paths["unpaired"]).write_text("".join(json.dumps(
            {"prompt": "say " + say(1), "completion": say(3), "label": i % 2 == 0}) + "\n" for i in range(24)))
        task = SyntheticTask()
        task.model(seed=0).save_pretrained(paths["task_model"])
        task.tokenizer().save_pretrained(paths["task_model"])
    return paths


def run(args: list[str], out: Path, kill_after: float | None = None) -> tuple[int, float]:
    """`prefkit ARGS --output-dir OUT`; with `kill_after`, SIGKILL it after that many seconds. (exit code, wall)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run: bit-identical sums
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "prefkit", *args, "--output-dir", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        process.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    if kill_after is None and process.returncode != 0:
        raise RuntimeError(f"prefkit {' '.join(args)} failed:\n{process.stderr.read().decode()[-2000:]}")
    process.stderr.close()
    return process.returncode, time.perf_counter() - start


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(first[k].equal(second[k]) for k in first)


def torture(scenario: str, points: int, root: Path, seed: int = 0, workers: int = 2) -> list[dict]:
    """Kill-and-resume `points` runs of `scenario`; one record per point."""
    args = SCENARIOS[scenario](workspace(root / "workspace"))
    reference = root / scenario / "uninterrupted"
    _, wall = run(args + ["--overwrite"], reference)
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, wall) for _ in range(points)]

    def point(i: int) -> dict:
        out = root / scenario / f"point-{i:02d}"
        code, _ = run(args + ["--overwrite"], out, kill_after=delays[i])
        run(args + ["--resume"], out)
        return {"scenario": scenario, "point": i, "kill_after_s": round(delays[i], 2), "killed": code != 0,
                "identical": same_weights(reference / "final", out / "final")}

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(point, range(points)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default="runs/torture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    records = []
    for scenario in args.scenarios.split(","):
        for record in torture(scenario, args.points, Path(args.out), args.seed, args.workers):
            print(json.dumps(record), flush=True)
            records.append(record)
    killed = [r for r in records if r["killed"]]
    identical = sum(r["identical"] for r in records)
    print(f"{len(records)} points ({len(killed)} killed mid-run), {identical} resumed bit-identical, "
          f"{len(records) - identical} different")
    return 0 if identical == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
