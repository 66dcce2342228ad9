"""The offline training configuration: one dataclass, validated before anything loads, holding `prefkit train`'s
own keys on top of the keys it shares with the other training commands (prefkit.train.base_config).

Sources, in increasing priority: the dataclass defaults, a YAML file (`--config`) or a dict, command-line flags,
and `key=value` overrides. TRL's and transformers' names are read as prefkit's (prefkit.train.vocabulary); an
unknown key is an error that names the key and the closest valid one; every unknown key and bad value is
reported at once (prefkit.train.validation).
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefkit.data.examples import LIST_PAIRS
from prefkit.errors import PrefkitError
from prefkit.train.base_config import DatasetConfig, PolicyConfig
from prefkit.train.validation import (above, at_least, checked, fsdp_problems, raise_problems,
                                      sharding_problems, within)
from prefkit.train.vocabulary import translate

REFERENCE_MODES = ("auto", "precomputed", "copy", "adapter", "none")
# prefkit's `constant` holds the learning rate after the warm-up (transformers' constant_with_warmup); transformers'
# own `constant` would ignore warmup_steps and warmup_ratio.
SCHEDULE_NAMES = {"constant": "constant_with_warmup"}


def warmup_steps(config, total_steps: int) -> int:
    """`warmup_steps`, or `warmup_ratio` of the run rounded up as transformers rounds it (configs without a
    `warmup_ratio`: self-play, judges, use `warmup_steps` only)."""
    return config.warmup_steps or math.ceil(getattr(config, "warmup_ratio", 0.0) * total_steps)


TRAIN_FEEDS = ("pairs", "labelled", "lists")  # the example kinds `prefkit train` builds (prefkit.losses.KINDS), by the data


@dataclass
class TrainConfig(PolicyConfig, DatasetConfig):
    """`prefkit train`'s keys: those it shares with the other training commands (prefkit.train.base_config), which
    mean the same there, and these."""

    # what to train
    loss_weights: list[float] | None = None
    # data: also several sources mixed, [{path, weight, split}] (docs/data.md); `prefkit judge train` takes one
    data: str | list[dict[str, Any]] = ""
    chat_template: str | None = None  # a Jinja file or template string replacing the tokenizer's
    list_pairs: str = "all"  # how scored lists feed a pairwise loss: all | best_vs_worst (ties dropped; docs/data.md)
    # reference policy: auto = none for reference-free losses, the disabled adapter with LoRA, else precomputed
    reference: str = "auto"
    ref_sync_steps: int | None = None  # TR-DPO: mix the policy into the reference every N steps (needs copy)
    ref_mixup_alpha: float = 0.6
    cache_dir: str | None = None  # reference log-prob cache; default ~/.cache/prefkit
    # optimisation
    eval_batch_size: int | None = None  # default: batch_size
    warmup_ratio: float = 0.0  # warm-up as a share of the run's steps (use one of warmup_steps, warmup_ratio)
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {min_lr_rate: 0.1} for cosine_with_min_lr
    # model loading
    load_in_4bit: bool = False
    # bookkeeping
    logging_first_step: bool = False  # also log the first step (transformers' name)
    eval_prefix: str = "eval/"  # evaluation metrics as eval/loss, or eval_loss as TRL and transformers name them

    def problems(self) -> list[str]:
        """Every problem with the values, not only the first: a user fixes them all in one go."""
        problems, bad = self.shared_problems(TRAIN_LIMITS, TRAIN_CHOICES, TRAIN_REQUIRED)
        if not bad & {"warmup_steps", "warmup_ratio"} and self.warmup_steps and self.warmup_ratio:
            problems.append("set one of 'warmup_steps' and 'warmup_ratio' (transformers' warmup_ratio), not both")
        if "data" not in bad and isinstance(self.data, list):
            problems += mixture_problems(self.data)
        if "chat_template" not in bad and self.chat_template is not None:
            problems += chat_template_problems(self.chat_template)
        problems += sharding_problems() + fsdp_problems(self)
        if self.ref_sync_steps is not None and self.reference not in ("copy", "auto"):
            problems.append("'ref_sync_steps' (TR-DPO) needs reference: copy")
        if not bad & {"loss", "loss_params", "loss_weights"}:
            problems += self.loss_problems(TRAIN_FEEDS, "prefkit train")[0]
            names = self.loss_names()
            if self.loss_weights is not None and len(self.loss_weights) != len(names):
                problems.append(f"'loss_weights' has {len(self.loss_weights)} weights for {len(names)} losses {names}")
        return problems

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps: `warmup_steps`, or `warmup_ratio` of the run rounded up, as transformers rounds it."""
        return warmup_steps(self, total_steps)

    def scheduler(self, optimizer, total_steps: int):
        """transformers' scheduler named by `schedule` (prefkit.train.engine.make_scheduler)."""
        from prefkit.train.engine import make_scheduler

        return make_scheduler(self, optimizer, total_steps)


# prefkit train's own keys; the shared keys' limits and choices are prefkit.train.base_config's
TRAIN_REQUIRED = {"loss": "--loss"}
TRAIN_CHOICES = {"reference": REFERENCE_MODES, "list_pairs": tuple(LIST_PAIRS), "eval_prefix": ("eval/", "eval_")}
TRAIN_LIMITS = {"ref_sync_steps": at_least(1), "ref_mixup_alpha": within(0, 1), "warmup_ratio": within(0, 1),
                "eval_batch_size": at_least(1)}


@functools.lru_cache(maxsize=1)
def schedules() -> tuple[str, ...]:
    """The schedulers of the installed transformers' get_scheduler, as `schedule` accepts them."""
    from transformers import SchedulerType

    return tuple(s.value for s in SchedulerType)


def schedule_problems(name: str, kwargs: dict) -> list[str]:
    """Build the scheduler on a throw-away parameter, so that a missing or wrong `schedule_kwargs` entry is named
    now, in transformers' words, not after the model has loaded; refuse schedulers that step on a metric."""
    import torch

    from prefkit.modeling.load import one_line

    if name not in schedules():
        return []  # named by the choices check
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    probe = TrainConfig(schedule=name, schedule_kwargs=kwargs)
    try:
        scheduler = probe.scheduler(optimizer, total_steps=10)
    except Exception as error:  # transformers raises ValueError / TypeError for missing or unknown kwargs
        return [f"'schedule' {name}: {one_line(error)} (set it in schedule_kwargs, TRL's lr_scheduler_kwargs)"]
    needs = [p for p in inspect.signature(scheduler.step).parameters.values()
             if p.default is inspect.Parameter.empty]
    if needs:
        return [f"'schedule' {name} steps on a validation metric ({needs[0].name}), which the training loop "
                "does not have; choose another schedule"]
    return []


MIXTURE_FIELDS = {"path": str, "weight": float, "split": str}


def mixture_problems(entries: list[dict]) -> list[str]:
    """`data: [{path, weight, split}, ...]`: each entry names a path, with a weight > 0 and a split if given."""
    problems = []
    for number, entry in enumerate(entries):
        where = f"data[{number}]"
        problems += [f"'{where}' has unknown key '{str(key)[:80]}' (keys: {', '.join(MIXTURE_FIELDS)})"
                     for key in entry if key not in MIXTURE_FIELDS]
        if "path" not in entry:
            problems.append(f"'{where}' needs a 'path'")
        for key, hint in MIXTURE_FIELDS.items():
            if key in entry:
                _, problem = checked(f"{where}.{key}", entry[key], hint, above(0) if key == "weight" else None, None)
                problems += [problem] if problem else []
    return problems


def chat_template_problems(value: str) -> list[str]:
    """A chat template is a file (a path that exists) or Jinja text; either must parse as Jinja."""
    import jinja2

    path = Path(value)
    text = value
    if "{" not in value:
        if not path.is_file():
            return [f"'chat_template' {value!r} is neither a file nor a Jinja template (no {{% or {{{{ in it)"]
        text = path.read_text(encoding="utf-8")
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        return [f"'chat_template': not a valid Jinja template (line {error.lineno}: {error.message})"]
    return []


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as YAML (numbers, booleans, lists); `loss_params.beta=0.2` sets one entry."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise PrefkitError(f"override '{text}' is not key=value")
    try:
        return key.strip(), read_yaml_text(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise PrefkitError(f"override '{text}': the value is not valid YAML ({_yaml_problem(error)})") from None


def load_config(path: str | None = None, flags: dict[str, Any] | None = None,
                overrides: list[str] | tuple[str, ...] = (), kind: type = TrainConfig,
                values: dict[str, Any] | None = None):
    """A validated `kind` (TrainConfig, SelfPlayConfig or JudgeTrainConfig) from a YAML file, a dict of the same
    keys (`values`), flags and key=value overrides, in increasing priority; every unknown key and bad value is
    reported in one error."""
    given: list[tuple[Any, Any, str]] = []
    if path:
        given += [(key, value, path) for key, value in _read_yaml(path).items()]
    given += [(key, value, "args") for key, value in (values or {}).items()]
    given += [(key, value, "flag") for key, value in (flags or {}).items() if value is not None]
    given += [(*parse_override(text), "override") for text in overrides]
    settings, problems = translate(given, kind)
    config = kind(**settings)
    raise_problems(problems + config.problems())
    return config


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 does: 1e-6 (no dot) is a float, not a string."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def read_yaml_text(text: str):
    return yaml.load(text, Loader=_Loader)


def _read_yaml(path: str) -> dict:
    from prefkit.data.sources import read_text

    file = Path(path)
    if not file.is_file():
        raise PrefkitError(f"config file not found: {path}")
    try:
        loaded = read_yaml_text(read_text(file, path)) or {}
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
