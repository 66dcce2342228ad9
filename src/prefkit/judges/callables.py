"""Judges that are Python functions: a user's `judge(prompt, a, b) -> P(a beats b)`, named on the command line as
`module:function`, and the bundled task's exact oracle.

Prompts and responses reach the function exactly as the caller has them (strings or message lists). A function
that also has a `.batch(prompts, as_, bs)` attribute is called once per batch; otherwise once per comparison, so
a failure points at the exact comparison and everything before it is kept.
"""

from __future__ import annotations

import importlib
from typing import Callable

from prefkit.errors import PrefkitError
from prefkit.judges.base import BadOutput, Judge, PairFailure, real_number


class CallableJudge(Judge):
    """A function `fn(prompt, a, b) -> float` in [0, 1] as a judge. `both_orders=True` for a function that may
    favour a slot (an LLM asked "which is better, A or B?"): `compare` then averages both orders."""

    def __init__(self, fn: Callable, *, name: str | None = None, both_orders: bool = False):
        if not callable(fn):
            raise PrefkitError(f"a judge must be callable as judge(prompt, a, b); got {type(fn).__name__}")
        self.fn = fn
        self.name = name or _qualified_name(fn)
        self.both_orders = bool(both_orders)
        batch = getattr(fn, "batch", None)
        self._batch = batch if callable(batch) else None

    def _pairs(self, prompts: list, as_: list, bs: list):
        if self._batch is not None:
            return self._batch(prompts, as_, bs)
        values: list[float] = []
        for i, triple in enumerate(zip(prompts, as_, bs)):
            try:
                value = self.fn(*triple)
            except Exception as error:
                raise PairFailure(i, error, values) from error
            values.append(_number(value, i, values))
        return values


def from_path(spec: str, **options) -> Judge:
    """`module:function` (`function` may be dotted, `module:Class.method`) as a judge named by the spec; `options`
    as CallableJudge takes them. An attribute that already is a Judge is returned as it is."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise PrefkitError(f"judge {spec!r}: a Python judge is given as 'module:function', e.g. 'mypkg.judges:pick'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise PrefkitError(f"judge {spec!r}: no module named {error.name!r} (is it installed, or its folder "
                               f"on PYTHONPATH?)") from None
        raise PrefkitError(f"judge {spec!r}: importing {module_name!r} failed: {error}") from error
    except Exception as error:  # the module itself is broken: say so rather than dump its traceback
        raise PrefkitError(f"judge {spec!r}: importing {module_name!r} failed: {type(error).__name__}: "
                           f"{error}") from error
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise PrefkitError(f"judge {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, Judge):
        if options:
            raise PrefkitError(f"judge {spec!r} is a ready-made Judge; it takes no options")
        return target
    if not callable(target):
        raise PrefkitError(f"judge {spec!r}: {module_name}.{attribute} is a {type(target).__name__}, not a "
                           "function judge(prompt, a, b) -> P(a beats b)")
    return CallableJudge(target, name=spec, **options)


# The bundled tasks whose oracle `task[:NAME]` names; the default task comes first.
def _synthetic():
    from prefkit.tasks.synthetic import SyntheticTask

    return SyntheticTask()


TASKS: dict[str, Callable] = {"synthetic": _synthetic}


def task_oracle(name: str = "") -> CallableJudge:
    """The exact preference oracle of a bundled task (`task` or `task:synthetic`)."""
    name = name or next(iter(TASKS))
    if name not in TASKS:
        raise PrefkitError(f"judge 'task:{name}': no bundled task {name!r}; choose one of {', '.join(TASKS)}")
    return CallableJudge(TASKS[name]().judge, name="task" if name == next(iter(TASKS)) else f"task:{name}")


def _number(value, i: int, values: list[float]) -> float:
    try:
        return real_number(value)  # NaN and out-of-range values are the base class's to report
    except BadOutput as error:
        raise PairFailure(i, error, values) from None


def _qualified_name(fn) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}" if module else name
