"""The `prefkit` command. Each subcommand lives in its own module with `add_parser(subparsers)`; this file
only wires them together, imports them lazily (so `prefkit game` never imports torch), and turns a
PrefkitError into one clear line instead of a traceback (unless --debug)."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from prefkit.errors import PrefkitError, RunStopped

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
