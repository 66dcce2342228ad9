"""`load_judge(spec)`: a judge from its name on the command line or in a config.

    task                  the bundled task's exact oracle (also task:synthetic)
    reward:PATH_OR_ID     a Bradley-Terry reward model (AutoModelForSequenceClassification, one output)
    pairwise:PATH_OR_ID   a pairwise preference model (see pairwise.py for its input format)
    gpm:PATH_OR_ID        a general preference model trained by `prefkit judge train` (gpm.py)
    module:function       a Python function judge(prompt, a, b) -> P(a beats b)

or a callable, or a Judge (returned as it is). The kinds above take precedence over a module of the same name.
"""

from __future__ import annotations

import inspect
from typing import Callable

from prefkit.errors import PrefkitError
from prefkit.judges.base import Judge
from prefkit.judges.callables import CallableJudge, from_path, task_oracle
from prefkit.judges.gpm import GPMJudge
from prefkit.judges.pairwise import PairwiseModelJudge
from prefkit.judges.reward import RewardModelJudge


def _task(name: str, **options) -> Judge:
    return task_oracle(name)


def _model(kind: str, cls) -> Callable[..., Judge]:
    def load(name_or_path: str, **options) -> Judge:
        if not name_or_path:
            raise PrefkitError(f"judge '{kind}:' needs a model: '{kind}:PATH_OR_HUB_ID'")
        return cls.load(name_or_path, **options)
    return load


def _keywords(*functions) -> frozenset[str]:
    """The keyword options a loader accepts, read from its signature so the two cannot drift apart."""
    return frozenset(name for fn in functions for name, p in inspect.signature(fn).parameters.items()
                     if p.kind == p.KEYWORD_ONLY)


# spec prefix -> (loader(rest of the spec, **options), the options it takes)
KINDS: dict[str, tuple[Callable[..., Judge], frozenset[str]]] = {
    "task": (_task, frozenset()),
    "reward": (_model("reward", RewardModelJudge),
               _keywords(RewardModelJudge.__init__, RewardModelJudge.load) - {"name"}),
    "pairwise": (_model("pairwise", PairwiseModelJudge),
                 _keywords(PairwiseModelJudge.__init__, PairwiseModelJudge.load) - {"name"}),
    "gpm": (_model("gpm", GPMJudge), _keywords(GPMJudge.__init__, GPMJudge.load) - {"name"}),
}
PYTHON_OPTIONS = _keywords(CallableJudge.__init__)


def load_judge(spec, **options) -> Judge:
    """A judge from a spec string, a callable `judge(prompt, a, b)`, or a Judge. `options` go to the judge: for
    model judges batch_size, device, dtype, max_length (and template for pairwise); for Python judges name and
    both_orders."""
    if isinstance(spec, Judge):
        _check(spec.name, options, frozenset())
        return spec
    if callable(spec):
        _check("callable", options, PYTHON_OPTIONS)
        return CallableJudge(spec, **options)
    if not isinstance(spec, str) or not spec.strip():
        raise PrefkitError(f"a judge is a callable or one of 'task', 'reward:PATH', 'pairwise:PATH', 'gpm:PATH', "
                           f"'module:function'; got {spec!r}")
    kind, colon, rest = spec.strip().partition(":")
    if kind in KINDS:
        loader, allowed = KINDS[kind]
        _check(spec, options, allowed)
        return loader(rest, **options)
    if colon:
        _check(spec, options, PYTHON_OPTIONS - {"name"})
        return from_path(spec.strip(), **options)
    raise PrefkitError(f"unknown judge {spec!r}; use 'task', 'reward:PATH_OR_ID', 'pairwise:PATH_OR_ID', "
                       "'gpm:PATH_OR_ID' or 'module:function'")


def _check(spec: str, options: dict, allowed: frozenset[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        takes = f"takes {', '.join(sorted(allowed))}" if allowed else "takes no options"
        raise PrefkitError(f"judge {spec!r}: unknown option {unknown[0]!r} (it {takes})")
