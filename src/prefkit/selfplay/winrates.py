"""Win rates P(y beats π_t) for self-play: estimated from the judged K x K matrix of π_t's samples (`sampled`),
the same matrix with π_t's own probabilities of the distinct sampled responses in place of their counts
(`weighted`), or exact from a judge that enumerates each prompt's responses (`exact`, prefkit.judges.exact),
with π_t's own distribution over those responses computed from its log-probs.

`winrates: auto` is exact when the judge can give it. With exact win rates, `pairs: canonical` (what `auto`
picks then) trains every pair of enumerated responses plus every sampled response outside them paired with
each enumerated one: the pairwise losses fix only relative log-probs among the examples, so the outside
samples must stay in the example set for the mass outside to be pushed down (docs/selfplay.md, "Win rates").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prefkit.errors import PrefkitError
from prefkit.judges.exact import Enumerating, enumerating
from prefkit.modeling.generation import Sample, encode_completion, encode_prompt


@dataclass
class Enumerated:
    """π's distribution over one prompt's enumerated responses."""

    responses: list[Sample]  # text and the ids scored (response tokens + EOS)
    probs: np.ndarray  # renormalised over the enumerated responses
    outside: float  # π's mass on everything else


def resolve(config, judge) -> tuple[str, str, Enumerating | None]:
    """(win-rate mode, pairing rule, the enumerating judge or None) for `config` and `judge`; a clear error when
    exact win rates are asked of a judge that cannot enumerate."""
    source = enumerating(judge)
    mode = config.winrates
    if mode == "auto":
        mode = "exact" if source is not None and not config.mixture_coef else "sampled"
    if mode == "exact" and source is None:
        raise PrefkitError(f"config: winrates: exact needs a judge that enumerates each prompt's responses (the "
                           f"bundled task's oracle does); judge {config.judge!r} is a black box: use winrates: "
                           "sampled")
    pairs = config.pairs if config.pairs != "auto" else ("canonical" if mode == "exact" else "all")
    if mode == "weighted" and config.mixture_coef:
        raise PrefkitError("config: winrates: weighted averages over π_t's own samples; Nash-MD's opponents come "
                           "from the geometric mixture (use winrates: sampled)")
    if pairs == "canonical" and mode != "exact":
        raise PrefkitError("config: pairs: canonical pairs the judge's enumerated responses, so it needs "
                           "winrates: exact (or auto with an enumerating judge)")
    return mode, pairs, source


@torch.no_grad()
def group_logps(model, groups: list[tuple[list[int], list[list[int]]]], chunk: int = 64) -> list[torch.Tensor]:
    """log π of each group's completions (prefkit.modeling.score, `chunk` groups per pass), one tensor a group."""
    from prefkit.modeling import score

    results = []
    for start in range(0, len(groups), chunk):
        part = groups[start:start + chunk]
        flat = score(model, part).double().cpu()
        sizes = [len(completions) for _, completions in part]
        results += list(torch.split(flat, sizes))
    return results


def distributions(model, tokenizer, source: Enumerating, prompts: list) -> list[Enumerated]:
    """π's exact distribution over each prompt's enumerated responses."""
    texts = [source.responses(p) for p in prompts]
    groups = [(encode_prompt(tokenizer, p), [encode_completion(tokenizer, r) for r in rs])
              for p, rs in zip(prompts, texts)]
    results = []
    for (_, ids), rs, logps in zip(groups, texts, group_logps(model, groups)):
        total = torch.logsumexp(logps, 0)
        outside = float(min(1.0, max(0.0, -torch.expm1(total).item())))
        results.append(Enumerated([Sample(r, i) for r, i in zip(rs, ids)], (logps - total).exp().numpy(), outside))
    return results


def weighted_rates(matrices: np.ndarray, samples: list[list[Sample]], logps: list, eos: int) -> np.ndarray:
    """Win rates from the judged K x K matrices with π_t's own probabilities in place of sample counts:
    P(y beats π_t) ≈ Σ_d π_t(d)·P(y, d) + r·P̂(y beats π_t), d the distinct complete responses sampled (ending in
    EOS), `logps` their log π_t per sample, r = 1 − Σ_d π_t(d) the mass never sampled, P̂ the plain estimate.
    Where a prompt's responses repeat (a small answer space) the multinomial noise of the counts is gone; where
    every response is new (long answers) r ≈ 1 and this is the plain estimate. The judge stays a black box."""
    from prefkit.judges import win_rates

    plain = win_rates(matrices)
    rates = plain.copy()
    for p, (group, group_logps) in enumerate(zip(samples, logps)):
        first = {}
        for i, sample in enumerate(group):
            if sample.ids and sample.ids[-1] == eos:
                first.setdefault(tuple(sample.ids), i)  # one index per distinct complete response
        if first:
            index = np.array(list(first.values()))
            weight = np.exp(np.asarray(group_logps, dtype=float)[index])
            rates[p] = matrices[p][:, index] @ weight + (1.0 - min(1.0, weight.sum())) * plain[p]
    return rates


def exact_rates(source: Enumerating, prompt, candidates: list[Sample], policy: Enumerated) -> np.ndarray:
    return np.asarray(source.win_rates_against(prompt, [c.text for c in candidates], policy.probs, policy.outside),
                      dtype=float)


def canonical_candidates(policy: Enumerated, samples: list[Sample]) -> tuple[list[Sample], int]:
    """The enumerated responses, then each distinct sampled response outside them; and how many are enumerated."""
    known = {r.text for r in policy.responses}
    outside, seen = [], set()
    for sample in samples:
        if sample.ids and sample.text not in known and sample.text not in seen:
            seen.add(sample.text)
            outside.append(sample)
    return policy.responses + outside, len(policy.responses)


def tracking(before: Enumerated, after: Enumerated, magnet: Enumerated, rates: np.ndarray,
             weights: tuple[float, float, float]) -> tuple[float, float, float]:
    """How closely one iteration's fit followed the game dynamic it was fitting, over the enumerated responses:
    (total-variation distance between π_{t+1} and the exact step from π_t, achieved·intended, intended·intended)
    for the log-prob moves from π_t (centred: log-probs are defined up to a constant). The step is
    log π' = w_prev·log π_t + w_ref·log π_ref + c·P(· beats π_t) (LossSpec.step); `rates` are the enumerated
    responses' exact win rates against π_t. The share of the intended move achieved is the ratio of the two
    products, pooled over prompts (a prompt whose intended move is ~0 would make its own ratio meaningless)."""
    from prefkit.games.dynamics import normalise

    w_prev, w_ref, c = weights
    start = np.log(before.probs)
    target = normalise(w_prev * start + w_ref * np.log(magnet.probs) + c * rates)
    distance = 0.5 * float(np.abs(np.exp(target) - after.probs).sum())
    intended, achieved = target - start, np.log(after.probs) - start
    intended, achieved = intended - intended.mean(), achieved - achieved.mean()
    return distance, float(achieved @ intended), float(intended @ intended)
