"""Win rates P(y beats π_t) for self-play: estimated from the judged K x K matrix of π_t's samples (`sampled`), or
exact from a judge that enumerates each prompt's responses (`exact`, prefkit.judges.exact), with π_t's own
distribution over those responses computed from its log-probs.

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
    if pairs == "canonical" and mode != "exact":
        raise PrefkitError("config: pairs: canonical pairs the judge's enumerated responses, so it needs "
                           "winrates: exact (or auto with an enumerating judge)")
    return mode, pairs, source


@torch.no_grad()
def distributions(model, tokenizer, source: Enumerating, prompts: list, chunk: int = 64) -> list[Enumerated]:
    """π's exact distribution over each prompt's enumerated responses (one scoring pass per chunk of prompts)."""
    from prefkit.modeling import score

    results = []
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        texts = [source.responses(p) for p in part]
        groups = [(encode_prompt(tokenizer, p), [encode_completion(tokenizer, r) for r in rs])
                  for p, rs in zip(part, texts)]
        logps = score(model, groups).double().cpu()
        offset = 0
        for (_, ids), rs in zip(groups, texts):
            chunk_logps = logps[offset:offset + len(rs)]
            offset += len(rs)
            total = torch.logsumexp(chunk_logps, 0)
            outside = float(min(1.0, max(0.0, -torch.expm1(total).item())))
            results.append(Enumerated([Sample(r, i) for r, i in zip(rs, ids)],
                                      (chunk_logps - total).exp().numpy(), outside))
    return results


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
