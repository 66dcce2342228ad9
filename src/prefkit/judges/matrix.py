"""Preference matrices and win rates: what the self-play loop and the evaluation suite ask of a judge.

For K responses to a prompt the judge is asked every ordered pair (i, j), i != j, and P[i, j] is the average of
P(i beats j) and 1 − P(j beats i): the matrix is antisymmetric (P + Pᵀ = 1, diagonal 1/2) whatever a judge's
position bias. A reward-model judge scores each distinct response once, so this costs it K forward rows.

Prompts are judged chunk by chunk; with a checkpoint, the matrices judged so far are written after every chunk
and before a `JudgeError` propagates, and a later call with the same inputs judges only the prompts left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from prefkit.errors import PrefkitError
from prefkit.io import progress
from prefkit.judges import checkpoint as ckpt
from prefkit.judges.load import load_judge


def preference_matrix(judge, prompts: Sequence, responses: Sequence[Sequence], *, checkpoint: Path | str | None = None,
                      chunk_size: int = 16) -> np.ndarray:
    """P[p, i, j] = P(responses[p][i] beats responses[p][j] | prompts[p]), shape [num_prompts, K, K].

    `judge` is a Judge or anything `load_judge` takes. Every prompt needs the same number K of responses.
    Raises JudgeError (naming the prompt index and the judge) when the judge fails; the prompts before the failing
    one are in `checkpoint` by then."""
    judge = load_judge(judge)
    prompts, responses = list(prompts), [list(r) for r in responses]
    k = _check(prompts, responses, chunk_size)
    path = Path(checkpoint) if checkpoint is not None else None
    inputs = ckpt.digest(prompts, responses) if path else ""
    done = ckpt.load(path, inputs, judge.name, k) if path else []
    rows, cols = np.nonzero(~np.eye(k, dtype=bool))  # every ordered pair (i, j), i != j
    starts = range(len(done), len(prompts), chunk_size)
    for start in progress(starts, total=len(starts), desc=f"judge {judge.name}", unit="chunk"):
        chunk = range(start, min(start + chunk_size, len(prompts)))
        owners = np.repeat(np.array(chunk), len(rows))
        values, error = judge.judge_batch([prompts[p] for p in owners],
                                       [responses[p][i] for p in chunk for i in rows],
                                       [responses[p][j] for p in chunk for j in cols],
                                       owners) if len(rows) else (np.empty(0), None)
        judged = chunk.stop if error is None else error.prompt_index
        for p in range(start, judged):
            done.append(_antisymmetric(values[owners == p], rows, cols, k))
        if path is not None and judged > start:
            ckpt.save(path, done, inputs, judge.name, k)
        if error is not None:
            raise error
    return np.stack(done) if done else np.zeros((0, k, k))


def win_rates(P) -> np.ndarray:
    """Mean over j != i of P[..., i, j]: the estimate of P(y_i beats π_t) from K samples of π_t; [num_prompts, K]
    for a [num_prompts, K, K] stack (a single [K, K] matrix gives [K])."""
    P = np.asarray(P, dtype=float)
    if P.ndim < 2 or P.shape[-1] != P.shape[-2]:
        raise PrefkitError(f"win_rates needs square preference matrices [..., K, K]; got shape {P.shape}")
    k = P.shape[-1]
    if k < 2:
        raise PrefkitError("win_rates needs at least 2 responses per prompt (a win rate against the others)")
    return (P.sum(axis=-1) - np.diagonal(P, axis1=-2, axis2=-1)) / (k - 1)


def _antisymmetric(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    raw = np.full((k, k), 0.5)
    raw[rows, cols] = values
    return (raw + 1.0 - raw.T) / 2.0  # the diagonal stays 1/2


def _check(prompts: list, responses: list[list], chunk_size: int) -> int:
    if chunk_size < 1:
        raise PrefkitError(f"preference_matrix: chunk_size must be >= 1 (got {chunk_size})")
    if len(responses) != len(prompts):
        raise PrefkitError(f"preference_matrix: got {len(prompts)} prompts but {len(responses)} response lists")
    if not responses:
        return 0
    k = len(responses[0])
    for p, group in enumerate(responses):
        if len(group) != k or k < 1:
            raise PrefkitError(f"preference_matrix: every prompt needs the same number of responses (>= 1); "
                               f"prompt 0 has {k}, prompt {p} has {len(group)}")
    return k
