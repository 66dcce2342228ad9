"""Memory of LoRA self-play against full fine-tuning, on the bundled task's model and a bigger random Llama; and of
full fine-tuning on 2 processes, data-parallel against FSDP2.

    python bench/selfplay_lora_memory.py --out runs/bench-lora
    python bench/selfplay_lora_memory.py --out runs/bench-lora --sizes task --iterations 3
    python bench/selfplay_lora_memory.py --out runs/bench-fsdp --sizes 84m --modes ddp fsdp

Each (model, mode) pair runs in a fresh process: `--iterations` MPO iterations on the task's prompts, judged by its
oracle (sampled win rates, 4 prompts x 4 samples, every pair with the judge's soft label: 3 optimizer steps of 8
pairs per iteration), the magnet refreshed every iteration (so π_0 and the magnet are both held: a frozen copy each in
full fine-tuning, the base with the adapter off and a second adapter slot with LoRA). Measured per run:

- tensors alive right after each optimizer step (found by the garbage collector: the weights of every model
  copy, the AdamW state, plus the gradients of the optimised parameters), the largest over the run: the part of
  memory that the model copies and the optimizer decide, with neither activations nor the allocator's slack;
- peak RSS of the process (`ru_maxrss`), and its RSS after importing torch and transformers, before any model;
- the bytes of one iteration's saved policy (`iter-0001/policy`);
- on a GPU also `torch.cuda.max_memory_allocated` (the loop runs on the accelerator's device).

`--sizes`: `task` (the task's tiny Llama, the `initial` fixture of the tests) and `84m` (hidden 1024, 8 layers,
8 heads of 128, the task's vocabulary: 84M parameters). `--modes`: `full` and `lora` run in one process; `ddp` and
`fsdp` fully fine-tune on 2 processes (torch.distributed.run, gloo), `fsdp` with the fit's policy sharded by
accelerate's FSDP2 calls made by hand (tests/fsdp_by_hand.py: accelerate shards on GPUs only), and report the
larger of the two processes' figures (each holds the same amount). Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
from pathlib import Path

SIZES = {"task": dict(), "84m": dict(hidden_size=1024, layers=8, heads=8)}
SETTINGS = dict(prompts="task", judge="task", loss="mpo", loss_params={"eta": 2.0, "alpha": 0.2}, refresh_every=1,
                winrates="sampled", pairs="all", prompts_per_iteration=4, samples_per_prompt=4,
                max_new_tokens=8, eval_limit=4, kl_samples=1, batch_size=8, epochs=1, learning_rate=1e-4,
                keep_policies=None, progress=False)
LORA = {"r": 16, "alpha": 32}  # prefkit's defaults: every linear layer of the decoder (target_modules: all-linear)
PROCESSES = {"full": 1, "lora": 1, "ddp": 2, "fsdp": 2}


def build(out: Path, size: str) -> str:
    from prefkit.tasks import SyntheticTask

    path = out / f"model-{size}"
    if not (path / "config.json").is_file():
        task = SyntheticTask()
        task.model(seed=0, **SIZES[size]).save_pretrained(path)
        task.tokenizer().save_pretrained(path)
    return str(path)


def live_tensor_bytes(extra=()) -> int:
    """Bytes of the distinct storages of every tensor the garbage collector sees, and of `extra` tensors."""
    import torch

    from torch.distributed.tensor import DTensor

    # first free what only reference cycles hold: among them the list of every object that the previous call made,
    # which holds that call's own frame and so would keep the previous step's gradients alive another step
    gc.collect()
    storages = {}
    for item in [*gc.get_objects(), *extra]:
        if isinstance(item, DTensor):  # a sharded weight (or its gradient): the shard this process holds
            item = item.to_local()
        if isinstance(item, torch.Tensor) and item.device.type != "meta":
            storage = item.untyped_storage()
            storages[(storage.device.type, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def child(model: str, mode: str, out: Path, iterations: int) -> dict:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import torch

    from prefkit.selfplay.config import SelfPlayConfig
    from prefkit.selfplay.loop import selfplay
    from prefkit.train.config import load_config

    peak = {"tensors": 0}
    real_step = torch.optim.AdamW.step

    def measured_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        gradients = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        peak["tensors"] = max(peak["tensors"], live_tensor_bytes(gradients))
        return result

    torch.optim.AdamW.step = measured_step
    if mode == "fsdp":
        from accelerate import Accelerator

        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from fsdp_by_hand import sharding_prepare

        Accelerator.prepare = sharding_prepare()
    values = {**SETTINGS, "model": model, "output_dir": str(out), "iterations": iterations, "overwrite": True,
              **({"lora": LORA} if mode == "lora" else {})}
    config = load_config(None, values=values, kind=SelfPlayConfig)
    selfplay(config)
    if not peak["tensors"]:
        raise SystemExit("no optimizer step ran: the judged samples gave no training pairs")
    policy = out / "iter-0001" / "policy"
    return {"mode": mode, "peak_tensors_mb": peak["tensors"] / 2 ** 20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_imports_mb": baseline / 1024,
            "policy_dir_mb": sum(f.stat().st_size for f in policy.iterdir()) / 2 ** 20,
            "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None}


def parameters(model: str) -> dict:
    from prefkit.modeling.load import load_model

    full = load_model(model)
    adapted = load_model(model, lora=LORA)
    return {"parameters": sum(p.numel() for p in full.parameters()),
            "lora_trainable": sum(p.numel() for p in adapted.parameters() if p.requires_grad)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-lora")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--modes", nargs="+", default=["full", "lora"], choices=list(PROCESSES))
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.child:
        model, mode = args.child
        print(json.dumps(child(model, mode, out / f"{Path(model).name}-{mode}", args.iterations)))
        return
    out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        model = build(out, size)
        counts = parameters(model)
        for mode in args.modes:
            launcher = [sys.executable] if PROCESSES[mode] == 1 else \
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(PROCESSES[mode])]
            done = subprocess.run([*launcher, __file__, "--out", str(out), "--iterations", str(args.iterations),
                                   "--child", model, mode], capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            ranks = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"mode"')]
            largest = {k: max(r[k] for r in ranks) if isinstance(ranks[0][k], float) else ranks[0][k]
                       for k in ranks[0]}
            print(json.dumps({"size": size, "processes": len(ranks), **counts, **largest}), flush=True)


if __name__ == "__main__":
    main()
