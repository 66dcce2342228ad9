"""The configuration of `prefkit judge train`: one dataclass, validated before anything loads, with the training
keys of `prefkit train` meaning the same thing (same loader, same checks, every problem reported at once) and
the judge's own: `kind` (bt | gpm) and GPM's `embedding_dim`, `prompt_scaling` and `temperature`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefkit.judges.heads import KINDS, HeadSettings
from prefkit.train.config import TRAIN_CHOICES, TRAIN_LIMITS, TrainConfig, schedules
from prefkit.train.validation import (above, at_least, check_fields, lora_problems, raise_problems,
                                      sharded_launch, sharding_problems)


@dataclass
class JudgeTrainConfig:
    # what to train
    kind: str = "bt"  # bt: a Bradley-Terry reward model; gpm: a general preference model
    model: str = ""  # any transformers backbone: a causal LM or a sequence model (path or hub id)
    data: str = ""
    output_dir: str = ""
    # the general preference model (kind: gpm)
    embedding_dim: int = 8  # 2k, even
    prompt_scaling: bool = True  # the paper's prompt-dependent eigenvalue gate
    temperature: float = 0.1
    # data
    split: str = "train"
    eval_data: str | None = None
    eval_split: str = "train"
    max_length: int = 1024
    truncation: str = "keep_start"
    on_bad_rows: str = "error"
    calibration_bins: int = 10  # equal-width bins of the expected calibration error and the reliability plot
    # optimisation
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 8  # pairs per process
    grad_accum: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "linear"
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    seed: int = 0
    # model loading
    trust_remote_code: bool = False
    lora: dict[str, Any] | None = None
    # bookkeeping
    logging_steps: int = 10
    eval_steps: int | None = None
    save_steps: int | None = None
    keep_checkpoints: int = 2
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])  # as `prefkit train`: prefkit.train.tracking
    project: str = "prefkit"
    run_name: str | None = None
    resume: bool = False
    overwrite: bool = False
    max_nonfinite_steps: int = 5
    progress: bool = True

    def validate(self) -> "JudgeTrainConfig":
        raise_problems(self.problems())
        return self

    def problems(self) -> list[str]:
        """Every problem with the values, not only the first."""
        problems, bad = check_fields(self, JUDGE_LIMITS, {**JUDGE_CHOICES, "schedule": schedules()}, JUDGE_REQUIRED)
        if "embedding_dim" not in bad and self.embedding_dim % 2:
            problems.append(f"'embedding_dim' must be even (2k: the skew-symmetric form pairs the dimensions); "
                            f"got {self.embedding_dim}")
        if not bad & {"warmup_steps", "max_steps"} and self.max_steps is not None \
                and self.warmup_steps > self.max_steps:
            problems.append(f"'warmup_steps' ({self.warmup_steps}) must be <= 'max_steps' ({self.max_steps})")
        if "lora" not in bad and self.lora is not None:
            problems += lora_problems(self.lora)
        problems += [f"accelerate launch asks for FSDP ({variable}), but prefkit judge train runs data-parallel "
                     "only (its judge and checkpoints are saved unsharded): launch with --multi_gpu "
                     "(configs/accelerate/ddp.yaml)" for variable, name in sharded_launch() if name == "FSDP"]
        return problems + sharding_problems()  # the same engine as prefkit train's

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's optimizer steps, as `prefkit train` counts them (max_steps, else epochs of the data)."""
        return TrainConfig.total_steps(self, steps_per_epoch)

    def head(self, style: str | None = None) -> HeadSettings:
        """The head's settings; `style` is the training data's (standard | conversational), saved with the judge."""
        return HeadSettings(self.kind, self.embedding_dim, self.prompt_scaling, self.temperature, self.max_length,
                            self.truncation, style)


_SHARED = ("max_length", "max_steps", "epochs", "batch_size", "grad_accum", "learning_rate", "weight_decay",
           "warmup_steps", "max_grad_norm", "seed", "logging_steps", "eval_steps", "save_steps", "keep_checkpoints",
           "max_nonfinite_steps")
JUDGE_LIMITS = {**{key: TRAIN_LIMITS[key] for key in _SHARED}, "embedding_dim": at_least(2),
                "temperature": above(0), "calibration_bins": at_least(1)}
JUDGE_CHOICES = {**{key: TRAIN_CHOICES[key] for key in ("mixed_precision", "truncation", "on_bad_rows",
                                                        "dtype", "report_to")}, "kind": KINDS}
JUDGE_REQUIRED = {"model": "--model", "data": "--data", "output_dir": "--output-dir"}
