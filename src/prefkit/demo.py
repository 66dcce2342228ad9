"""`prefkit demo`: every method on the bundled task, measured exactly, in minutes on a laptop CPU.

Stages: pre-train the tiny reference on the task's SFT data; label pairs of its samples with the oracle; train
DPO, SimPO and StaPO offline (several epochs, evaluated after each) and MPO, INPO and SPPO in self-play (plus MPO
without its magnet refresh); then evaluate everything exactly against the reference: win rate, duality gap on
the cyclic prompts, mass outside the canonical sets, generation entropy. Writes a summary table and a report
(markdown + self-contained HTML with plots) to the run directory.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

OFFLINE = {  # name -> (loss, hyper-parameters)
    "dpo": ("dpo", {"beta": 0.1}),
    "simpo": ("simpo", {"beta": 2.0, "gamma": 1.0}),
    "stapo": ("stapo", {"beta": 2.0, "left_margin": 1.0, "right_margin": 4.0}),
}
# name -> (loss, hyper-parameters, magnet refresh period, the game lab's tabular twin: algorithm and settings).
# η = 6, α = 0.1, refresh every 6: what `prefkit game plan --task-model` ranks first from the demo's reference.
# MPO with a fixed magnet is INPO with η/(1+ηα) (the same loss, example by example), so INPO has no row of its own.
SELFPLAY = {
    "mpo": ("mpo", {"eta": 6.0, "alpha": 0.1}, 6, ("mpo", {"eta": 6.0, "alpha": 0.1, "refresh_every": 6})),
    "fixed magnet (= inpo)": ("mpo", {"eta": 6.0, "alpha": 0.1}, None, ("mmd", {"eta": 6.0, "alpha": 0.1})),
    "sppo": ("sppo", {"eta": 6.0}, None, ("mwu", {"eta": 6.0})),
}


@dataclass(frozen=True)
class Settings:
    pretrain_steps: int = 1500
    responses_per_prompt: int = 4
    offline_epochs: int = 5
    offline_batch: int = 32
    offline_lr: float = 1e-4
    iterations: int = 60
    prompts_per_iteration: int = 32
    # cyclic and transitive prompts alternate: the cyclic ones carry MPO's claim (a mixed Nash equilibrium), the
    # transitive ones keep the model answering every family (trained on cyclic prompts alone, its answers to
    # transitive prompts fell apart: 87% of their mass outside the canonical answers after 60 iterations)
    selfplay_prompts: str = "task:balanced"
    selfplay_lr: float = 6e-4
    selfplay_epochs: int = 4
    selfplay_batch: int = 8
    eval_samples: int = 64  # generated answers for the entropy measurement


QUICK = Settings(pretrain_steps=300, offline_epochs=2, iterations=4, eval_samples=32)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="every method on the bundled task, exactly evaluated (CPU, minutes)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a smaller run, about a minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    results = run_demo(Path(args.out), QUICK if args.quick else Settings(), seed=args.seed)
    print(summary_table(results))
    print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0


def run_demo(out: Path, settings: Settings, seed: int = 0) -> dict:
    import torch

    from prefkit.games import exact_curve
    from prefkit.io import save_model, write_json, write_jsonl
    from prefkit.tasks import SyntheticTask, canonical_distributions, preference_rows, reference_model

    torch.set_num_threads(1)  # the tiny model is faster on one thread than on two that wait on each other
    out.mkdir(parents=True, exist_ok=True)
    task, timings = SyntheticTask(), {}
    clock = time.perf_counter()
    model, tokenizer = reference_model(task, seed=seed, steps=settings.pretrain_steps,
                                       progress=_bar("pre-train reference", settings.pretrain_steps))
    reference_dir = out / "reference"
    save_model(model, tokenizer, reference_dir)
    rows = preference_rows(task, task.prompts(split="train"), settings.responses_per_prompt, seed=seed)
    write_jsonl(rows, out / "preferences.jsonl")
    timings["reference"] = time.perf_counter() - clock

    cyclic = task.prompts("cyclic", split="eval")
    results = {"settings": vars(settings), "seed": seed, "methods": {}, "curves": {}, "lab": {}, "evaluations": {}}
    results["methods"]["reference"], _ = _exact(model, tokenizer, task, model, settings, seed)
    for name, (loss, params) in OFFLINE.items():
        clock = time.perf_counter()
        curve, results["evaluations"][name] = _offline(name, loss, params, reference_dir, out, settings, seed, task,
                                                       model)
        results["curves"][name] = curve
        results["methods"][name] = curve[-1]
        timings[name] = time.perf_counter() - clock
    starts = [probs for probs, _ in canonical_distributions(model, tokenizer, task, cyclic)]
    games = [task.preference_matrix(p) for p in cyclic]
    for name, (loss, params, refresh, (algorithm, tabular)) in SELFPLAY.items():
        clock = time.perf_counter()
        final, curve = _selfplay(name, loss, params, refresh, reference_dir, out, settings, seed)
        exact = exact_curve(games, starts, algorithm, settings.iterations, **tabular)
        for point in curve:  # the tabular dynamics from the same start, iteration by iteration
            point["tabular_gap"] = float(exact[point["iteration"]])
        results["curves"][name] = curve
        results["lab"][name] = exact_curve(games, starts, algorithm, 10 * settings.iterations, **tabular).tolist()
        results["methods"][name], results["evaluations"][name] = _exact(final, tokenizer, task, model, settings, seed)
        timings[name] = time.perf_counter() - clock
    results["seconds"] = timings
    write_json(out / "results.json", results, indent=2)
    _report(out, results)
    return results


def _offline(name, loss, params, reference_dir, out, settings, seed, task, reference):
    """Train for `offline_epochs` epochs, checkpointing each, and evaluate every epoch's weights exactly; returns
    the curve and the last epoch's whole evaluation."""
    from prefkit.modeling.load import load_model, load_tokenizer
    from prefkit.train.checkpoint import checkpoints, policy_weights
    from prefkit.train.config import TrainConfig
    from prefkit.train.offline import fit
    from prefkit.train.tracking import read_metrics

    examples = sum(1 for _ in open(out / "preferences.jsonl"))
    per_epoch = examples // settings.offline_batch
    config = TrainConfig(model=str(reference_dir), data=str(out / "preferences.jsonl"), output_dir=str(out / name),
                         loss=loss, loss_params=params, epochs=settings.offline_epochs, batch_size=settings.offline_batch,
                         learning_rate=settings.offline_lr, warmup_steps=0, logging_steps=per_epoch, save_steps=per_epoch,
                         keep_checkpoints=settings.offline_epochs, seed=seed, progress=True,
                         cache_dir=str(out / "cache"), overwrite=True).validate()  # the demo owns its runs
    print(f"offline: {name} ({settings.offline_epochs} epochs of {per_epoch} steps)", flush=True)
    fit(config)
    tokenizer, model = load_tokenizer(str(reference_dir)), load_model(str(reference_dir))
    logged = {r["step"]: r for r in read_metrics(out / name) if "loss" in r}
    curve = []
    for epoch, folder in enumerate(checkpoints(out / name), start=1):
        model.load_state_dict(policy_weights(folder))
        point, evaluation = _exact(model, tokenizer, task, reference, settings, seed)
        record = logged.get(epoch * per_epoch, {})
        point.update(epoch=epoch, contrastive_logit=record.get("contrastive_logit/mean"), loss=record.get("loss"))
        curve.append(point)
    return curve, evaluation


def _selfplay(name, loss, params, refresh, reference_dir, out, settings, seed):
    from prefkit.modeling.load import load_model
    from prefkit.selfplay.loop import selfplay
    from prefkit.selfplay.config import SelfPlayConfig
    from prefkit.train.tracking import read_metrics

    folder = out / name.replace(" ", "-").replace("(", "").replace(")", "")
    config = SelfPlayConfig(model=str(reference_dir), output_dir=str(folder), loss=loss, loss_params=params,
                            refresh_every=refresh, iterations=settings.iterations,
                            prompts_per_iteration=settings.prompts_per_iteration, samples_per_prompt=4,
                            batch_size=settings.selfplay_batch,
                            max_new_tokens=8, learning_rate=settings.selfplay_lr, epochs=settings.selfplay_epochs,
                            prompts=settings.selfplay_prompts, eval_limit=16, kl_samples=1, seed=seed,
                            progress=True, overwrite=True).validate()
    print(f"self-play: {name} ({settings.iterations} iterations)", flush=True)
    final = selfplay(config)
    curve = [{"iteration": r["step"], "duality_gap": r.get("duality_gap"), "winrate_vs_initial": r["winrate_vs_initial"]}
             for r in read_metrics(folder)]
    return load_model(str(final)), curve


def _exact(model, tokenizer, task, reference, settings, seed) -> tuple[dict, dict]:
    """The policy evaluated by `prefkit eval`'s sections against the reference (prefkit.eval.evaluate_model):
    the exact win rate and the mass outside the canonical sets on every eval prompt, the exact duality gap on the
    cyclic ones, and the entropy of one generated answer per prompt. Returns (the demo's headline numbers, the
    whole evaluation)."""
    from prefkit.eval import evaluate_model

    prompts = task.prompts(split="eval")[:settings.eval_samples]
    evaluation = evaluate_model(model, tokenizer, reference=reference, task=task, prompts=prompts, samples=1,
                                seed=seed, max_new_tokens=8, sections=["exact_win_rate", "exact_gap", "generation"])
    s = evaluation["sections"]
    return {"win_rate_vs_reference": s["exact_win_rate"]["win_rate"], "duality_gap": s["exact_gap"]["model"]["mean_gap"],
            "mass_outside": s["exact_win_rate"]["mean_outside"],
            "entropy": s["generation"]["model"]["token_entropy"]}, evaluation


def summary_table(results: dict) -> str:
    rows = [f"{'method':<24}{'win vs ref':>11}{'gap (cyclic)':>14}{'outside':>9}{'entropy':>9}"]
    for name, m in results["methods"].items():
        rows.append(f"{name:<24}{m['win_rate_vs_reference']:>11.3f}{m['duality_gap']:>14.4f}"
                    f"{m['mass_outside']:>9.3f}{m['entropy']:>9.3f}")
    return "\n".join(rows)


def _bar(description: str, total: int):
    """A `progress(step, loss)` callback: a bar on a terminal, a start and an end line in a log file."""
    from prefkit.train.console import Console

    console = Console(total, name=description)
    console.write(f"{description}: {total} steps")

    def update(step, loss):
        console.advance()
        if step + 1 >= total:
            console.metrics(step + 1, {"loss": loss})
            console.close()
    return update


def _report(out: Path, results: dict) -> None:
    from prefkit.demo_report import write_report

    write_report(out, results)
