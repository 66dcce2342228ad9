"""The `prefkit` command. Each subcommand lives in its own module with `add_parser(subparsers)`; this file
only wires them together, imports them lazily (so `prefkit game` never imports torch), and turns a
PrefkitError into one clear line instead of a traceback (unless --debug)."""

from __future__ import annotations

import argparse
import importlib
import sys

from prefkit.errors import PrefkitError

# Subcommand modules, in the order `prefkit --help` lists them.
COMMAND_MODULES = (
    "prefkit.losses.cli",
    "prefkit.train.cli",
    "prefkit.train.selfplay_cli",
    "prefkit.data.cli",
    "prefkit.eval.cli",
    "prefkit.demo",
    "prefkit.tasks.cli",
    "prefkit.games.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefkit", description="Preference optimization for language models.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
        return 2


if __name__ == "__main__":
    sys.exit(main())
