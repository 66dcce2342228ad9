"""`prefkit eval --model M [--reference R] [--data D] [--judge task|module:attr] [--task] [--out DIR]`:
every evaluation the inputs allow (prefkit.eval.evaluate_model), written as DIR/eval.json, PNG figures and
DIR/report.md + DIR/report.html (self-contained). See docs/eval.md."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a model: ranking accuracy, win rate, entropy, exact gaps, gradient entanglement",
        description="Evaluate a trained model and write eval.json, figures and a report (docs/eval.md).")
    parser.add_argument("--model", required=True, help="model directory or hub id (its tokenizer is used for all)")
    parser.add_argument("--reference", help="reference model (e.g. the SFT model) for R*, flips, margins, win rate")
    parser.add_argument("--data", help="preference pairs (JSONL, parquet, ...) for ranking and entanglement")
    parser.add_argument("--split", default="train",
                        help="split of --data for a hub id or save_to_disk DatasetDict (default: train)")
    parser.add_argument("--judge", help="'task' (the bundled task's oracle) or module:attribute")
    parser.add_argument("--task", action="store_true",
                        help="the bundled synthetic task: exact duality gaps (with --reference, the exact win "
                             "rate), and its eval prompts for sampling")
    parser.add_argument("--prompts", help="a text file with one prompt per line (default: the task's eval prompts, "
                                          "else the data's prompts)")
    parser.add_argument("--out", default="eval", help="output directory (default: ./eval)")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beta", type=float, default=0.1, help="β of the implicit reward and of R* (default 0.1)")
    parser.add_argument("--epsilon", type=float, default=0.01, help="α = 1 − ε in R* (default 0.01)")
    parser.add_argument("--max-pairs", type=int, default=512, help="pairs evaluated from --data (default 512)")
    parser.add_argument("--max-prompts", type=int, default=128, help="prompts sampled on (default 128)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--ci", default="wilson", help="win-rate interval: wilson, normal or bootstrap")
    parser.add_argument("--grad-params", default="head", help="entanglement parameters: head or last_layers")
    parser.add_argument("--grad-layers", type=int, default=1, help="k for --grad-params last_layers")
    parser.add_argument("--grad-pairs", type=int, default=64, help="pairs for the entanglement diagnostic")
    parser.set_defaults(run=_run)


def _prompts(path: str | None) -> list[str] | None:
    if path is None:
        return None
    from prefkit.errors import PrefkitError
    try:
        prompts = [line.rstrip("\n") for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as error:
        raise PrefkitError(f"--prompts {path}: {error.strerror or error}") from None
    if not prompts:
        raise PrefkitError(f"--prompts {path}: no prompts in the file")
    return prompts


def _run(args: argparse.Namespace) -> int:
    import torch

    from prefkit.eval.evaluate import evaluate_model
    from prefkit.eval.plots import plot_results
    from prefkit.eval.report import render_report
    from prefkit.eval.sections import report_sections
    from prefkit.judges import load_judge
    from prefkit.io import write_json
    from prefkit.modeling.load import load_model, load_tokenizer

    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model).eval()
    reference = load_model(args.reference).eval() if args.reference else None
    task = None
    if args.task or args.judge == "task":
        from prefkit.tasks import SyntheticTask
        task = SyntheticTask()
    judge = load_judge(args.judge) if args.judge else None
    results = evaluate_model(
        model, tokenizer, data=args.data, split=args.split, reference=reference, judge=judge, task=task if args.task else None,
        prompts=_prompts(args.prompts), samples=args.samples, seed=args.seed, beta=args.beta, epsilon=args.epsilon,
        max_pairs=args.max_pairs, max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, ci=args.ci, grad_params=args.grad_params, grad_layers=args.grad_layers,
        grad_pairs=args.grad_pairs)
    results["inputs"] = {"model": args.model, "reference": args.reference, "data": args.data, "split": args.split,
                         "judge": args.judge, "task": args.task, "prompts": args.prompts}
    out = Path(args.out)
    write_json(out / "eval.json", results, indent=1)
    figures = plot_results(results, out)
    header = "\n".join(f"- {k}: `{v}`" for k, v in results["inputs"].items() if v not in (None, False))
    md, page = render_report(f"prefkit eval: {args.model}", report_sections(results, figures, header), out)
    print(_summary(results))
    print(f"wrote {out / 'eval.json'}, {md}, {page} and {len(figures)} figures")
    return 0


def _summary(results: dict) -> str:
    """A few headline numbers for the terminal."""
    s, lines = results["sections"], []
    if "ranking" in s:
        lines.append(f"ranking accuracy R={s['ranking']['ranking_accuracy']:.3f} "
                     f"R̃={s['ranking']['ranking_accuracy_normalised']:.3f}"
                     + (f" R*={s['ranking']['idealised_ranking_accuracy']:.3f}"
                        if "idealised_ranking_accuracy" in s["ranking"] else ""))
    if "win_rate" in s:
        w = s["win_rate"]
        lines.append(f"win rate {w['win_rate']:.3f} [{w['ci_low']:.3f}, {w['ci_high']:.3f}]")
    if "generation" in s:
        g = s["generation"]["model"]
        lines.append(f"token entropy {g['token_entropy']:.3f} nats, mean length {g['length']['mean']:.2f}")
    if "exact_gap" in s:
        lines.append(f"mean exact gap {s['exact_gap']['model']['mean_gap']:.4f}")
    if "exact_win_rate" in s:
        lines.append(f"exact win rate {s['exact_win_rate']['win_rate']:.3f} against the reference")
    if "entanglement" in s:
        e = s["entanglement"]
        lines.append(f"gradient cosine median {e['cosine']['q50']:.3f}, entangled {e['entangled']:.3f}")
    return "\n".join(lines)
