"""prefkit's self-play iteration against TRL's OnlineDPOTrainer on the same online-DPO work, side by side.

    python bench/selfplay_vs_trl.py --smoke       # 4 prompts, batch 2, 8 new tokens: checks the code paths
    # the recorded run (bench/RESULTS.md, about 25 minutes on 2 loaded cores):
    python bench/selfplay_vs_trl.py --prompts 32 --batch 8 --peers prefkit,trl,prefkit-per-step

TRL is not a dependency: put it on PYTHONPATH (e.g. `PYTHONPATH=/path/to/trl:src`). The work, for both: the
53M-parameter Llama of bench/selfplay_iteration.py (random weights, the bundled task's tokenizer and chat
template), `--prompts` prompts once each, 2 samples per prompt of up to `--max-new-tokens` tokens (temperature
1, no top-k / top-p), the same preference (`reward` below: TRL 1.16's online DPO takes reward functions, not a
pairwise judge, so TRL gets the reward and prefkit the pairwise judge that prefers the higher reward), the
sigmoid DPO loss (β 0.1) against the frozen initial model, batches of `--batch` pairs, prompts/batch AdamW steps
(learning rate 1e-5 decaying linearly to 0, no weight decay, gradient norm clipped at 1), fp32, 2 threads.

Peers (`--peers`): `prefkit` is one `prefkit selfplay` iteration (sample every prompt from π_0, judge, score,
then prompts/batch steps: the samples of all steps come from π_0); `prefkit-per-step` is prompts/batch
iterations of `--batch` prompts (sampling from the current policy before every step, as TRL does); `trl` is
OnlineDPOTrainer with max_steps = prompts/batch, which generates for each step's batch from the current policy.
Each run is a fresh subprocess, the peers alternating. Stages: sample (generation), judge (the judge or reward
calls), score (no-grad log-probs: prefkit's tables under π_t and the reference, TRL's reference forward), fit
(everything else in the steps: the policy's forward and backward, the loss, the optimizer), and for prefkit
its per-iteration evaluation and saves; each in wall and in process CPU time (steadier on a shared machine).
Prints one JSON line per run and a summary with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CORE = ("sample", "judge", "score", "fit")  # the stages both peers run


def text_of(response) -> str:
    """A response's text: the string itself or a conversation's last message."""
    return response if isinstance(response, str) else response[-1]["content"]


def reward(response) -> float:
    """Distinct characters, ties broken by a hash of the text: deterministic, cheap, and two different answers
    (almost) never tie, so both peers train on every pair."""
    text = text_of(response)
    return len(set(text)) + zlib.crc32(text.encode()) / 2 ** 32


def judge(prompt, a, b) -> float:
    """prefkit's pairwise judge: P(a beats b) = 1 when a's reward is higher, 0 when lower, ½ on a tie."""
    return 0.5 + 0.5 * ((reward(a) > reward(b)) - (reward(a) < reward(b)))


def trl_rewards(prompts, completions, **_) -> list[float]:
    """TRL's reward function: the same reward, one per completion."""
    return [reward(c) for c in completions]


def build(out: Path, prompts: int) -> tuple[str, str, int]:
    """The model of bench/selfplay_iteration.py and a prompts file with its first `prompts` task prompts."""
    sys.path.insert(0, str(BENCH))
    from selfplay_iteration import build as build_iteration

    model, path, parameters = build_iteration(out)
    rows = Path(path).read_text().splitlines()[:prompts]
    Path(path).write_text("".join(row + "\n" for row in rows))
    return model, path, parameters


def run_prefkit(args, per_step: bool) -> dict:
    """One self-play iteration of all the prompts, or (per_step) one iteration per batch of prompts."""
    sys.path.insert(0, str(BENCH))
    from selfplay_iteration import timed

    from prefkit.modeling import probe
    from prefkit.selfplay import loop
    from prefkit.selfplay.config import SelfPlayConfig
    from prefkit.train.config import load_config

    steps = args.prompts // args.batch
    iterations, per_iteration = (steps, args.batch) if per_step else (1, args.prompts)
    settings = dict(model=args.model_dir, output_dir=args.out, prompts=args.prompts_file,
                    judge="selfplay_vs_trl:judge", loss="dpo", loss_params={"beta": 0.1}, pairs="best_worst",
                    winrates="sampled", iterations=iterations, prompts_per_iteration=per_iteration,
                    samples_per_prompt=2, max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, epochs=1,
                    batch_size=args.batch, learning_rate=1e-5, weight_decay=0.0, max_grad_norm=1.0,
                    schedule="linear", eval_limit=1, eval_samples=1, kl_samples=1, seed=0, overwrite=True,
                    progress=False)
    config = load_config(None, settings, [], kind=SelfPlayConfig)
    seen = []
    real_fit = loop.fit_iteration

    def fit_iteration(*a, **k):  # keep the loss of every optimizer step the loop really took
        losses = real_fit(*a, **k)
        seen.extend(losses)
        return losses
    loop.fit_iteration = fit_iteration
    probes, probes_cpu = defaultdict(float), defaultdict(float)
    real_probe = probe._probe

    def timed_probe(model):  # the engine's once-per-model probe, inside the first score (or fit) that meets it
        with clocked("probe", probes, probes_cpu):
            return real_probe(model)
    probe._probe = timed_probe
    walls, cpus = (defaultdict(lambda: defaultdict(float)) for _ in range(2))
    timed(loop, walls, {"t": 0})
    timed(loop, cpus, {"t": 0}, timer=time.process_time)
    start, cpu = time.perf_counter(), time.process_time()
    loop.selfplay(config)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    stages, stages_cpu = defaultdict(float), defaultdict(float)
    for t in range(1, iterations + 1):
        for totals, times in ((stages, walls), (stages_cpu, cpus)):
            for stage, seconds in times[t].items():
                totals[stage] += seconds
    tokens = sum(len(s["ids"]) for t in range(1, iterations + 1) for group in json.loads(
        (Path(args.out) / f"iter-{t:04d}" / "samples.json").read_text())["samples"] for s in group)
    return {"total_s": total, "cpu_s": cpu, "stages": dict(stages), "stages_cpu": dict(stages_cpu),
            "probe_s": probes["probe"], "probe_cpu_s": probes_cpu["probe"], "tokens": tokens,
            "sequences": 2 * args.prompts, "steps": len(seen), "loss": sum(seen) / len(seen)}


def run_trl(args) -> dict:
    """TRL's OnlineDPOTrainer, its stages timed by wrapping the trainer's own methods."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    datasets.disable_caching()
    prompts = [json.loads(row)["prompt"] for row in Path(args.prompts_file).read_text().splitlines()]
    start, cpu = time.perf_counter(), time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype="float32")
    # conversational prompts: TRL renders them with the chat template, as prefkit's encode_prompt does
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    config = OnlineDPOConfig(output_dir=args.out, max_steps=args.prompts // args.batch,
                             per_device_train_batch_size=args.batch, learning_rate=1e-5, weight_decay=0.0,
                             max_grad_norm=1.0, lr_scheduler_type="linear", warmup_steps=0, beta=[0.1],
                             loss_type="sigmoid", max_new_tokens=args.max_new_tokens, temperature=1.0, top_k=0,
                             top_p=1.0, max_length=512, report_to="none", save_strategy="no",
                             logging_steps=args.prompts // args.batch, use_cpu=True, bf16=False, fp16=False,
                             dataloader_num_workers=0, gradient_checkpointing=False, seed=0)
    trainer = OnlineDPOTrainer(model=model, reward_funcs=trl_rewards, args=config, train_dataset=dataset,
                               processing_class=tokenizer)
    stages, stages_cpu, counted = defaultdict(float), defaultdict(float), {"tokens": 0}
    wrap_trl_stages(trainer, stages, stages_cpu, counted)
    with clocked("fit", stages, stages_cpu):
        trainer.train()
    for totals in (stages, stages_cpu):  # the fit is what the timed calls inside train() leave
        totals["fit"] -= totals["sample"] + totals["judge"] + totals["score"]
    return {"total_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "stages": dict(stages),
            "stages_cpu": dict(stages_cpu), "tokens": counted["tokens"], "sequences": 2 * args.prompts,
            "steps": trainer.state.global_step,
            "loss": next((log["loss"] for log in trainer.state.log_history if "loss" in log), None)}


@contextmanager
def clocked(stage: str, walls: dict, cpus: dict):
    """Add the wall and the process CPU time of the block to `stage`."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        walls[stage] += time.perf_counter() - wall
        cpus[stage] += time.process_time() - cpu


def wrap_trl_stages(trainer, walls: dict, cpus: dict, counted: dict) -> None:
    """Time the trainer's generation, reward and reference-forward calls (the rest of train() is the fit)."""
    generate, rewards, forward = trainer._generate, trainer._calculate_rewards_from_functions, trainer._forward

    def timed_generate(*a, **k):
        with clocked("sample", walls, cpus):
            out = generate(*a, **k)
        counted["tokens"] += int(out[3].sum())  # the completion mask: generated tokens up to and with EOS
        return out

    def timed_rewards(*a, **k):
        with clocked("judge", walls, cpus):
            return rewards(*a, **k)

    def timed_forward(model, *a, **k):
        if model is not trainer.ref_model:  # the policy's forward is part of the step it is differentiated in
            return forward(model, *a, **k)
        with clocked("score", walls, cpus):
            return forward(model, *a, **k)
    trainer._generate, trainer._calculate_rewards_from_functions = timed_generate, timed_rewards
    trainer._forward = timed_forward


PEERS = {"prefkit": lambda args: run_prefkit(args, per_step=False),
         "prefkit-per-step": lambda args: run_prefkit(args, per_step=True),
         "trl": run_trl}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = PEERS[args.child](args)
    result.update(peer=args.child, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(result))


def summary(results: list[dict]) -> None:
    """The per-run lines and, per peer (the median of its runs), the stage table and the ratios to the first."""
    import statistics

    peers = list(dict.fromkeys(r["peer"] for r in results))
    rows = {}
    for peer in peers:
        runs = [r for r in results if r["peer"] == peer]
        median = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
        core = lambda r: sum(r["stages"].get(s, 0.0) for s in CORE)  # noqa: E731
        rows[peer] = {**{s: median(lambda r, s=s: r["stages"].get(s, 0.0)) for s in (*CORE, "evaluate", "save")},
                      **{f"{s} cpu": median(lambda r, s=s: r["stages_cpu"].get(s, 0.0))
                         for s in (*CORE, "evaluate", "save")},
                      "core cpu": median(lambda r: sum(r["stages_cpu"].get(s, 0.0) for s in CORE)),
                      "probe": median(lambda r: r.get("probe_s", 0.0)),
                      "probe cpu": median(lambda r: r.get("probe_cpu_s", 0.0)),
                      "core": median(core), "total": median(lambda r: r["total_s"]),
                      "cpu": median(lambda r: r["cpu_s"]), "rss": median(lambda r: r["peak_rss_mb"]),
                      "tokens_per_s": median(lambda r: r["tokens"] / r["stages"]["sample"]),
                      "steps_per_s": median(lambda r: r["steps"] / core(r)), "steps": runs[0]["steps"],
                      "tokens": runs[0]["tokens"],
                      "loss": median(lambda r: float("nan") if r["loss"] is None else r["loss"])}
    print("| | " + " | ".join(peers) + " |\n|---|" + "---|" * len(peers))
    labels = {"sample": "sample (s)", "judge": "judge (s)", "score": "score (s)",
              "probe": "of which the engine's once-per-model probe (s)", "fit": "fit (s)",
              "core": "sample + judge + score + fit (s)", "evaluate": "evaluate (s)", "save": "save (s)",
              "total": "whole run (s)", "cpu": "CPU time of the whole run (s)", "tokens": "generated tokens",
              "tokens_per_s": "generated tokens/s", "steps": "optimizer steps",
              "steps_per_s": "optimizer steps/s (over sample + judge + score + fit)", "rss": "peak RSS (MB)",
              "loss": "mean DPO loss over the steps"}
    for key, label in labels.items():
        print(f"| {label} | " + " | ".join(f"{rows[p][key]:.4g}" for p in peers) + " |")
        if f"{key} cpu" in rows[peers[0]]:
            cpu = " | ".join(f"{rows[p][key + ' cpu']:.4g}" for p in peers)
            print(f"| {label.replace('(s)', 'CPU (s)')} | {cpu} |")
    for peer in peers[1:]:
        ratio = lambda key: rows[peers[0]][key] / rows[peer][key] if rows[peer][key] else float("nan")  # noqa: E731
        print(f"ratio {peers[0]}/{peer}: tokens/s {ratio('tokens_per_s'):.2f}x, steps/s {ratio('steps_per_s'):.2f}x, "
              f"core time {ratio('core'):.2f}x (CPU {ratio('core cpu'):.2f}x), whole run {ratio('total'):.2f}x "
              f"(CPU {ratio('cpu'):.2f}x), peak RSS {ratio('rss'):.2f}x; CPU time by stage: "
              + ", ".join(f"{stage} {ratio(stage + ' cpu'):.2f}x" for stage in ("sample", "score", "fit")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="4 prompts, batch 2, 8 new tokens, one repeat")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", default="prefkit,trl", help=f"of {', '.join(PEERS)}; ratios are to the first")
    parser.add_argument("--child", choices=list(PEERS))
    for name in ("--model-dir", "--prompts-file", "--out"):
        parser.add_argument(name)
    args = parser.parse_args()
    if args.smoke:
        args.prompts, args.batch, args.max_new_tokens, args.repeats = 4, 2, 8, 1
    if args.child:
        return child(args)
    if args.prompts % args.batch:
        sys.exit("--prompts must be a multiple of --batch (the same number of full steps for every peer)")

    import torch
    import transformers
    import trl

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])}
    print(f"machine: nproc={os.cpu_count()} python={sys.version.split()[0]} torch={torch.__version__} "
          f"transformers={transformers.__version__} trl={trl.__version__} threads={args.threads} "
          f"prompts={args.prompts} samples/prompt=2 max_new_tokens={args.max_new_tokens} batch={args.batch} "
          f"steps={args.prompts // args.batch}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, prompts_file, parameters = build(Path(tmp), args.prompts)
        print(f"model: {parameters / 1e6:.1f}M parameters")
        for repeat in range(args.repeats):
            for peer in args.peers.split(","):  # interleaved, so drift in the machine's load hits every peer
                load = Path("/proc/loadavg").read_text().split()[:3]
                cmd = [sys.executable, __file__, "--child", peer, "--model-dir", model_dir, "--prompts-file",
                       prompts_file, "--out", f"{tmp}/{peer}-{repeat}", "--prompts", str(args.prompts), "--batch",
                       str(args.batch), "--max-new-tokens", str(args.max_new_tokens), "--threads",
                       str(args.threads)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                if proc.returncode or not line:
                    sys.exit(f"{peer} failed:\n{proc.stderr[-4000:]}")
                result = {**json.loads(line[0][7:]), "load_before": load,
                          "load_after": Path("/proc/loadavg").read_text().split()[:3]}
                print(json.dumps(result), flush=True)
                results.append(result)
    summary(results)


if __name__ == "__main__":
    main()
