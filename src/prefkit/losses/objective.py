"""What a trainer optimises: one loss or a weighted mixture, with its hyper-parameters resolved once and the batch
statistics its components declare, kept per component.

The training loops hold an `Objective` and ask it everything that depends on the loss: which example kind
feeds it, whether it reads reference log-probs, whether the trainer must score mismatched pairs (KTO); they
never name a loss. `objective(inputs, training=True)` computes the batch statistics with each component's own
hyper-parameters (so a `bco` β inside a mixture is the one its reward shift uses), evaluates the losses and
updates the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from prefkit.errors import PrefkitError
from prefkit.losses.registry import KINDS, LossResult, LossSpec, split_hyperparameters, combine, get
from prefkit.losses.statistics import Statistic


@dataclass
class Component:
    spec: LossSpec
    weight: float
    hyperparameters: dict  # resolved: the loss's defaults with the user's values
    statistics: list[Statistic]


class Objective:
    def __init__(self, names: str | Sequence[str], weights: Sequence[float] | None = None,
                 hyperparameters: Mapping[str, object] | None = None):
        names = [names] if isinstance(names, str) else list(names)
        specs = [get(n) for n in names]
        weights = [1.0] * len(specs) if weights is None else [float(w) for w in weights]
        if len(weights) != len(specs):
            raise PrefkitError(f"got {len(weights)} weights for {len(specs)} losses")
        given = split_hyperparameters(specs, dict(hyperparameters or {}))
        self.names = names
        self.components = [Component(spec, weight, spec.check_hyperparameters(hps), [s() for s in spec.statistics])
                           for spec, weight, hps in zip(specs, weights, given)]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The example kinds that can feed every component (KINDS order)."""
        return tuple(k for k in KINDS if all(k in c.spec.feeds for c in self.components))

    def kind_for(self, offered: Sequence[str]) -> str | None:
        """The first of the `offered` example kinds that feeds this objective, or None."""
        return next((k for k in offered if k in self.kinds), None)

    @property
    def reads_reference(self) -> bool:
        return any(c.spec.reads_reference(c.hyperparameters) for c in self.components)

    def reads(self, *names: str) -> bool:
        """Whether any component's loss reads any of the inputs `names`."""
        return any(name in c.spec.inputs for c in self.components for name in names)

    @property
    def needs_mismatched(self) -> bool:
        return any(s.needs_mismatched for c in self.components for s in c.statistics)

    def hyperparameter(self, name: str):
        """The first component's value of hyper-parameter `name` (e.g. a self-play step size), or None."""
        return next((c.hyperparameters[name] for c in self.components if name in c.hyperparameters), None)

    def __call__(self, inputs: Mapping[str, object], training: bool = True) -> LossResult:
        own = []
        for c in self.components:
            values = dict(inputs)
            for statistic in c.statistics:
                values.update(statistic.inputs(inputs, c.hyperparameters, training))
            own.append({k: v for k, v in values.items() if v is not None})  # the loss takes what it reads
        result = combine([c.spec for c in self.components], [c.weight for c in self.components], own,
                         [c.hyperparameters for c in self.components])
        if training:
            for c in self.components:
                for statistic in c.statistics:
                    statistic.update(inputs, c.hyperparameters)
        return result

    def state(self) -> dict:
        """The statistics' state, JSON-ready, for a checkpoint."""
        return {f"{i}/{type(s).__name__}": s.state() for i, c in enumerate(self.components) for s in c.statistics}

    def load(self, state: Mapping[str, dict]) -> None:
        for i, c in enumerate(self.components):
            for statistic in c.statistics:
                statistic.load(state.get(f"{i}/{type(statistic).__name__}", {}))


def feed_problem(names: Sequence[str], offered: Sequence[str], command: str) -> str | None:
    """Why `command`, which builds the `offered` example kinds, cannot feed this loss (mixture), or None."""
    objective_kinds = [k for k in KINDS if all(k in get(n).feeds for n in names)]
    if any(k in offered for k in objective_kinds):
        return None
    what = " and ".join(f"'{n}'" for n in names)
    if not objective_kinds:
        reads = "; ".join(f"'{n}' reads {', '.join(get(n).feeds) or 'token-level log-probs'}" for n in names)
        return f"loss {what}: no example kind feeds every component ({reads}); no prefkit command builds them"
    return (f"loss {what} trains on {' or '.join(KINDS[k] for k in objective_kinds)}, which `{command}` does not "
            f"build (it builds {' or '.join(KINDS[k] for k in offered)})")
