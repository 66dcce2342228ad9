"""One self-play iteration broken down into its stages, sampling with transformers (`generator: hf`) or vLLM.

    python bench/selfplay_iteration.py --generator hf --out runs/bench-iteration
    python bench/selfplay_iteration.py --generator vllm --out runs/bench-iteration
    python bench/selfplay_iteration.py --generator hf --out runs/bench-iteration eval_limit=4 kl_samples=1
    accelerate launch --multi_gpu --num_processes 2 bench/selfplay_iteration.py --out runs/bench-iteration batch_size=4

On several processes (`accelerate launch`, gloo on CPU) each one samples, judges and scores its share of the
prompts and takes its slice of every global batch (so `batch_size=4` on 2 processes is the global batch 8 of one
process); the main process reports, its stage times being wall times that include waiting for the others.

A randomly initialised Llama of 53M parameters (hidden 1024, 5 layers, 8 heads of 128, the task's 384-token
vocabulary) answers 16 prompts x 4 samples per iteration; untrained, it rarely says EOS, so nearly every answer is
`max_new_tokens` = 64 tokens long (`--hidden` / `--layers` make it smaller or larger). The judge is a cheap Python
function (the judge's own cost is the user's). `--iterations` run (2 by default) and the last is reported (from the
second on, the steady state: for vLLM it includes pushing the new weights), stage by stage: sample, judge, score,
fit, evaluate (π_t's answers to the eval prompts and their win rates, the KL estimates' fresh samples, entropy),
save; and the engine's start. Trailing KEY=VALUE arguments override the self-play settings. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

STAGES = {"sample": ("_samples",), "judge": ("_targets",), "score": ("_score",), "fit": ("fit_iteration",),
          "evaluate": ("_measure",),  # the refresh decision, π_t's eval answers, their win rates, KL, entropy
          "save": ("_save_model", "save_model", "save_policy"), "engine start": ("make_generator",)}


def judge(prompt: str, a: str, b: str) -> float:
    """Prefers the answer with more distinct characters: cheap, deterministic, and not constant."""
    return 0.5 + 0.4 * ((len(set(a)) > len(set(b))) - (len(set(a)) < len(set(b))))


def build(out: Path, hidden: int, layers: int) -> tuple[str, str, int]:
    """The model directory, the prompts file and the parameter count."""
    from prefkit.modeling.tiny import tiny_llama
    from prefkit.tasks import SyntheticTask

    task = SyntheticTask()
    tokenizer = task.tokenizer()
    model = tiny_llama(len(tokenizer), hidden_size=hidden, layers=layers, heads=8, max_positions=256,
                       tokenizer=tokenizer)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in task.prompts(split="train")[:64]))
    return str(out / "model"), str(prompts), sum(p.numel() for p in model.parameters())


def timed(module, times: dict, clock: dict, timer=time.perf_counter) -> None:
    """Wrap the stage functions the loop calls by name, adding their wall time (or `timer`'s: time.process_time
    for CPU time) to the current iteration's."""
    for stage, names in STAGES.items():
        for name in names:
            if not hasattr(module, name):  # a stage's function under another version's name (save_model)
                continue
            real = getattr(module, name)

            def wrapper(*args, _real=real, _stage=stage, **kwargs):
                start = timer()
                try:
                    return _real(*args, **kwargs)
                finally:
                    times[clock["t"]][_stage] += timer() - start
            setattr(module, name, wrapper)
    real_iteration = module._iteration

    def iteration(run, t, stop):
        clock["t"] = t
        start = timer()
        try:
            return real_iteration(run, t, stop)
        finally:
            times[t]["iteration"] = timer() - start
            clock["t"] = 0
    module._iteration = iteration


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--out", default="runs/bench-iteration")
    parser.add_argument("--iterations", type=int, default=2, help="run this many; the last one is reported")
    parser.add_argument("--hidden", type=int, default=1024, help="the model's hidden size (8 heads)")
    parser.add_argument("--layers", type=int, default=5, help="the model's layers")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE self-play settings")
    args = parser.parse_args(argv)

    import accelerate
    import torch
    import transformers
    from accelerate import PartialState

    from prefkit.selfplay import loop
    from prefkit.train.config import load_config
    from prefkit.selfplay.config import SelfPlayConfig

    # on CPU, several processes go multi-CPU (gloo) only when told, as prefkit.train.engine.make_accelerator does
    state = PartialState(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    processes = state.num_processes
    out = Path(args.out) / f"{args.generator}-{processes}"
    if state.is_main_process:  # one process writes the model; the others read it
        _, _, parameters = build(out, args.hidden, args.layers)
    state.wait_for_everyone()
    model, prompts = str(out / "model"), str(out / "prompts.jsonl")
    sys.path.insert(0, str(Path(__file__).parent))
    settings = dict(model=model, output_dir=str(out / "run"), prompts=prompts, judge="selfplay_iteration:judge",
                    iterations=args.iterations, prompts_per_iteration=16, samples_per_prompt=4, max_new_tokens=64,
                    epochs=1, batch_size=8, learning_rate=1e-5, eval_limit=16, kl_samples=4, loss="mpo", overwrite=True,
                    winrates="sampled", progress=False, generator=args.generator)
    overrides = [f"vllm={json.dumps({'max_model_len': 256, 'kv_cache_memory_bytes': 1 << 30})}", *args.overrides]
    config = load_config(None, settings, overrides, kind=SelfPlayConfig)
    times, clock = defaultdict(lambda: defaultdict(float)), {"t": 0}
    timed(loop, times, clock)
    start = time.perf_counter()
    loop.selfplay(config)
    if not state.is_main_process:
        return
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "accelerate": accelerate.__version__}
    if args.generator == "vllm":
        import vllm
        versions["vllm"] = vllm.__version__
    last = args.iterations
    samples = json.loads((out / "run" / f"iter-{last:04d}" / "samples.json").read_text())["samples"]
    lengths = [len(s["ids"]) for group in samples for s in group]
    print(json.dumps({"generator": args.generator, "processes": processes, "parameters": parameters,
                      "overrides": args.overrides,
                      "answer_tokens_mean": sum(lengths) / len(lengths), "answers": len(lengths),
                      "engine_start_s": round(times[0]["engine start"], 2),
                      "total_s": round(time.perf_counter() - start, 1),
                      f"iteration_{last}_s": {k: round(v, 2) for k, v in times[last].items()},
                      "sample_tokens_per_s": round(sum(lengths) / times[last]["sample"], 1), **versions}))


if __name__ == "__main__":  # vLLM's engine may spawn worker processes, which re-import this file
    main()
