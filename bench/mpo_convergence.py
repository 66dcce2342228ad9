"""MPO's last iterate on the bundled task, trained: exact duality gap per iteration of MPO (refreshed magnet),
the same with a fixed magnet, and SPPO, from configs/mpo.yaml, over seeds and win-rate modes.

    prefkit task export runs/task
    python bench/mpo_convergence.py --seeds 0,1,2 --winrates exact,sampled --out runs/mpo-bench

Prints one line per run (last-5-iteration mean gap, worst and final) and a table per win-rate mode; the
numbers in docs/selfplay.md and docs/demo.md come from it. Extra `key=value` arguments go to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

METHODS = {  # name -> overrides of configs/mpo.yaml
    "mpo": [],
    "fixed magnet": ["refresh_every=null"],
    "sppo": ["loss=sppo", "loss_params={eta: 6.0}", "refresh_every=null"],
}


def run(config: str, model: str, out: Path, seed: int, winrates: str, method: str, extra: list[str]) -> dict:
    folder = out / f"{winrates}-{method.replace(' ', '-')}-seed{seed}"
    args = [sys.executable, "-m", "prefkit", "selfplay", "--config", config, "--model", model, "--output-dir",
            str(folder), "--overwrite", f"seed={seed}", f"winrates={winrates}", "progress=false",
            *extra, *METHODS[method]]  # the method's own overrides last: a fixed magnet stays fixed
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    gaps = [r["duality_gap"] for r in records]
    return {"winrates": winrates, "method": method, "seed": seed, "last5": float(np.mean(gaps[-5:])),
            "final": gaps[-1], "max_last10": float(np.max(gaps[-10:])), "gaps": gaps,
            "tracking_tv": float(np.mean([r.get("tracking_tv", np.nan) for r in records]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/mpo.yaml")
    parser.add_argument("--model", default="runs/task/reference")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--winrates", default="exact,sampled")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="runs/mpo-bench")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("extra", nargs="*", metavar="key=value")
    args = parser.parse_args()
    jobs = [(int(seed), mode, method) for mode in args.winrates.split(",") for seed in args.seeds.split(",")
            for method in args.methods.split(",")]
    out = Path(args.out)
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda job: run(args.config, args.model, out, *job, args.extra), jobs))
    for r in results:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "gaps"}))
    (out / "results.json").write_text(json.dumps(results))
    for mode in args.winrates.split(","):
        print(f"\nwinrates: {mode}   last-5-iteration mean exact gap (per seed)")
        for method in args.methods.split(","):
            rows = [r for r in results if r["winrates"] == mode and r["method"] == method]
            print(f"  {method:14s} " + "  ".join(f"{r['last5']:.4f}" for r in rows)
                  + f"   mean {np.mean([r['last5'] for r in rows]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
