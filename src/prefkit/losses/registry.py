"""The loss registry and the one entry point, `evaluate`, that every trainer calls.

A loss is a small pure function of log-probs registered by name. Its signature is its contract:

* positional-or-keyword parameters are *inputs* (tensors, shape [B] unless the loss documents otherwise);
  those without a default are required, those defaulting to None are optional;
* keyword-only parameters are *hyper-parameters*; their defaults are the paper defaults.

So the catalogue (`prefkit losses`), the validation and the dispatch all read the same signature, and adding
a loss touches one module. `evaluate` hands each loss only the inputs it names, so a trainer can pass
everything it has (lengths, reference log-probs, win rates) whatever the loss.

The entry also declares what a trainer must provide, so that no loop ever names a loss: the example kinds that
can feed it (`feeds`, from `KINDS`), the batch statistics it reads (`statistics`, prefkit.losses.statistics)
and, for a loss whose reference inputs are optional, when its hyper-parameters make it read them
(`reference_when`).
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from prefkit.errors import PrefkitError

Tensor = torch.Tensor

FAMILIES = ("one-sided", "two-sided", "unpaired", "self-play", "token-level", "regulariser")

# The kinds of examples a trainer builds, and the loss inputs each can give: `prefkit train` feeds "pairs",
# "labelled" or "lists" (by the data), `prefkit selfplay` the self-play kinds.
KINDS = {
    "pairs": "offline preference pairs (chosen, rejected)",
    "labelled": "single completions labelled desirable or undesirable",
    "lists": "ranked lists of K completions of a prompt, best first (scored data kept whole)",
    "selfplay-pairs": "self-play pairs of sampled responses with their preference or win rates",
    "selfplay-singles": "single sampled responses with their win rates",
}
_PAIRED = ("pairs", "selfplay-pairs")
FAMILY_FEEDS = {"one-sided": _PAIRED, "two-sided": _PAIRED, "regulariser": ("pairs",), "unpaired": ("labelled",),
                "token-level": ()}  # self-play losses declare theirs


@dataclass(frozen=True)
class LossOutput:
    """What a loss function returns: per-example losses [B], and the implicit rewards it optimises."""

    losses: Tensor
    chosen_rewards: Tensor | None = None
    rejected_rewards: Tensor | None = None
    metrics: Mapping[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class LossResult:
    """What `evaluate` returns: per-example losses [B] and batch-mean metrics (detached 0-d tensors)."""

    losses: Tensor
    metrics: dict[str, Tensor]


# Constraints on hyper-parameters that mean the same thing in every loss that has them.
_CONSTRAINTS: dict[str, tuple[Callable[[float], bool], str]] = {
    "beta": (lambda v: v > 0, "must be > 0"),
    "eta": (lambda v: v > 0, "must be > 0"),
    "discopop_tau": (lambda v: v > 0, "must be > 0"),
    "label_smoothing": (lambda v: 0 <= v < 0.5, "must be in [0, 0.5)"),
    "alpha": (lambda v: v >= 0, "must be >= 0"),
    "tau": (lambda v: v >= 0, "must be >= 0"),
    "lam": (lambda v: v >= 0, "must be >= 0"),
    "desirable_weight": (lambda v: v >= 0, "must be >= 0"),
    "undesirable_weight": (lambda v: v >= 0, "must be >= 0"),
    "l1_reward": (lambda v: v >= 0, "must be >= 0"),
    "l1_kl": (lambda v: v >= 0, "must be >= 0"),
}


def require(condition: bool, loss: str, parameter: str, message: str) -> None:
    """Raise the standard error for a hyper-parameter that a loss cannot use."""
    if not condition:
        raise PrefkitError(f"loss '{loss}': {parameter} {message}")


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., LossOutput]
    family: str
    paper: str
    aliases: tuple[str, ...]
    defaults: Mapping[str, object]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    # the exact tabular step a self-play loss fits, as weights (w_prev, w_ref, c) of
    # log π' = w_prev·log π_t + w_ref·log π_ref + c·P(· beats π_t) + const, from its hyper-parameters
    step: Callable[..., tuple[float, float, float]] | None = None
    feeds: tuple[str, ...] = ()  # the example kinds (KINDS) that can feed it
    statistics: tuple[type, ...] = ()  # prefkit.losses.statistics classes whose inputs it reads
    reference_when: Callable[..., bool] | None = None  # optional reference inputs: read when this says so

    def step_weights(self, hyperparameters: Mapping[str, object]) -> tuple[float, float, float] | None:
        """(w_prev, w_ref, c) of the step this loss fits, or None when it fits no exact tabular step."""
        return self.step(**self.check_hyperparameters(hyperparameters)) if self.step else None

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.required + self.optional

    @property
    def reference(self) -> str:
        """'yes', 'no' or 'optional': whether the loss reads reference-policy log-probs."""
        if any(name.startswith("ref_") for name in self.required):
            return "yes"
        return "optional" if any(name.startswith("ref_") for name in self.optional) else "no"

    def reads_reference(self, hyperparameters: Mapping[str, object]) -> bool:
        """Whether, with these hyper-parameters, the loss reads reference log-probs (a trainer must provide them)."""
        if self.reference == "optional" and self.reference_when is not None:
            return bool(self.reference_when(**self.check_hyperparameters(hyperparameters)))
        return self.reference == "yes"

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.fn) or "").split("\n\n")[0].replace("\n", " ")

    def check_hyperparameters(self, hyperparameters: Mapping[str, object]) -> dict[str, object]:
        values = dict(self.defaults)
        for key, value in hyperparameters.items():
            if key not in values:
                raise PrefkitError(f"loss '{self.name}' has no hyper-parameter '{key}'{_did_you_mean(key, values)}")
            values[key] = value
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                require(math.isfinite(value), self.name, key, f"must be finite (got {value})")
                if key in _CONSTRAINTS:
                    check, message = _CONSTRAINTS[key]
                    require(check(value), self.name, key, f"{message} (got {value})")
        return values

    def __call__(self, inputs: Mapping[str, Tensor], hyperparameters: Mapping[str, object]) -> LossOutput:
        missing = [name for name in self.required if inputs.get(name) is None]
        if missing:
            raise PrefkitError(f"loss '{self.name}' needs {', '.join(missing)} (inputs: {', '.join(self.inputs)})")
        arguments = {name: inputs[name] for name in self.inputs if inputs.get(name) is not None}
        return self.fn(**arguments, **self.check_hyperparameters(hyperparameters))


_REGISTRY: dict[str, LossSpec] = {}


def register(name: str, *, family: str, paper: str, aliases: Sequence[str] = (), defaults: Mapping | None = None,
             step: Callable[..., tuple[float, float, float]] | None = None, feeds: Sequence[str] | None = None,
             statistics: Sequence[type] = (), reference_when: Callable[..., bool] | None = None):
    """Register a loss function under `name` (and `aliases`). `defaults` overrides the signature's defaults,
    so one function can be registered twice with different paper defaults (e.g. hinge and rso). `step` (self-play
    losses) gives the weights of the tabular step the loss fits, from its hyper-parameters (LossSpec.step).
    `feeds` (default: the family's, FAMILY_FEEDS), `statistics` and `reference_when`: see the module docstring."""
    assert family in FAMILIES, family
    feeds = tuple(FAMILY_FEEDS[family] if feeds is None else feeds)
    assert set(feeds) <= set(KINDS), feeds

    def decorate(fn: Callable[..., LossOutput]) -> Callable[..., LossOutput]:
        parameters = inspect.signature(fn).parameters.values()
        keyword_only = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
        spec = LossSpec(
            name=name,
            fn=fn,
            family=family,
            paper=paper,
            aliases=tuple(aliases),
            defaults={**keyword_only, **(defaults or {})},
            required=tuple(p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty),
            optional=tuple(p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is None),
            step=step,
            feeds=feeds,
            statistics=tuple(statistics),
            reference_when=reference_when,
        )
        for key in (name, *aliases):
            assert key not in _REGISTRY, f"loss name registered twice: {key}"
            _REGISTRY[key] = spec
        return fn

    return decorate


def get(name: str) -> LossSpec:
    """The registered loss called `name` (or one of its aliases)."""
    if name not in _REGISTRY:
        raise PrefkitError(f"unknown loss '{name}'{_did_you_mean(name, _REGISTRY)}; `prefkit losses` lists them")
    return _REGISTRY[name]


def names(include_aliases: bool = False) -> list[str]:
    """Registered loss names, in registration order (aliases too if asked)."""
    if include_aliases:
        return list(_REGISTRY)
    return list(dict.fromkeys(spec.name for spec in _REGISTRY.values()))


def specs() -> list[LossSpec]:
    return [get(name) for name in names()]


def input_names() -> set[str]:
    """Every input that some loss reads; a trainer may pass any of them to any loss."""
    return {name for spec in _REGISTRY.values() for name in spec.inputs}


def evaluate(
    name: str | Sequence[str],
    chosen_logps: Tensor | None = None,
    rejected_logps: Tensor | None = None,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    weights: Sequence[float] | None = None,
    **inputs_and_hyperparameters,
) -> LossResult:
    """Per-example losses and TRL-named metrics for one loss or a weighted sum of several.

    `name` is a loss name or a list of names (a mixture: TRL's `loss_type` list, with `weights` as its
    `loss_weights`; e.g. RPO is ["dpo", "sft"] with weights [1.0, 0.005]). Keyword arguments that a component
    reads as inputs go to it as inputs (`split_arguments`); the others are hyper-parameters: a plain name goes
    to every component that has it, "component.parameter" to one component only. Batch statistics are inputs
    like any other here; `Objective` computes them for a trainer.
    """
    components = [get(name)] if isinstance(name, str) else [get(n) for n in name]
    weights = [1.0] * len(components) if weights is None else [float(w) for w in weights]
    if len(weights) != len(components):
        raise PrefkitError(f"got {len(weights)} weights for {len(components)} losses")
    given = dict(chosen_logps=chosen_logps, rejected_logps=rejected_logps, ref_chosen_logps=ref_chosen_logps,
                 ref_rejected_logps=ref_rejected_logps, **inputs_and_hyperparameters)
    inputs, hyperparameters = split_arguments(components, given)
    per_component = split_hyperparameters(components, hyperparameters)
    return combine(components, weights, [inputs] * len(components), per_component)


def split_arguments(components: Sequence[LossSpec], given: Mapping[str, object]) -> tuple[dict, dict]:
    """(inputs, hyper-parameters) of keyword arguments, told apart by the components' own signatures: a name that
    a component has as a hyper-parameter is one (for that component; it may be another's input), and a name
    that some loss reads as an input is an input. So a trainer may pass everything it has (lengths, reference
    log-probs, win rates): each loss takes what it reads, and the metrics see the rest. None values are dropped."""
    own_hyperparameters = {p for spec in components for p in spec.defaults}
    readable = input_names() | {name for spec in components for name in spec.inputs}
    inputs = {k: v for k, v in given.items() if v is not None and k in readable
              and (k not in own_hyperparameters or any(k in spec.inputs for spec in components))}
    hyperparameters = {k: v for k, v in given.items() if k.rpartition(".")[2] in own_hyperparameters
                       or k not in readable}
    _check_batch_sizes({k: v for k, v in inputs.items() if any(k in spec.inputs for spec in components)})
    return inputs, hyperparameters


def combine(components: Sequence[LossSpec], weights: Sequence[float], inputs: Sequence[Mapping[str, Tensor]],
            hyperparameters: Sequence[Mapping[str, object]]) -> LossResult:
    """The weighted sum of the components' per-example losses, each on its own inputs and hyper-parameters,
    with the metrics of the first component that reports rewards (and each component's mean, in a mixture)."""
    total, metrics = None, {}
    for spec, weight, own_inputs, own_hps in zip(components, weights, inputs, hyperparameters):
        output = spec(own_inputs, own_hps)
        total = weight * output.losses if total is None else total + weight * output.losses
        if not metrics:  # the first component that reports rewards names the rewards
            metrics = _metrics(output, own_inputs)
        if len(components) > 1:
            metrics[f"loss/{spec.name}"] = output.losses.detach().mean()
    return LossResult(total, metrics)


def compute(
    name: str | Sequence[str],
    chosen_logps: Tensor | None = None,
    rejected_logps: Tensor | None = None,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    **inputs_and_hyperparameters,
) -> Tensor:
    """Per-example losses, shape [B]. Same arguments as `evaluate`; see its docstring."""
    return evaluate(name, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
                    **inputs_and_hyperparameters).losses


def split_hyperparameters(components: list[LossSpec], hyperparameters: Mapping) -> list[dict]:
    per_component: list[dict] = [{} for _ in components]
    for key, value in hyperparameters.items():
        target, _, parameter = key.rpartition(".")
        hits = [i for i, spec in enumerate(components)
                if parameter in spec.defaults and target in ("", spec.name, *spec.aliases)]
        if not hits:
            known = {p for spec in components for p in spec.defaults}
            what = " and ".join(f"'{spec.name}'" for spec in components)
            raise PrefkitError(f"loss {what} has no hyper-parameter '{key}'{_did_you_mean(parameter, known)}")
        for i in hits:
            per_component[i][parameter] = value
    return per_component


def _check_batch_sizes(inputs: Mapping[str, object]) -> None:
    sizes = {k: v.shape[0] for k, v in inputs.items() if isinstance(v, Tensor) and v.dim() > 0}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k}={n}" for k, n in sizes.items())
        raise PrefkitError(f"loss inputs disagree on the batch size: {listing}")


@torch.no_grad()
def _metrics(output: LossOutput, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    metrics: dict[str, Tensor] = {}
    chosen, rejected = output.chosen_rewards, output.rejected_rewards
    if chosen is not None and chosen.numel():
        metrics["rewards/chosen"] = chosen.detach().float().mean()
    if rejected is not None and rejected.numel():
        metrics["rewards/rejected"] = rejected.detach().float().mean()
    if "rewards/chosen" in metrics and "rewards/rejected" in metrics:
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        if chosen.shape == rejected.shape:  # paired: per-pair accuracy is defined
            metrics["rewards/accuracies"] = (chosen > rejected).float().mean()
    if "chosen_logps" in inputs and "rejected_logps" in inputs:
        z = inputs["chosen_logps"] - inputs["rejected_logps"]
        metrics["logps/chosen"] = inputs["chosen_logps"].detach().float().mean()
        metrics["logps/rejected"] = inputs["rejected_logps"].detach().float().mean()
        metrics["contrastive_logit"] = z.detach().float().mean()
        if "chosen_lengths" in inputs and "rejected_lengths" in inputs:
            zbar = (inputs["chosen_logps"] / inputs["chosen_lengths"].clamp(min=1)
                    - inputs["rejected_logps"] / inputs["rejected_lengths"].clamp(min=1))
            metrics["contrastive_logit/mean"] = zbar.detach().float().mean()
    metrics.update({k: v.detach() for k, v in output.metrics.items()})
    return metrics


def _did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""
