"""Data -> judge -> self-play on the bundled task: MPO trained against a learned general preference model (GPM)
and against a learned Bradley-Terry reward model, each scored by the task oracle's exact duality gap on its
cyclic eval prompts, beside MPO judged by the oracle itself.

Both judges are trained as bench/judges_cycle.py trains them (its `build` and `train_judge`: every pair of
canonical answers of the cyclic train prompts and a few transitive ones, with the oracle's soft labels), plus
each canonical answer against `--outside` malformed answers that the starting policy samples for the prompt (the
oracle ranks those below every canonical answer; a judge that never saw one rates them at random, and the
policy drifts to those it happens to like), from the starting policy itself (`--judge-start policy`, as reward
models start from the SFT model; `untrained`: the task's untrained tiny Llama, as judges_cycle.py). Then three
`prefkit selfplay --config configs/mpo.yaml` runs from the exported task model, identical but for `judge:`
(task, gpm:PATH, reward:PATH), all with sampled win rates (from the K x K judged matrix of the policy's own
samples; the oracle is used as a black box too). The self-play metrics log the oracle's exact gap whatever the
judge (prefkit.selfplay.steps.iteration_metrics), so the curves are on one scale: a judge that represents
the cycles should lead towards the oracle's Nash equilibrium (gap towards 0), a transitive one towards the answer
it ranks first (the gap of a near-pure strategy).

    prefkit task export runs/task
    PYTHONPATH=src python bench/judge_selfplay.py --out runs/judge_selfplay

Writes OUT/results.json and OUT/gap.png (gap and mass on malformed answers per iteration, the three runs); extra
`key=value` arguments go to every self-play run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

# bench/, the script's own folder, is on sys.path
from judges_cycle import SPECS, build, policy_outside, score, train_judge
from mpo_convergence import run as selfplay_run
from prefkit.judges import load_judge
from prefkit.tasks import SyntheticTask

LABELS = {"oracle": "judged by the oracle (task)", "gpm": "judged by the learned GPM",
          "bt": "judged by the learned Bradley-Terry model"}


def judges(out: Path, task: SyntheticTask, policy: str, outside: int, steps: int, seed: int, start: str | None) -> dict:
    """Train both judges (with `outside` of the policy's malformed answers per train prompt in the data); each
    one's spec, its direction accuracy against the oracle on the cyclic prompts, and how often it ranks a
    canonical answer above a malformed one the policy samples on the cyclic eval prompts (the oracle always
    does)."""
    backbone, rows = build(out, task, seed=seed, policy=policy, outside=outside, start=start)
    others = policy_outside(task, policy, task.prompts("cyclic", "eval"), 8, seed + 1)
    checks = [(prompt, answer, other) for prompt, found in others.items() for answer in task.canonical(prompt)
              for other in found]
    trained = {}
    for kind, spec in SPECS.items():
        final, seconds = train_judge(kind, backbone, out, steps=steps, seed=seed)
        judge = load_judge(f"{spec}:{final}", device="cpu")
        scored = {split: score(judge, task, task.prompts("cyclic", split)) for split in ("train", "eval")}
        trained[kind] = {"spec": f"{spec}:{final}", "train_seconds": round(seconds, 1), "rows": rows,
                         **{f"{split}_direction_accuracy": s["direction_accuracy"] for split, s in scored.items()},
                         **{f"{split}_max_abs_error": s["max_abs_error"] for split, s in scored.items()},
                         "canonical_over_malformed": float(np.mean(judge.compare(*map(list, zip(*checks))) > 0.5)),
                         "malformed_pairs": len(checks)}
        print(f"judge {kind}: direction accuracy on the cyclic prompts {scored['train']['direction_accuracy']:.3f} "
              f"(train) / {scored['eval']['direction_accuracy']:.3f} (eval), canonical over malformed "
              f"{trained[kind]['canonical_over_malformed']:.3f}, {seconds:.0f} s", flush=True)
    return trained


def policy_summary(model: str, task: SyntheticTask) -> dict:
    """A policy on the cyclic eval prompts: the oracle's exact gap and the probability of its most likely canonical
    answer (renormalised on the canonical answers; 1 is a single answer), both means over the prompts."""
    from prefkit.eval.gaps import exact_gap_metrics
    from prefkit.modeling.load import load_model, load_tokenizer

    gaps = exact_gap_metrics(load_model(model), load_tokenizer(model), task)
    top = [max(row["distribution"].values()) for row in gaps["prompts"]]
    return {"gap": gaps["mean_gap"], "top_answer": float(np.mean(top))}


def outside(folder: Path) -> list[float]:
    """The policy's probability mass outside the canonical answers per iteration (mean over the cyclic eval
    prompts): the gap is of the distribution renormalised on them, so this says how much it leaves out."""
    from prefkit.train.tracking import read_metrics

    return [r["mass_outside"] for r in read_metrics(folder)]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefkit.io import save_figure

    fig, (gap, outside) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for colour, (name, run) in enumerate(results["runs"].items()):
        style = dict(color="0.4", linestyle="--") if name == "oracle" else dict(color=f"C{colour}")
        gap.plot(range(len(run["gaps"]) + 1), [results["initial"]["gap"]] + run["gaps"], label=f"MPO {LABELS[name]}",
                 **style)
        outside.plot(range(1, len(run["mass_outside"]) + 1), run["mass_outside"], **style)
    gap.axhline(0, color="0.7", linewidth=0.8)
    gap.set(xlabel="self-play iteration", ylabel="oracle's exact duality gap")
    gap.set_title("exact gap, cyclic eval prompts (sampled win rates)", fontsize=10)
    outside.set(xlabel="self-play iteration", ylabel="mass outside the canonical answers")
    outside.set_title("policy mass on malformed answers", fontsize=10)
    for ax in (gap, outside):
        ax.grid(alpha=0.3)
    gap.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/judge_selfplay")
    parser.add_argument("--model", default="runs/task/reference", help="the starting policy (prefkit task export)")
    parser.add_argument("--config", default="configs/mpo.yaml")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--judge-steps", type=int, default=400)
    parser.add_argument("--judge-start", choices=("untrained", "policy"), default="policy",
                        help="the judges' backbone: the task's untrained tiny Llama, or the starting policy")
    parser.add_argument("--outside", type=int, default=2,
                        help="malformed answers of the starting policy per train prompt in the judges' data (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=3, help="self-play runs at a time")
    parser.add_argument("extra", nargs="*", metavar="key=value", help="more `prefkit selfplay` keys, for every run")
    args = parser.parse_args()
    if not Path(args.model, "config.json").is_file():
        sys.exit(f"{args.model}: no model there; run `prefkit task export runs/task` first")
    torch.set_num_threads(1)
    out, task, start = Path(args.out), SyntheticTask(), time.perf_counter()
    start_from = args.model if args.judge_start == "policy" else None
    trained = judges(out / "judges", task, args.model, args.outside, args.judge_steps, args.seed, start_from)
    specs = {"oracle": "task", **{kind: trained[kind]["spec"] for kind in SPECS}}
    extra = [f"iterations={args.iterations}", *args.extra]
    with ThreadPoolExecutor(args.workers) as pool:
        runs = dict(zip(specs, pool.map(lambda name: selfplay_run(
            args.config, args.model, out / name, args.seed, "sampled", "mpo", [f"judge={specs[name]}", *extra]),
            specs)))
    folders = {name: out / name / f"sampled-mpo-seed{args.seed}" for name in runs}  # mpo_convergence.run's
    results = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
               "torch": torch.__version__, "machine": platform.machine(), "judges": trained,
               "initial": policy_summary(args.model, task), "seconds": round(time.perf_counter() - start),
               "runs": {name: {"judge": specs[name], **{k: r[k] for k in ("gaps", "last5", "final", "max_last10")},
                               "mass_outside": outside(folders[name]),
                               "final_policy": policy_summary(str(folders[name] / "final"), task)}
                        for name, r in runs.items()}}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "gap.png")
    print(f"starting policy: gap {results['initial']['gap']:.4f}, top answer {results['initial']['top_answer']:.3f}")
    for name, r in results["runs"].items():
        print(f"MPO {LABELS[name]:45s} last-5 mean gap {r['last5']:.4f}  final {r['final']:.4f}  "
              f"min {np.min(r['gaps']):.4f}  mass outside the canonical answers at the end "
              f"{np.mean(r['mass_outside'][-5:]):.3f}, final top answer {r['final_policy']['top_answer']:.3f}")
    print(f"{results['seconds']} s in all; {out / 'gap.png'}")


if __name__ == "__main__":
    main()
