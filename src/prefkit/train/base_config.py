"""The config keys the training commands share, declared once: each key's field, comment, limit, choices and
checks live here, so a key means the same in `prefkit train`, `prefkit selfplay` and `prefkit judge train`.

`CommonConfig` holds what every training command takes (the model, the optimiser, precision, LoRA, tracking, the
run directory). Two extensions of it hold what two of the commands share: `DatasetConfig` the keys of the
commands that train on a dataset (train, judge train: the data, its length and the run's length, logging and
checkpoints), `PolicyConfig` those of the commands that train a policy (train, selfplay: the loss, the policy's
forward, the outputs). TrainConfig (prefkit.train.config) derives from both, SelfPlayConfig
(prefkit.selfplay.config) from PolicyConfig, JudgeTrainConfig (prefkit.judges.train_config) from DatasetConfig;
each declares only its own keys, re-declaring a shared one only to give it another default or to narrow or widen
its type (with the reason beside it). docs/training.md ("Keys the commands share") lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prefkit.errors import PrefkitError
from prefkit.modeling.load import DTYPES
from prefkit.modeling.matmul import CPU_MATMUL
from prefkit.train.tracking import BACKENDS
from prefkit.train.validation import (Limit, above, at_least, check_fields, hub_problems, lora_problems,
                                      loss_problems, raise_problems)

PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class CommonConfig:
    """The keys of every training command (train, selfplay, judge train)."""

    # what to train
    model: str = ""  # a local directory or a hub id
    output_dir: str = ""
    # optimisation: torch's AdamW under transformers' schedules (prefkit.train.engine)
    batch_size: int = 8  # examples per micro-batch, per process
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step (TRL's gradient_accumulation_steps)
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0  # optimizer steps of warm-up at the start of each fit (self-play: of each iteration)
    schedule: str = "linear"  # any scheduler of transformers' get_scheduler; prefkit's constant keeps the warm-up
    max_grad_norm: float | None = 1.0  # null: no clipping (the norm is still measured and logged)
    mixed_precision: str = "no"  # no, bf16, fp16: accelerate's autocast in the training step
    dtype: str = "float32"  # the weights' dtype; auto: the checkpoint's own
    gradient_checkpointing: bool = False  # recompute the activations in the backward pass (less memory)
    seed: int = 0
    # model loading
    trust_remote_code: bool = False
    lora: dict[str, Any] | None = None  # e.g. {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}
    # bookkeeping
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])  # + tensorboard, wandb, ...: prefkit.train.tracking
    project: str = "prefkit"  # the trackers' project
    run_name: str | None = None  # the trackers' run name
    resume: bool = False  # continue the run in output_dir (same settings only)
    overwrite: bool = False  # remove an earlier run in output_dir and start afresh
    max_nonfinite_steps: int = 5  # non-finite losses / gradient norms in a row before the run stops
    progress: bool = True

    def validate(self):
        raise_problems(self.problems())
        return self

    def problems(self) -> list[str]:
        """Every problem with the values, not only the first: a user fixes them all in one go. A command's config
        adds its own keys' tables and checks (`shared_problems`)."""
        return self.shared_problems({}, {}, {})[0]

    def shared_problems(self, limits: dict[str, Limit], choices: dict[str, tuple], required: dict[str, str]
                        ) -> tuple[list[str], set[str]]:
        """(problems, names of the fields that have one): every field checked against its type and the shared
        keys' limits and choices together with the command's own (`limits`, `choices`, `required`), then the
        shared keys' checks that need more than one value or a library."""
        from prefkit.train.config import schedule_problems, schedules

        limits, required = {**COMMON_LIMITS, **limits}, {**COMMON_REQUIRED, **required}
        choices = {**COMMON_CHOICES, "schedule": schedules(), **choices}
        problems, bad = check_fields(self, limits, choices, required)
        if not bad & {"schedule", "schedule_kwargs"}:  # schedule_kwargs: prefkit train's (make_scheduler reads it)
            problems += schedule_problems(self.schedule, getattr(self, "schedule_kwargs", {}))
        if "lora" not in bad and self.lora is not None:
            problems += lora_problems(self.lora)
        return problems, bad


COMMON_REQUIRED = {"model": "--model", "output_dir": "--output-dir"}
COMMON_CHOICES = {"mixed_precision": PRECISIONS, "dtype": tuple(DTYPES), "report_to": BACKENDS}
COMMON_LIMITS = {"batch_size": at_least(1), "grad_accum": at_least(1), "learning_rate": above(0),
                 "weight_decay": at_least(0), "warmup_steps": at_least(0), "max_grad_norm": above(0),
                 "seed": at_least(0), "max_nonfinite_steps": at_least(1)}


@dataclass
class DatasetConfig(CommonConfig):
    """The keys of the two commands that train on a dataset (train, judge train), besides CommonConfig's."""

    # data
    data: str = ""  # a source: JSONL, JSON, parquet, CSV, a save_to_disk directory or a hub id (docs/data.md)
    split: str = "train"
    eval_data: str | None = None
    eval_split: str = "train"
    max_length: int = 1024  # tokens of prompt + completion
    truncation: str = "keep_start"  # keep_start, keep_end or drop a row that is longer (docs/data.md)
    on_bad_rows: str = "error"  # error, or skip a bad row (listed in skipped_rows.jsonl)
    # the run's length: max_steps optimizer steps, else epochs of the data
    max_steps: int | None = None
    epochs: float = 1.0
    # bookkeeping
    logging_steps: int = 10
    eval_steps: int | None = None
    save_steps: int | None = None
    keep_checkpoints: int = 2

    def shared_problems(self, limits, choices, required):
        problems, bad = super().shared_problems({**DATASET_LIMITS, **limits}, {**DATASET_CHOICES, **choices},
                                                {**DATASET_REQUIRED, **required})
        if not bad & {"warmup_steps", "max_steps"} and self.max_steps is not None \
                and self.warmup_steps > self.max_steps:
            problems.append(f"'warmup_steps' ({self.warmup_steps}) must be <= 'max_steps' ({self.max_steps})")
        return problems, bad

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's optimizer steps, once the data fixes `steps_per_epoch`; raises when the warmup would not
        end before training does (the schedule would never reach its peak learning rate)."""
        total = self.max_steps if self.max_steps is not None else math.ceil(self.epochs * steps_per_epoch)
        if self.warmup_steps > total:
            raise PrefkitError(f"config: 'warmup_steps' ({self.warmup_steps}) must be <= the run's {total} optimizer "
                               f"steps ({self.epochs:g} epochs of {steps_per_epoch})")
        return total


DATASET_REQUIRED = {"data": "--data"}
DATASET_CHOICES = {"truncation": ("keep_start", "keep_end", "drop"), "on_bad_rows": ("error", "skip")}
DATASET_LIMITS = {"max_length": at_least(2), "max_steps": at_least(1), "epochs": above(0),
                  "logging_steps": at_least(1), "eval_steps": at_least(1), "save_steps": at_least(1),
                  "keep_checkpoints": at_least(1)}


@dataclass
class PolicyConfig(CommonConfig):
    """The keys of the two commands that train a policy (train, selfplay), besides CommonConfig's."""

    # what to train
    loss: str | list[str] = "dpo"  # a loss of prefkit.losses (prefkit train: or a list, a mixture)
    loss_params: dict[str, Any] = field(default_factory=dict)  # the loss's hyper-parameters (docs/losses.md)
    # the policy's forward (prefkit.train.engine.PolicyLogps)
    logprob_chunk_size: int = 1024  # positions per block of the output head
    packing: bool = True  # padding-free layout, each prompt once (prefkit.modeling.packing)
    fuse_modules: bool = True  # leaner RMSNorm / SwiGLU MLP autograd (prefkit.modeling.fused)
    cpu_matmul: str = "auto"  # float32 products on the CPU: torch (MKL), onednn, auto (prefkit.modeling.matmul)
    token_metrics: bool = True  # TRL's entropy, logits/*, mean_token_accuracy (prefkit.train.engine)
    # outputs
    merge_lora: bool = False  # with LoRA, also write the final adapter merged into the base (output_dir/merged)
    push_to_hub: bool = False  # upload the final model to the hub (needs a token: HF_TOKEN or `hf auth login`)
    hub_model_id: str | None = None  # default: the output directory's name under your account
    hub_private_repo: bool | None = None

    def shared_problems(self, limits, choices, required):
        problems, bad = super().shared_problems({**POLICY_LIMITS, **limits}, {**POLICY_CHOICES, **choices}, required)
        if self.merge_lora and not self.lora:
            problems.append("'merge_lora' needs a LoRA adapter (lora: {r: 16}, or use_peft: true)")
        return problems + hub_problems(self), bad

    def loss_names(self) -> list[str]:
        return [self.loss] if isinstance(self.loss, str) else list(self.loss)

    def loss_problems(self, feeds: tuple[str, ...], command: str) -> tuple[list[str], list]:
        """(problems, the specs of the losses that exist): unknown loss names, `loss_params` the losses cannot
        use or that no chosen loss takes, and a loss that trains on examples `command` (building `feeds`) does
        not build. Run once `loss` and `loss_params` passed their type checks."""
        names = self.loss_names()
        problems, specs = loss_problems(names, self.loss_params)
        taken = {p for s in specs for p in s.defaults}
        unknown = [k for k in self.loss_params if k.rpartition(".")[2] not in taken]
        if specs and unknown:
            problems.append(f"loss_params has '{unknown[0]}', which no loss in {names} takes")
        if len(specs) == len(names):
            from prefkit.losses import feed_problem

            problems += [p for p in [feed_problem(names, feeds, command)] if p]
        return problems, specs


POLICY_LIMITS = {"logprob_chunk_size": at_least(1)}
POLICY_CHOICES = {"cpu_matmul": CPU_MATMUL}
