"""The offline training configuration: one dataclass, validated before anything loads.

Sources, in increasing priority: the dataclass defaults, a YAML file (`--config`), command-line flags, and
`key=value` overrides. An unknown key is an error that names the key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefkit.errors import PrefkitError

REFERENCE_MODES = ("auto", "precomputed", "copy", "adapter", "none")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("no", "bf16", "fp16")


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
    max_grad_norm: float = 1.0
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
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    resume: bool = False
    progress: bool = True

    def validate(self) -> "TrainConfig":
        for name in ("model", "data", "output_dir"):
            if not getattr(self, name):
                raise PrefkitError(f"config: '{name}' is required (flag --{name.replace('_', '-')})")
        _choice("reference", self.reference, REFERENCE_MODES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("truncation", self.truncation, ("keep_start", "keep_end", "drop"))
        _choice("on_bad_rows", self.on_bad_rows, ("error", "skip"))
        for name in ("batch_size", "grad_accum", "max_length", "logging_steps", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise PrefkitError(f"config: '{name}' must be >= 1 (got {getattr(self, name)})")
        if self.learning_rate <= 0:
            raise PrefkitError(f"config: 'learning_rate' must be > 0 (got {self.learning_rate})")
        if self.ref_sync_steps is not None and self.reference not in ("copy", "auto"):
            raise PrefkitError("config: 'ref_sync_steps' (TR-DPO) needs reference: copy")
        from prefkit import losses  # checks the loss names and hyper-parameters before any model loads

        names = [self.loss] if isinstance(self.loss, str) else list(self.loss)
        specs = [losses.get(n) for n in names]
        params = dict(self.loss_params)
        for spec in specs:  # each component checks the hyper-parameters it has
            spec.check_hyperparameters({k: v for k, v in params.items() if k in spec.defaults})
        unknown = [k for k in params if k.rpartition(".")[2] not in {p for s in specs for p in s.defaults}]
        if unknown:
            raise PrefkitError(f"config: loss_params has '{unknown[0]}', which no loss in {names} takes")
        return self


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PrefkitError(f"config: '{name}' must be one of {', '.join(allowed)} (got {value!r})")


def check_keys(values: dict[str, Any], where: str, kind: type = TrainConfig) -> None:
    fields = {f.name for f in dataclasses.fields(kind)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PrefkitError(f"{where}: unknown key '{key}'{hint}")


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as YAML (numbers, booleans, lists); `loss_params.beta=0.2` sets one entry."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise PrefkitError(f"override '{text}' is not key=value")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(path: str | None = None, flags: dict[str, Any] | None = None,
                overrides: list[str] | tuple[str, ...] = (), kind: type = TrainConfig):
    """A validated `kind` (TrainConfig, or the self-play config) from YAML, flags and key=value overrides."""
    values: dict[str, Any] = {}
    if path:
        file = Path(path)
        if not file.is_file():
            raise PrefkitError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as error:
            raise PrefkitError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise PrefkitError(f"{path}: expected a mapping of config keys at the top level")
        check_keys(loaded, path, kind)
        values.update(loaded)
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    for text in overrides:
        key, value = parse_override(text)
        head, _, sub = key.partition(".")
        check_keys({head: None}, "override", kind)
        if sub:  # e.g. loss_params.beta=0.2 or lora.r=8
            values[head] = {**(values.get(head) or {}), sub: value}
        else:
            values[key] = value
    config = kind(**values)
    _check_types(config)
    return config.validate()


def _check_types(config) -> None:
    expect = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    for f in dataclasses.fields(config):
        name = f.name
        value = getattr(config, name)
        default = f.default if f.default is not dataclasses.MISSING else None
        union_with_list = "list" in str(f.type)  # e.g. loss: a name or a list of names
        kind = type(default) if default is not None and not union_with_list and not isinstance(default, dict) \
            else None
        if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                value = float(value)
                setattr(config, name, value)
            except ValueError:
                pass
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, name, float(value))
        elif kind is not None and value is not None and not isinstance(value, kind) or (
                kind is int and isinstance(value, bool)):
            raise PrefkitError(f"config: '{name}' must be {expect.get(kind, kind.__name__)} (got {value!r})")
