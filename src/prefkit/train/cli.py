"""`prefkit train`: common options as flags, everything else from a YAML config or `key=value` overrides."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="offline preference training of a causal LM with any loss of the catalogue",
        description="Train a causal LM on preference (or unpaired) data with any loss of `prefkit losses`. "
                    "Flags override the YAML config; `key=value` arguments override both "
                    "(e.g. loss_params.beta=0.05 learning_rate=5e-7), anywhere on the line. TRL's and transformers' "
                    "names work too (per_device_train_batch_size=4, or --per_device_train_batch_size 4). "
                    "Every key: docs/training.md (Options, Coming from TRL).")
    parser.add_argument("--config", help="YAML config (see configs/)")
    parser.add_argument("--model", help="local path or hub id of an AutoModelForCausalLM")
    parser.add_argument("--data", help="JSONL/JSON/parquet/CSV file, save_to_disk directory or hub id")
    parser.add_argument("--loss", help="loss name, or several joined by '+' for a mixture (weights via loss_weights)")
    add_run_arguments(parser, "final model")
    parser.set_defaults(run=run)


RUN_FLAGS = ("model", "data", "output_dir", "max_steps", "resume", "overwrite")  # flags that become config keys


def add_run_arguments(parser, final: str, steps: bool = True) -> None:
    """The flags every training command shares after --config / --model / --data, and the key=value overrides
    (`steps`: the command counts optimizer steps, so --max-steps applies)."""
    parser.add_argument("--output-dir", dest="output_dir", help=f"run directory (metrics, checkpoints, {final})")
    if steps:
        parser.add_argument("--max-steps", dest="max_steps", type=int, help="optimizer steps (default: epochs of data)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in the output directory from its last checkpoint (same settings only)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="remove an earlier run in the output directory and start afresh")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="any config key, TRL's names too; anywhere on the line, or as --key value")


def run(args: argparse.Namespace) -> int:
    from prefkit.train.config import load_config
    from prefkit.train.offline import fit

    flags = {k: getattr(args, k) for k in RUN_FLAGS}
    if args.loss:
        flags["loss"] = args.loss.split("+") if "+" in args.loss else args.loss
    config = load_config(args.config, flags, args.overrides)
    final = fit(config)
    print(f"final model: {final}")
    publish(config, final)
    return 0


def publish(config, final) -> None:
    """`push_to_hub`: upload the final model, from the main process only."""
    import os

    from prefkit.train.model_card import push_to_hub

    if config.push_to_hub and int(os.environ.get("RANK", "0")) == 0:
        print(f"pushed to https://huggingface.co/{push_to_hub(config, final)}")
