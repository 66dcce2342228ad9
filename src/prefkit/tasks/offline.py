"""The task's oracle as the source of an offline preference data set, in the formats users already have:
paired rows {"prompt", "chosen", "rejected"} and unpaired rows {"prompt", "completion", "label"}, each with plain
strings (standard) or [{"role", "content"}] lists (conversational), written as JSONL.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

from prefkit.errors import PrefkitError
from prefkit.tasks.synthetic import as_row

LABELS = ("sample", "argmax")


def label_pairs(task, responses: Mapping[str, Sequence[str]], *, pairs_per_prompt: int | None = None, seed: int = 0,
                labels: str = "sample", conversational: bool = True) -> list[dict]:
    """Preference rows from responses already sampled (from a model or the reference), labelled by the oracle.

    For each prompt, pairs of distinct responses are taken (all of them, or `pairs_per_prompt` drawn at random).
    labels="sample" draws the winner with probability P(a beats b), as a human annotator with these preferences
    would; labels="argmax" keeps the more preferred one. Pairs the oracle scores as exact ties (two malformed
    responses, or equally good orderings) carry no preference and are left out.

    Rows are conversational by default: data loaders render those with the chat template, as the task's own
    log-prob functions do; conversational=False gives standard string rows, which loaders do not template.
    """
    if labels not in LABELS:
        raise PrefkitError(f"unknown labels {labels!r}; choose 'sample' or 'argmax'")
    rng = np.random.default_rng(seed)
    rows = []
    for prompt, sampled in responses.items():
        distinct = list(dict.fromkeys(sampled))
        pairs = list(itertools.combinations(distinct, 2))
        if pairs_per_prompt is not None and len(pairs) > pairs_per_prompt:
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), pairs_per_prompt, replace=False))]
        for a, b in pairs:
            p = task.preference(prompt, a, b)
            if p == 0.5:
                continue
            a_wins = rng.random() < p if labels == "sample" else p > 0.5
            chosen, rejected = (a, b) if a_wins else (b, a)
            rows.append(as_row(prompt, chosen=chosen, rejected=rejected, conversational=conversational))
    return rows


def preference_rows(task, prompts: Sequence[str], responses_per_prompt: int = 4, *, seed: int = 0,
                    pairs_per_prompt: int | None = None, labels: str = "sample",
                    conversational: bool = True) -> list[dict]:
    """An offline preference data set: `responses_per_prompt` samples from the task's reference policy for each
    prompt, paired and labelled by the oracle (see label_pairs). Deterministic under `seed`."""
    rng = np.random.default_rng(seed)
    sampled = {prompt: task.sample_reference(prompt, responses_per_prompt, rng) for prompt in prompts}
    return label_pairs(task, sampled, pairs_per_prompt=pairs_per_prompt, seed=seed + 1, labels=labels,
                       conversational=conversational)


def unpaired_rows(rows: Sequence[dict]) -> list[dict]:
    """Paired rows to unpaired binary feedback (KTO/BCO): chosen -> label True, rejected -> label False."""
    out = []
    for row in rows:
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out
