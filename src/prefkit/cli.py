"""The `prefkit` command. Each subcommand lives in its own module with `add_parser(subparsers)`; this file
only wires them together, imports only the module of the command being run (so `prefkit --help` and
`prefkit game` never import torch), and turns a PrefkitError into one clear line instead of a traceback
(unless --debug)."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from prefkit import __version__
from prefkit.errors import PrefkitError, RunStopped

# name -> (the module whose add_parser builds the command, the line `prefkit --help` shows for it), in the order
# `prefkit --help` lists them. The lines are written here as well as in each module so that listing the commands
# imports none of the modules: several import torch or scipy through their packages, which takes seconds.
# tests/test_cli_startup.py checks that each line is the one its module registers.
COMMANDS = {
    "losses": ("prefkit.losses.cli", "list the loss catalogue, or describe one loss"),
    "train": ("prefkit.train.cli", "offline preference training of a causal LM with any loss of the catalogue"),
    "selfplay": ("prefkit.selfplay.cli",
                 "self-play Nash training (MPO, INPO, COMAL, SPPO, Nash-MD, online IPO) against a judge"),
    "data": ("prefkit.data.cli", "check and inspect preference data"),
    "judge": ("prefkit.judges.cli", "train a judge: Bradley-Terry reward model or general preference model"),
    "eval": ("prefkit.eval.cli",
             "evaluate a model: ranking accuracy, win rate, entropy, exact gaps, gradient entanglement"),
    "demo": ("prefkit.demo", "every method on the bundled task, exactly evaluated (CPU, minutes)"),
    "task": ("prefkit.tasks.cli", "the bundled synthetic preference task"),
    "game": ("prefkit.games.cli", "exact preference-game lab: what each self-play method converges to"),
}


def command_in(argv: list[str]) -> str | None:
    """The subcommand that argv names, or None. The top-level options are flags that take no value, so the
    command is the first word that is not an option, as argparse itself reads it."""
    word = next((w for w in argv if not w.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed, and `command` (if any) built in full by its own module: the other
    commands are placeholders carrying only their help line, so that only the module being run is imported."""
    parser = argparse.ArgumentParser(prog="prefkit", description="Preference optimization for language models.")
    parser.add_argument("--version", action="version", version=f"prefkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def overrides_in(words: list[str]) -> list[str] | None:
    """Words argparse left over, as `key=value` overrides: `key=value` anywhere on the line, and TRL's style
    `--key value`, `--key=value` and `--flag` (true); None if a word is neither."""
    out, i = [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and len(word) > 2:
            key, sep, value = word[2:].partition("=")
            if not sep:
                has_value = i + 1 < len(words) and not words[i + 1].startswith("--")
                value, i = (words[i + 1], i + 1) if has_value else ("true", i)
            out.append(f"{key}={value}")
        elif "=" in word and not word.startswith("-"):
            out.append(word)
        else:
            return None
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(command_in(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value words after a flag, which argparse's positional no longer takes
        more = overrides_in(extra) if hasattr(args, "overrides") else None
        if more is None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *more]
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # `prefkit losses | head` is not an error
        sys.stderr.close()
        return 0
    except PrefkitError as error:
        if args.debug:
            raise
        print(f"prefkit: error: {error}", file=sys.stderr)
        if isinstance(error, RunStopped) and error.resumable:
            print(f"prefkit: to continue: {resume_command(sys.argv if argv is None else ['prefkit', *argv])}",
                  file=sys.stderr)
        return error.exit_code
    except OSError as error:  # a full disk, a file that cannot be written: the system's words, one line
        if args.debug:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"prefkit: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1


def resume_command(argv: list[str]) -> str:
    """The command line that continues a stopped run: the same one, with --resume and without --overwrite."""
    words = ["prefkit", *argv[1:]] if argv else ["prefkit"]
    words = [w for w in words if w != "--overwrite" and not w.startswith("overwrite=")]
    if "--resume" not in words:
        words.append("--resume")
    return " ".join(shlex.quote(w) for w in words)


if __name__ == "__main__":
    sys.exit(main())
