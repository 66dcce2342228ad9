"""The offline training configuration: one dataclass, validated before anything loads.

Sources, in increasing priority: the dataclass defaults, a YAML file (`--config`), command-line flags, and
`key=value` overrides. An unknown key is an error that names the key and the closest valid one; every unknown
key and bad value is reported at once (prefkit.train.validation).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefkit.errors import PrefkitError
from prefkit.modeling.load import DTYPES
from prefkit.train.tracking import BACKENDS
from prefkit.train.validation import (above, at_least, check_fields, lora_problems, loss_problems, raise_problems,
                                      within)

REFERENCE_MODES = ("auto", "precomputed", "copy", "adapter", "none")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("no", "bf16", "fp16")
TRAIN_FEEDS = ("pairs", "labelled")  # the example kinds `prefkit train` builds (prefkit.losses.KINDS), by the data


@dataclass
class TrainConfig:
    # what to train
    model: str = ""
    data: str = ""
    output_dir: str = ""
    loss: str | list[str] = "dpo"
    loss_weights: list[float] | None = None
    loss_params: dict[str, Any] = field(default_factory=dict)
    # data
    split: str = "train"
    eval_data: str | None = None
    eval_split: str = "train"
    max_length: int = 1024
    truncation: str = "keep_start"
    on_bad_rows: str = "error"
    # reference policy: auto = none for reference-free losses, the disabled adapter with LoRA, else precomputed
    reference: str = "auto"
    ref_sync_steps: int | None = None  # TR-DPO: mix the policy into the reference every N steps (needs copy)
    ref_mixup_alpha: float = 0.6
    cache_dir: str | None = None  # reference log-prob cache; default ~/.cache/prefkit
    # optimisation
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 8  # per process
    grad_accum: int = 1
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "linear"
    max_grad_norm: float | None = 1.0  # null: no clipping (the norm is still measured and logged)
    mixed_precision: str = "no"
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    logprob_chunk_size: int = 1024
    packing: bool = True  # padding-free layout, each prompt once (prefkit.modeling.packing)
    fuse_modules: bool = True  # leaner RMSNorm / SwiGLU MLP autograd (prefkit.modeling.fused)
    seed: int = 0
    # model loading
    trust_remote_code: bool = False
    lora: dict[str, Any] | None = None  # e.g. {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}
    load_in_4bit: bool = False
    # bookkeeping
    logging_steps: int = 10
    eval_steps: int | None = None
    save_steps: int | None = None
    keep_checkpoints: int = 2
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])  # + tensorboard, wandb, ...: prefkit.train.tracking
    project: str = "prefkit"  # the trackers' project
    run_name: str | None = None  # the trackers' run name
    resume: bool = False  # continue the run in output_dir (same settings only)
    overwrite: bool = False  # remove an earlier run in output_dir and start afresh
    max_nonfinite_steps: int = 5  # non-finite losses / gradient norms in a row before the run stops
    progress: bool = True

    def validate(self) -> "TrainConfig":
        raise_problems(self.problems())
        return self

    def problems(self) -> list[str]:
        """Every problem with the values, not only the first: a user fixes them all in one go."""
        problems, bad = check_fields(self, TRAIN_LIMITS, TRAIN_CHOICES, TRAIN_REQUIRED)
        if not bad & {"warmup_steps", "max_steps"} and self.max_steps is not None \
                and self.warmup_steps > self.max_steps:
            problems.append(f"'warmup_steps' ({self.warmup_steps}) must be <= 'max_steps' ({self.max_steps})")
        if self.ref_sync_steps is not None and self.reference not in ("copy", "auto"):
            problems.append("'ref_sync_steps' (TR-DPO) needs reference: copy")
        if "lora" not in bad and self.lora is not None:
            problems += lora_problems(self.lora)
        if not bad & {"loss", "loss_params", "loss_weights"}:
            problems += self._loss_problems()
        return problems

    def _loss_problems(self) -> list[str]:
        names = [self.loss] if isinstance(self.loss, str) else list(self.loss)
        problems, specs = loss_problems(names, self.loss_params)
        if self.loss_weights is not None and len(self.loss_weights) != len(names):
            problems.append(f"'loss_weights' has {len(self.loss_weights)} weights for {len(names)} losses {names}")
        unknown = [k for k in self.loss_params if k.rpartition(".")[2] not in {p for s in specs for p in s.defaults}]
        if specs and unknown:
            problems.append(f"loss_params has '{unknown[0]}', which no loss in {names} takes")
        if len(specs) == len(names):
            from prefkit.losses import feed_problem

            problems += [p for p in [feed_problem(names, TRAIN_FEEDS, "prefkit train")] if p]
        return problems

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's optimizer steps, once the data fixes `steps_per_epoch`; raises when the warmup would not
        end before training does (the schedule would never reach its peak learning rate)."""
        total = self.max_steps if self.max_steps is not None else math.ceil(self.epochs * steps_per_epoch)
        if self.warmup_steps > total:
            raise PrefkitError(f"config: 'warmup_steps' ({self.warmup_steps}) must be <= the run's {total} optimizer "
                               f"steps ({self.epochs:g} epochs of {steps_per_epoch})")
        return total


TRAIN_REQUIRED = {"model": "--model", "data": "--data", "output_dir": "--output-dir", "loss": "--loss"}
TRAIN_CHOICES = {"reference": REFERENCE_MODES, "schedule": SCHEDULES, "mixed_precision": PRECISIONS,
                 "truncation": ("keep_start", "keep_end", "drop"), "on_bad_rows": ("error", "skip"),
                 "dtype": tuple(DTYPES), "report_to": BACKENDS}
TRAIN_LIMITS = {"max_length": at_least(2), "ref_sync_steps": at_least(1), "ref_mixup_alpha": within(0, 1),
                "max_steps": at_least(1), "epochs": above(0), "batch_size": at_least(1), "grad_accum": at_least(1),
                "learning_rate": above(0), "weight_decay": at_least(0), "warmup_steps": at_least(0),
                "max_grad_norm": above(0), "logprob_chunk_size": at_least(1), "seed": at_least(0),
                "logging_steps": at_least(1), "eval_steps": at_least(1), "save_steps": at_least(1),
                "keep_checkpoints": at_least(1), "max_nonfinite_steps": at_least(1)}


def check_keys(values: dict[str, Any], where: str, kind: type = TrainConfig) -> list[str]:
    """One problem per key that `kind` does not have, with the closest valid key when there is one."""
    fields = {f.name for f in dataclasses.fields(kind)}
    problems = []
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"{where}: unknown key '{str(key)[:80]}'{hint}")
    return problems


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as YAML (numbers, booleans, lists); `loss_params.beta=0.2` sets one entry."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise PrefkitError(f"override '{text}' is not key=value")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise PrefkitError(f"override '{text}': the value is not valid YAML ({_yaml_problem(error)})") from None


def load_config(path: str | None = None, flags: dict[str, Any] | None = None,
                overrides: list[str] | tuple[str, ...] = (), kind: type = TrainConfig):
    """A validated `kind` (TrainConfig, or the self-play config) from YAML, flags and key=value overrides; every
    unknown key and bad value is reported in one error."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    if path:
        loaded = _read_yaml(path)
        problems += check_keys(loaded, path, kind)
        values.update(loaded)
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    for text in overrides:
        key, value = parse_override(text)
        head, _, sub = key.partition(".")
        unknown = check_keys({head: None}, "override", kind)
        problems += unknown
        if unknown:
            continue
        if sub:  # e.g. loss_params.beta=0.2 or lora.r=8
            before = values.get(head)
            values[head] = {**(before if isinstance(before, dict) else {}), sub: value}
        else:
            values[key] = value
    names = {f.name for f in dataclasses.fields(kind)}
    config = kind(**{k: v for k, v in values.items() if k in names})
    raise_problems(problems + config.problems())
    return config


def _read_yaml(path: str) -> dict:
    from prefkit.data.sources import read_text

    file = Path(path)
    if not file.is_file():
        raise PrefkitError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(read_text(file, path)) or {}
    except yaml.YAMLError as error:
        raise PrefkitError(f"{path}: not valid YAML ({_yaml_problem(error)})") from None
    if not isinstance(loaded, dict):
        raise PrefkitError(f"{path}: expected a mapping of config keys at the top level")
    return loaded


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's finding in one line, where it has one (its own message quotes the text over several lines)."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
