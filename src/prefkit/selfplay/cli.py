"""`prefkit selfplay`: self-play Nash training from a YAML config and `key=value` overrides."""

from __future__ import annotations

import argparse

from prefkit.train.cli import add_run_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "selfplay", help="self-play Nash training (MPO, INPO, COMAL, SPPO, Nash-MD, online IPO) against a judge",
        description="Sample from the policy, judge, fit the method's loss, repeat; see docs/selfplay.md. "
                    "key=value arguments override the config (e.g. iterations=4 loss_params.alpha=0.01).")
    parser.add_argument("--config", help="YAML config (see configs/mpo.yaml, inpo.yaml, ...)")
    parser.add_argument("--model", help="local path or hub id of the initial policy (also the initial magnet)")
    add_run_arguments(parser, "final policy", steps=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prefkit.train.cli import publish
    from prefkit.train.config import load_config
    from prefkit.selfplay.loop import selfplay
    from prefkit.selfplay.config import SelfPlayConfig

    flags = {k: getattr(args, k) for k in ("model", "output_dir", "resume", "overwrite")}

    config = load_config(args.config, flags, args.overrides, kind=SelfPlayConfig)
    final = selfplay(config)
    print(f"final policy: {final}")
    publish(config, final)
    return 0
