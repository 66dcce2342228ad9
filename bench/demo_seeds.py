"""The tables of docs/demo.md: `prefkit demo` over several seeds, mean ± standard deviation of its results.json.

    python bench/demo_seeds.py --seeds 0,1,2 --out runs            # runs the demos, then prints the tables
    python bench/demo_seeds.py --seeds 0,1,2 --out runs --no-run   # only aggregates runs/demo-S/results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METRICS = ("win_rate_vs_reference", "duality_gap", "mass_outside", "entropy")


def cell(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"  # sample standard deviation


def tables(runs: list[dict]) -> str:
    lines = ["| method | win rate vs reference | exact duality gap (cyclic) | mass outside canonical | "
             "generation entropy |", "|---|---|---|---|---|"]
    for name in runs[0]["methods"]:
        lines.append(f"| {name} | " + " | ".join(cell([r["methods"][name][m] for r in runs]) for m in METRICS) + " |")
    epochs = len(runs[0]["curves"]["dpo"])
    lines += ["", "| epoch | " + " | ".join(str(e + 1) for e in range(epochs)) + " |", "|---|" + "---|" * epochs]
    for metric, label in (("entropy", "entropy"), ("contrastive_logit", "contrastive logit z̄")):
        for name in ("dpo", "simpo", "stapo"):
            values = [cell([r["curves"][name][e][metric] for r in runs]) for e in range(epochs)]
            lines.append(f"| {name} {label} | " + " | ".join(values) + " |")
    selfplay = [name for name, curve in runs[0]["curves"].items() if curve and "iteration" in curve[0]]
    iterations = len(runs[0]["curves"][selfplay[0]])
    shown = sorted({min(iterations, i) for i in (1, 5, 10, 20, 30, 40, 50, 60)})
    lines += ["", "| exact gap (cyclic) at iteration | " + " | ".join(str(i) for i in shown) + " | mean of last 5 |",
              "|---|" + "---|" * (len(shown) + 1)]
    for name in selfplay:
        for key, label in (("duality_gap", "trained"), ("tabular_gap", "exact tabular")):
            values = [cell([r["curves"][name][i - 1][key] for r in runs]) for i in shown]
            last5 = cell([np.mean([p[key] for p in r["curves"][name][-5:]]) for r in runs])
            lines.append(f"| {name} ({label}) | " + " | ".join(values) + f" | {last5} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--no-run", dest="run", action="store_false")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds if args.run else []:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prefkit.cli", "demo", "--seed", str(seed), "--out",
                        f"{args.out}/demo-{seed}"], check=True)
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    runs = [json.loads(Path(f"{args.out}/demo-{seed}/results.json").read_text()) for seed in seeds]
    print(tables(runs))


if __name__ == "__main__":
    main()
