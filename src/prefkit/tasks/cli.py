"""`prefkit task export DIR`: the bundled task as files a trainer reads like any user's: the pre-trained tiny
reference model (Hugging Face format), and offline data sets labelled by the oracle (preferences.jsonl,
unpaired.jsonl, forget.jsonl), so that every config in configs/ runs as it is."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("task", help="the bundled synthetic preference task",
                                   description="Work with the bundled synthetic task (docs/task.md).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write the pre-trained reference model and offline data sets")
    export.add_argument("out", help="directory to write (e.g. runs/task)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--responses-per-prompt", type=int, default=4)
    export.add_argument("--steps", type=int, default=1500, help="pre-training steps of the reference")
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from prefkit.io import save_model, write_jsonl
    from prefkit.tasks import SyntheticTask, preference_rows, reference_model, unpaired_rows

    torch.set_num_threads(1)  # the tiny model runs faster on one thread than on two that wait on each other
    out = Path(args.out)
    task = SyntheticTask()
    with tqdm(total=args.steps, desc="pre-train reference", unit="step") as bar:
        model, tokenizer = reference_model(task, seed=args.seed, steps=args.steps,
                                           progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    save_model(model, tokenizer, out / "reference")
    for split, name in (("train", "preferences.jsonl"), ("eval", "preferences_eval.jsonl")):
        rows = preference_rows(task, task.prompts(split=split), args.responses_per_prompt, seed=args.seed)
        write_jsonl(rows, out / name)
        if split == "train":
            write_jsonl(unpaired_rows(rows), out / "unpaired.jsonl")
            forget = [{"prompt": r["prompt"], "completion": r["rejected"], "label": False} for r in rows]
            write_jsonl(forget, out / "forget.jsonl")
    print(f"wrote {out}/reference (model), preferences.jsonl, preferences_eval.jsonl, unpaired.jsonl, forget.jsonl")
    return 0
