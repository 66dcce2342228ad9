"""`prefkit data inspect DATA --model M`: the format detected, one row's tokens by role, length histograms and
the bad rows, before any training. The first thing to run when a loss sits at 0.693."""

from __future__ import annotations

import argparse
import os
import sys

# The keys of prefkit.data.tokenize.TRUNCATIONS, spelled out: importing prefkit.data here would import torch
# for every `prefkit` command (the main CLI builds all parsers), and a test keeps the two in step.
TRUNCATION_CHOICES = ("keep_start", "keep_end", "drop")


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="check and inspect preference data",
                                 description="Check and inspect preference data.")
    data.set_defaults(run=_run, data_command=None)
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")
    inspect = commands.add_parser(
        "inspect", help="show the detected format, one row's tokens by role, length histograms and bad rows",
        description="Tokenize DATA as training would and show the detected format, one row's tokens coloured "
                    "by role (prompt / completion / padding / special), prompt and completion length "
                    "histograms, and every bad row.")
    inspect.add_argument("data", help="JSONL, JSON, parquet or CSV file, save_to_disk directory, or hub id")
    inspect.add_argument("--model", required=True, help="tokenizer: a local path or a hub id")
    inspect.add_argument("--row", type=int, help="the row to show: 1-based line for JSONL, row index otherwise "
                                                 "(default: the first usable row)")
    inspect.add_argument("--max-length", type=int, default=1024, help="prompt+completion tokens (default 1024)")
    inspect.add_argument("--truncation", choices=TRUNCATION_CHOICES, default="keep_start")
    inspect.add_argument("--split", default="train", help="split of a save_to_disk directory or hub data set")
    colour = inspect.add_mutually_exclusive_group()
    colour.add_argument("--no-color", dest="color", action="store_false", default=None,
                        help="mark roles with brackets instead of ANSI colours (logs, CI)")
    colour.add_argument("--color", dest="color", action="store_true", help="ANSI colours even when piped")


def _run(args: argparse.Namespace) -> int:
    commands = {"inspect": _inspect}
    if args.data_command not in commands:
        print("usage: prefkit data inspect DATA --model M [--row N] [--max-length L] [--no-color]", file=sys.stderr)
        return 2
    return commands[args.data_command](args)


def _inspect(args: argparse.Namespace) -> int:
    from prefkit.data import view
    from prefkit.data.pipeline import describe, prepare
    from prefkit.errors import PrefkitError

    tokenizer = _load_tokenizer(args.model)
    data = prepare(args.data, tokenizer, split=args.split, max_length=args.max_length, truncation=args.truncation,
                   on_bad_rows="skip")
    color = args.color if args.color is not None else sys.stdout.isatty() and "NO_COLOR" not in os.environ
    example = data.examples[0]
    if args.row is not None:
        found = [e for e in data.examples if e.row == args.row]
        if not found:
            problems = [describe(data.source, data.unit, p) for p in data.bad_rows if p.row == args.row]
            why = ("it is a bad row: " + "; ".join(problems)) if problems else \
                f"no such {data.unit}, or it was dropped as too long (kept: {len(data.examples)} rows)"
            raise PrefkitError(f"{data.source} {data.unit} {args.row} cannot be shown: {why}")
        example = found[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lines = view.summary(data, tokenizer)
    lines += ["", view.legend(color), f"{data.unit} {example.row}:"]
    lines += view.show_example(example, tokenizer, pad, color)
    lines += [""] + view.length_histograms(data)
    print("\n".join(lines))
    return 0


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from prefkit.errors import PrefkitError

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise PrefkitError(f"cannot load a tokenizer from {name!r}: {error}") from None
