"""`prefkit selfplay`: self-play Nash training from a YAML config and `key=value` overrides."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "selfplay", help="self-play Nash training (MPO, INPO, COMAL, SPPO, Nash-MD, online IPO) against a judge",
        description="Sample from the policy, judge, fit the method's loss, repeat; see docs/selfplay.md. "
                    "key=value arguments override the config (e.g. iterations=4 loss_params.alpha=0.01).")
    parser.add_argument("--config", help="YAML config (see configs/mpo.yaml, inpo.yaml, ...)")
    parser.add_argument("--model", help="local path or hub id of the initial policy (also the initial magnet)")
    parser.add_argument("--output-dir", dest="output_dir", help="run directory")
    parser.add_argument("--resume", action="store_true", default=None, 
                        help="continue the run in the output directory (same settings only)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="remove an earlier run in the output directory and start afresh")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="any config key, TRL's names too; anywhere on the line, or as --key value")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prefkit.train.config import load_config
    from prefkit.selfplay.loop import selfplay
    from prefkit.selfplay.config import SelfPlayConfig

    flags = {k: getattr(args, k) for k in ("model", "output_dir", "resume", "overwrite")}
    from prefkit.train.cli import publish

    config = load_config(args.config, flags, args.overrides, kind=SelfPlayConfig)
    final = selfplay(config)
    print(f"final policy: {final}")
    publish(config, final)
    return 0
