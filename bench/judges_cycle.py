"""Learned judges against the bundled task's oracle on its cyclic prompts: can a Bradley-Terry reward model and a
general preference model (GPM), trained with `prefkit judge train` on oracle-labelled pairs, reproduce the
oracle's intransitive K x K matrices over the canonical answers?

Data: every pair of canonical answers on the cyclic train prompts (and on a few transitive ones), labelled by the
oracle: soft labels (`margin` = logit P(chosen ≻ rejected)) or, with --labels sampled, hard labels drawn from P
(each pair --repeats times). Both judges train from the same backbone: the task's tiny Llama, untrained or
(--backbone-steps) pre-trained on its SFT data as the demo's reference policy is. Scored on the cyclic *eval*
prompts (option orders never seen in training): direction accuracy over the pairs the oracle does not call a tie,
and the max absolute error of P, beside the best a transitive order can do on each game.

    PYTHONPATH=src python bench/judges_cycle.py --out runs/bench_judges
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from prefkit.judges import load_judge, preference_matrix
from prefkit.judges.train_config import JudgeTrainConfig
from prefkit.judges.training import fit
from prefkit.io import write_jsonl
from prefkit.tasks import SyntheticTask, as_row, reference_model
from prefkit.train.config import load_config


def pairs(task: SyntheticTask, prompts, labels: str, repeats: int, rng, outside: dict | None = None) -> list[dict]:
    """Oracle-labelled pairs: every pair of a prompt's canonical answers, and each canonical answer against each of
    the prompt's `outside` responses (non-canonical ones, which the oracle ranks below every canonical answer)."""
    rows = []
    for prompt in prompts:
        canonical = task.canonical(prompt)
        others = (outside or {}).get(prompt, [])
        for a, b in [*itertools.combinations(canonical, 2), *itertools.product(canonical, others)]:
            p = task.preference(prompt, a, b)
            if p == 0.5:
                continue
            if labels == "soft":
                rows.append({**as_row(prompt, chosen=a, rejected=b, conversational=True),
                             "margin": float(np.log(p / (1 - p)))})
                continue
            for _ in range(repeats):
                chosen, rejected = (a, b) if rng.random() < p else (b, a)
                rows.append(as_row(prompt, chosen=chosen, rejected=rejected, conversational=True))
    return rows


def best_transitive(P: np.ndarray) -> float:
    """The highest direction accuracy any strict order of the answers reaches against P (non-tie pairs)."""
    k = len(P)
    i, j = np.triu_indices(k, 1)
    decided = P[i, j] != 0.5
    best = 0.0
    for order in itertools.permutations(range(k)):
        rank = np.argsort(order)  # rank[x] = position of answer x; earlier beats later
        best = max(best, float(np.mean((rank[i] < rank[j])[decided] == (P[i, j] > 0.5)[decided])))
    return best


def score(judge, task: SyntheticTask, prompts) -> dict:
    right, total, worst, per_prompt = 0, 0, 0.0, []
    for prompt in prompts:
        answers = task.canonical(prompt)
        learned = preference_matrix(judge, [[{"role": "user", "content": prompt}]],
                                    [[[{"role": "assistant", "content": a}] for a in answers]])[0]
        oracle = task.preference_matrix(prompt)
        i, j = np.triu_indices(len(answers), 1)
        decided = oracle[i, j] != 0.5
        hits = (learned[i, j] > 0.5)[decided] == (oracle[i, j] > 0.5)[decided]
        right, total = right + int(hits.sum()), total + int(decided.sum())
        error = float(np.abs(learned - oracle).max())
        worst = max(worst, error)
        per_prompt.append({"prompt": prompt, "direction_accuracy": float(hits.mean()), "max_abs_error": error,
                           "best_transitive": best_transitive(oracle)})
    return {"direction_accuracy": right / total, "pairs": total, "max_abs_error": worst, "per_prompt": per_prompt}


def policy_outside(task: SyntheticTask, policy: str, prompts: list, count: int, seed: int) -> dict[str, list[str]]:
    """Up to `count` distinct non-canonical responses per prompt, drawn from what `policy` samples (64 at
    temperature 1 and 64 at 1.5): the malformed answers a self-play run meets, which canonical pairs never show
    a judge. Empty responses and ones holding a special token's text are left out (not valid data rows)."""
    from prefkit.modeling.load import load_model, load_tokenizer
    from prefkit.tasks import sample_responses

    model, tokenizer, rng = load_model(policy), load_tokenizer(policy), np.random.default_rng(seed)
    drawn = [sample_responses(model, tokenizer, prompts, 64, seed=seed, temperature=t) for t in (1.0, 1.5)]
    control = set(tokenizer.get_added_vocab()) | set(tokenizer.all_special_tokens)  # role markers too
    found = {}
    for prompt, *groups in zip(prompts, *drawn):
        texts = sorted({text for group in groups for text in group if text.strip() and text not in
                        task.canonical(prompt) and not any(s in text for s in control)})
        found[prompt] = [texts[i] for i in sorted(rng.permutation(len(texts))[:count])]
    return found


def build(out: Path, task: SyntheticTask, *, labels: str = "soft", repeats: int = 10, transitive_prompts: int = 8,
          backbone_steps: int = 0, seed: int = 0, policy: str | None = None, outside: int = 0,
          start: str | None = None) -> tuple[Path, int]:
    """The judges' backbone (out/backbone), their training pairs (out/pairs.jsonl) and eval pairs
    (out/pairs_eval.jsonl); returns (backbone, number of training rows). With `policy` and `outside`, the
    training pairs also hold each canonical answer against up to `outside` of the policy's non-canonical
    responses per prompt (policy_outside). `start`: a model to start the judges from instead (e.g. the task's
    exported reference policy, as reward models usually start from the SFT model)."""
    rng, backbone = np.random.default_rng(seed), out / "backbone"
    if start:
        from prefkit.modeling.load import load_model

        model = load_model(start)
    else:
        model = reference_model(task, seed=seed, steps=backbone_steps)[0] if backbone_steps else task.model(seed=seed)
    model.save_pretrained(backbone)
    task.tokenizer().save_pretrained(backbone)
    transitive = task.prompts("transitive", "train")[::max(1, 576 // max(1, transitive_prompts))]
    prompts = task.prompts("cyclic", "train") + transitive[:transitive_prompts]
    others = policy_outside(task, policy, prompts, outside, seed) if policy and outside else None
    rows = pairs(task, prompts, labels, repeats, rng, others)
    write_jsonl(rows, out / "pairs.jsonl")
    write_jsonl(pairs(task, task.prompts("cyclic", "eval"), "soft", 1, rng), out / "pairs_eval.jsonl")
    return backbone, len(rows)


def train_judge(kind: str, backbone: Path, out: Path, *, steps: int = 400, seed: int = 0,
                overrides: list[str] = ()) -> tuple[Path, float]:
    """`prefkit judge train` of one kind on build()'s pairs into out/KIND; returns (final judge, seconds)."""
    flags = dict(kind=kind, model=str(backbone), data=str(out / "pairs.jsonl"), eval_data=str(out / "pairs_eval.jsonl"),
                 output_dir=str(out / kind), max_steps=steps, batch_size=64, learning_rate=1e-3,
                 schedule="constant", logging_steps=50, eval_steps=steps, seed=seed, overwrite=True, progress=False)
    config = load_config(None, flags, list(overrides), kind=JudgeTrainConfig)
    start = time.perf_counter()
    final = fit(config)
    return final, time.perf_counter() - start


SPECS = {"bt": "reward", "gpm": "gpm"}  # kind -> the judge spec it loads as


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_judges")
    parser.add_argument("--labels", choices=("soft", "sampled"), default="soft")
    parser.add_argument("--repeats", type=int, default=10, help="sampled labels per pair (--labels sampled)")
    parser.add_argument("--transitive-prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--backbone-steps", type=int, default=0,
                        help="pre-train the backbone this many steps on the task's SFT data first (the demo's "
                             "reference policy; 0: the untrained tiny Llama)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more `prefkit judge train` keys")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, task = Path(args.out), SyntheticTask()
    backbone, rows = build(out, task, labels=args.labels, repeats=args.repeats,
                           transitive_prompts=args.transitive_prompts, backbone_steps=args.backbone_steps,
                           seed=args.seed)
    results = {"command": " ".join(sys.argv), "rows": rows, "labels": args.labels, "torch": torch.__version__,
               "python": platform.python_version(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    for kind, spec in SPECS.items():
        final, seconds = train_judge(kind, backbone, out, steps=args.steps, seed=args.seed, overrides=args.overrides)
        judge = load_judge(f"{spec}:{final}", device="cpu")
        results[kind] = {"train_seconds": round(seconds, 1), **score(judge, task, task.prompts("cyclic", "eval"))}
        print(f"{kind}: direction accuracy {results[kind]['direction_accuracy']:.3f} over "
              f"{results[kind]['pairs']} pairs, max |P - oracle| {results[kind]['max_abs_error']:.3f} "
              f"({seconds:.0f} s training)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
