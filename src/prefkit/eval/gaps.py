"""Exact duality gaps and win rates on the bundled task: the model's distribution over each prompt's canonical responses
follows from sequence log-probs, so its gap DG(π) = 2 max_y P(y beats π) − 1 is computed exactly, not sampled
(prefkit.tasks, docs/task.md). The gap is of the distribution renormalised on the canonical set; the mass
outside the set (malformed responses) is reported beside it."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def exact_gap_metrics(model, tokenizer, task, prompts: Sequence[str] | None = None) -> dict:
    """Per prompt (default: the task's cyclic eval prompts): gap, mass outside the canonical set and the
    distribution itself; plus the mean gap and mean outside mass. The one place the evaluation, the self-play
    loop and the demo get exact gaps from."""
    from prefkit.tasks import canonical_gaps

    prompts = list(prompts) if prompts is not None else task.prompts("cyclic", "eval")
    rows = [{"prompt": prompt, "gap": gap, "outside": float(outside),
             "distribution": dict(zip(task.canonical(prompt), map(float, probs)))}
            for prompt, (gap, probs, outside) in zip(prompts, canonical_gaps(model, tokenizer, task, prompts))]
    return {"prompts": rows, "mean_gap": float(np.mean([r["gap"] for r in rows])),
            "mean_outside": float(np.mean([r["outside"] for r in rows]))}


def exact_win_rates(model, reference, tokenizer, task, prompts: Sequence[str] | None = None) -> dict:
    """Per prompt (default: every eval prompt of the task): the exact probability that the model's answer beats
    the reference's under the task's oracle, malformed mass included (task.win_rate), and the mass outside the
    canonical set of each; plus the means, overall and per prompt family (1/2: no better than the reference)."""
    from prefkit.tasks import canonical_distributions

    prompts = list(prompts) if prompts is not None else task.prompts(split="eval")
    mine = canonical_distributions(model, tokenizer, task, prompts)
    theirs = canonical_distributions(reference, tokenizer, task, prompts)
    rows = [{"prompt": prompt, "kind": task.kind(prompt), "win_rate": float(task.win_rate(prompt, p, q, po, qo)),
             "outside": po, "reference_outside": qo} for prompt, (p, po), (q, qo) in zip(prompts, mine, theirs)]
    kinds = dict.fromkeys(row["kind"] for row in rows)
    return {"prompts": rows, "win_rate": float(np.mean([r["win_rate"] for r in rows])),
            "by_kind": {kind: float(np.mean([r["win_rate"] for r in rows if r["kind"] == kind])) for kind in kinds},
            "mean_outside": float(np.mean([r["outside"] for r in rows])),
            "reference_mean_outside": float(np.mean([r["reference_outside"] for r in rows]))}
