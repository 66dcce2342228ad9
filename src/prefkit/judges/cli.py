"""`prefkit judge train`: train a judge (a Bradley-Terry reward model or a general preference model) from a YAML
config, flags and `key=value` overrides, as `prefkit train` reads its own."""

from __future__ import annotations

import argparse

from prefkit.train.cli import RUN_FLAGS, add_run_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("judge",
                                   help="train a judge: Bradley-Terry reward model or general preference model",
                                   description="Judges users train (docs/judges.md).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train", help="train a judge on preference pairs",
        description="Train a Bradley-Terry reward model (kind: bt) or a general preference model (kind: gpm) on "
                    "preference data. Flags override the YAML config; `key=value` arguments override both "
                    "(e.g. kind=gpm embedding_dim=8 learning_rate=1e-4).")
    train.add_argument("--config", help="YAML config (see configs/judge_bt.yaml, configs/judge_gpm.yaml)")
    train.add_argument("--model", help="local path or hub id of a transformers backbone (causal LM or encoder)")
    train.add_argument("--data", help="preference pairs: JSONL/JSON/parquet/CSV file, save_to_disk directory or hub id")
    add_run_arguments(train, "final judge")
    train.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prefkit.judges.train_config import JudgeTrainConfig
    from prefkit.judges.training import fit
    from prefkit.train.config import load_config

    flags = {k: getattr(args, k) for k in RUN_FLAGS}
    config = load_config(args.config, flags, args.overrides, kind=JudgeTrainConfig)
    final = fit(config)
    kind = "gpm" if config.kind == "gpm" else "reward"
    print(f"final judge: {final} (load it as {kind}:{final})")
    return 0
