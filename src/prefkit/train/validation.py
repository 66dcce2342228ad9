"""Checking a config dataclass before anything loads: each field's type (read from its annotation), range and
choices, with every problem collected so that one error lists them all. TrainConfig and SelfPlayConfig declare
their limits as data and share this code.

Values are shown bounded (`short`): a YAML alias bomb in a config value must cost nothing to report.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
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


def coerce(value, hint):
    """`value` as the annotation `hint` takes it (an int or a YAML-1.1 string such as "1e-6" in a float field
    becomes a float); raises _Mismatch otherwise. Floats must be finite. A list stops at its first bad item."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return coerce(value, option)
            except _Mismatch:
                pass
        raise _Mismatch
    if hint in (bool, str, type(None)):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        return _finite(value)
    if origin is list and isinstance(value, list):
        return [coerce(item, args[0]) for item in value]
    if origin is dict and isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: coerce(item, args[1]) for key, item in value.items()}
    raise _Mismatch


def _finite(value) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise _Mismatch from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _Mismatch
    return float(value)


_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
          type(None): "null", Any: "any value"}
_PLURALS = {int: "integers", float: "finite numbers", str: "strings"}


def describe(hint) -> str:
    """The annotation in words: `int | None` -> "an integer or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in sorted(args, key=lambda a: a is type(None)))
    if origin is list:
        return f"a list of {_PLURALS.get(args[0], describe(args[0]))}"
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
        value, problem = _checked(name, value, hints[name], limits.get(name), choices.get(name))
        if problem is None and name in required and not value:
            problem = f"'{name}' is required (flag {required[name]})"
        if problem is None:
            setattr(config, name, value)
        else:
            problems.append(problem)
            bad.add(name)
    return problems, bad


def _checked(name: str, value, hint, limit: Limit | None, allowed: tuple | None) -> tuple[Any, str | None]:
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
        shown = coerced if isinstance(value, str) else value  # -1e-5 reads as a string in YAML 1.1: show a number
        return value, f"'{name}' must be {expected} (got {short(shown)})"
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
        _, problem = _checked(f"loss_params.{key}", value, hint, None, None)
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
               "target_modules": (str | list[str], None)}


def lora_problems(options: dict) -> list[str]:
    """The LoRA options checked before the model loads (peft would only fail once it has)."""
    problems = [f"'lora' has unknown key '{str(key)[:80]}' (keys: {', '.join(LORA_FIELDS)})"
                for key in options if key not in LORA_FIELDS]
    for key, (hint, limit) in LORA_FIELDS.items():
        if key in options:
            _, problem = _checked(f"lora.{key}", options[key], hint, limit, None)
            problems += [problem] if problem else []
    return problems
