"""Checking a config dataclass before anything loads: each field's type (read from its annotation), range and
choices, with every problem collected so that one error lists them all. The training commands' configs declare
their limits as data (prefkit.train.base_config holds the shared keys') and share this code.

Values are shown bounded (`short`): a YAML alias bomb in a config value must cost nothing to report.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Union

from prefkit.errors import PrefkitError


@dataclass(frozen=True)
class Limit:
    """What a numeric field must satisfy, worded as the error says it ("> 0", "in [0, 1]")."""

    text: str
    ok: Callable[[float], bool]


def above(low: float) -> Limit:
    return Limit(f"> {low:g}", lambda value: value > low)


def at_least(low: float) -> Limit:
    return Limit(f">= {low:g}", lambda value: value >= low)


def within(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Limit:
    text = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    return Limit(text, lambda value: (value > low if open_low else value >= low)
                 and (value < high if open_high else value <= high))


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def short(value) -> str:
    """repr(value), bounded in depth and length whatever the value holds."""
    return _REPR.repr(value)


class _Mismatch(Exception):
    pass


@functools.lru_cache(maxsize=None)
def _adapter(hint):
    """pydantic's validator for an annotation, in strict mode (no 1 -> True, no 2.5 -> 2, no "3" -> 3; an int is
    a float) and with finite floats only. Built once per annotation."""
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(hint, config=ConfigDict(strict=True, allow_inf_nan=False))


def coerce(value, hint):
    """`value` as the annotation `hint` takes it (an int in a float field becomes a float), validated by pydantic;
    raises _Mismatch otherwise. YAML is read with a loader that gives 1e-6 as a number (prefkit.train.config), so
    strings are never numbers here."""
    from pydantic import ValidationError

    try:
        return _adapter(hint).validate_python(value)
    except ValidationError:
        raise _Mismatch from None


_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
          type(None): "null", Any: "any value"}
_PLURALS = {int: "integers", float: "finite numbers", str: "strings"}


def describe(hint) -> str:
    """The annotation in words: `int | None` -> "an integer or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in sorted(args, key=lambda a: a is type(None)))
    if origin is list:
        inner = "mappings" if typing.get_origin(args[0]) is dict else _PLURALS.get(args[0], describe(args[0]))
        return f"a list of {inner}"
    if origin is dict:
        return "a mapping of names to values"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def check_fields(config, limits: dict[str, Limit], choices: dict[str, tuple], required: dict[str, str]
                 ) -> tuple[list[str], set[str]]:
    """(problems, names of the fields that have one). Each field is checked against its annotation, its limit
    and its choices; a value that passes is stored back coerced (1 -> 1.0 in a float field)."""
    hints = typing.get_type_hints(type(config))
    problems, bad = [], set()
    for f in dataclasses.fields(config):
        name = f.name
        value = getattr(config, name)
        value, problem = checked(name, value, hints[name], limits.get(name), choices.get(name))
        if problem is None and name in required and not value:
            problem = f"'{name}' is required (flag {required[name]})"
        if problem is None:
            setattr(config, name, value)
        else:
            problems.append(problem)
            bad.add(name)
    return problems, bad


def checked(name: str, value, hint, limit: Limit | None, allowed: tuple | None) -> tuple[Any, str | None]:
    """(the value coerced to `hint`, None), or (the value, the problem with it)."""
    expected = describe(hint)
    if limit is not None:
        nullable = type(None) in typing.get_args(hint)
        expected = f"{describe(hint).removesuffix(' or null')} {limit.text}{' or null' if nullable else ''}"
    try:
        coerced = coerce(value, hint)
    except _Mismatch:
        return value, f"'{name}' must be {expected} (got {short(value)})"
    if limit is not None and coerced is not None and not limit.ok(coerced):
        return value, f"'{name}' must be {expected} (got {short(value)})"
    problem = _choice_problem(name, coerced, allowed) if allowed is not None else None
    return (value, problem) if problem else (coerced, None)


def _choice_problem(name: str, value, allowed: tuple) -> str | None:
    """A name field must be one of `allowed`; a list field (report_to) holds each of them at most once."""
    if not isinstance(value, list):
        return None if value in allowed else f"'{name}' must be one of {', '.join(allowed)} (got {short(value)})"
    wrong = [item for item in value if item not in allowed]
    if wrong:
        return f"'{name}' may only list {', '.join(allowed)} (got {short(wrong[0])})"
    if len(set(value)) < len(value):
        return f"'{name}' lists a name twice (got {short(value)})"
    return None


def raise_problems(problems: list[str]) -> None:
    if len(problems) == 1:
        raise PrefkitError(f"config: {problems[0]}")
    if problems:
        raise PrefkitError(f"config: {len(problems)} problems: {'; '.join(problems)}")


def loss_problems(names: list[str], params: dict) -> tuple[list[str], list]:
    """(problems, the specs of the names that exist): unknown loss names, and loss_params whose type or value the
    losses cannot use. A parameter is typed by its default (a float default takes any finite number)."""
    from prefkit import losses

    problems, specs = [], []
    for name in names:
        try:
            specs.append(losses.get(name))
        except PrefkitError as error:
            problems.append(str(error))
    defaults = {key: default for spec in specs for key, default in spec.defaults.items()}
    well_typed = {}
    for key, value in params.items():
        default = defaults.get(key.rpartition(".")[2])
        hint = Any if default is None else type(default)
        _, problem = checked(f"loss_params.{key}", value, hint, None, None)
        problems += [problem] if problem else []
        if problem is None:
            well_typed[key] = value  # as given: the losses' own messages quote it
    for spec in specs:  # each component checks the hyper-parameters it has
        try:
            spec.check_hyperparameters({k: v for k, v in well_typed.items() if k in spec.defaults})
        except PrefkitError as error:
            problems.append(str(error))
    return problems, specs


LORA_FIELDS = {"r": (int, at_least(1)), "alpha": (float, above(0)), "dropout": (float, within(0, 1, open_high=True)),
               "target_modules": (str | list[str] | None, None), "modules_to_save": (list[str] | None, None),
               "use_rslora": (bool, None), "use_dora": (bool, None)}


def lora_problems(options: dict) -> list[str]:
    """The LoRA options checked before the model loads (peft would only fail once it has)."""
    problems = [f"'lora' has unknown key '{str(key)[:80]}' (keys: {', '.join(LORA_FIELDS)})"
                for key in options if key not in LORA_FIELDS]
    for key, (hint, limit) in LORA_FIELDS.items():
        if key in options:
            _, problem = checked(f"lora.{key}", options[key], hint, limit, None)
            problems += [problem] if problem else []
    return problems


def hub_problems(config) -> list[str]:
    """`push_to_hub` needs a token (HF_TOKEN or a saved login), checked before anything loads."""
    if not config.push_to_hub:
        return []
    from huggingface_hub import get_token

    if get_token() is None:
        return ["'push_to_hub' needs a Hugging Face token: set HF_TOKEN or run `hf auth login`"]
    return []


# what `accelerate launch` sets in each process's environment when its config asks for a sharded engine
SHARDED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def sharded_launch() -> list[tuple[str, str]]:
    """(environment variable, engine) of each sharded engine this process's launch asks for."""
    return [(variable, name) for variable, name in SHARDED.items()
            if os.environ.get(variable, "").lower() in ("1", "true", "yes")]


def sharding_problems() -> list[str]:
    """A sharded engine asked for on a machine without a CUDA GPU, where prefkit's accelerator runs on the CPU
    (prefkit.train.engine.make_accelerator: cpu=True). accelerate 1.15 shards on GPUs and other accelerators
    only: with cpu=True its state (accelerate/state.py, AcceleratorState) keeps plain data parallelism over
    gloo without a word, and the FSDP1 plugin with sync_module_states fails looking for a device. Refused here,
    before anything loads, rather than run unsharded."""
    import torch

    if torch.cuda.is_available():
        return []
    return [f"accelerate launch asks for {name} ({variable}), which accelerate runs on GPUs only: on this "
            "machine (no CUDA GPU) the processes would run unsharded, data-parallel on the CPU. Launch with "
            "--multi_gpu (configs/accelerate/ddp.yaml) for data parallelism on the CPU"
            for variable, name in sharded_launch()]


def fsdp_problems(config) -> list[str]:
    """What a run of `config` (prefkit train's) cannot do under accelerate's FSDP: FSDP1 (`fsdp_version_problems`),
    and `merge_lora`, which merges the adapter into a base model that no process holds whole."""
    problems = fsdp_version_problems()
    if ("ACCELERATE_USE_FSDP", "FSDP") in sharded_launch() and getattr(config, "merge_lora", False):
        problems.append("'merge_lora' under FSDP: no process holds the whole base model to merge into; train "
                        "without it and merge the saved adapter afterwards (peft's merge_and_unload)")
    return problems


def fsdp_version_problems() -> list[str]:
    """FSDP1 asked for: prefkit gathers checkpoints, final models and self-play's weights from FSDP2's shards."""
    if ("ACCELERATE_USE_FSDP", "FSDP") not in sharded_launch():
        return []
    version = os.environ.get("FSDP_VERSION", "1")  # accelerate's default is FSDP1
    if version == "2":
        return []
    return [f"accelerate launch asks for FSDP version {version} (FSDP_VERSION); prefkit gathers checkpoints and "
            "the final model from FSDP2's shards only: set fsdp_version: 2 in the accelerate config "
            "(configs/accelerate/fsdp.yaml)"]
